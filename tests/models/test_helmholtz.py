"""Helmholtz machines (genjax/models/helmholtz.py) against enumeration.

The network: D = 3 visible units under two layers of 2 binary latents (784-200-200 in
miniature), so the 16 joint latent states can be listed and every quantity the rules estimate,
log p(x), the posterior p(h | x) and the gradients they tend to, is exact. The densities are
checked against a NumPy transcription of the model; the gradients against the closed forms of
a sigmoid layer's log-likelihood, grad_W log Bernoulli(y; sigmoid(u W + b)) = u^T (y - sigmoid(u
W + b)).
"""

import itertools
import math
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import helmholtz as helmholtz_configs
from genjax.core.state import TrainState
from genjax.data.pipeline import DataSpec
from genjax.models import helmholtz
from genjax.models.helmholtz import RULES, HelmholtzMachine
from genjax.train import ConfigError, train_and_evaluate
from genjax.train import config as config_lib

NUM_VISIBLE, SIZES = 3, (2, 2)
SPEC = DataSpec("test", (NUM_VISIBLE,), 10, 10, None, 2, True, (0.0, 1.0))
X = np.array([1.0, 0.0, 1.0], np.float32)
# Every (h_1, h_2): (16, 2) each, h_1 slowest.
STATES = np.array(list(itertools.product([0.0, 1.0], repeat=4)), np.float32)
H1_STATES, H2_STATES = STATES[:, :2], STATES[:, 2:]


def _params(seed=0, scale=1.0):
    """Parameters far from the initial ones (weights and biases N(0, scale^2)), so that
    q(h | x) is not the posterior: for seed 0, the posterior's relative variance under q,
    sum_h p(h | x)^2 / q(h | x) - 1, is 6.8 (an effective sample size of 13% of K)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda zeros: scale * rng.normal(size=zeros.shape).astype(np.float32), helmholtz_shapes()
    )


def helmholtz_shapes():
    """The parameter layout of the module docstring for D = 3, sizes (2, 2), as zeros."""
    zeros = np.zeros
    return {
        "generative": {
            "prior_logits": zeros(2),
            "layer_0": {"kernel": zeros((2, 3)), "bias": zeros(3)},
            "layer_1": {"kernel": zeros((2, 2)), "bias": zeros(2)},
        },
        "recognition": {
            "layer_0": {"kernel": zeros((3, 2)), "bias": zeros(2)},
            "layer_1": {"kernel": zeros((2, 2)), "bias": zeros(2)},
        },
    }


def _np(params):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params)


def _sigmoid(u):
    return 1.0 / (1.0 + np.exp(-u))


def _log_bernoulli(y, logits):
    """sum_u y log sigmoid(l) + (1 - y) log(1 - sigmoid(l)), written out."""
    p = _sigmoid(logits)
    return np.sum(y * np.log(p) + (1 - y) * np.log(1 - p), axis=-1)


def _numpy_log_joint_and_q(params, x, h1, h2):
    """log p(x, h) and log q(h | x) by the model's definition, in NumPy float64."""
    p, q = _np(params)["generative"], _np(params)["recognition"]
    log_p = (
        _log_bernoulli(h2, p["prior_logits"])
        + _log_bernoulli(h1, h2 @ p["layer_1"]["kernel"] + p["layer_1"]["bias"])
        + _log_bernoulli(x, h1 @ p["layer_0"]["kernel"] + p["layer_0"]["bias"])
    )
    log_q = _log_bernoulli(h1, x @ q["layer_0"]["kernel"] + q["layer_0"]["bias"]) + (
        _log_bernoulli(h2, h1 @ q["layer_1"]["kernel"] + q["layer_1"]["bias"])
    )
    return log_p, log_q


