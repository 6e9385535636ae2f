"""The PyTorch references of benchmarks/torch_models.py against genjax: the same loss (and its
gradient) on the same parameters and noise, the same optimizer settings as the configs, and a
train step that runs."""

# ruff: noqa: E402 (torch is optional: the imports that need it follow the skip)
import pytest

torch = pytest.importorskip("torch")

import importlib

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import torch_models
from genjax import models
from genjax.data.pipeline import DataSpec
from genjax.flows.flow import Flow
from genjax.models.energy import rbm

MNIST = DataSpec("mnist5k", (28, 28, 1), 4000, 1000, 10, 2, True, (0.0, 1.0))
TOY = DataSpec("toy2d/8gaussians", (2,), 10_000, 10_000, None, None, False, (-10.0, 10.0))
SPECS = {"vae": MNIST, "rbm": MNIST, "realnvp_toy": TOY}
BATCH_SIZE = 16
RTOL = 1e-4


def _genjax_config(name):
    """The genjax config that `name` mirrors (torch_models.GENJAX_CONFIGS)."""
    path, _, variant = torch_models.GENJAX_CONFIGS[name].partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return module.get_config(variant or None)


def _genjax_model_and_params(name, seed=0, scale=0.1):
    """The genjax model of `name`'s config and its initial parameters, each leaf moved by
    N(0, scale^2) noise: zero biases and zero-initialised layers would hide loading errors."""
    model = models.build(_genjax_config(name), SPECS[name])
    example_x = jnp.zeros((2, *SPECS[name].example_shape))
    params, _ = jax.jit(model.init)(jax.random.key(seed), example_x)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda leaf: (leaf + scale * rng.normal(size=leaf.shape)).astype(np.float32), params
    )
    return model, params


def _torch_model(name, params):
    module = torch_models.build_model(name)
    torch_models.load_genjax_params(name, module, params)
    return module


def _binary_batch(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(BATCH_SIZE, 28 * 28)) < 0.3).astype(np.float32)


def _assert_grads_match(name, module, genjax_grads):
    """The .grad of every parameter of `module` equals genjax's gradient (same layout after
    loading it like parameters), to RTOL of the largest entry of each."""
    expected = _torch_model(name, genjax_grads)
    for (path, parameter), reference in zip(
        module.named_parameters(), expected.parameters(), strict=True
    ):
        scale = reference.abs().max().item()
        np.testing.assert_allclose(
            parameter.grad.numpy(),
            reference.detach().numpy(),
            rtol=0,
            atol=RTOL * scale,
            err_msg=path,
        )


def test_vae_elbo_and_gradient_match_genjax():
    model, params = _genjax_model_and_params("vae")
    x = _binary_batch()
    eps = np.random.default_rng(1).normal(size=(1, BATCH_SIZE, 50)).astype(np.float32)
    images = x.reshape(BATCH_SIZE, 28, 28, 1)

    def genjax_loss(p):
        log_w = model.network.apply(p, images, [eps])["log_w"]  # (1, B)
        return -log_w.mean(), log_w[0]

    value_and_grad = jax.jit(jax.value_and_grad(genjax_loss, has_aux=True))
    (_, genjax_log_w), genjax_grads = value_and_grad(params)
    module = _torch_model("vae", params)
    log_w = module.log_weights(torch.from_numpy(x), torch.from_numpy(eps[0]))
    (-log_w.mean()).backward()

    np.testing.assert_allclose(log_w.detach().numpy(), genjax_log_w, rtol=RTOL)
    _assert_grads_match("vae", module, genjax_grads)


def test_rbm_free_energy_and_cd1_gradient_match_genjax():
    _, params = _genjax_model_and_params("rbm")
    v_data, v_model = _binary_batch(0), _binary_batch(1)
    module = _torch_model("rbm", params)

    free_energy = module.free_energy(torch.from_numpy(v_data))
    np.testing.assert_allclose(
        free_energy.detach().numpy(), rbm.free_energy(params, v_data), rtol=RTOL
    )
    # The CD-1 gradient for the same negative samples: the deterministic core of the update.
    genjax_grads = jax.grad(rbm.contrastive_divergence_loss)(params, v_data, v_model)
    module.contrastive_divergence_loss(
        torch.from_numpy(v_data), torch.from_numpy(v_model)
    ).backward()
    _assert_grads_match("rbm", module, genjax_grads)


def test_rbm_negative_samples_are_binary():
    """CD-1 in genjax samples the visible reconstruction; it does not use its probabilities."""
    module = torch_models.build_model("rbm")
    v_model = module.gibbs_step(torch.from_numpy(_binary_batch()))
    assert set(np.unique(v_model.numpy())) <= {0.0, 1.0}


def test_realnvp_toy_log_prob_and_gradient_match_genjax():
    model, params = _genjax_model_and_params("realnvp_toy")
    x = np.random.default_rng(0).normal(size=(BATCH_SIZE, 2)).astype(np.float32)

    def genjax_loss(p):
        log_p = model.flow.apply(p, x, method=Flow.log_prob)  # (B,)
        return -log_p.mean(), log_p

    value_and_grad = jax.jit(jax.value_and_grad(genjax_loss, has_aux=True))
    (_, genjax_log_p), genjax_grads = value_and_grad(params)
    module = _torch_model("realnvp_toy", params)
    log_p = module.log_prob(torch.from_numpy(x))
    (-log_p.mean()).backward()

    np.testing.assert_allclose(log_p.detach().numpy(), genjax_log_p, rtol=RTOL, atol=RTOL)
    _assert_grads_match("realnvp_toy", module, genjax_grads)


@pytest.mark.parametrize("name", torch_models.MODELS)
def test_optimizer_settings_match_the_genjax_config(name):
    config = _genjax_config(name)
    settings = torch_models.OPTIMIZER_SETTINGS[name]
    assert config.optimizer == "adam"
    assert config.weight_decay == 0.0 and config.warmup_steps == 0
    assert settings["lr"] == config.learning_rate
    assert settings["betas"] == (config.adam_b1, config.adam_b2)
    assert settings["eps"] == config.adam_eps
    assert settings["grad_clip_norm"] == (config.grad_clip_norm or None)


@pytest.mark.parametrize("name", torch_models.MODELS)
def test_step_updates_the_parameters(name):
    step, examples_per_step = torch_models.make_step(name, batch_size=4, seed=0)
    before = [p.detach().clone() for p in step.model.parameters()]
    assert step() is None
    assert examples_per_step == 4
    assert all(torch.isfinite(value).all() for value in step.metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, step.model.parameters(), strict=True))
    assert torch_models.time_steps(step, 2) > 0.0
