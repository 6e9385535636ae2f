"""Flow posteriors for the VAE family: the default path unchanged, log q(z_K | x) against the
Jacobian of the flow map, gradients and amortisation, end-to-end runs and config errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vae as vae_configs
from configs import vae_flow as vae_flow_configs
from genjax import objectives
from genjax.data.pipeline import DataSpec
from genjax.models.vae import FLOW_DEFAULTS, VAE, VAENetwork
from genjax.train import ConfigError, load_config, train_and_evaluate, validate

SPEC = DataSpec("test", (3, 4, 1), 10, 10, None, 2, True, (0.0, 1.0))
FLOWS = ("planar", "iaf")


def _model(posterior_flow="none", hidden_sizes=((5, 4),), latent_sizes=(3,), **overrides):
    """A tiny VAE on 3x4 binary images; `overrides` set other model_config fields."""
    config = vae_configs.get_config("tiny")
    mc = config.model_config
    mc.hidden_sizes, mc.latent_sizes, mc.posterior_flow = hidden_sizes, latent_sizes, posterior_flow
    mc.posterior_flow_layers, mc.posterior_flow_hidden, mc.context_size = 3, 8, 4
    for name, value in overrides.items():
        mc[name] = value
    return VAE(config, SPEC)


def _binary_images(seed, batch_size):
    return (np.random.default_rng(seed).uniform(size=(batch_size, 3, 4, 1)) > 0.5).astype(
        np.float32
    )


def _randomise_flow(params, key, scale=0.5):
    """Every flow parameter ~ N(0, scale^2): a generic flow (a new IAF is the identity)."""
    leaves, treedef = jax.tree.flatten(params["params"]["flow"])
    keys = jax.random.split(key, len(leaves))
    flow = [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return {"params": {**params["params"], "flow": jax.tree.unflatten(treedef, flow)}}


def _flow_map(network, params, z0, context):
    """The composed flow z_0 (U,) -> z_K (U,) of one example with context h (C,)."""

    def apply_flow(module, z, h):
        return module.flow(z, context=h)

    return network.apply(params, z0[None], context[None], method=apply_flow)[0][0]


def _pre_flow_log_weights(module, x, noise):
    """The log weights exactly as VAENetwork computed them before flow posteriors existed
    (genjax/models/vae.py at commit 81592d6): the reference for the default path."""
    mean, log_var = module.data_encoder(x.reshape((x.shape[0], -1)))
    samples, log_q = [], 0.0
    for layer, eps in enumerate(noise):
        if layer > 0:
            mean, log_var = module.latent_encoders[layer - 1](samples[-1])
        z = mean + jnp.exp(0.5 * log_var) * eps
        log_q = log_q + objectives.gaussian_log_prob(z, mean, log_var, event_ndims=1)
        samples.append(z)
    return module.log_likelihood(x, samples[0]) + module.log_prior(samples) - log_q


@pytest.mark.parametrize(
    "hidden_sizes, latent_sizes",
    [
        (((5, 4),), (3,)),
        # The two-stochastic-layer case: 15 s, in the slow set to keep the default suite
        # under 10 minutes.
        pytest.param(((5, 4), (3,)), (4, 2), marks=pytest.mark.slow),
    ],
)
def test_without_a_flow_the_log_weights_are_bitwise_unchanged(hidden_sizes, latent_sizes, tmp_path):
    model = _model("none", hidden_sizes, latent_sizes)
    x = _binary_images(0, 3)
    params, _ = model.init(jax.random.key(0), x)
    assert set(params["params"]) <= {"data_encoder", "data_decoder"} | {
        f"latent_{kind}_{layer}" for kind in ("encoders", "decoders") for layer in range(2)
    }
    assert set(params["params"]["data_encoder"]) == {"MLP_0"}  # no context head
    keys = jax.random.split(jax.random.key(1), 3)
    log_w = model.log_weights(params, x, keys, 5)["log_w"]
    noise = model._noise(keys, 5)
    reference = model.network.apply(params, x, noise, method=_pre_flow_log_weights)
    np.testing.assert_array_equal(log_w, reference)
    # A config saved before the flow fields existed loads as, and builds, the same model.
    config = vae_configs.get_config("tiny")
    saved = json.loads(config.to_json())
    for field in FLOW_DEFAULTS:
        del saved["model_config"][field]
    saved["model_config"].update(hidden_sizes=hidden_sizes, latent_sizes=latent_sizes)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = VAE(load_config(str(tmp_path)), SPEC)
    np.testing.assert_array_equal(old.log_weights(params, x, keys, 5)["log_w"], log_w)


def test_flow_defaults_are_the_config_defaults():
    mc = vae_configs.vae_model_config()
    assert {field: mc[field] for field in FLOW_DEFAULTS} == FLOW_DEFAULTS


@pytest.mark.parametrize("flow", FLOWS)
def test_log_q_is_the_base_density_minus_the_log_det_of_the_flow_jacobian(flow):
    model = _model(flow)
    x = _binary_images(0, 3)
    params, _ = model.init(jax.random.key(0), x)
    params = _randomise_flow(params, jax.random.key(5))
    keys = jax.random.split(jax.random.key(1), 3)
    noise = model._noise(keys, 2)  # [(K=2, B=3, U=3)]
    network = model.network
    samples, log_q, (mean, log_var), _ = network.apply(
        params, x, noise, method=VAENetwork.posterior
    )
    _, _, context = network.apply(params, x, method=VAENetwork.encode_data)  # (B, C)
    assert context.shape == (3, 4)
    z0 = np.asarray(mean + np.exp(0.5 * log_var) * noise[0], np.float64)  # (K, B, U)
    log_base = np.sum(
        -0.5 * (np.log(2 * np.pi) + log_var + (z0 - mean) ** 2 / np.exp(log_var)), axis=-1
    )
    # Each draw through the flow alone, one example at a time: (K * B, U), (K * B, C).
    z0_each = jnp.asarray(z0.reshape(6, 3), jnp.float32)
    context_each = jnp.tile(context, (2, 1))  # row k * B + b is h_b
    flow_map = jax.jit(jax.vmap(lambda z, h: _flow_map(network, params, z, h)))
    jacobians = jax.jit(jax.vmap(jax.jacfwd(lambda z, h: _flow_map(network, params, z, h))))
    np.testing.assert_allclose(
        samples[0].reshape(6, 3), flow_map(z0_each, context_each), rtol=1e-5, atol=1e-6
    )
    sign, log_abs_det = np.linalg.slogdet(
        np.asarray(jacobians(z0_each, context_each), np.float64)
    )  # (K * B,)
    assert np.all(sign > 0)  # orientation-preserving bijections
    np.testing.assert_allclose(log_q, log_base - log_abs_det.reshape(2, 3), rtol=1e-5, atol=1e-5)
    # The importance weights use z_K and this log q.
    log_w = model.log_weights(params, x, keys, 2)["log_w"]
    log_joint = network.apply(
        params, x, samples[0], method=VAENetwork.log_likelihood
    ) + network.apply(params, samples, method=VAENetwork.log_prior)
    np.testing.assert_allclose(log_w, log_joint - log_q, rtol=1e-6, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("flow", FLOWS)
def test_the_elbo_trains_the_flow_and_the_context_amortises_it(flow):
    model = _model(flow, num_importance_samples=2, objective="elbo")
    x = _binary_images(0, 4)
    params, _ = model.init(jax.random.key(0), x)
    batch = {"x": x, "log_det": np.zeros(4, np.float32)}
    keys = jax.random.split(jax.random.key(1), 4)

    gradients = jax.jit(jax.grad(lambda p: model.loss(p, {}, batch, keys)[0]))

    def flow_gradients(params):
        return gradients(params)["params"]["flow"]

    # At initialisation every layer gets a gradient (an IAF's inner layers only once its
    # zero-initialised output layer has moved); with generic parameters, every parameter does.
    for layer in flow_gradients(params).values():
        assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(layer))
    params = _randomise_flow(params, jax.random.key(5))
    grads = gradients(params)["params"]
    assert np.any(np.asarray(grads["data_encoder"]["context"]["kernel"]) != 0)  # h is trained
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads["flow"]):
        assert np.any(np.asarray(leaf) != 0), jax.tree_util.keystr(path)
    _, _, context = model.network.apply(params, x, method=VAENetwork.encode_data)
    z0 = jnp.asarray([0.3, -0.2, 0.5])
    z_a, z_b = (_flow_map(model.network, params, z0, context[b]) for b in (0, 1))
    assert not np.allclose(z_a, z_b, atol=1e-4)  # two inputs, two flow maps


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["tiny", "iaf,tiny"])
def test_tiny_flow_configs_train_end_to_end(variant, tmp_path):
    config = vae_flow_configs.get_config(variant)
    config.num_steps, config.eval_every, config.checkpoint_every = 10, 0, 10  # final eval only
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "eval.json")) as f:
        results = json.load(f)
    assert results["nll_estimator"] == f"iwae-{config.model_config.eval_importance_samples}"
    assert np.isfinite(results["test_nll_nats"])
    assert -results["test_elbo"] >= results["test_nll_nats"] - 1e-3  # IWAE-64 >= ELBO


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(hidden_sizes=((8,), (4,)), latent_sizes=(4, 2)),
            r"posterior_flow='planar' needs exactly one stochastic layer \(the flow acts on z_1\)",
        ),
        (dict(analytic_kl=True), r"analytic_kl=True is not allowed with .*posterior_flow="),
        (
            dict(posterior_flow="radial"),
            r"posterior_flow='radial'; allowed: \('none', 'planar', 'iaf'\)",
        ),
        (dict(context_size=0), r"config.model_config.context_size=0 must be a positive"),
    ],
)
def test_bad_flow_configs_are_config_errors(overrides, message):
    config = vae_flow_configs.get_config("tiny")
    config.model_config.update(overrides)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_runs_saved_before_the_flow_fields_can_still_be_resumed(tmp_path):
    """An old workdir's config.json lacks the flow fields: they read as their defaults."""
    import json as json_lib

    from configs import vae as vae_configs
    from genjax.models.vae import FLOW_DEFAULTS
    from genjax.train import ConfigError, validate

    config = vae_configs.get_config("tiny")
    saved = json_lib.loads(config.to_json())
    for field in FLOW_DEFAULTS:
        del saved["model_config"][field]
    (tmp_path / "config.json").write_text(json_lib.dumps(saved))
    validate(config, str(tmp_path))
    config.model_config.posterior_flow = "planar"
    with pytest.raises(ConfigError, match=r"posterior_flow='none', but this config has"):
        validate(config, str(tmp_path))