def _closed_form_gradients(params, x, h1, h2):
    """grad log p(x, h) (generative) and grad log q(h | x) (recognition) of one state, by the
    sigmoid layer's closed form u^T (y - sigmoid(u W + b))."""
    p, q = _np(params)["generative"], _np(params)["recognition"]

    def layer(inputs, outputs, weights):
        error = outputs - _sigmoid(inputs @ weights["kernel"] + weights["bias"])
        return {"kernel": np.outer(inputs, error), "bias": error}

    return {
        "generative": {
            "prior_logits": h2 - _sigmoid(p["prior_logits"]),
            "layer_1": layer(h2, h1, p["layer_1"]),
            "layer_0": layer(h1, x, p["layer_0"]),
        },
        "recognition": {
            "layer_0": layer(x, h1, q["layer_0"]),
            "layer_1": layer(h1, h2, q["layer_1"]),
        },
    }


def _per_state_gradients(params, x):
    """_closed_form_gradients of every state, stacked: leaves (16, ...)."""
    per_state = [
        _closed_form_gradients(params, x, a, b) for a, b in zip(H1_STATES, H2_STATES, strict=True)
    ]
    return jax.tree.map(lambda *leaves: np.stack(leaves), *per_state)


def _weighted(per_state, weights):
    return jax.tree.map(lambda leaf: np.tensordot(weights, leaf, axes=1), per_state)


def _exact(params, x):
    """(log p(x), p(h | x) (16,), q(h | x) (16,)) by enumeration."""
    log_p, log_q = _numpy_log_joint_and_q(params, x, H1_STATES, H2_STATES)
    log_px = np.logaddexp.reduce(log_p)
    return log_px, np.exp(log_p - log_px), np.exp(log_q)


def _hs(h1, h2):
    """States (K, 2) each -> the model's [h_1, h_2] for one example, (K, 1, 2) each."""
    return [jnp.asarray(h1)[:, None], jnp.asarray(h2)[:, None]]


def _surrogate_gradient(params, hs, q_update="both", dreams=None, x=X, rule="vimco"):
    """grad_params of the rule's surrogate for one example (traced: call inside jax.jit)."""

    def objective(p):
        return helmholtz.rule_surrogate(p, jnp.asarray(x)[None], hs, dreams, rule, q_update)[0][0]

    return jax.grad(objective)(params)


def _assert_tree_close(actual, expected, **tolerance):
    for path, leaf in jax.tree_util.tree_leaves_with_path(expected):
        got = actual
        for key in path:
            got = got[key.key]
        np.testing.assert_allclose(np.asarray(got), leaf, err_msg=str(path), **tolerance)


def _part(tree, name):
    return {name: tree[name]}


def _model(**fields):
    config = helmholtz_configs.get_config("tiny")
    config.model_config.latent_sizes = SIZES
    for name, value in fields.items():
        config.model_config[name] = value
    return HelmholtzMachine(config, SPEC)


# Every fixed-sample computation below runs in the one compiled program of
# `_fixed_sample_results` (compiling is most of these tests' time): given states and dreams,
# no random numbers.
DREAM_X = np.array([0.0, 1.0, 1.0], np.float32)
NUM_RWS_DRAWS = 100_000  # K for reweighted wake-sleep, drawn from the enumerated q
PAIRS = np.divmod(np.arange(256), 16)  # every (h_a, h_b) for VIMCO with K = 2


