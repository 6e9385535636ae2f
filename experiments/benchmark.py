"""How fast genjax trains: every family's default config, on 1 and N devices, against PyTorch.

  python -m experiments.benchmark                                  # everything, CPU: ~15 min
  python -m experiments.benchmark --models=vae,rbm --devices=1 --peers=false
  python -m experiments.benchmark --cpu_devices=2 --devices=1,2    # N forced host devices
  python -m experiments.benchmark --peak_flops=1.2e12              # your device's peak
  python -m experiments.benchmark --compute_dtype=bfloat16         # mixed precision (GPU, TPU)

For each model (the leaderboard's configs, `--models` picks by name) and each device count in
`--devices` (weak scaling: each device keeps the 1-device batch): compile time, steps/s and
examples/s (median and spread over timed blocks), FLOPs per step from XLA's cost analysis,
achieved FLOP/s and its fraction of the device's peak (`genjax.workbench.benchmark`), the compiled
program's memory and the device's peak memory where the backend reports it, and the input
pipeline's examples/s beside the train step's. Then, with PyTorch installed
(`pip install -r benchmarks/requirements.txt`), the PyTorch eager references of
`benchmarks/torch_models.py` (the Burda VAE, the CD-1 RBM, the toy RealNVP) against the same
genjax configs at batch sizes 20, 100 and 1000, each PyTorch run in a process of its own.
`--compute_dtype` sets `config.compute_dtype` of the per-model measurements (and picks the
known peak for that dtype); the PyTorch comparison always runs float32 on both sides.

Writes --out/benchmark.json (every number) and --out/benchmark.md (the tables it prints).
"""

import json
import os
import subprocess
import sys
import time

import jax
from absl import app, flags

from benchmarks import GENJAX_CONFIGS
from genjax.core.util import write_json_atomic, write_text_atomic
from genjax.train import ConfigError
from genjax.train.config import COMPUTE_DTYPES
from genjax.workbench import benchmark, leaderboard, sweep

ALL_DEVICES = "all"

