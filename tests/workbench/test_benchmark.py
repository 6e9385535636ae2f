"""The benchmark's measurements: FLOPs against a hand count, the timing arithmetic, the peak
table, refusals, and the command line end to end."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from genjax.train import ConfigError
from genjax.workbench import benchmark as benchmark_lib

REPO_ROOT = Path(__file__).resolve().parents[2]


class _FakeClock:
    """time.perf_counter for code under test: advanced only by the fake step."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_timed_blocks_reports_each_block_in_steps_per_second(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(benchmark_lib.time, "perf_counter", clock)
    durations = iter([0.5, 0.25] + [0.1] * 3 + [0.2] * 3)  # warm-up, probe, two blocks

    def step():
        clock.now += next(durations)
        return None

    synced = []
    steps, rates = benchmark_lib.timed_blocks(step, 2, 0.7, sync=synced.append, max_in_flight=1)
    # The probe step took 0.25 s: a block of at least 0.7 s takes int(0.7 / 0.25) + 1 = 3.
    assert steps == 3
    assert rates == pytest.approx([3 / 0.3, 3 / 0.6])
    # Warm-up, probe, then per block: the 2 steps with a later one dispatched after them
    # (at most one in flight), and the last one at the block's end.
    assert len(synced) == 2 + 2 * 3
    summary = benchmark_lib.summarize_rates(rates)
    assert summary["median"] == pytest.approx(7.5)
    assert summary["spread"] == pytest.approx((10 - 5) / 7.5)


@pytest.mark.parametrize(
    "kind, dtype, peak",
    [
        ("NVIDIA H100 80GB HBM3", "float32", 67e12),
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("NVIDIA A100-SXM4-40GB", "float32", 19.5e12),
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5 lite", "float32", 197e12),  # a TPU publishes only its bfloat16 rate
        ("TPU v4", "bfloat16", 275e12),
        ("cpu", "float32", None),
    ],
)
def test_known_peaks_by_device_kind(kind, dtype, peak):
    assert benchmark_lib.known_peak_flops(kind, dtype) == peak


@pytest.fixture(scope="module")
def vae_step():
    """The default VAE's train step at batch 20, measured briefly."""
    from configs import vae

    experiment = benchmark_lib.build_experiment(vae.get_config(), 1, 20)
    result = benchmark_lib.measure_train_step(
        experiment, repeats=2, min_block_seconds=0.05, peak_flops=1e12
    )
    return experiment, result


def test_flops_per_step_match_a_count_of_the_matrix_products(vae_step):
    _, result = vae_step
    # 784-200-200-(50 mean, 50 log-variance) and 50-200-200-784: the weights' sizes.
    weights = 784 * 200 + 200 * 200 + 200 * 100 + 50 * 200 + 200 * 200 + 200 * 784
    # Forward 2 B W multiply-adds, backward twice that (input and weight gradients).
    matmul_flops = 3 * 2 * 20 * weights
    flops = result["flops_per_step_per_device"]
    # The rest (tanh, softplus, sampling, Adam over 0.4M parameters) adds a few percent.
    assert matmul_flops <= flops <= 1.15 * matmul_flops, (flops, matmul_flops)
    rate = result["steps_per_sec"]["median"]
    assert result["achieved_flops_per_device"] == pytest.approx(flops * rate)
    assert result["fraction_of_peak"] == pytest.approx(flops * rate / 1e12)
    assert result["examples_per_sec"] == pytest.approx(20 * rate)


def test_the_measured_step_is_the_trainers_and_it_trains(vae_step):
    experiment, result = vae_step
    assert result["model"] == "vae" and result["batch_size"] == 20
    assert result["num_devices"] == 1 and result["compile_seconds"] > 0
    assert result["compiled_bytes"]["arguments"] > 4 * 400_000  # the float32 parameters, at least
    pipeline = benchmark_lib.measure_input_pipeline(experiment, repeats=2, min_block_seconds=0.05)
    assert pipeline["examples_per_sec"] == pytest.approx(20 * pipeline["batches_per_sec"]["median"])