@jax.jit
def _fixed_sample_results(params, rws_draws):
    h1, h2 = jnp.asarray(H1_STATES), jnp.asarray(H2_STATES)
    hs = _hs(H1_STATES, H2_STATES)
    results = {
        "log_joint": helmholtz.log_joint(params, X[None], hs)[:, 0],
        "log_q": helmholtz.log_recognition(params, X[None], hs)[:, 0],
    }

    def wake_sleep(a, dream):  # state a as the wake sample, state `dream` as the dream
        dreams = (jnp.asarray(DREAM_X)[None], [h1[dream][None], h2[dream][None]])
        return _surrogate_gradient(
            params, _hs(h1[a][None], h2[a][None]), dreams=dreams, rule="wake_sleep"
        )

    results["wake_sleep"] = jax.vmap(wake_sleep)(jnp.arange(16), jnp.arange(16)[::-1])
    dream = (jnp.asarray(DREAM_X)[None], [h1[0][None], h2[0][None]])  # state 0 as the dream
    results["rws_both"] = _surrogate_gradient(
        params, _hs(h1[rws_draws], h2[rws_draws]), "both", dream, rule="reweighted_wake_sleep"
    )

    def vimco(a, b):
        pair = [jnp.stack([h1[a], h1[b]])[:, None], jnp.stack([h2[a], h2[b]])[:, None]]
        return _surrogate_gradient(params, pair, rule="vimco")

    results["vimco_pairs"] = jax.vmap(vimco)(*PAIRS)
    return results


@pytest.fixture(scope="module")
def fixed():
    """The model's densities and rule gradients at given states (`_fixed_sample_results`);
    the 100,000 reweighted wake-sleep samples are drawn from q(h | x) by NumPy, from the
    enumerated q."""
    params = _params()
    q = _exact(params, X)[2]
    rws_draws = np.random.default_rng(5).choice(16, size=NUM_RWS_DRAWS, p=q / q.sum())
    return params, jax.device_get(_fixed_sample_results(params, rws_draws)), rws_draws


def test_densities_match_a_numpy_transcription_and_log_p_of_x_its_enumeration(fixed):
    params, results, _ = fixed
    log_p, log_q = _numpy_log_joint_and_q(params, X, H1_STATES, H2_STATES)
    np.testing.assert_allclose(results["log_joint"], log_p, rtol=1e-5)
    np.testing.assert_allclose(results["log_q"], log_q, rtol=1e-5)
    # q is normalised over the 16 states, and so is p over the 8 x 16 (x, h).
    np.testing.assert_allclose(np.exp(log_q).sum(), 1.0, rtol=1e-6)
    xs = np.array(list(itertools.product([0.0, 1.0], repeat=NUM_VISIBLE)))
    total = sum(np.exp(_exact(params, x)[0]) for x in xs)
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_wake_sleep_gradients_are_the_closed_forms_state_by_state(fixed):
    """Wake: for each fixed h, the generative gradient is grad log p(x, h) and nothing else;
    sleep: the recognition gradient is grad log q(h_d | x_d) of the dream and nothing else
    (no wake-phase q term). Checked at all 16 states, as wake samples and as dreams. (So the
    wake update's mean over h ~ q is grad_theta E_q[log p(x, h)], weighted by q, not by the
    posterior: reweighting is what changes that.)"""
    params, results, _ = fixed
    grads = results["wake_sleep"]
    wake = _per_state_gradients(params, X)
    sleep = jax.tree.map(lambda leaf: leaf[::-1], _per_state_gradients(params, DREAM_X))
    tolerance = dict(rtol=1e-5, atol=1e-6)
    _assert_tree_close(_part(grads, "generative"), _part(wake, "generative"), **tolerance)
    _assert_tree_close(_part(grads, "recognition"), _part(sleep, "recognition"), **tolerance)


def _reweighted_wake_sleep_expected(params, weights):
    """The closed-form gradient of reweighted wake-sleep with q_update='both' and state 0 as
    the dream, for weights (16,) over the states: p: sum_h weight_h grad log p(x, h);
    q: sum_h weight_h grad log q(h | x) + grad log q(h_d | x_d)."""
    expected = _weighted(_per_state_gradients(params, X), weights)
    dream = jax.tree.map(lambda leaf: leaf[0], _per_state_gradients(params, DREAM_X))
    expected["recognition"] = jax.tree.map(np.add, expected["recognition"], dream["recognition"])
    return expected


