"""How fast a config trains: the compiled train step and the input pipeline, measured apart.

    experiment = build_experiment(config, num_devices=1, batch_size=100)
    step = measure_train_step(experiment)      # compile time, steps/s, FLOP/s, memory
    feed = measure_input_pipeline(experiment)  # examples/s the input pipeline delivers

The train step is the trainer's own program (`Experiment.train_step`, data-parallel over the
first `num_devices` devices), compiled ahead of time so the compile is timed alone, then run on
one batch held on the devices: `repeats` timed blocks of several steps each, every block
ended by `block_until_ready`, reported as the median and the spread over blocks. FLOPs come
from XLA's cost analysis of the compiled per-device program (a loop body counts once, so a
`fori_loop` of k Gibbs sweeps reports one sweep's FLOPs); the fraction of peak divides the
achieved FLOP/s by `peak_flops` (the table below, a measured matmul on the CPU, or a flag).
"""

from __future__ import annotations

import collections
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from genjax.core import parallel
from genjax.train import config as config_lib
from genjax.train.loop import MAX_STEPS_IN_FLIGHT, Experiment

# Dense peak FLOP/s per chip by compute dtype, from the vendors' data sheets, matched in order
# against `Device.device_kind`. GPUs' float32 is the non-tensor-core rate (XLA may use TF32
# tensor cores for float32 matmuls at default precision, which can exceed it); TPUs run
# float32 matmuls as several bfloat16 passes and publish only the bfloat16 rate.
KNOWN_PEAK_FLOPS = (
    ("H200", {"float32": 67e12, "bfloat16": 989e12}),
    ("H100", {"float32": 67e12, "bfloat16": 989e12}),  # SXM
    ("A100", {"float32": 19.5e12, "bfloat16": 312e12}),
    ("L4", {"float32": 30.3e12, "bfloat16": 121e12}),
    ("TPU v6 lite", {"bfloat16": 918e12}),
    ("TPU v5 lite", {"bfloat16": 197e12}),
    ("TPU v5p", {"bfloat16": 459e12}),
    ("TPU v5", {"bfloat16": 459e12}),
    ("TPU v4", {"bfloat16": 275e12}),
)


def known_peak_flops(device_kind: str, dtype: str) -> float | None:
    """The table's peak for a device kind and compute dtype (a TPU's bfloat16 rate for any
    dtype); None when the kind is not in the table."""
    for name, peaks in KNOWN_PEAK_FLOPS:
        if name in device_kind:
            return peaks.get(dtype, peaks.get("bfloat16"))
    return None


def measured_matmul_flops(size: int = 2048, repeats: int = 5, device=None) -> float:
    """The best FLOP/s of a float32 (size x size) matmul on one device: the practical peak of
    a device with no published one (a CPU)."""
    device = jax.devices()[0] if device is None else device
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    matmul = jax.jit(jnp.matmul).lower(a, a).compile()
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def timed_blocks(
    run_step: Callable[[], object],
    repeats: int,
    min_block_seconds: float,
    min_steps: int = 3,
    sync: Callable[[object], object] = jax.block_until_ready,
    max_in_flight: int | None = None,
) -> tuple[int, list[float]]:
    """Steps/s of `run_step` over `repeats` blocks; each block runs enough steps to last about
    `min_block_seconds` (at least `min_steps`) and ends with `sync` of the last step's output
    (JAX dispatches asynchronously; a synchronous framework passes `lambda out: None`). With
    `max_in_flight`, a step is dispatched only once the step that many before it is done, as
    the trainer does (`MAX_STEPS_IN_FLIGHT`).

    Returns (steps per block, steps/s of each block).
    """
    sync(run_step())  # warm-up: first dispatch, allocation
    start = time.perf_counter()
    sync(run_step())
    one_step = max(time.perf_counter() - start, 1e-6)
    steps = max(min_steps, int(min_block_seconds / one_step) + 1)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        in_flight = collections.deque()
        for _ in range(steps):
            in_flight.append(run_step())
            if max_in_flight is not None and len(in_flight) > max_in_flight:
                sync(in_flight.popleft())
        sync(in_flight[-1])
        rates.append(steps / (time.perf_counter() - start))
    return steps, rates


def summarize_rates(rates: list[float]) -> dict:
    """Median and spread ((max - min) / median) of per-block rates."""
    median = statistics.median(rates)
    return {
        "median": median,
        "min": min(rates),
        "max": max(rates),
        "spread": (max(rates) - min(rates)) / median,
    }


