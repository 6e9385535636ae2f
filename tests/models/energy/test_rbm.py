"""RBM primitives against enumeration, and the RBM family on the trainer."""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.evaluate import ais
from genjax.models.energy import rbm
from genjax.nn import precision


def _random_rbm(seed, num_visible=10, num_hidden=7, gaussian=False, scale=1.0):
    keys = jax.random.split(jax.random.key(seed), 4)
    params = {
        "W": scale * jax.random.normal(keys[0], (num_visible, num_hidden)),
        "b_v": jax.random.normal(keys[1], (num_visible,)),
        "b_h": jax.random.normal(keys[2], (num_hidden,)),
    }
    if gaussian:
        params["W"] = 0.3 * params["W"]
        params["b_v"] = 0.5 * params["b_v"]
        params["log_sigma"] = 0.3 * jax.random.normal(keys[3], (num_visible,))
    return params


def _all_states(num_units):
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_units)), np.float32)


def _joint_log_probs(params):
    """log p(v, h) of a Bernoulli RBM by brute force: (2**V, 2**H) in float64 NumPy."""
    vs, hs = _all_states(params["W"].shape[0]), _all_states(params["W"].shape[1])
    W, b_v, b_h = (np.asarray(params[k], np.float64) for k in ("W", "b_v", "b_h"))
    log_p = -(-(vs @ b_v)[:, None] - (hs @ b_h)[None, :] - vs @ W @ hs.T)  # -E(v, h)
    return log_p - np.logaddexp.reduce(log_p.ravel()), vs, hs


def test_energy_and_free_energy_match_the_definition():
    params = _random_rbm(0, 4, 3)
    log_joint, vs, hs = _joint_log_probs(params)
    energies = np.array([[float(rbm.energy(params, v, h)) for h in hs] for v in vs])
    log_z = np.logaddexp.reduce(-energies.ravel())
    np.testing.assert_allclose(-energies - log_z, log_joint, atol=1e-5)
    free = np.asarray(rbm.free_energy(params, jnp.asarray(vs)))
    np.testing.assert_allclose(free, -np.logaddexp.reduce(-energies, axis=1), rtol=1e-5)


def test_gibbs_conditionals_are_bayes_rule():
    """p(h_j = 1 | v) and p(v_i = 1 | h) from the enumerated joint."""
    params = _random_rbm(1, 4, 3)
    log_joint, vs, hs = _joint_log_probs(params)
    joint = np.exp(log_joint)
    p_h_given_v = joint / joint.sum(1, keepdims=True)  # (2^V, 2^H)
    p_v_given_h = joint / joint.sum(0, keepdims=True)
    np.testing.assert_allclose(
        rbm.hidden_probs(params, jnp.asarray(vs)), p_h_given_v @ hs, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        rbm.visible_probs(params, jnp.asarray(hs)), p_v_given_h.T @ vs, rtol=1e-5, atol=1e-6
    )


def test_gaussian_conditionals():
    """p(h | v) by Bayes' rule over enumerated h; p(v | h) is exp(-E) normalized over v."""
    params = _random_rbm(2, 3, 4, gaussian=True)
    v = jax.random.normal(jax.random.key(0), (5, 3))
    hs = jnp.asarray(_all_states(4))
    log_p = -jax.vmap(lambda x: rbm.energy(params, x, hs))(v)  # (5, 16)
    posterior = jax.nn.softmax(log_p, axis=1)
    np.testing.assert_allclose(rbm.hidden_probs(params, v), posterior @ hs, rtol=1e-5, atol=1e-6)
    # -E(v, h) - log N(v; mean(h), sigma^2) must not depend on v.
    sigma = jnp.exp(params["log_sigma"])
    mean = rbm.visible_probs(params, hs[5])
    normal = jnp.sum(-0.5 * ((v - mean) / sigma) ** 2 - jnp.log(sigma), axis=-1)
    residual = -rbm.energy(params, v, hs[5]) - normal
    np.testing.assert_allclose(residual, residual[0], rtol=1e-5)