def test_more_devices_than_jax_sees_are_refused_by_name():
    from configs import vae

    with pytest.raises(ConfigError, match=r"num_devices=\d+ must be between 1 and the"):
        benchmark_lib.build_experiment(vae.get_config("tiny"), jax.device_count() + 1)


def test_a_batch_the_devices_cannot_split_is_refused_as_the_trainer_refuses():
    from configs import vae

    with pytest.raises(ConfigError, match=r"config\.batch_size=0"):
        benchmark_lib.build_experiment(vae.get_config("tiny"), 1, batch_size=0)


def test_compute_dtype_is_set_as_the_trainer_checks_it():
    from configs import vae

    experiment = benchmark_lib.build_experiment(vae.get_config("tiny"), compute_dtype="bfloat16")
    assert experiment.config.compute_dtype == "bfloat16"
    with pytest.raises(ConfigError, match=r"config\.compute_dtype='float16'"):
        benchmark_lib.build_experiment(vae.get_config("tiny"), compute_dtype="float16")


def _run_benchmark(*args):
    """`python -m experiments.benchmark args` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_command_line_measures_one_and_two_devices(tmp_path):
    process = _run_benchmark(
        "--models=vae",
        "--cpu_devices=2",
        "--devices=1,2",
        "--batch_size=20",
        "--repeats=2",
        "--min_block_seconds=0.05",
        "--peers=false",
        f"--out={tmp_path}",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads((tmp_path / "benchmark.json").read_text())
    rows = {row["num_devices"]: row for row in results["rows"]}
    assert sorted(rows) == [1, 2]
    assert rows[1]["batch_size"] == 20 and rows[2]["batch_size"] == 40  # weak scaling
    assert results["peak_source"].startswith("measured")
    table = (tmp_path / "benchmark.md").read_text()
    assert "| vae | 2 | 40 |" in table and "efficiency" in table
    assert table in process.stdout


@pytest.mark.slow
def test_command_line_compares_with_pytorch_where_it_is_installed(tmp_path):
    """With PyTorch: a genjax/PyTorch ratio per reference model; without: a note saying how to
    install it, and no comparison. --compute_dtype reaches the per-model rows, not the
    comparison, which is float32 on both sides."""
    process = _run_benchmark(
        "--models=made",
        "--compute_dtype=bfloat16",
        "--devices=1",
        "--repeats=1",
        "--min_block_seconds=0.05",
        "--peer_batch_sizes=20",
        f"--out={tmp_path}",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads((tmp_path / "benchmark.json").read_text())
    assert [row["compute_dtype"] for row in results["rows"]] == ["bfloat16"]
    assert "compute dtype bfloat16" in (tmp_path / "benchmark.md").read_text()
    peers = results["peers"]
    if importlib.util.find_spec("torch") is None:
        assert peers is None
        assert "pip install -r benchmarks/requirements.txt" in process.stdout
        return
    assert [(row["name"], row["batch_size"]) for row in peers] == [
        ("vae", 20),
        ("rbm", 20),
        ("realnvp_toy", 20),
    ]
    for row in peers:
        rates = row["genjax"]["steps_per_sec"]["median"], row["pytorch"]["steps_per_sec"]["median"]
        assert min(rates) > 0 and row["ratio"] == pytest.approx(rates[0] / rates[1])
        assert row["genjax"]["compute_dtype"] == "float32"
    assert "genjax / PyTorch" in (tmp_path / "benchmark.md").read_text()


@pytest.mark.slow
def test_command_line_refuses_more_devices_than_there_are(tmp_path):
    process = _run_benchmark("--devices=1,3", f"--out={tmp_path}")
    assert process.returncode != 0
    assert "--devices asks for 3 devices; JAX sees 1" in process.stderr
    assert "--cpu_devices=N" in process.stderr
    assert not (tmp_path / "benchmark.json").exists()
