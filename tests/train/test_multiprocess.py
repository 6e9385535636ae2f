"""Multi-process runs: two processes on localhost, joined by `jax.distributed` over TCP."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from genjax.train import distributed, load_state, preemption
from genjax.train.checkpoint import checkpoint_dir
from tests.conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One process of a 2-process run of the tiny VAE: trains (resuming), evaluates, and saves the
# parameters it ends with, as this process holds them, to its own file. A run stopped by a
# signal exits with the trainer's preempted status instead.
_WORKER = textwrap.dedent(
    """
    import json
    import sys
    import jax
    import numpy as np
    from genjax.train import Experiment, distributed, final_evaluation, preemption, train

    address, process_id, workdir, out, overrides = sys.argv[1:]
    distributed.initialize(address, 2, int(process_id))
    assert jax.process_count() == 2 and jax.device_count() == 2, jax.devices()
    from configs import vae

    config = vae.get_config("tiny")
    config.checkpoint_every = 4
    config.log_every = 2
    config.eval_every = 0
    config.update(json.loads(overrides))
    experiment = Experiment(config)
    try:
        state = train(experiment, workdir)
    except preemption.Preempted as stopped:
        print(stopped, flush=True)
        sys.exit(preemption.PREEMPTED_EXIT_STATUS)
    final_evaluation(experiment, state, workdir)
    leaves = jax.tree.leaves(jax.device_get(state.params))
    np.savez(out, *leaves)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _start_two_processes(workdir: str, out_dir: str, **overrides) -> list[subprocess.Popen]:
    """Launches both processes of a 2-process run with these config overrides."""
    address = f"localhost:{_free_port()}"
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=1"))
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                address,
                str(i),
                workdir,
                os.path.join(out_dir, f"params_{i}.npz"),
                json.dumps(overrides),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def _finish(processes: list[subprocess.Popen]) -> list[str]:
    """Both processes' output, once they have exited (killed after 300 s)."""
    try:
        return [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()


def _run_two_processes(
    workdir: str, num_steps: int, out_dir: str, **overrides
) -> list[list[np.ndarray]]:
    """Both processes' final parameters, after a 2-process run to `num_steps`."""
    processes = _start_two_processes(workdir, out_dir, num_steps=num_steps, **overrides)
    logs = _finish(processes)
    for i, process in enumerate(processes):
        assert process.returncode == 0, f"process {i} failed:\n{logs[i][-3000:]}"
    params = []
    for i in range(2):
        with np.load(os.path.join(out_dir, f"params_{i}.npz")) as saved:
            params.append([saved[f"arr_{j}"] for j in range(len(saved.files))])
    return params


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _logged_steps(workdir: str) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume(tmp_path):
    workdir = str(tmp_path / "run")
    first = _run_two_processes(workdir, 8, str(tmp_path))
    # Both processes hold identical parameters, and training moved them.
    _assert_same(*first)
    saved = load_state(workdir)
    _assert_same(first[0], _leaves(saved["params"]))
    initial = _leaves(load_state(workdir, step=4)["params"])
    assert max(np.abs(a - b).max() for a, b in zip(first[0], initial, strict=True)) > 0
    # One checkpoint series, written once: steps 4 and 8 in workdir/checkpoints and nowhere
    # else; one log (process 0's), each step once; one eval.json.
    assert sorted(os.listdir(checkpoint_dir(workdir))) == ["4", "8"]
    series = [d for d, subdirs, _ in os.walk(tmp_path) if os.path.basename(d) == "checkpoints"]
    assert series == [checkpoint_dir(workdir)]
    assert _logged_steps(workdir) == [2, 4, 6, 8]
    assert os.path.exists(os.path.join(workdir, "eval.json"))

    # A restart to step 12 resumes from step 8 and ends where an uninterrupted run ends.
    resumed = _run_two_processes(workdir, 12, str(tmp_path))
    _assert_same(*resumed)
    assert _logged_steps(workdir) == [2, 4, 6, 8, 10, 12]
    (tmp_path / "uninterrupted_params").mkdir()
    uninterrupted = _run_two_processes(
        str(tmp_path / "uninterrupted"), 12, str(tmp_path / "uninterrupted_params")
    )
    _assert_same(resumed[0], uninterrupted[0])


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_checkpoint_and_resumes_bitwise(tmp_path):
    """A preemption notice reaches one host: every process saves the same step and exits."""
    workdir = str(tmp_path / "run")
    long = dict(checkpoint_every=100000, log_every=50)
    processes = _start_two_processes(workdir, str(tmp_path), num_steps=600, **long)
    deadline = time.time() + 240
    while not (os.path.exists(os.path.join(workdir, "metrics.jsonl")) and _logged_steps(workdir)):
        assert time.time() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.1)
    processes[1].send_signal(signal.SIGTERM)  # process 1 only
    logs = _finish(processes)
    for i, process in enumerate(processes):
        assert process.returncode == preemption.PREEMPTED_EXIT_STATUS, logs[i][-3000:]
    (step,) = [int(name) for name in os.listdir(checkpoint_dir(workdir))]
    assert 0 < step < 600
    assert f"at step {step}" in logs[0] and f"at step {step}" in logs[1]
    assert "stopped by SIGTERM" in logs[1]
    assert "a signal to another process" in logs[0]
    resumed = _run_two_processes(workdir, 600, str(tmp_path), **long)
    _assert_same(*resumed)
    (tmp_path / "reference").mkdir()
    reference = _run_two_processes(
        str(tmp_path / "reference_run"), 600, str(tmp_path / "reference"), **long
    )
    _assert_same(resumed[0], reference[0])


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def test_settings_come_from_arguments_then_environment(monkeypatch):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(distributed.ENV_PROCESS_ID, raising=False)
    assert distributed.settings() == ("", None, None)  # a single process
    assert distributed.settings("h:1", 4, 3) == ("h:1", 4, 3)
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "env:2")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "1")
    assert distributed.settings() == ("env:2", 2, 1)
    assert distributed.settings(process_id=0) == ("env:2", 2, 0)  # a flag wins


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("h:1", None, None), "missing: --num_processes, --process_id"),
        (("", 2, 0), "missing: --coordinator_address"),
        (("h:1", 0, 0), r"--num_processes=0 must be a positive integer"),
        (("h:1", 2, 2), r"--process_id=2 must be in \[0, --num_processes=2\)"),
    ],
)
def test_incomplete_or_invalid_settings_are_refused_by_name(monkeypatch, arguments, message):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(distributed.ENV_PROCESS_ID, raising=False)
    with pytest.raises(distributed.SettingsError, match=message):
        distributed.settings(*arguments)


def test_a_non_integer_environment_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(distributed.SettingsError, match=r"\$JAX_NUM_PROCESSES='two'"):
        distributed.settings()