def test_gibbs_chain_samples_the_model_distribution():
    params = _random_rbm(3, 3, 2)
    log_joint, vs, _ = _joint_log_probs(params)
    exact = np.exp(np.logaddexp.reduce(log_joint, axis=1))  # p(v) over 8 states
    v0 = jnp.zeros((4000, 3))
    final, trajectory = rbm.gibbs_chain(
        params, jax.random.key(0), v0, num_steps=30, return_trajectory=True
    )
    assert trajectory.shape == (30, 4000, 3)
    np.testing.assert_array_equal(trajectory[-1], final)
    codes = np.asarray(final) @ (2 ** np.arange(2, -1, -1))
    empirical = np.bincount(codes.astype(int), minlength=8) / 4000
    assert 0.5 * np.abs(empirical - exact).sum() < 0.03  # total variation


@pytest.mark.parametrize("gaussian", [False, True])
def test_log_partition_exact_against_brute_force(gaussian):
    if gaussian:
        # Integrate exp(-F(v)) over a fine 2-D grid.
        params = _random_rbm(4, 2, 3, gaussian=True)
        grid = np.linspace(-12, 12, 1201)
        v = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
        reference = jax.nn.logsumexp(-rbm.free_energy(params, jnp.asarray(v))) + 2 * np.log(
            grid[1] - grid[0]
        )
        np.testing.assert_allclose(rbm.log_partition_exact(params), reference, rtol=1e-4)
        return
    for num_visible, num_hidden in ((4, 6), (6, 4)):  # enumerate visibles, then hiddens
        params = _random_rbm(5, num_visible, num_hidden)
        vs, hs = jnp.asarray(_all_states(num_visible)), jnp.asarray(_all_states(num_hidden))
        energies = rbm.energy(params, vs[:, None, :], hs[None, :, :])  # (2^V, 2^H)
        log_joint_unnorm = -np.asarray(energies, np.float64)
        reference = np.logaddexp.reduce(log_joint_unnorm.ravel())
        np.testing.assert_allclose(rbm.log_partition_exact(params), reference, rtol=1e-5)
        chunked = rbm.log_partition_exact(params, chunk_size=4)
        np.testing.assert_allclose(chunked, reference, rtol=1e-5)


def _numpy_log_partition(params):
    """log Z of a Bernoulli RBM by summing exp(-E(v, h)) over every (v, h), in float64 NumPy."""
    vs, hs = _all_states(params["W"].shape[0]), _all_states(params["W"].shape[1])
    W, b_v, b_h = (np.asarray(params[k], np.float64) for k in ("W", "b_v", "b_h"))
    log_joint_unnorm = (vs @ b_v)[:, None] + (hs @ b_h)[None, :] + vs @ W @ hs.T  # -E(v, h)
    return np.logaddexp.reduce(log_joint_unnorm.ravel())


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 100, 300, 512, 4096, 5000])
@pytest.mark.parametrize("sizes", [(12, 9), (9, 12)])  # enumerate hiddens, then visibles
def test_log_partition_exact_any_chunk_size(sizes, chunk_size):
    """Chunks that do not divide 2**9 = 512 states must not count the overrun twice."""
    params = _random_rbm(7, *sizes, scale=0.5)
    reference = _numpy_log_partition(params)
    log_z = rbm.log_partition_exact(params, chunk_size=chunk_size)
    np.testing.assert_allclose(float(log_z), reference, rtol=1e-6)


def test_log_partition_exact_refuses_large_models():
    params = _random_rbm(0, 40, 30)
    with pytest.raises(ValueError, match=r"2\*\*30 states of the hidden layer.*limit is 25"):
        rbm.log_partition_exact(params)


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ais_agrees_with_exact_within_its_error(seed, gaussian):
    params = _random_rbm(10 + seed, 12, 8, gaussian=gaussian)
    exact = float(rbm.log_partition_exact(params))
    result = rbm.ais_log_partition(
        params, jax.random.key(seed), num_chains=200, betas=ais.default_betas(2000)
    )
    assert result.log_weights.shape == (200,)
    assert 0 < float(result.stderr) < 0.1
    assert abs(float(result.log_z) - exact) < 3 * float(result.stderr)


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_ais_partition_estimate_is_unbiased(seed, gaussian):
    """E[Z-hat] = Z exactly, for any schedule: with 20,000 chains and only 4 transitions the
    mean of w / Z is within 4 standard errors of 1 (a deterministic check, fixed keys). AIS
    that accumulated the weight after the transition instead of before it is biased far
    beyond that here (w / Z 1.66-2.14 Bernoulli, 1.08-1.17 Gaussian: 30-90 standard errors),
    which the log Z test above, with its long schedule, catches only for some seeds."""
    params = _random_rbm(30 + seed, 6, 4, gaussian=gaussian)
    if gaussian:
        log_z = float(rbm.log_partition_exact(params))  # tested against a grid integral above
    else:
        log_z = _numpy_log_partition(params)
    result = rbm.ais_log_partition(
        params, jax.random.key(100 + seed), num_chains=20_000, betas=np.linspace(0.0, 1.0, 5)
    )
    ratios = np.exp(np.asarray(result.log_weights, np.float64) - log_z)  # w / Z, mean 1
    standard_error = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert 0 < standard_error < 0.02
    assert abs(ratios.mean() - 1.0) < 4 * standard_error