def test_reweighted_wake_sleep_given_its_samples_is_the_weighted_closed_form(fixed):
    """For the K = 100,000 given samples and q_update='both': the p gradient sum_k w~_k
    grad log p(x, h_k), the q gradient sum_k w~_k grad log q(h_k | x) (wake phase) plus the
    dream's grad log q(h_d | x_d) (sleep phase), with w~ from the enumerated densities and
    the closed forms (float32 sums of 100,000 terms: to 1e-4)."""
    params, results, rws_draws = fixed
    log_p, log_q = _numpy_log_joint_and_q(params, X, H1_STATES, H2_STATES)
    counts = np.bincount(rws_draws, minlength=16)  # the weight of a state: its draws' sum
    log_weights = np.log(np.maximum(counts, 1e-300)) + log_p - log_q
    weights = np.exp(log_weights - np.logaddexp.reduce(log_weights))
    expected = _reweighted_wake_sleep_expected(params, weights)
    _assert_tree_close(results["rws_both"], expected, rtol=1e-4, atol=1e-4)


def test_reweighted_wake_sleep_tends_to_the_gradient_of_log_p_and_of_the_posterior_kl(fixed):
    """The same K = 100,000 draws: the p update tends to grad log p(x) = sum_h p(h | x)
    grad log p(x, h), the wake-phase q update to sum_h p(h | x) grad log q(h | x) =
    -grad KL(p(h | x) || q(h | x)), by enumeration, to 0.02 absolute (gradient entries up to
    about 1; self-normalised importance sampling errs by O(sqrt(6.8 / K)), under 0.01 here).
    The wake-sleep expectation E_q[grad log p(x, h)] differs from it by more than 0.1:
    weighting by q instead of the posterior fails."""
    params, results, _ = fixed
    _, posterior, q = _exact(params, X)
    exact = _reweighted_wake_sleep_expected(params, posterior)
    _assert_tree_close(results["rws_both"], exact, atol=0.02)
    wake_sleep = _reweighted_wake_sleep_expected(params, q)
    kernel = ("generative", "layer_0", "kernel")
    gap = wake_sleep[kernel[0]][kernel[1]][kernel[2]] - exact[kernel[0]][kernel[1]][kernel[2]]
    assert np.max(np.abs(gap)) > 0.1


def test_vimco_is_unbiased_for_the_iwae_2_gradient_over_all_pairs_of_states(fixed):
    """VIMCO with K = 2: its gradient averaged over all 16 x 16 pairs (h_a, h_b) with weights
    q(h_a | x) q(h_b | x) equals the exact gradient of E_q[L_2], L_2 = log (w_a + w_b) / 2,
    in both networks. The exact gradient, from the closed forms g^p = grad log p(x, h) and
    g^q = grad log q(h | x) and w~_ab = w_a / (w_a + w_b):
      generative:  sum_ab q_a q_b (w~_ab g^p_a + w~_ba g^p_b) = 2 sum_a g^p_a sum_b q_a q_b w~_ab
      recognition: sum_ab q_a q_b ((g^q_a + g^q_b) L_ab - w~_ab g^q_a - w~_ba g^q_b)
                   = 2 sum_a g^q_a sum_b q_a q_b (L_ab - w~_ab)."""
    params, results, _ = fixed
    log_p, log_q = _numpy_log_joint_and_q(params, X, H1_STATES, H2_STATES)
    q, log_w = np.exp(log_q), log_p - log_q
    bound = np.logaddexp(log_w[:, None], log_w[None, :]) - np.log(2)  # L_ab
    normalized = np.exp(log_w[:, None] - np.logaddexp(log_w[:, None], log_w[None, :]))
    pair_probability = q[:, None] * q[None, :]
    per_state = _per_state_gradients(params, X)
    exact = {
        "generative": _weighted(per_state, 2 * np.sum(pair_probability * normalized, axis=1))[
            "generative"
        ],
        "recognition": _weighted(
            per_state, 2 * np.sum(pair_probability * (bound - normalized), axis=1)
        )["recognition"],
    }
    mean = _weighted(results["vimco_pairs"], q[PAIRS[0]] * q[PAIRS[1]])
    _assert_tree_close(mean, exact, rtol=1e-4, atol=1e-5)