_MODELS = flags.DEFINE_list(
    "models", None, "Leaderboard run names to measure (default: all), e.g. vae,rbm,realnvp."
)
_DEVICES = flags.DEFINE_list(
    "devices", ["1", ALL_DEVICES], "Device counts to measure on ('all': every device)."
)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0, "On the CPU, split the host into this many devices (0: leave JAX's count)."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Per-device batch (default: each config's own batch_size)."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks per measurement.")
_MIN_BLOCK_SECONDS = flags.DEFINE_float("min_block_seconds", 1.0, "Least duration of a block.")
_PEAK_FLOPS = flags.DEFINE_float(
    "peak_flops",
    None,
    "One device's peak FLOP/s (default: the known-peaks table; on a CPU, a measured float32 "
    "matmul).",
)
_COMPUTE_DTYPE = flags.DEFINE_enum(
    "compute_dtype",
    None,
    COMPUTE_DTYPES,
    "config.compute_dtype of the per-model measurements (default: each config's own, "
    "float32); the PyTorch comparison stays float32.",
)
_PEERS = flags.DEFINE_bool("peers", True, "Compare with the PyTorch references if installed.")
_PEER_BATCH_SIZES = flags.DEFINE_list(
    "peer_batch_sizes", ["20", "100", "1000"], "Batch sizes of the PyTorch comparison."
)
_OUT = flags.DEFINE_string("out", "runs/benchmark", "Directory for benchmark.json and .md.")


class BenchmarkError(ValueError):
    """A bad flag, found before anything is measured."""


def _positive_ints(values, flag: str) -> list[int]:
    try:
        numbers = [int(value) for value in values]
    except ValueError:
        raise BenchmarkError(f"--{flag}={','.join(values)} must be integers") from None
    if not numbers or min(numbers) < 1:
        raise BenchmarkError(f"--{flag}={','.join(values)} must be positive integers")
    return numbers


def device_counts(values) -> list[int]:
    """--devices -> sorted distinct counts, 'all' read as every device JAX sees."""
    available = jax.device_count()
    counts = _positive_ints(
        [str(available) if value == ALL_DEVICES else value for value in values], "devices"
    )
    too_many = [count for count in counts if count > available]
    if too_many:
        raise BenchmarkError(
            f"--devices asks for {too_many[0]} devices; JAX sees {available} "
            f"({jax.devices()[0].platform}). On the CPU, --cpu_devices=N splits the host into N."
        )
    return sorted(set(counts))


def _load(config_arg: str):
    return sweep.load_config_file(leaderboard.absolute_config(config_arg))


def measure_model(name: str, config_arg: str, counts, peak_flops) -> list[dict]:
    """One row per device count: the train step and the input pipeline."""
    config = _load(config_arg)
    per_device = _BATCH_SIZE.value or config.batch_size
    rows = []
    for count in counts:
        experiment = benchmark.build_experiment(
            config, count, per_device * count, _COMPUTE_DTYPE.value
        )
        row = benchmark.measure_train_step(
            experiment, _REPEATS.value, _MIN_BLOCK_SECONDS.value, peak_flops
        )
        row["input_pipeline"] = benchmark.measure_input_pipeline(
            experiment, _REPEATS.value, _MIN_BLOCK_SECONDS.value
        )
        row.update(name=name, config=config_arg)
        rows.append(row)
        print(f"  {name} on {count} device(s): {_step_summary(row)}", flush=True)
    return rows


def _step_summary(row: dict) -> str:
    rates = row["steps_per_sec"]
    return (
        f"{rates['median']:.1f} steps/s (spread {100 * rates['spread']:.0f}%), "
        f"{row['examples_per_sec']:.0f} examples/s, input pipeline "
        f"{row['input_pipeline']['examples_per_sec']:.0f} examples/s"
    )


def measure_peer(name: str, batch_size: int) -> dict | None:
    """The PyTorch reference's steps/s in a process of its own; None without PyTorch."""
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.torch_models",
            f"--model={name}",
            f"--batch_size={batch_size}",
            f"--repeats={_REPEATS.value}",
            f"--min_block_seconds={_MIN_BLOCK_SECONDS.value}",
        ],
        cwd=sweep.REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if process.returncode:
        if "No module named 'torch'" in process.stderr:
            return None
        raise RuntimeError(f"the PyTorch {name} benchmark failed:\n{process.stderr[-2000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def peer_rows(batch_sizes, peak_flops) -> list[dict] | None:
    """genjax and PyTorch steps/s, model by model and batch by batch; None without PyTorch."""
    rows = []
    for name, config_arg in GENJAX_CONFIGS.items():
        config = _load(config_arg)
        for batch_size in batch_sizes:
            theirs = measure_peer(name, batch_size)
            if theirs is None:
                return None
            experiment = benchmark.build_experiment(config, 1, batch_size, "float32")
            ours = benchmark.measure_train_step(
                experiment, _REPEATS.value, _MIN_BLOCK_SECONDS.value, peak_flops
            )
            ratio = ours["steps_per_sec"]["median"] / theirs["steps_per_sec"]["median"]
            rows.append(
                dict(
                    name=name,
                    config=config_arg,
                    batch_size=batch_size,
                    genjax=ours,
                    pytorch=theirs,
                    ratio=ratio,
                )
            )
            print(
                f"  {name} at batch {batch_size}: genjax "
                f"{ours['steps_per_sec']['median']:.1f} steps/s, PyTorch "
                f"{theirs['steps_per_sec']['median']:.1f} steps/s (x{ratio:.2f})",
                flush=True,
            )
    return rows


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def _megabytes(row: dict) -> str:
    compiled = sum(row["compiled_bytes"].values()) / 2**20
    peak = row["peak_bytes_in_use"]
    return f"{compiled:.1f}" + ("" if peak is None else f" / {peak / 2**20:.0f} peak")


def markdown(rows, peers, peak_flops, peak_source: str, header: dict) -> str:
    """The tables: throughput per model and device count, scaling, and genjax vs PyTorch."""
    lines = [
        "# genjax benchmark",
        "",
        f"Device: {header['device_kind']} ({header['platform']}), {header['device_count']} "
        f"device(s), {header['cpu_count']} host CPU cores; jax {header['jax_version']}; "
        f"compute dtype {header['compute_dtype']}. "
        f"Peak per device: {_fmt(peak_flops and peak_flops / 1e9, ',.0f')} GFLOP/s "
        f"({peak_source}). Command: `{header['command']}`",
        "",
        "| model | devices | batch | compile s | steps/s | spread | examples/s | GFLOP/step/device "
        "| GFLOP/s/device | % of peak | compiled MB | pipeline examples/s | pipeline / step |",
        "| --- " + "| ---: " * 12 + "|",
    ]
    for row in rows:
        flops = row["flops_per_step_per_device"]
        achieved = row["achieved_flops_per_device"]
        pipeline = row["input_pipeline"]["examples_per_sec"]
        lines.append(
            f"| {row['name']} | {row['num_devices']} | {row['batch_size']} | "
            f"{row['compile_seconds']:.1f} | {row['steps_per_sec']['median']:.1f} | "
            f"{100 * row['steps_per_sec']['spread']:.0f}% | {row['examples_per_sec']:,.0f} | "
            f"{_fmt(flops and flops / 1e9, '.3f')} | {_fmt(achieved and achieved / 1e9, '.1f')} | "
            f"{_fmt(row['fraction_of_peak'] and 100 * row['fraction_of_peak'], '.1f')} | "
            f"{_megabytes(row)} | {pipeline:,.0f} | {pipeline / row['examples_per_sec']:.1f} |"
        )
    scaling = _scaling(rows)
    if scaling:
        lines += [
            "",
            "Scaling (weak: each device keeps the 1-device batch; efficiency = examples/s on N "
            "devices / (N x examples/s on 1)):",
            "",
            "| model | devices | examples/s | 1-device examples/s | efficiency |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, count, rate, base in scaling:
            lines.append(
                f"| {name} | {count} | {rate:,.0f} | {base:,.0f} | {rate / (count * base):.2f} |"
            )
    if peers is not None:
        lines += [
            "",
            "genjax against PyTorch eager (steps/s, median over blocks; 1 device):",
            "",
            "| model | batch | genjax steps/s | PyTorch steps/s | genjax / PyTorch |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in peers:
            lines.append(
                f"| {row['name']} | {row['batch_size']} | "
                f"{row['genjax']['steps_per_sec']['median']:.1f} | "
                f"{row['pytorch']['steps_per_sec']['median']:.1f} | {row['ratio']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def _scaling(rows):
    base = {row["name"]: row["examples_per_sec"] for row in rows if row["num_devices"] == 1}
    return [
        (row["name"], row["num_devices"], row["examples_per_sec"], base[row["name"]])
        for row in rows
        if row["num_devices"] > 1 and row["name"] in base
    ]


def _peak(platform: str) -> tuple[float | None, str]:
    if _PEAK_FLOPS.value:
        return _PEAK_FLOPS.value, "--peak_flops"
    if platform == "cpu":
        return benchmark.measured_matmul_flops(), "measured: a float32 2048 x 2048 matmul"
    return None, "the known-peaks table, by device kind and compute dtype"


def main(argv):
    del argv
    if _CPU_DEVICES.value:
        jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    try:
        counts = device_counts(_DEVICES.value)
        peer_batch_sizes = _positive_ints(_PEER_BATCH_SIZES.value, "peer_batch_sizes")
        entries = leaderboard.select_entries(leaderboard.entries(), _MODELS.value)
    except (BenchmarkError, sweep.SweepError) as error:
        sys.exit(f"error: {error}")
    device = jax.devices()[0]
    peak_flops, peak_source = _peak(device.platform)
    header = dict(
        command="python -m experiments.benchmark " + " ".join(sys.argv[1:]),
        platform=device.platform,
        device_kind=device.device_kind,
        device_count=jax.device_count(),
        cpu_count=os.cpu_count(),
        jax_version=jax.__version__,
        compute_dtype=_COMPUTE_DTYPE.value or "each config's own",
    )
    start = time.perf_counter()
    rows = []
    try:
        for label, config_arg in entries:
            print(f"{label} ({config_arg}):", flush=True)
            rows += measure_model(leaderboard.run_name(config_arg), config_arg, counts, peak_flops)
        peers = None
        if _PEERS.value:
            print("PyTorch references:", flush=True)
            peers = peer_rows(peer_batch_sizes, peak_flops)
            if peers is None:
                print("  PyTorch is not installed: pip install -r benchmarks/requirements.txt")
    except ConfigError as error:
        sys.exit(f"error: {error}")
    header["seconds"] = time.perf_counter() - start
    table = markdown(rows, peers, peak_flops, peak_source, header)
    os.makedirs(_OUT.value, exist_ok=True)
    results = dict(header, peak_flops=peak_flops, peak_source=peak_source, rows=rows, peers=peers)
    write_json_atomic(os.path.join(_OUT.value, "benchmark.json"), results)
    write_text_atomic(os.path.join(_OUT.value, "benchmark.md"), table)
    print(table)
    print(f"wrote {_OUT.value}/benchmark.json and benchmark.md")


if __name__ == "__main__":
    app.run(main)