def test_ais_with_data_base_rates():
    """Any base works: base rates from data means anneal to the same log Z."""
    params = _random_rbm(20, 12, 8)
    base = rbm.base_rates_from_mean(jnp.linspace(0.05, 0.9, 12))
    exact = float(rbm.log_partition_exact(params))
    result = rbm.ais_log_partition(
        params,
        jax.random.key(0),
        num_chains=200,
        betas=ais.default_betas(2000),
        base_visible_bias=base,
    )
    assert abs(float(result.log_z) - exact) < 3 * float(result.stderr)


def test_default_betas_follow_salakhutdinov_murray():
    betas = ais.default_betas()
    assert betas.shape == (14_501,) and betas[0] == 0 and betas[-1] == 1
    assert np.all(np.diff(betas) > 0)
    steps = np.diff(betas)
    np.testing.assert_allclose(steps[:500], 1e-3, rtol=1e-3)
    np.testing.assert_allclose(steps[500:4500], 1e-4, rtol=1e-2)
    np.testing.assert_allclose(steps[4500:], 1e-5, rtol=2e-2)
    with pytest.raises(ValueError, match="start at 0"):
        ais.check_betas([0.1, 1.0])


@pytest.mark.parametrize("num_model", [32, 20])  # as many model samples as data, or fewer
def test_cd_surrogate_gradient_is_the_textbook_update(num_model):
    params = _random_rbm(6, 10, 7, scale=0.5)
    keys = jax.random.split(jax.random.key(0), 2)
    v_data = jax.random.bernoulli(keys[0], 0.3, (32, 10)).astype(jnp.float32)
    v_model = jax.random.bernoulli(keys[1], 0.6, (num_model, 10)).astype(jnp.float32)
    grads = jax.grad(rbm.contrastive_divergence_loss)(params, v_data, v_model)
    update = rbm.textbook_update(params, v_data, v_model)
    for name in ("W", "b_v", "b_h"):
        np.testing.assert_allclose(-grads[name], update[name], rtol=1e-5, atol=1e-6)


def test_bfloat16_cd_gradient_is_the_textbook_update_to_bfloat16_precision():
    # W in bfloat16 (as a train step with config.compute_dtype='bfloat16' casts it): the
    # gradient is float32 and within bfloat16's rounding (2^-9 relative) of the update; the
    # biases' gradients are float32 sums of probabilities computed from bfloat16 products.
    params = _random_rbm(8, 64, 32, scale=0.3)
    keys = jax.random.split(jax.random.key(1), 2)
    v_data = jax.random.bernoulli(keys[0], 0.3, (100, 64)).astype(jnp.float32)
    v_model = jax.random.bernoulli(keys[1], 0.35, (100, 64)).astype(jnp.float32)
    grads = jax.grad(
        lambda p: rbm.contrastive_divergence_loss(
            precision.cast_matrices(p, "bfloat16"), v_data, v_model
        )
    )(params)
    update = rbm.textbook_update(params, v_data, v_model)
    for name in ("W", "b_v", "b_h"):
        assert grads[name].dtype == jnp.float32
        error = np.linalg.norm(-grads[name] - update[name]) / np.linalg.norm(update[name])
        assert error < 0.01, (name, error)  # measured: W 0.26%, b_h 0.29%


