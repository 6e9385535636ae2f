"""The VAE family's gradient estimators (`config.estimator`): one bound, five gradients.

The pure surrogates are tested against exact gradients in tests/objectives/test_estimators.py;
these tests check how the family wires them: which parameters see stopped values, that every
estimator reports the same bound and the same generative-model gradient, and that the encoder
gradients agree in expectation.
"""

import functools
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import rbm as rbm_configs
from configs import vae as vae_configs
from genjax.core.state import TrainState
from genjax.data.pipeline import DataSpec
from genjax.models.vae import VAE
from genjax.objectives import BiasedEstimatorWarning, elbo, iwae_bound
from genjax.train import config as config_lib
from genjax.train import loop

SPEC = DataSpec("test", (3, 4, 1), 10, 10, None, 2, True, (0.0, 1.0))
X = (np.random.default_rng(0).uniform(size=(2, 3, 4, 1)) > 0.5).astype(np.float32)
BATCH = {"x": X, "log_det": np.zeros((2,), np.float32)}


def _config(estimator="reparam", **model_fields):
    config = vae_configs.get_config("tiny")
    config.estimator = estimator
    mc = config.model_config
    mc.hidden_sizes, mc.latent_sizes = ((6,),), (2,)
    for name, value in model_fields.items():
        mc[name] = value
    return config


def _model(estimator="reparam", **model_fields):
    return VAE(_config(estimator, **model_fields), SPEC)


def _split(grads):
    """(encoder leaves, decoder leaves) of a gradient pytree, each flattened to one vector."""
    params = grads["params"]
    encoder = [params["data_encoder"]]
    decoder = [params["data_decoder"], params.get("prior_logits", jnp.zeros(0))]
    flat = lambda trees: jnp.concatenate([x.ravel() for x in jax.tree.leaves(trees)])  # noqa: E731
    return flat(encoder), flat(decoder)


IWAE_ESTIMATORS = (
    ("reparam", {}),
    ("dreg", {}),
    ("score", {"score_baseline": "none"}),
    ("score", {"score_baseline": "running_mean"}),
    ("vimco", {}),
)


def _loss_and_grads(estimator, fields, keys, objective="iwae", num_samples=4):
    model = _model(estimator, objective=objective, num_importance_samples=num_samples, **fields)
    params, extras = model.init(jax.random.key(0), X)
    loss_and_grads = jax.jit(jax.value_and_grad(model.loss, has_aux=True))
    (loss, _), grads = loss_and_grads(params, extras, BATCH, keys)
    return model, params, loss, grads


def test_every_estimator_reports_the_same_bound_and_decoder_gradient():
    """Same draws: the loss is -mean IWAE bound, and the generative model's gradient
    sum_k w~_k grad_theta log p(x, z_k) does not depend on how the encoder is trained."""
    keys = jax.random.split(jax.random.key(1), 2)
    results = {
        f"{name}/{fields}": _loss_and_grads(name, fields, keys) for name, fields in IWAE_ESTIMATORS
    }
    model, params, reference_loss, reference_grads = results["reparam/{}"]
    log_w = model.log_weights(params, X, keys, 4)["log_w"]
    np.testing.assert_allclose(reference_loss, -np.mean(iwae_bound(log_w)), rtol=1e-6)
    reference_decoder = _split(reference_grads)[1]
    for label, (_, _, loss, grads) in results.items():
        np.testing.assert_allclose(loss, reference_loss, rtol=1e-6, err_msg=label)
        np.testing.assert_allclose(_split(grads)[1], reference_decoder, rtol=1e-4, atol=1e-6)


def test_stl_and_score_decoder_gradient_for_the_elbo():
    keys = jax.random.split(jax.random.key(2), 2)
    runs = [
        _loss_and_grads(name, {}, keys, objective="elbo", num_samples=3)
        for name in ("reparam", "stl", "score")
    ]
    for _, _, loss, grads in runs[1:]:
        np.testing.assert_allclose(loss, runs[0][2], rtol=1e-6)
        np.testing.assert_allclose(_split(grads)[1], _split(runs[0][3])[1], rtol=1e-4, atol=1e-6)


