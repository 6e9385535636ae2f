"""The VAE/IWAE family against an independent NumPy implementation of its log weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from configs import vae as vae_configs
from genjax.core.state import TrainState
from genjax.data.pipeline import DataSpec
from genjax.models.vae import VAE
from genjax.objectives import gaussian_kl

SPEC = DataSpec("test", (3, 4, 1), 10, 10, None, 2, True, (0.0, 1.0))


def _model(hidden_sizes=((5, 4),), latent_sizes=(3,), spec=SPEC, **overrides):
    config = vae_configs.get_config("tiny")
    config.model_config.hidden_sizes = hidden_sizes
    config.model_config.latent_sizes = latent_sizes
    for name, value in overrides.items():
        config.model_config[name] = value
    return VAE(config, spec)


def _np_mlp(params, h):
    """tanh MLP from Flax Dense params {'Dense_0': ..., 'Dense_n': ...} (last layer linear)."""
    names = sorted(params, key=lambda name: int(name.split("_")[1]))
    for i, name in enumerate(names):
        h = h @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"])
        if i < len(names) - 1:
            h = np.tanh(h)
    return h


def _np_gaussian(params, h):
    out = _np_mlp(params["MLP_0"], h)
    return np.split(out, 2, axis=-1)


def _np_log_normal(z, mean, log_var):
    return np.sum(-0.5 * (np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var)), -1)


def _np_log_weights(params, x, noise):
    """log p(x, z) - log q(z | x) for the MLP VAE, written independently in NumPy (float64).

    x: (B, D) binary; noise: per layer (K, B, U_l).
    """
    p = params["params"]
    mean, log_var = _np_gaussian(p["data_encoder"], x)
    samples, log_q = [], 0.0
    for layer, eps in enumerate(noise):
        if layer > 0:
            mean, log_var = _np_gaussian(p[f"latent_encoders_{layer - 1}"], samples[-1])
        z = mean + np.exp(0.5 * log_var) * eps
        log_q = log_q + _np_log_normal(z, mean, log_var)
        samples.append(z)
    top = samples[-1]
    log_prior = _np_log_normal(top, 0.0, 0.0)
    for layer in range(len(samples) - 1, 0, -1):
        mean, log_var = _np_gaussian(p[f"latent_decoders_{layer - 1}"], samples[layer])
        log_prior = log_prior + _np_log_normal(samples[layer - 1], mean, log_var)
    logits = _np_mlp(p["data_decoder"], samples[0])  # (K, B, D)
    log_px = np.sum(x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits), -1)
    return log_px + log_prior - log_q


@pytest.mark.parametrize(
    "hidden_sizes, latent_sizes", [(((5, 4),), (3,)), (((5, 4), (3,)), (4, 2))]
)
def test_log_weights_match_numpy_reference(hidden_sizes, latent_sizes):
    model = _model(hidden_sizes, latent_sizes)
    x = (np.random.default_rng(0).uniform(size=(2, 3, 4, 1)) > 0.5).astype(np.float32)
    params, _ = model.init(jax.random.key(0), x)
    keys = jax.random.split(jax.random.key(1), 2)
    num_samples = 7
    log_w = model.log_weights(params, x, keys, num_samples)["log_w"]
    noise = [np.asarray(eps, np.float64) for eps in model._noise(keys, num_samples)]
    reference = _np_log_weights(params, x.reshape(2, -1).astype(np.float64), noise)
    assert log_w.shape == (num_samples, 2)
    np.testing.assert_allclose(log_w, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_each_example_uses_only_its_own_key():
    """Per-example noise: an example's weights do not depend on what else is in the batch."""
    model = _model()
    x = (np.random.default_rng(0).uniform(size=(3, 3, 4, 1)) > 0.5).astype(np.float32)
    params, _ = model.init(jax.random.key(0), x)
    keys = jax.random.split(jax.random.key(1), 3)
    together = model.log_weights(params, x, keys, 4)["log_w"]
    alone = model.log_weights(params, x[1:2], keys[1:2], 4)["log_w"]
    np.testing.assert_allclose(together[:, 1:2], alone, rtol=1e-6)


def _loss(model, params, x, keys):
    batch = {"x": x, "log_det": np.zeros((x.shape[0],), np.float32)}
    return float(model.loss(params, {}, batch, keys)[0])