def test_pseudo_log_likelihood_is_unbiased():
    params = _random_rbm(7, 5, 4)
    log_joint, vs, _ = _joint_log_probs(params)
    log_p_v = np.logaddexp.reduce(log_joint, axis=1)
    v = vs[13]
    exact = 0.0  # sum_i log p(v_i | v_-i) from the enumerated marginal
    for unit in range(5):
        flipped = v.copy()
        flipped[unit] = 1 - flipped[unit]
        index = lambda x: int(x @ (2 ** np.arange(4, -1, -1)))
        exact += log_p_v[index(v)] - np.logaddexp(log_p_v[index(v)], log_p_v[index(flipped)])
    keys = jax.random.split(jax.random.key(0), 20_000)
    estimates = jax.vmap(lambda key: rbm.pseudo_log_likelihood(params, jnp.asarray(v), key))(keys)
    np.testing.assert_allclose(np.mean(estimates), exact, rtol=0.03)


# The family on the trainer.


def _tiny(variant="tiny"):
    from configs import rbm as rbm_config

    return rbm_config.get_config(variant)


@pytest.mark.slow
def test_pcd_chains_survive_checkpoint_and_resume(tmp_path):
    from genjax.train import load_state, train_and_evaluate

    config = _tiny("pcd,tiny")
    config.checkpoint_every = 4
    reference_dir, resumed_dir = str(tmp_path / "reference"), str(tmp_path / "resumed")
    train_and_evaluate(config, reference_dir)
    assert train_and_evaluate(config, resumed_dir, stop_at_step=10) is None
    halfway = load_state(resumed_dir)
    assert halfway["extras"]["chains"].shape == (config.batch_size, 64)
    train_and_evaluate(config, resumed_dir)
    reference, resumed = load_state(reference_dir), load_state(resumed_dir)
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # The chains moved after the resume (a restore that dropped them would restart them).
    assert np.any(halfway["extras"]["chains"] != resumed["extras"]["chains"])


@pytest.mark.slow
def test_tiny_rbm_end_to_end_exact_and_ais(tmp_path):
    from genjax.train import Experiment, restore_state, train_and_evaluate

    config = _tiny()
    results = train_and_evaluate(config, str(tmp_path))
    with open(os.path.join(tmp_path, "eval.json")) as f:
        assert json.load(f)["nll_estimator"] == "exact"
    assert results["num_test_examples"] == 355
    # Better than the uniform distribution over 64 bits, after 20 steps.
    assert results["test_nll_nats"] < 64 * np.log(2)
    # The same trained model evaluated through AIS: log Z agrees with the exact value.
    config.model_config.exact_max_units = 0
    config.model_config.ais_chains, config.model_config.ais_betas = 64, 1000
    experiment = Experiment(config)
    state = restore_state(experiment, str(tmp_path))
    via_ais = experiment.evaluate(state, final=True)
    assert via_ais["nll_estimator"] == "ais" and via_ais["ais_chains"] == 64
    assert abs(via_ais["log_z"] - results["log_z"]) < 3 * via_ais["log_z_stderr"] + 1e-3
    samples = experiment.sample(state, 8)
    assert samples.shape == (8, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 1


@pytest.mark.slow
def test_grbm_on_toy_data(tmp_path):
    from configs import grbm
    from genjax.train import train_and_evaluate

    results = train_and_evaluate(grbm.get_config("tiny"), str(tmp_path))
    assert results["nll_estimator"] == "exact"
    assert np.isfinite(results["test_nll_nats"])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sampler", "gibbs", r"model_config.sampler='gibbs'; allowed: \('cd', 'pcd', 'pt'\)"),
        ("gibbs_steps", 0, r"config.model_config.gibbs_steps=0 must be a positive integer"),
        ("visible", "poisson", r"config.model_config.visible='poisson'; allowed"),
        ("exact_max_units", 40, r"config.model_config.exact_max_units=40 must be in \[0, 25\]"),
    ],
)
def test_invalid_rbm_config(tmp_path, field, value, message):
    from genjax.train import ConfigError, validate

    config = _tiny()
    config.model_config[field] = value
    with pytest.raises(ConfigError, match=message):
        validate(config, str(tmp_path))


def test_bernoulli_rbm_needs_binary_data():
    from genjax.train import Experiment

    config = _tiny()
    config.preprocess.binarize = "none"
    with pytest.raises(ValueError, match="visible='bernoulli' needs binary data"):
        Experiment(config)