# The model's samplers and its evaluation: the one program of `sampled`.
NUM_EVAL_SAMPLES = 20_000
NUM_DREAMS = 20_000


@pytest.fixture(scope="module")
def sampled():
    """Outputs of the model's random functions, compiled as one program: the final
    evaluation of X (IWAE-20,000 in chunks of 5,000) and 20,000 sleep-phase dreams (one
    ancestral sample per key, as the train step draws them)."""
    params = _params()
    model = _model(eval_importance_samples=NUM_EVAL_SAMPLES, eval_chunk_size=5_000)

    @jax.jit
    def run():
        state = TrainState.create(params, model.tx, jax.random.key(0))
        batch = {"x": X[None], "log_det": jnp.zeros((1,))}
        keys = jax.random.split(jax.random.key(1), 1)
        dream_keys = jax.random.split(jax.random.key(3), NUM_DREAMS)
        return model.eval_step(state, batch, keys, True), helmholtz.sample_dreams(
            params, dream_keys
        )

    return params, model, jax.device_get(run())


def test_final_evaluation_estimates_the_enumerated_log_likelihood(sampled):
    """The IWAE-K estimate of eval_step (K = 20,000, in chunks) against log p(x) by
    enumeration; the tolerance is 5 standard deviations of the estimate, sqrt(Var_q(w) / K) /
    p(x), with Var_q(w) = sum_h p(x, h)^2 / q(h | x) - p(x)^2 also by enumeration."""
    params, model, (outputs, _) = sampled
    log_likelihood = outputs["log_likelihood"]
    log_px, posterior, q = _exact(params, X)
    relative_variance = np.sum(posterior**2 / q) - 1.0  # Var_q(w) / p(x)^2
    tolerance = 5 * math.sqrt(relative_variance / NUM_EVAL_SAMPLES)
    assert 0.01 < tolerance < 0.1  # q is far from the posterior, yet K makes it precise
    assert abs(float(log_likelihood[0]) - log_px) < tolerance
    summary = model.summarize(outputs, True, {})
    assert summary["nll_estimator"] == "iwae-20000"
    np.testing.assert_allclose(summary["test_nll_nats"], -log_likelihood[0])


def test_ancestral_samples_follow_the_enumerated_marginal(sampled):
    """20,000 dreams x ~ p: each of the 8 frequencies within 4 standard errors of p(x)."""
    params, _, (_, (x, hs)) = sampled
    assert x.shape == (NUM_DREAMS, NUM_VISIBLE) and [h.shape[1] for h in hs] == list(SIZES)
    codes = (np.asarray(x) @ np.array([4, 2, 1])).astype(int)
    frequencies = np.bincount(codes, minlength=8) / len(codes)
    xs = np.array(list(itertools.product([0.0, 1.0], repeat=NUM_VISIBLE)))
    probabilities = np.exp([_exact(params, v)[0] for v in xs])
    errors = np.sqrt(probabilities * (1 - probabilities) / len(codes))
    assert np.all(np.abs(frequencies - probabilities) < 4 * errors)


def test_the_model_gives_what_its_shapes_say():
    """Shapes by `jax.eval_shape` (nothing compiled)."""
    model, params = _model(), _params()
    keys = jax.random.split(jax.random.key(1), 2)
    log_w = jax.eval_shape(model.train_log_density, params, jnp.zeros((2, NUM_VISIBLE)), keys)
    assert log_w.shape == (5, 2) and log_w.dtype == jnp.float32
    initial = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, NUM_VISIBLE)))[0]
    assert jax.tree.map(lambda leaf: leaf.shape, initial) == jax.tree.map(np.shape, params)
    state = types.SimpleNamespace(params=params)  # what sample and the filters read
    sample = jax.eval_shape(lambda key: model.sample(state, key, 4), jax.random.key(2))
    assert sample.shape == (4, NUM_VISIBLE)
    assert model.first_layer_filters(state) is None  # not images


