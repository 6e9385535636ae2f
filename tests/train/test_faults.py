"""Fault injection: what clusters and disks do to runs (issue 20), on the tiny VAE.

Signals (`genjax.train.preemption`), the workdir lock (`genjax.train.lock`), corrupt
checkpoints (`genjax.train.checkpoint`) and the one-line errors (`genjax.train.failures`).
One in-process test per guarantee runs in the default suite (SIGTERM, a live lock, a corrupt
checkpoint, a full disk, and the units that need no training); the variants that train again
(SIGINT, a stale lock, strict resume, readers, a changed config) and the launches of
`experiments.train` as a user would make them (a real SIGTERM, a second launch, kill -9, a full
disk; two processes in test_multiprocess.py) are in the slow set.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from genjax.train import failures, load_state, lock, loop, preemption, train_and_evaluate
from genjax.train.checkpoint import (
    CORRUPT_SUBDIR,
    CheckpointMismatchError,
    CorruptCheckpointError,
    checkpoint_dir,
)
from genjax.train.metrics import MetricWriter
from tests import checks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_config(**overrides):
    from configs import vae

    config = vae.get_config("tiny")
    config.eval_every = 0
    config.progress_bar = False
    for name, value in overrides.items():
        config[name] = value
    return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The final state of an uninterrupted 30-step run (checkpoints don't change it)."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    train_and_evaluate(_tiny_config(num_steps=30, checkpoint_every=1000), workdir)
    return load_state(workdir)


def _signal_at_step(monkeypatch, step: int, signum=signal.SIGTERM, times: int = 1):
    """Sends this process `signum` (`times` times) while the loop records `step`."""
    add = loop._MetricBuffer.add

    def add_and_signal(self, current, metrics):
        add(self, current, metrics)
        if current == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)

    monkeypatch.setattr(loop._MetricBuffer, "add", add_and_signal)


def _main_thread_only():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")


# --- preemption ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_a_signal_mid_interval_checkpoints_its_step_and_the_resume_is_bitwise(
    uninterrupted, tmp_path, monkeypatch, signum
):
    _main_thread_only()
    workdir = str(tmp_path)
    config = _tiny_config(num_steps=30, checkpoint_every=1000)  # no periodic checkpoint
    _signal_at_step(monkeypatch, 13, signum)
    with pytest.raises(preemption.Preempted, match=r"at step 13; a checkpoint of step 13"):
        train_and_evaluate(config, workdir)
    assert sorted(os.listdir(checkpoint_dir(workdir))) == ["13"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert json.loads(f.readlines()[-1])["step"] == 13  # the logs are flushed to it
    assert not os.path.exists(os.path.join(workdir, lock.LOCK_FILE))  # released
    assert signal.getsignal(signum) is not None  # handlers restored
    monkeypatch.undo()
    train_and_evaluate(config, workdir)
    checks.assert_trees_equal(load_state(workdir), uninterrupted)


def test_the_first_signal_outside_the_train_loop_and_a_second_one_exit_at_once(monkeypatch):
    exits = []
    monkeypatch.setattr(preemption, "_exit_now", lambda message, status: exits.append(status))
    stop = preemption.StopRequest()
    stop.deferring = True
    stop._handle(signal.SIGTERM, None)
    assert stop.requested and exits == []  # deferred: the loop saves first
    stop._handle(signal.SIGTERM, None)
    assert exits == [128 + signal.SIGTERM]  # a second signal: at once
    evaluating = preemption.StopRequest()  # deferring is False outside the loop
    evaluating._handle(signal.SIGINT, None)
    assert exits == [128 + signal.SIGTERM, preemption.PREEMPTED_EXIT_STATUS]


# --- one run per workdir ------------------------------------------------------------------


def _boot_id():
    return lock._boot_id()


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def _write_lock(workdir, pid, host=None, renewed=None):
    now = time.time()
    record = {
        "host": host or socket.gethostname(),
        "pid": pid,
        "pid_start": lock._process_start(pid),
        "boot_id": _boot_id(),
        "started": now - 100,
        "renewed": now if renewed is None else renewed,
    }
    with open(os.path.join(workdir, lock.LOCK_FILE), "w") as f:
        json.dump(record, f)


def test_a_live_owner_refuses_a_second_run_which_writes_nothing(tmp_path, live_process):
    workdir = str(tmp_path)
    config = _tiny_config(num_steps=10, checkpoint_every=5)
    train_and_evaluate(config, workdir, stop_at_step=5)
    _write_lock(workdir, live_process.pid)
    before = checks.tree_files(workdir)
    config.num_steps = 20
    with pytest.raises(
        lock.WorkdirLockedError, match=rf"in use by another run \(pid {live_process.pid} on"
    ):
        train_and_evaluate(config, workdir)
    assert checks.tree_files(workdir) == before


@pytest.mark.slow  # trains; the default set keeps one test per guarantee
def test_a_lock_whose_process_is_gone_is_taken_over_and_the_run_resumes(tmp_path, capsys):
    workdir = str(tmp_path)
    config = _tiny_config(num_steps=10, checkpoint_every=5)
    train_and_evaluate(config, workdir, stop_at_step=5)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(workdir, dead.pid)
    results = train_and_evaluate(config, workdir)
    assert results["step"] == 10
    assert f"its process {dead.pid} is gone" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(workdir, lock.LOCK_FILE))


def test_another_hosts_lock_is_stale_only_when_it_stops_being_renewed(tmp_path):
    now = time.time()
    owner = {"host": "elsewhere", "pid": 1, "boot_id": "x", "renewed": now - 10}
    assert lock.stale_reason(owner, now) is None
    owner["renewed"] = now - lock.STALE_SECONDS - 1
    assert "not renewed for" in lock.stale_reason(owner, now)


def test_a_held_lock_is_renewed_and_released(tmp_path):
    held = lock.WorkdirLock(str(tmp_path), renew_seconds=0.05)
    held.acquire()
    started = lock.read_owner(str(tmp_path))["renewed"]
    time.sleep(0.3)
    assert lock.read_owner(str(tmp_path))["renewed"] > started
    with pytest.raises(lock.WorkdirLockedError, match="in use by another run"):
        lock.WorkdirLock(str(tmp_path)).acquire()  # even from the same process
    held.release()
    assert lock.read_owner(str(tmp_path)) is None


@pytest.mark.slow  # trains; the default set keeps one test per guarantee
def test_readers_do_not_take_the_lock(tmp_path, live_process):
    from genjax.train import Experiment, restore_state

    workdir = str(tmp_path)
    config = _tiny_config(num_steps=5, checkpoint_every=5)
    train_and_evaluate(config, workdir)
    _write_lock(workdir, live_process.pid)
    before = checks.tree_files(workdir)
    state = restore_state(Experiment(config), workdir)
    assert int(state.step) == 5
    assert checks.tree_files(workdir) == before


# --- checkpoint integrity ------------------------------------------------------------------


def _corrupt_arrays(step_dir: str) -> str:
    """Flips 16 bytes in the middle of the largest array data file of a checkpoint."""
    files = [
        os.path.join(directory, name)
        for directory, _, names in os.walk(os.path.join(step_dir, "state"))
        for name in names
        if os.sep + "d" + os.sep in os.path.join(directory, name) + os.sep
    ]
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
        f.seek(0)
        f.write(data)
    return path


def test_a_corrupt_newest_checkpoint_is_moved_aside_and_the_run_resumes_bitwise(
    uninterrupted, tmp_path, capsys
):
    workdir = str(tmp_path)
    config = _tiny_config(num_steps=30, checkpoint_every=10)
    train_and_evaluate(config, workdir, stop_at_step=20)
    newest = os.path.join(checkpoint_dir(workdir), "20")
    corrupted_file = _corrupt_arrays(newest)
    corrupted = checks.tree_files(newest)
    train_and_evaluate(config, workdir)
    warning = capsys.readouterr().err
    assert f"the checkpoint of step 20 ({newest}) is corrupt" in warning
    aside = os.path.join(workdir, CORRUPT_SUBDIR, "20")
    assert f"Moved to {aside}" in warning
    assert checks.tree_files(aside) == corrupted  # kept as it was, never deleted
    assert os.path.relpath(corrupted_file, newest) in corrupted
    checks.assert_trees_equal(load_state(workdir), uninterrupted)  # resumed from step 10


@pytest.mark.slow  # trains; the default set keeps one test per guarantee
def test_strict_resume_refuses_a_corrupt_checkpoint_and_moves_nothing(tmp_path):
    workdir = str(tmp_path)
    config = _tiny_config(num_steps=30, checkpoint_every=10)
    train_and_evaluate(config, workdir, stop_at_step=20)
    _corrupt_arrays(os.path.join(checkpoint_dir(workdir), "20"))
    before = checks.tree_files(workdir)
    config.strict_resume = True
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint of step 20 \(.*\) is corrupt"):
        train_and_evaluate(config, workdir)
    assert checks.tree_files(workdir) == before


@pytest.mark.slow  # trains; the default set keeps one test per guarantee
def test_readers_refuse_a_corrupt_checkpoint_in_one_line_and_move_nothing(tmp_path):
    from genjax.train import Experiment, restore_state

    workdir = str(tmp_path)
    config = _tiny_config(num_steps=10, checkpoint_every=5)
    train_and_evaluate(config, workdir)
    _corrupt_arrays(os.path.join(checkpoint_dir(workdir), "10"))
    before = checks.tree_files(workdir)
    experiment = Experiment(config)
    with pytest.raises(SystemExit, match=r"^error: the checkpoint of step 10 .* --step=") as exit:
        with failures.reading_checkpoints():
            restore_state(experiment, workdir)
    assert "\n" not in str(exit.value)
    assert int(restore_state(experiment, workdir, step=5).step) == 5
    assert checks.tree_files(workdir) == before


@pytest.mark.slow  # trains; the default set keeps one test per guarantee
def test_a_checkpoint_of_another_shape_is_a_config_error_not_corruption(tmp_path):
    workdir = str(tmp_path)
    train_and_evaluate(_tiny_config(num_steps=10, checkpoint_every=5), workdir, stop_at_step=5)
    before = checks.tree_files(workdir)
    changed = _tiny_config(num_steps=10, checkpoint_every=5, optimizer="sgd")
    with pytest.raises(CheckpointMismatchError, match=r"step 5 .* holds a different state"):
        train_and_evaluate(changed, workdir)
    assert checks.tree_files(workdir) == before


# --- errors a person reads -------------------------------------------------------------------


def test_a_full_disk_is_one_line_naming_the_file_and_the_checkpoint_to_resume_from(
    tmp_path, monkeypatch
):
    workdir = str(tmp_path)
    config = _tiny_config(num_steps=20, checkpoint_every=5, log_every=1)
    write = MetricWriter.write

    def write_until_full(self, step, metrics):
        if step == 8:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        write(self, step, metrics)

    monkeypatch.setattr(MetricWriter, "write", write_until_full)
    with pytest.raises(OSError) as raised:
        train_and_evaluate(config, workdir)
    line = failures.error_line(raised.value, workdir)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    assert line.startswith(f"error: no space left on the device writing {metrics_path}.")
    assert "resume from the newest checkpoint (step 5)" in line
    assert "\n" not in line
    with open(os.path.join(workdir, failures.ERROR_LOG)) as f:
        assert "Traceback" in f.read()


def test_orbax_full_disk_messages_name_the_file():
    message = (
        'RESOURCE_EXHAUSTED: Error writing "params/0" in OCDBT database at local file "/r/c/": '
        'Failed writing: "/r/c/30.orbax-checkpoint-tmp/d/ab": Failed to write 1863 bytes to '
        "file 7: No space left on device [os_error_code='28']"
    )
    try:
        try:
            raise ValueError(message)
        except ValueError:
            raise OSError(errno.ENOSPC, "No space left on device") from None
    except OSError as error:
        chained = error
    chained.__context__ = ValueError(message)
    assert "writing /r/c/30.orbax-checkpoint-tmp/d/ab." in failures.describe(chained, "/r")


def test_divergence_is_one_line_naming_the_step_and_what_to_do(tmp_path):
    error = loop.TrainingDivergedError("train/loss=nan at step 7; stopped.")
    line = failures.describe(error, str(tmp_path))
    assert "train/loss=nan at step 7" in line and "config.learning_rate" in line
    assert failures.describe(KeyError("a bug"), str(tmp_path)) is None  # bugs keep tracebacks


def test_noise_tracebacks_go_to_the_log_and_others_pass_through(tmp_path):
    class Stream:
        text = ""

        def write(self, text):
            self.text += text

    stream, log = Stream(), str(tmp_path / "error.log")
    wrapped = failures._NoiseToFile(stream, log)
    noise = 'Traceback (most recent call last):\n  File "x"\nRuntimeError: Event loop is closed\n'
    for piece in noise.splitlines(keepends=True):
        wrapped.write(piece)
    wrapped.write("progress 10%\r")
    real = 'Traceback (most recent call last):\n  File "y"\nKeyError: 1\n'
    wrapped.write(real)
    assert stream.text == "progress 10%\r" + real
    with open(log) as f:
        assert f.read() == noise


def test_a_torn_last_log_line_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "a": 1}\n{"step": 10, "a": 2}\n{"step": 15, "a"')
    writer = MetricWriter(str(tmp_path), start_step=15)
    writer.write(20, {"a": 3})
    writer.close()
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == [5, 10, 20]


# --- as a user launches it (slow) --------------------------------------------------------------


def _launch(workdir, *flags, **popen):
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=configs/vae.py:tiny",
        f"--workdir={workdir}",
        "--config.eval_every=0",
        "--config.progress_bar=False",
        *flags,
    ]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def _wait_for_step(workdir, step, process, timeout=120):
    """Waits until the run has logged `step` (or later)."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        if os.path.exists(path):
            with open(path) as f:
                lines = [line for line in f if line.endswith("\n")]
            if lines and json.loads(lines[-1])["step"] >= step:
                return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not logged in {timeout} s")