def _encoder_gradient_draws(estimator, fields, objective, num_samples, num_draws=4000):
    model = _model(estimator, objective=objective, num_importance_samples=num_samples, **fields)
    params, extras = model.init(jax.random.key(0), X)

    def encoder_gradient(key):
        keys = jax.random.split(key, 2)
        grads = jax.grad(lambda p: model.loss(p, extras, BATCH, keys)[0])(params)
        return _split(grads)[0]

    draws = jax.jit(jax.vmap(encoder_gradient))(jax.random.split(jax.random.key(3), num_draws))
    return np.asarray(draws, np.float64)


def _assert_same_expectation(draws_a, draws_b, label):
    """Means of two independent sets of draws agree per component within 4.5 standard errors
    of their difference (plus 1e-4), the Monte Carlo error of 4,000 draws each."""
    difference = draws_a.mean(0) - draws_b.mean(0)
    standard_error = np.sqrt(
        draws_a.var(0, ddof=1) / len(draws_a) + draws_b.var(0, ddof=1) / len(draws_b)
    )
    worst = np.max(np.abs(difference) / (standard_error + 1e-12))
    assert np.all(np.abs(difference) <= 4.5 * standard_error + 1e-4), f"{label}: {worst:.2f} SE"


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective, num_samples, estimators",
    [
        ("iwae", 3, (("dreg", {}), ("score", {"score_baseline": "none"}), ("vimco", {}))),
        ("elbo", 1, (("stl", {}), ("score", {"score_baseline": "none"}))),
    ],
)
def test_encoder_gradients_agree_with_reparam_in_expectation(objective, num_samples, estimators):
    """Unbiased estimators of one objective's gradient have one mean: each against the
    pathwise estimator, 4,000 independent draws each (STL is unbiased for the ELBO only)."""
    reference = _encoder_gradient_draws("reparam", {}, objective, num_samples)
    assert np.max(np.abs(reference.mean(0))) > 1e-2  # the gradient is not trivially zero
    for name, fields in estimators:
        _assert_same_expectation(
            _encoder_gradient_draws(name, fields, objective, num_samples), reference, name
        )


@pytest.mark.slow
def test_dreg_has_lower_encoder_variance_than_reparam_at_many_samples():
    """Tucker et al. 2019, fig. 1: at K = 30 the IWAE encoder gradient's variance is larger
    than DReG's (summed over the encoder's parameters, 1,000 draws; at this untrained
    initialisation 1.48 against 1.08)."""
    reparam = _encoder_gradient_draws("reparam", {}, "iwae", 30, num_draws=1000)
    dreg = _encoder_gradient_draws("dreg", {}, "iwae", 30, num_draws=1000)
    assert dreg.var(0).sum() < 0.9 * reparam.var(0).sum()


def _np_bernoulli_log_prob(z, logits):
    return np.sum(z * -np.logaddexp(0, -logits) + (1 - z) * -np.logaddexp(0, logits), -1)


