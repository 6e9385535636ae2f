"""Data parallelism: an N-device run equals a 1-device run with the same global batch."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from genjax.train import load_state

_TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    from configs import vae
    from genjax.train import train_and_evaluate

    workdir, num_devices = sys.argv[1], int(sys.argv[2])
    assert jax.device_count() == num_devices, jax.devices()
    config = vae.get_config("tiny")
    config.num_steps = 10
    config.eval_every = 0
    config.checkpoint_every = 5
    # SGD: the update is linear in the gradient, so the comparison sees the data-parallel
    # reduction itself; Adam's g / sqrt(v) turns round-off in a near-cancelling gradient
    # entry into differences of a fraction of the learning rate.
    config.optimizer = "sgd"
    config.learning_rate = 0.05
    train_and_evaluate(config, workdir)
    """
)


def _train_on(num_devices: int, workdir: str) -> None:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(
        [sys.executable, "-c", _TRAIN_SCRIPT, workdir, str(num_devices)],
        check=True,
        env=env,
        cwd=root,
        timeout=300,
    )


def test_two_devices_match_one_device(tmp_path):
    _train_on(1, str(tmp_path / "one"))
    _train_on(2, str(tmp_path / "two"))
    one, two = load_state(str(tmp_path / "one")), load_state(str(tmp_path / "two"))
    assert one["step"] == two["step"] == 10
    # Float tolerance: the runs differ only in reduction order (one mean over 20 examples vs
    # a pmean of two means over 10). Different keys or a wrong batch split move parameters
    # by ~1e-2 after 10 steps.
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(two["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The runs must have moved: equality of untrained parameters would prove nothing.
    first = load_state(str(tmp_path / "one"), step=5)
    moved = [
        np.abs(a - b).max()
        for a, b in zip(
            jax.tree.leaves(one["params"]), jax.tree.leaves(first["params"]), strict=True
        )
    ]
    assert max(moved) > 1e-3
