"""Optimizers built from the config: weight decay reaches every optimizer."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genjax.core.optim import OPTIMIZERS, make_optimizer
from genjax.train import ConfigError, base_config, validate


@pytest.mark.parametrize("optimizer", [name for name in OPTIMIZERS if name != "adamw"])
def test_weight_decay_is_an_l2_gradient(optimizer):
    """With a zero loss gradient the update is the optimizer's step on weight_decay * params."""
    config = base_config()
    config.optimizer, config.learning_rate, config.weight_decay = optimizer, 0.1, 0.5
    params = {"w": jnp.array([2.0, -4.0])}
    tx = make_optimizer(config)
    updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
    config.weight_decay = 0.0
    plain = make_optimizer(config)
    expected, _ = plain.update({"w": 0.5 * params["w"]}, plain.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)
    assert np.all(np.sign(updates["w"]) == -np.sign(params["w"]))  # towards zero


def test_adamw_decay_is_decoupled():
    config = base_config()
    config.optimizer, config.learning_rate, config.weight_decay = "adamw", 0.1, 0.5
    params = {"w": jnp.array([2.0, -4.0])}
    tx = make_optimizer(config)
    updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
    # Adam's step on a zero gradient is 0; only the decoupled decay -lr * wd * w remains.
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * params["w"], rtol=1e-6)
    assert isinstance(tx, optax.GradientTransformation)


def test_negative_weight_decay_is_refused(tmp_path):
    from configs import vae

    config = vae.get_config("tiny")
    config.weight_decay = -1e-4
    with pytest.raises(ConfigError, match=r"config.weight_decay=-0.0001 must be non-negative"):
        validate(config, str(tmp_path))


def test_an_explicit_learning_rate_replaces_the_configs():
    """A GAN's discriminator: the same optimizer at its own rate (SGD: update = -rate * grad)."""
    config = base_config()
    config.optimizer, config.learning_rate = "sgd", 0.1
    params, grads = {"w": jnp.array([2.0, -4.0])}, {"w": jnp.array([1.0, 3.0])}
    for rate, tx in ((0.1, make_optimizer(config)), (0.02, make_optimizer(config, 0.02))):
        updates, _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], -rate * grads["w"], rtol=1e-6)


def test_rmsprop_normalises_by_the_running_second_moment():
    config = base_config()
    config.optimizer, config.learning_rate, config.rmsprop_decay = "rmsprop", 0.1, 0.99
    params, grads = {"w": jnp.array([2.0, -4.0])}, {"w": jnp.array([1.0, 3.0])}
    tx = make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    # nu = (1 - 0.99) g^2 after one step; update = -lr g / (sqrt(nu) + eps).
    expected = -0.1 * grads["w"] / (np.sqrt(0.01 * grads["w"] ** 2) + 1e-8)
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)


def _torch_rmsprop(params, grads_per_step, lr, alpha, eps):
    """PyTorch's RMSprop algorithm (torch.optim.RMSprop docs, no momentum, not centred),
    transcribed in float64: v = 0; each step v = alpha v + (1 - alpha) g^2 and
    param -= lr g / (sqrt(v) + eps). Returns the parameters after each step."""
    params, v, history = np.array(params, np.float64), np.zeros(len(params)), []
    for grad in grads_per_step:
        v = alpha * v + (1.0 - alpha) * grad**2
        params = params - lr * grad / (np.sqrt(v) + eps)
        history.append(params)
    return history


def test_wgan_rmsprop_matches_pytorch_on_a_clipped_critics_small_gradients():
    """configs/gan.py:wgan's optimizer is the PyTorch RMSprop of Arjovsky et al.'s code
    (lr 5e-5, alpha 0.99, eps 1e-8): eps is added to sqrt(v), not inside it, which matters
    for the ~1e-6 gradients of a critic clipped at 0.01 (inside the root the updates were
    100-1000 times smaller)."""
    from configs import gan

    config = gan.get_config("wgan")
    assert (config.learning_rate, config.rmsprop_decay, config.adam_eps) == (5e-5, 0.99, 1e-8)
    rng = np.random.default_rng(0)
    grads_per_step = 1e-6 * rng.standard_normal((8, 3))
    params = np.array([0.01, -0.005, 0.002])
    tx = make_optimizer(config)
    state, current = tx.init({"w": jnp.asarray(params)}), {"w": jnp.asarray(params)}
    expected = _torch_rmsprop(params, grads_per_step, lr=5e-5, alpha=0.99, eps=1e-8)
    for grad, want in zip(grads_per_step, expected, strict=True):
        updates, state = tx.update({"w": jnp.asarray(grad, jnp.float32)}, state, current)
        current = optax.apply_updates(current, updates)
        # Relative to the size of the moves (~5e-4 over 8 steps), float32 round-off aside.
        np.testing.assert_allclose(current["w"] - params, want - params, rtol=1e-4, atol=1e-9)