@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
def test_the_loss_is_the_iwae_bound_of_the_samples_train_log_density_draws(rule):
    model = _model(rule=rule, num_importance_samples=1 if rule == "wake_sleep" else 5)
    params = _params()
    batch = {"x": jnp.asarray([X, 1 - X]), "log_det": jnp.zeros((2,))}
    keys = jax.random.split(jax.random.key(1), 2)
    (loss, (metrics, _)), grads = jax.jit(jax.value_and_grad(model.loss, has_aux=True))(
        params, {}, batch, keys
    )
    log_w = jax.jit(model.train_log_density)(params, batch["x"], keys)
    np.testing.assert_allclose(loss, -metrics["train/bound"], rtol=1e-6)
    bound = np.mean(np.logaddexp.reduce(np.asarray(log_w, np.float64), axis=0) - np.log(len(log_w)))
    np.testing.assert_allclose(metrics["train/bound"], bound, rtol=1e-5)
    # Every parameter is trained, the recognition network's included.
    assert all(np.any(leaf != 0) for leaf in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rule", "sleep_wake", r"rule='sleep_wake'; allowed: \('wake_sleep', 'reweighted_wake"),
        ("q_update", "dream", r"q_update='dream'; allowed: \('wake', 'sleep', 'both'\)"),
        ("latent_sizes", (), r"latent_sizes=\(\) must be a non-empty tuple of positive"),
        ("eval_chunk_size", 7, r"eval_importance_samples=64 must be a multiple of .*=7"),
    ],
)
def test_bad_fields_are_refused_by_name(field, value, message):
    config = helmholtz_configs.get_config("tiny")
    config.model_config[field] = value
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)


def test_rules_refuse_the_wrong_number_of_samples():
    wake_sleep = helmholtz_configs.get_config("tiny")
    wake_sleep.model_config.rule = "wake_sleep"  # K = 5 from the default
    with pytest.raises(ConfigError, match=r"rule='wake_sleep' draws one sample .* allowed: 1"):
        config_lib.validate(wake_sleep)
    vimco = helmholtz_configs.get_config("vimco,tiny")
    vimco.model_config.num_importance_samples = 1
    with pytest.raises(ConfigError, match=r"rule='vimco' needs .*num_importance_samples >= 2"):
        config_lib.validate(vimco)


def test_bernoulli_units_need_binary_data(tmp_path):
    continuous = DataSpec("test", (2,), 10, 10, None, None, False, (0.0, 1.0))
    with pytest.raises(ValueError, match=r"config.model='helmholtz' .* needs binary data"):
        HelmholtzMachine(helmholtz_configs.get_config("tiny"), continuous)
    config = helmholtz_configs.get_config("tiny")
    config.preprocess.binarize = "none"  # found once the data is loaded, still before any write
    with pytest.raises(ConfigError, match=r"needs binary data: set config.preprocess.binarize"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["tiny", "wake_sleep,tiny", "vimco,tiny"])
def test_tiny_config_trains_end_to_end(tmp_path, variant):
    config = helmholtz_configs.get_config(variant)
    config.num_steps = 40
    results = train_and_evaluate(config, str(tmp_path))
    assert results["nll_estimator"] == "iwae-64"
    assert np.isfinite(results["test_nll_nats"]) and results["test_nll_stderr"] > 0
    # 40 updates move the model off its start, where every pixel has p = 1/2: 64 ln 2 nats.
    assert results["test_nll_nats"] < 64 * math.log(2) - 1.0
    assert os.path.exists(tmp_path / "filters.png")
    assert os.listdir(tmp_path / "samples")