_LONG = ("--config.num_steps=4000", "--config.checkpoint_every=100000", "--config.log_every=50")


@pytest.mark.slow
def test_sigterm_to_the_command_saves_exits_75_and_the_resume_is_bitwise(tmp_path):
    workdir = str(tmp_path / "run")
    process = _launch(workdir, *_LONG)
    _wait_for_step(workdir, 200, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == preemption.PREEMPTED_EXIT_STATUS, err
    (step,) = [int(name) for name in os.listdir(checkpoint_dir(workdir))]
    assert 200 <= step < 4000
    assert f"stopped by SIGTERM at step {step}" in err
    resumed = _launch(workdir, *_LONG)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    reference_dir = str(tmp_path / "reference")
    reference = _launch(reference_dir, *_LONG)
    assert reference.wait(timeout=300) == 0, reference.communicate()
    checks.assert_trees_equal(load_state(workdir), load_state(reference_dir))


@pytest.mark.slow
def test_a_second_launch_is_refused_and_after_kill_9_a_relaunch_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    first = _launch(workdir, "--config.num_steps=100000", "--config.checkpoint_every=500")
    _wait_for_step(workdir, 600, first)
    second = _launch(workdir, "--config.num_steps=100000")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: --workdir=")
    assert f"in use by another run (pid {first.pid} on {socket.gethostname()}" in err
    assert "Traceback" not in err
    first.kill()  # kill -9: no cleanup, the lock stays behind
    first.wait()
    assert lock.read_owner(workdir)["pid"] == first.pid
    saved = max(int(name) for name in os.listdir(checkpoint_dir(workdir)))
    relaunch = _launch(workdir, f"--config.num_steps={saved + 10}")
    out, err = relaunch.communicate(timeout=300)
    assert relaunch.returncode == 0, err
    assert f"its process {first.pid} is gone" in err
    assert load_state(workdir)["step"] == saved + 10


@pytest.mark.slow
def test_divergence_on_the_command_line_is_one_error_line(tmp_path):
    workdir = str(tmp_path / "run")
    process = _launch(workdir, "--config.learning_rate=1e6")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("error: training diverged: ") and "at step" in err
    assert "error.log" in err


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 400 KiB tmpfs (root only): a real full disk."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_full_disk_on_the_command_line_is_one_error_line_and_loses_nothing(tiny_filesystem):
    workdir = str(tiny_filesystem / "run")
    flags = ("--config.num_steps=200", "--config.checkpoint_every=10")
    process = _launch(workdir, *flags)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert err.strip().splitlines() == [err.strip()], err  # no tracebacks, no orbax noise
    assert err.startswith("error: no space left on the device writing ")
    saved = max(int(name) for name in os.listdir(checkpoint_dir(workdir)) if name.isdigit())
    assert f"resume from the newest checkpoint (step {saved})" in err
    subprocess.run(["mount", "-o", "remount,size=50m", str(tiny_filesystem)], check=True)
    resumed = _launch(workdir, *flags)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert load_state(workdir)["step"] == 200


@pytest.mark.slow
def test_a_corrupt_checkpoint_under_strict_resume_is_one_error_line(tmp_path):
    workdir = str(tmp_path / "run")
    first = _launch(workdir, "--config.num_steps=20", "--config.checkpoint_every=10")
    assert first.wait(timeout=300) == 0, first.communicate()
    newest = os.path.join(checkpoint_dir(workdir), "20")
    _corrupt_arrays(newest)
    process = _launch(workdir, "--config.num_steps=30", "--config.strict_resume=True")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    assert err.strip().splitlines() == [err.strip()], err
    assert err.startswith(f"error: the checkpoint of step 20 ({newest}) is corrupt: ")
    assert "Strict resume (config.strict_resume=True) stops here" in err
    assert os.path.isdir(newest)