def test_bernoulli_latents_log_weights_match_numpy():
    """q(z | x) = Bernoulli(sigmoid(enc(x))), z = [u < sigmoid(l)], p(z) = Bernoulli(sigmoid(
    prior_logits)), p(x | z) Bernoulli(sigmoid(dec(z))), against NumPy in float64."""
    model = _model(
        "vimco", objective="iwae", latent_distribution="bernoulli", num_importance_samples=2
    )
    params, _ = model.init(jax.random.key(0), X)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    p["prior_logits"] = np.array([0.7, -1.2])  # away from the zero initialisation
    params = {"params": p}
    keys = jax.random.split(jax.random.key(1), 2)
    log_w = model.log_weights(params, X, keys, 5)["log_w"]
    uniform = np.asarray(model._noise(keys, 5)[0], np.float64)  # (K, B, U)
    x = X.reshape(2, -1).astype(np.float64)

    def mlp(layers, h):
        h = np.tanh(h @ layers["Dense_0"]["kernel"] + layers["Dense_0"]["bias"])
        return h @ layers["Dense_1"]["kernel"] + layers["Dense_1"]["bias"]

    logits = mlp(p["data_encoder"], x)  # (B, U)
    z = (uniform < 1 / (1 + np.exp(-logits))).astype(np.float64)
    assert set(np.unique(z)) <= {0.0, 1.0}
    log_q = _np_bernoulli_log_prob(z, logits)
    log_prior = _np_bernoulli_log_prob(z, np.broadcast_to(p["prior_logits"], z.shape))
    log_px = _np_bernoulli_log_prob(x, mlp(p["data_decoder"], z))
    np.testing.assert_allclose(log_w, log_px + log_prior - log_q, rtol=1e-4, atol=1e-4)
    samples = model.sample(
        TrainState.create(params, model.tx, jax.random.key(2), {}), jax.random.key(3), 4
    )
    assert samples.shape == (4, 3, 4, 1)
    assert np.all((np.asarray(samples) >= 0) & (np.asarray(samples) <= 1))


@pytest.mark.parametrize(
    "estimator, fields, message",
    [
        ("reparam", {"latent_distribution": "bernoulli"}, "latent_distribution='bernoulli'"),
        ("stl", {"posterior_flow": "planar"}, "posterior_flow='planar'"),
        ("dreg", {"objective": "elbo"}, "objective='elbo'"),
        ("vimco", {"objective": "iwae", "num_importance_samples": 1}, "num_importance_samples"),
        ("score", {"analytic_kl": True}, "analytic_kl"),
        ("score", {"score_baseline": "median"}, "score_baseline"),
        (
            "vimco",
            {
                "objective": "iwae",
                "latent_distribution": "bernoulli",
                "latent_sizes": (2, 2),
                "hidden_sizes": ((6,), (6,)),
            },
            "one stochastic layer",
        ),
    ],
)
def test_incompatible_estimator_settings_are_refused_by_name(estimator, fields, message):
    config = _config(estimator, **fields)
    with pytest.raises(ValueError, match=message):
        VAE.validate_config(config)
    with pytest.raises(config_lib.ConfigError, match="config.estimator|config.model_config"):
        config_lib.validate(config)


def _trace_loss(model, **override):
    """Traces `estimator_loss` with an override on abstract inputs (jax.eval_shape, nothing
    computed): its checks and warnings run at trace time."""
    params, extras = jax.eval_shape(model.init, jax.random.key(0), X)
    keys = jax.random.split(jax.random.key(1), 2)
    loss = functools.partial(model.estimator_loss, **override)
    return jax.eval_shape(loss, params, extras, BATCH, keys)


@pytest.mark.parametrize(
    "estimator, fields, num_samples, message",
    [
        ("dreg", {"objective": "elbo"}, None, "estimator='dreg' estimates the gradient of the"),
        ("vimco", {"objective": "elbo"}, None, "objective='elbo'; use"),
        ("vimco", {"objective": "iwae"}, 1, r"'vimco' needs num_samples >= 2.*got 1"),
        ("fancy", {}, None, r"estimator='fancy'; allowed"),
        ("stl", {"analytic_kl": True}, None, "analytic_kl=True"),
    ],
)
def test_an_estimator_override_is_refused_where_the_config_would_be(
    estimator, fields, num_samples, message
):
    """`estimator_loss(estimator=...)` applies the config's rules: with objective='elbo' the
    IWAE-bound estimators once silently computed the IWAE bound (loss 8.705 against the ELBO's
    9.570 in the review), and an unknown name silently ran the score function."""
    model = _model("reparam", num_importance_samples=4, **fields)
    with pytest.raises(ValueError, match=message):
        _trace_loss(model, estimator=estimator, num_samples=num_samples)


