"""Data parallelism: an N-device run equals a 1-device run with the same global batch."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from genjax.train import load_state
from tests.conftest import xla_flags

pytestmark = pytest.mark.slow  # each test starts two training processes

_TRAIN_SCRIPT = textwrap.dedent(
    """
    import importlib
    import sys
    import jax
    from genjax.train import train_and_evaluate

    workdir, num_devices, config_name, variant = sys.argv[1:]
    assert jax.device_count() == int(num_devices), jax.devices()
    config = importlib.import_module(f"configs.{config_name}").get_config(variant)
    config.num_steps = 10
    config.eval_every = 0
    config.checkpoint_every = 5
    config.sample_quality_samples = 0
    if config.model == "gan":  # two real micro-batches per step: the strided split
        config.model_config.critic_steps = 2
    # SGD: the update is linear in the gradient, so the comparison sees the data-parallel
    # reduction itself; Adam's g / sqrt(v) turns round-off in a near-cancelling gradient
    # entry into differences of a fraction of the learning rate.
    config.optimizer = "sgd"
    config.learning_rate = 0.05
    train_and_evaluate(config, workdir)
    """
)


def _train_on(num_devices: int, workdir: str, config_name="vae", variant="tiny") -> None:
    env = dict(
        os.environ, XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={num_devices}")
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(
        [sys.executable, "-c", _TRAIN_SCRIPT, workdir, str(num_devices), config_name, variant],
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


def test_persistent_chains_are_sharded_like_the_batch(tmp_path):
    """PCD on 2 devices: each device advances the chains of its own examples, so the chains
    and parameters equal those of a 1-device run."""
    _train_on(1, str(tmp_path / "one"), "rbm", "pcd,tiny")
    _train_on(2, str(tmp_path / "two"), "rbm", "pcd,tiny")
    one, two = load_state(str(tmp_path / "one")), load_state(str(tmp_path / "two"))
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(two["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    chains_one, chains_two = one["extras"]["chains"], two["extras"]["chains"]
    assert chains_one.shape == chains_two.shape == (20, 64)
    # Binary states drawn by thresholding uniforms at probabilities that agree to ~1e-6: a
    # flipped unit would need a uniform within 1e-6 of its probability.
    np.testing.assert_array_equal(chains_one, chains_two)
    # Had one device's chains been copied to the other, its two halves would be equal.
    assert np.any(chains_two[:10] != chains_two[10:])


def test_gan_with_batch_norm_and_critic_steps_matches_one_device(tmp_path):
    """DCGAN on 2 devices: synchronised batch norm (statistics over the global batch), the
    strided critic micro-batches and the generator average equal those of a 1-device run."""
    _train_on(1, str(tmp_path / "one"), "dcgan", "tiny")
    _train_on(2, str(tmp_path / "two"), "dcgan", "tiny")
    one, two = load_state(str(tmp_path / "one")), load_state(str(tmp_path / "two"))
    for part in ("params", "extras"):
        for a, b in zip(jax.tree.leaves(one[part]), jax.tree.leaves(two[part]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert one["extras"]["generator_stats"]["batch_stats"]