def test_objectives_follow_their_definitions():
    x = (np.random.default_rng(0).uniform(size=(4, 3, 4, 1)) > 0.5).astype(np.float32)
    keys = jax.random.split(jax.random.key(1), 4)
    iwae = _model(num_importance_samples=6, objective="iwae")
    params, _ = iwae.init(jax.random.key(0), x)
    log_w = np.asarray(iwae.log_weights(params, x, keys, 6)["log_w"], np.float64)
    expected_iwae = -np.mean(logsumexp(log_w, axis=0) - np.log(6))
    np.testing.assert_allclose(_loss(iwae, params, x, keys), expected_iwae, rtol=1e-5)
    elbo = _model(num_importance_samples=6, objective="elbo", analytic_kl=False)
    np.testing.assert_allclose(_loss(elbo, params, x, keys), -np.mean(log_w), rtol=1e-5)
    assert _loss(iwae, params, x, keys) <= _loss(elbo, params, x, keys)


def test_analytic_kl_is_the_expectation_of_the_sampled_kl_term():
    """E_q[log q(z|x) - log p(z)] = KL(q || p): the closed form the 'analytic_kl' ELBO uses."""
    x = (np.random.default_rng(0).uniform(size=(2, 3, 4, 1)) > 0.5).astype(np.float32)
    model = _model(num_importance_samples=1, analytic_kl=True)
    params, _ = model.init(jax.random.key(0), x)
    num_draws = 20_000
    outputs = model.log_weights(params, x, jax.random.split(jax.random.key(2), 2), num_draws)
    sampled_kl = -np.asarray(outputs["log_w"] - outputs["log_px"], np.float64)  # (K, B)
    mean, log_var = outputs["first_layer"]
    analytic_kl = np.asarray(gaussian_kl(mean, log_var))  # (B,)
    stderr = sampled_kl.std(axis=0) / np.sqrt(num_draws)
    assert np.all(np.abs(sampled_kl.mean(axis=0) - analytic_kl) < 5 * stderr + 1e-4)
    assert model.use_analytic_kl
    loss = _loss(model, params, x, jax.random.split(jax.random.key(2), 2))
    one_draw = model.log_weights(params, x, jax.random.split(jax.random.key(2), 2), 1)
    expected = -np.mean(np.asarray(one_draw["log_px"])[0] - analytic_kl)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.slow
def test_final_eval_and_sampling_shapes():
    model = _model(hidden_sizes=((5, 4), (3,)), latent_sizes=(4, 2))
    x = (np.random.default_rng(0).uniform(size=(3, 3, 4, 1)) > 0.5).astype(np.float32)
    params, _ = model.init(jax.random.key(0), x)
    state = TrainState.create(params, model.tx, jax.random.key(0))
    batch = {"x": x, "log_det": np.zeros(3, np.float32)}
    outputs = model.eval_step(state, batch, jax.random.split(jax.random.key(1), 3), final=True)
    assert outputs["log_likelihood"].shape == (3,)
    assert outputs["posterior_mean_0"].shape == (3, 4)
    assert outputs["posterior_mean_1"].shape == (3, 2)
    assert np.all(outputs["log_likelihood"] >= outputs["elbo"])  # IWAE-k >= ELBO, same draws
    summary = model.summarize(jax.device_get(outputs), final=True, constants={})
    assert summary["nll_estimator"] == "iwae-64" and len(summary["active_units_per_layer"]) == 2
    samples = model.sample(state, jax.random.key(2), 5)
    assert samples.shape == (5, 3, 4, 1)
    assert np.all((samples >= 0) & (samples <= 1))


@pytest.mark.slow
def test_conv_architecture():
    spec = DataSpec("test", (8, 8, 1), 10, 10, None, 2, True, (0.0, 1.0))
    model = _model(hidden_sizes=((16,),), latent_sizes=(3,), spec=spec, architecture="conv")
    x = (np.random.default_rng(0).uniform(size=(2, 8, 8, 1)) > 0.5).astype(np.float32)
    params, _ = model.init(jax.random.key(0), x)
    log_w = model.log_weights(params, x, jax.random.split(jax.random.key(1), 2), 3)["log_w"]
    assert log_w.shape == (3, 2) and np.all(np.isfinite(log_w))
    assert model.sample(
        TrainState.create(params, model.tx, jax.random.key(0)), jax.random.key(2), 4
    ).shape == (4, 8, 8, 1)
    odd = DataSpec("test", (6, 6, 1), 10, 10, None, 2, True, (0.0, 1.0))
    with pytest.raises(ValueError, match="multiples of 4"):
        _model(spec=odd, architecture="conv")


def test_bernoulli_likelihood_needs_binary_data():
    continuous = DataSpec("test", (2,), 10, 10, None, None, False, (0.0, 1.0))
    with pytest.raises(ValueError, match="config.preprocess.binarize"):
        _model(spec=continuous)
    gaussian = _model(spec=continuous, likelihood="gaussian")
    params, _ = gaussian.init(jax.random.key(0), jnp.zeros((1, 2)))
    log_w = gaussian.log_weights(
        params, jnp.ones((1, 2)), jax.random.split(jax.random.key(1), 1), 2
    )
    assert np.all(np.isfinite(log_w["log_w"]))