@pytest.mark.parametrize(
    "objective, estimators",
    [("elbo", ("stl", "score")), ("iwae", ("dreg", "vimco"))],
)
def test_an_accepted_override_keeps_the_configured_objective(objective, estimators):
    """Whatever the override, the loss is minus the configured bound of the same draws."""
    model = _model("reparam", objective=objective, num_importance_samples=4)
    params, extras = model.init(jax.random.key(0), X)
    keys = jax.random.split(jax.random.key(1), 2)
    log_w = model.log_weights(params, X, keys, 3)["log_w"]
    bound = iwae_bound(log_w) if objective == "iwae" else elbo(log_w)
    for estimator in estimators:
        loss, _ = model.estimator_loss(
            params, extras, BATCH, keys, estimator=estimator, num_samples=3
        )
        np.testing.assert_allclose(loss, -np.mean(bound), rtol=1e-6, err_msg=estimator)


def test_stl_with_the_iwae_bound_warns_on_every_path():
    """STL is biased for the IWAE bound with k > 1 (tests/objectives/test_estimators.py): the
    config, an override of the estimator and an override of k all warn, naming the bias; k = 1
    (the ELBO) and the ELBO with any k do not."""
    biased = _config("stl", objective="iwae", num_importance_samples=3)
    with pytest.warns(BiasedEstimatorWarning, match=r"config.estimator='stl'.*BIASED"):
        VAE.validate_config(biased)
    with pytest.warns(BiasedEstimatorWarning, match=r"num_importance_samples=3"):
        config_lib.validate(biased)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VAE.validate_config(_config("stl", objective="iwae", num_importance_samples=1))
        VAE.validate_config(_config("stl", objective="elbo", num_importance_samples=3))
        stl_k1 = _model("stl", objective="iwae", num_importance_samples=1)
        _trace_loss(stl_k1)
        _trace_loss(_model("reparam", objective="elbo"), estimator="stl", num_samples=4)
    with pytest.warns(BiasedEstimatorWarning, match=r"estimator='stl'.*num_samples=4"):
        _trace_loss(stl_k1, num_samples=4)
    reparam = _model("reparam", objective="iwae", num_importance_samples=4)
    with pytest.warns(BiasedEstimatorWarning, match=r"estimator='stl'.*num_samples=4"):
        _trace_loss(reparam, estimator="stl")


def test_other_families_accept_only_their_own_gradient():
    config = rbm_configs.get_config("tiny")
    config.estimator = "dreg"
    with pytest.raises(config_lib.ConfigError, match=r"config.estimator='dreg'.*'rbm'"):
        config_lib.validate(config)
    config = _config("fancy")
    with pytest.raises(config_lib.ConfigError, match=r"config.estimator='fancy'; allowed"):
        config_lib.validate(config)


def test_a_run_is_not_resumed_with_another_estimator(tmp_path):
    config_lib.save_config(_config("reparam", objective="iwae"), str(tmp_path))
    config_lib.validate(_config("reparam", objective="iwae"), str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match="config.estimator='dreg'"):
        config_lib.validate(_config("dreg", objective="iwae"), str(tmp_path))
    # A run saved before the field existed was trained with 'reparam'.
    path = os.path.join(tmp_path, config_lib.CONFIG_FILE)
    saved = json.load(open(path))
    del saved["estimator"]
    json.dump(saved, open(path, "w"))
    config_lib.validate(_config("reparam", objective="iwae"), str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match="trained with config.estimator='reparam'"):
        config_lib.validate(_config("score"), str(tmp_path))


def test_running_mean_baseline_follows_the_learning_signal(tmp_path):
    """After n steps the state's baseline is the moving average of the logged signals."""
    config = _config("score", objective="iwae", num_importance_samples=2, baseline_decay=0.5)
    config.num_steps, config.log_every, config.eval_every = 3, 1, 0
    config.progress_bar = False
    state = loop.train(loop.Experiment(config), str(tmp_path))
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        signals = [r["train/learning_signal"] for r in map(json.loads, f) if "train/bound" in r]
    assert len(signals) == 3
    average = 0.0
    for signal in signals:
        average = 0.5 * average + 0.5 * signal
    np.testing.assert_allclose(float(state.extras["baseline_mean"]), average, rtol=1e-5)
    assert int(state.extras["baseline_updates"]) == 3
