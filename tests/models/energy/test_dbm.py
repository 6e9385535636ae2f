"""Deep Boltzmann machines against brute-force enumeration of every (v, h1, h2) in NumPy, the
mean-field fixed point, the doubled-unit pretraining RBMs, and checkpoint/resume of the
persistent chains through the trainer."""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from configs import dbm as dbm_configs
from genjax.data.pipeline import DataSpec
from genjax.models.energy import dbm, rbm
from genjax.train import Experiment, load_state, train, train_and_evaluate
from tests import checks


def _random_dbm(key, sizes, scale=1.0):
    """A DBM with sizes (V, H1, H2) whose weights and biases are all ~ N(0, scale^2)."""
    params = dbm.init_params(key, sizes[0], sizes[1:])
    keys = jax.random.split(jax.random.fold_in(key, 1), len(params))
    return {
        name: scale * jax.random.normal(k, value.shape)
        for k, (name, value) in zip(keys, sorted(params.items()), strict=True)
    }


def _bits(num_units):
    """Every binary vector of length num_units, (2**num_units, num_units) float64."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_units)))


def _np(params):
    return {name: np.asarray(value, np.float64) for name, value in params.items()}


def _np_energy(p, v, h1, h2):
    return -(v @ p["W1"] @ h1 + h1 @ p["W2"] @ h2 + p["b_v"] @ v + p["b_h1"] @ h1 + p["b_h2"] @ h2)


def _np_log_unnormalized_marginals(params):
    """log sum_{h1, h2} exp(-E(v, h1, h2)) for every v, by enumerating every (v, h1, h2)."""
    p = _np(params)
    num_visible, num_h1 = p["W1"].shape
    num_h2 = p["W2"].shape[1]
    hiddens = list(itertools.product(_bits(num_h1), _bits(num_h2)))
    return np.array(
        [logsumexp([-_np_energy(p, v, h1, h2) for h1, h2 in hiddens]) for v in _bits(num_visible)]
    )


def test_energy_matches_the_definition():
    params = _random_dbm(jax.random.key(0), (5, 4, 3))
    keys = jax.random.split(jax.random.key(1), 3)
    v, h1, h2 = (
        jax.random.bernoulli(k, 0.5, (6, n)).astype(jnp.float32)
        for k, n in zip(keys, (5, 4, 3), strict=True)
    )
    expected = [
        _np_energy(_np(params), *states)
        for states in zip(*map(np.asarray, (v, h1, h2)), strict=True)
    ]
    np.testing.assert_allclose(dbm.energy(params, v, h1, h2), expected, rtol=1e-5, atol=1e-5)
    # dE/dW1 = -v h1^T: descending mean E(data) - mean E(model) is the paper's update.
    grad = jax.grad(lambda p: jnp.mean(dbm.energy(p, v, h1, h2)))(params)
    np.testing.assert_allclose(grad["W1"], -v.T @ h1 / 6, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad["W2"], -h1.T @ h2 / 6, rtol=1e-5, atol=1e-6)


def test_as_rbm_log_partition_equals_enumeration():
    params = _random_dbm(jax.random.key(2), (4, 3, 3))
    log_z = logsumexp(_np_log_unnormalized_marginals(params))
    model_rbm = dbm.as_rbm(params)
    assert model_rbm["W"].shape == (3, 4 + 3)
    np.testing.assert_allclose(rbm.log_partition_exact(model_rbm), log_z, rtol=1e-6)
    # The RBM's free energy of h1 is the DBM's with v and h2 summed out.
    p = _np(params)
    for h1 in _bits(3):
        expected = logsumexp([-_np_energy(p, v, h1, h2) for v in _bits(4) for h2 in _bits(3)])
        np.testing.assert_allclose(-rbm.free_energy(model_rbm, h1), expected, rtol=1e-5)


def test_mean_field_reaches_its_fixed_point_and_raises_the_bound():
    params = _random_dbm(jax.random.key(4), (10, 8, 6), scale=0.5)
    v = jax.random.bernoulli(jax.random.key(5), 0.5, (5, 10)).astype(jnp.float32)
    mu1, mu2 = dbm.mean_field(params, v, 200)
    fixed_mu1 = jax.nn.sigmoid(v @ params["W1"] + mu2 @ params["W2"].T + params["b_h1"])
    fixed_mu2 = jax.nn.sigmoid(mu1 @ params["W2"] + params["b_h2"])
    np.testing.assert_allclose(mu1, fixed_mu1, atol=1e-5)
    np.testing.assert_allclose(mu2, fixed_mu2, atol=1e-5)
    # Zero iterations: the bottom-up pass with doubled weights.
    init_mu1, init_mu2 = dbm.mean_field(params, v, 0)
    np.testing.assert_allclose(init_mu1, jax.nn.sigmoid(2 * v @ params["W1"] + params["b_h1"]))
    np.testing.assert_allclose(init_mu2, jax.nn.sigmoid(init_mu1 @ params["W2"] + params["b_h2"]))
    # Each update maximizes the bound in one layer given the other: it never decreases.
    bounds = [dbm.mean_field_bound(params, v, *dbm.mean_field(params, v, n)) for n in (0, 1, 3)]
    assert np.all(np.diff(np.stack(bounds), axis=0) >= -1e-4)
    assert np.all(bounds[-1] - bounds[0] > 1e-3)


def test_mean_field_bound_is_below_the_exact_log_likelihood():
    params = _random_dbm(jax.random.key(6), (5, 4, 3))
    log_unnormalized = _np_log_unnormalized_marginals(params)
    log_z = logsumexp(log_unnormalized)
    log_p = log_unnormalized - log_z
    np.testing.assert_allclose(logsumexp(log_p), 0.0, atol=1e-10)  # sum_v p(v) = 1
    v = jnp.asarray(_bits(5), jnp.float32)
    mu1, mu2 = dbm.mean_field(params, v, 50)
    bound = np.asarray(dbm.mean_field_bound(params, v, mu1, mu2), np.float64) - log_z
    assert np.all(bound <= log_p + 1e-4)
    assert np.max(log_p - bound) > 1e-2  # a real gap: the test can tell them apart
    # Any factorial q gives a bound, the converged mean-field one a tighter one.
    random_mu1, random_mu2 = (
        jax.random.uniform(k, mu.shape)
        for k, mu in zip(jax.random.split(jax.random.key(7)), (mu1, mu2), strict=True)
    )
    random_bound = dbm.mean_field_bound(params, v, random_mu1, random_mu2) - log_z
    assert np.all(random_bound <= bound + 1e-4)


def test_gibbs_sweeps_sample_the_model():
    params = _random_dbm(jax.random.key(8), (3, 2, 2))
    log_p = _np_log_unnormalized_marginals(params)
    p = np.exp(log_p - logsumexp(log_p))
    chains = dbm.random_chains(jax.random.key(9), 20_000, params)
    chains = dbm.gibbs_chain(params, jax.random.key(10), chains, 30)
    codes = np.asarray(chains["v"] @ jnp.array([4.0, 2.0, 1.0])).astype(int)  # _bits order
    empirical = np.bincount(codes, minlength=8) / len(codes)
    assert 0.5 * np.abs(empirical - p).sum() < 0.02  # total variation


@jax.jit
def _pretraining_quantities(params, v, h1, h2, v_model, h1_model):
    """Both pretraining RBMs' conditionals and CD gradients, next to the DBM's formulas."""
    sigmoid = jax.nn.sigmoid
    first = dbm.doubled_visible_rbm(params)  # visibles concat(v, v)
    second = dbm.doubled_hidden_rbm(params)  # visibles h1, hiddens concat(h2, h2)
    h1_data = rbm.hidden_probs(first, dbm.doubled(v))
    return {
        "first_hidden": (h1_data, sigmoid(2 * v @ params["W1"] + params["b_h1"])),
        "first_visible": (
            rbm.visible_probs(first, h1),
            dbm.doubled(sigmoid(h1 @ params["W1"].T + params["b_v"])),
        ),
        "second_visible": (
            rbm.visible_probs(second, dbm.doubled(h2)),
            sigmoid(2 * h2 @ params["W2"].T + params["b_h1"]),
        ),
        "second_hidden": (
            rbm.hidden_probs(second, h1),
            dbm.doubled(sigmoid(h1 @ params["W2"] + params["b_h2"])),
        ),
        "first_grads": jax.grad(
            lambda p: rbm.contrastive_divergence_loss(
                dbm.doubled_visible_rbm(p), dbm.doubled(v), v_model
            )
        )(params),
        "first_textbook": rbm.textbook_update(first, dbm.doubled(v), v_model),
        "second_grads": jax.grad(
            lambda p: rbm.contrastive_divergence_loss(dbm.doubled_hidden_rbm(p), h1_data, h1_model)
        )(params),
    }


def test_doubled_unit_pretraining_rbms():
    params = _random_dbm(jax.random.key(11), (5, 4, 3))
    keys = jax.random.split(jax.random.key(12), 5)
    shapes = [(6, 5), (6, 4), (6, 3), (6, 10), (6, 4)]
    states = [
        jax.random.bernoulli(k, 0.5, s).astype(jnp.float32)
        for k, s in zip(keys, shapes, strict=True)
    ]
    out = jax.device_get(_pretraining_quantities(params, *states))
    for name in ("first_hidden", "first_visible", "second_visible", "second_hidden"):
        np.testing.assert_allclose(*out[name], rtol=1e-6, err_msg=name)
    # The CD gradient reaches the tied weights: the sum of both copies' textbook updates.
    grads, textbook = out["first_grads"], out["first_textbook"]
    np.testing.assert_allclose(
        -grads["W1"], textbook["W"][:5] + textbook["W"][5:], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(-grads["b_h1"], textbook["b_h"], rtol=1e-5, atol=1e-6)
    assert np.all(out["second_grads"]["b_h1"] == 0)  # stage 2 leaves b_h1 to stage 1
    assert np.abs(out["second_grads"]["W2"]).max() > 0


@pytest.mark.slow
def test_family_evaluation_uses_log_z_of_as_rbm():
    spec = DataSpec("test", (3, 4, 1), 10, 10, None, 2, True, (0.0, 1.0))
    config = dbm_configs.get_config("tiny")
    model = dbm.DBM(config, spec)
    state = model.create_state(jax.random.key(0), jnp.zeros((1, 3, 4, 1)))
    params = _random_dbm(jax.random.key(17), (12, 12, 8), scale=0.3)
    extras = {**state.extras, "visible_mean": jnp.full(12, 0.3), "num_batches": jnp.ones(())}
    state = state.replace(params=params, extras=extras)
    exact = jax.device_get(model.evaluation_constants(state, jax.random.key(1), True))
    assert exact["exact"]
    np.testing.assert_allclose(exact["log_z"], rbm.log_partition_exact(dbm.as_rbm(params)))
    # AIS on h1 with v and h2 summed out, from base rates fitted to the running mean of mu1.
    config.model_config.exact_max_units = 0
    ais = jax.device_get(model.evaluation_constants(state, jax.random.key(1), True))
    assert not ais["exact"] and ais["ais_chains"] == config.model_config.ais_chains
    assert abs(ais["log_z"] - exact["log_z"]) < 4 * ais["log_z_stderr"] + 0.02, ais["log_z_stderr"]
    x = jax.random.bernoulli(jax.random.key(2), 0.5, (5, 3, 4, 1)).astype(jnp.float32)
    outputs = model.eval_step(state, {"x": x, "log_det": jnp.zeros(5)}, None, True)
    summary = model.summarize(jax.device_get(outputs), True, exact)
    v = x.reshape(5, -1)
    mu1, mu2 = dbm.mean_field(params, v, config.model_config.eval_mean_field_iterations)
    expected = dbm.mean_field_bound(params, v, mu1, mu2) - exact["log_z"]
    np.testing.assert_allclose(summary["test_nll_nats"], -np.mean(expected), rtol=1e-5)
    assert summary["nll_estimator"] == "dbm-mean-field-bound (exact log Z)"


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dbm"))
    config = _resume_config()
    results = train_and_evaluate(config, workdir)
    return config, workdir, results


def _resume_config():
    config = dbm_configs.get_config("tiny")
    config.checkpoint_every = 5  # every stage boundary is saved
    config.keep_checkpoints = 4
    return config


def test_stages_train_their_own_parameters(uninterrupted_run):
    config, workdir, _ = uninterrupted_run
    starts = np.cumsum(config.model_config.stage_steps)
    initial = jax.device_get(Experiment(config).init_state()).params
    after_1, after_2, final = (load_state(workdir, step=int(step))["params"] for step in starts)
    for name in ("W2", "b_h2"):  # untouched by layer-1 pretraining
        np.testing.assert_array_equal(after_1[name], initial[name])
    for name in ("W1", "b_v", "b_h1"):  # untouched by layer-2 pretraining
        np.testing.assert_array_equal(after_2[name], after_1[name])
    for name in ("W1", "W2", "b_v", "b_h1", "b_h2"):  # joint training moves everything
        assert np.abs(final[name] - after_2[name]).max() > 1e-4


def test_resumed_run_matches_uninterrupted_bitwise(uninterrupted_run, tmp_path):
    config, reference_dir, _ = uninterrupted_run
    workdir = str(tmp_path)
    stop = 13  # inside joint training, not a checkpoint step: the stop saves one
    joint_start = sum(config.model_config.stage_steps[:2])
    assert joint_start < stop < config.num_steps and stop % config.checkpoint_every
    experiment = Experiment(config)
    train(experiment, workdir, stop_at_step=stop)
    stopped = load_state(workdir)
    assert stopped["step"] == stop
    chains = stopped["extras"]["chains"]
    assert chains["v"].shape == (config.batch_size, 64)
    assert set(np.unique(chains["h1"])) <= {0.0, 1.0}
    train(experiment, workdir)
    resumed, reference = load_state(workdir), load_state(reference_dir)
    assert resumed["step"] == reference["step"] == config.num_steps
    checks.assert_trees_equal(resumed, reference)  # params, 3 optimizer states, chains: bitwise
    assert np.abs(reference["extras"]["chains"]["v"] - chains["v"]).max() == 1  # chains moved


def test_run_outputs(uninterrupted_run):
    config, workdir, results = uninterrupted_run
    with open(os.path.join(workdir, "eval.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    assert saved["nll_estimator"] == "dbm-mean-field-bound (exact log Z)"
    assert saved["num_test_examples"] == 355
    assert 0 < saved["test_nll_nats"] < 64 * np.log(2)  # better than coin flips
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    stages = [m["train/stage"] for m in lines if "train/stage" in m]
    assert stages == [0.0, 1.0, 2.0, 2.0]  # logged every 5 steps over stages of 5, 5, 10
    assert any("eval/nll_bound" in m for m in lines)
    assert os.listdir(os.path.join(workdir, "samples"))


def test_run_writes_the_first_layer_filters(uninterrupted_run):
    from tests.models.energy.test_common import assert_filters_png_shows

    _, workdir, _ = uninterrupted_run
    weights = load_state(workdir)["params"]["W1"]  # (64, 12)
    assert_filters_png_shows(os.path.join(workdir, "filters.png"), weights, (8, 8))