def build_experiment(
    config: ml_collections.ConfigDict,
    num_devices: int = 1,
    batch_size: int | None = None,
    compute_dtype: str | None = None,
) -> Experiment:
    """`config`'s Experiment on the first `num_devices` devices, checked as the trainer checks.

    Args:
      config: a training config.
      num_devices: how many devices the mesh spans.
      batch_size: overrides `config.batch_size` (the global batch, split over the devices).
      compute_dtype: overrides `config.compute_dtype`.

    Raises:
      config_lib.ConfigError: a config the trainer would refuse on `num_devices` devices.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    if batch_size is not None:
        config.batch_size = batch_size
    if compute_dtype is not None:
        config.compute_dtype = compute_dtype
    config.progress_bar = False
    if not 1 <= num_devices <= jax.device_count():
        raise config_lib.ConfigError(
            f"num_devices={num_devices} must be between 1 and the {jax.device_count()} "
            "devices JAX sees (on the CPU, more come from --cpu_devices)"
        )
    config_lib.validate(config, None, device_count=num_devices, process_count=1)
    return Experiment(config, devices=jax.devices()[:num_devices])


def measure_train_step(
    experiment: Experiment,
    repeats: int = 5,
    min_block_seconds: float = 1.0,
    peak_flops: float | None = None,
) -> dict:
    """Compile time and steady-state throughput of the experiment's train step.

    Args:
      experiment: from `build_experiment`.
      repeats, min_block_seconds: timed blocks and their least duration.
      peak_flops: one device's peak FLOP/s; None looks it up in `KNOWN_PEAK_FLOPS` and leaves
        the fraction out when the device is not there.

    Returns:
      A JSON-able dict: model, batch size, devices, compile seconds, steps/s (median, min,
      max, spread), examples/s (real training examples consumed per second), FLOPs per step
      and per device, achieved FLOP/s per device, the peak used and the fraction of it, the
      compiled program's memory (arguments, outputs, temporaries) and the device's peak bytes
      in use where the backend reports them (GPUs and TPUs; None on the CPU).
    """
    config = experiment.config
    examples_per_step = experiment.examples_per_step
    iterator = experiment.dataset.train_iterator(examples_per_step)
    batch = parallel.shard_batch(next(iterator), experiment.mesh)
    state = experiment.init_state()
    start = time.perf_counter()
    compiled = experiment.train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start

    holder = {"state": state}
    device = experiment.mesh.devices.flat[0]

    def run_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics

    # The step as the trainer runs it: at most `MAX_STEPS_IN_FLIGHT` dispatched and unfinished.
    steps_per_block, rates = timed_blocks(
        run_step, repeats, min_block_seconds, max_in_flight=MAX_STEPS_IN_FLIGHT
    )
    step_rates = summarize_rates(rates)
    flops = float(compiled.cost_analysis().get("flops", 0.0)) or None
    dtype = config.compute_dtype
    if peak_flops is None:
        peak_flops = known_peak_flops(device.device_kind, dtype)
    achieved = flops * step_rates["median"] if flops else None
    memory = compiled.memory_analysis()
    stats = device.memory_stats() or {}
    return {
        "model": config.model,
        "dataset": config.dataset,
        "compute_dtype": dtype,
        "batch_size": config.batch_size,
        "examples_per_step": examples_per_step,
        "num_devices": experiment.mesh.devices.size,
        "device_kind": device.device_kind,
        "compile_seconds": compile_seconds,
        "steps_per_block": steps_per_block,
        "steps_per_sec": step_rates,
        "examples_per_sec": step_rates["median"] * examples_per_step,
        "flops_per_step_per_device": flops,
        "achieved_flops_per_device": achieved,
        "peak_flops_per_device": peak_flops,
        "fraction_of_peak": achieved / peak_flops if achieved and peak_flops else None,
        "compiled_bytes": {
            "arguments": memory.argument_size_in_bytes,
            "outputs": memory.output_size_in_bytes,
            "temporaries": memory.temp_size_in_bytes,
        },
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
    }


def measure_input_pipeline(
    experiment: Experiment, repeats: int = 5, min_block_seconds: float = 1.0
) -> dict:
    """Examples/s the input pipeline delivers to the devices: the next batch from the grain
    iterator (shuffling, preprocessing, batching), placed on the mesh as the trainer does.

    Returns a JSON-able dict with the batches/s (median, min, max, spread) and examples/s.
    """
    examples_per_step = experiment.examples_per_step
    iterator = experiment.dataset.train_iterator(examples_per_step)

    def run_step():
        return parallel.shard_batch(next(iterator), experiment.mesh)

    _, rates = timed_blocks(run_step, repeats, min_block_seconds)
    batch_rates = summarize_rates(rates)
    return {
        "batches_per_sec": batch_rates,
        "examples_per_sec": batch_rates["median"] * examples_per_step,
    }
