"""MADE: autoregressive Jacobians, normalised likelihoods, faithful sampling, ensembles."""

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from configs import made as made_configs
from genjax.core.state import TrainState
from genjax.data.pipeline import DataSpec
from genjax.models.autoregressive.made import MADE, MADENetwork
from genjax.nn import masked
from genjax.train import ConfigError, train_and_evaluate

SPEC_9 = DataSpec("test", (3, 3, 1), 10, 10, None, 2, True, (0.0, 1.0))
SPEC_4 = DataSpec("test", (2, 2, 1), 10, 10, None, 2, True, (0.0, 1.0))


def _config(**overrides):
    config = made_configs.get_config("tiny")
    for name, value in overrides.items():
        config.model_config[name] = value
    return config


def _model_and_params(spec=SPEC_9, scale=1.0, seed=0, **overrides):
    """A MADE and random parameters, scaled up so that the distribution is far from uniform."""
    config = _config(**overrides)
    config.seed = seed
    model = MADE(config, spec)
    params, extras = model.init(jax.random.key(seed), jnp.zeros((1, *spec.example_shape)))
    return model, jax.tree.map(lambda p: scale * p, params), extras


def _all_binary(num_dims: int) -> np.ndarray:
    """All 2^D binary vectors, (2^D, D) float32."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_dims)), np.float32)


@pytest.mark.parametrize(
    "hidden_sizes, order_agnostic", [((32,), False), ((32,), True), ((24, 24), True)]
)
def test_outputs_depend_exactly_on_earlier_inputs(hidden_sizes, order_agnostic):
    """d logit_d / d x_j = 0 unless x_j comes before x_d; non-zero for most earlier x_j."""
    model, params, _ = _model_and_params(
        hidden_sizes=hidden_sizes, num_masks=4, order_agnostic=order_agnostic
    )
    x = jax.random.normal(jax.random.key(1), (9,))  # continuous: all paths are exercised
    jacobian_fn = jax.jit(jax.jacfwd(lambda v, k: model.logits(params, v[None], k)[0]))
    orders = set()
    for mask_index in range(4):
        jacobian = np.asarray(jacobian_fn(x, mask_index))  # (D out, D in)
        degrees = model.degrees[0][mask_index]
        earlier = degrees[None, :] < degrees[:, None]  # [output d, input j]: j before d
        assert np.all(jacobian[~earlier] == 0)
        assert np.count_nonzero(jacobian[earlier]) >= 0.5 * earlier.sum()
        orders.add(tuple(model.orders[mask_index]))
    assert len(orders) == (4 if order_agnostic else 1)
    if not order_agnostic:
        np.testing.assert_array_equal(model.orders[0], np.arange(9))


def test_network_with_several_outputs_per_input_is_autoregressive():
    """MADENetwork as a conditioner for real-valued data: K outputs per dimension (MAF-style)."""
    order = np.array([4, 1, 0, 3, 2])
    masks = masked.made_masks(0, 5, (16, 16), order, num_outputs_per_input=2)
    network = MADENetwork((16, 16), num_outputs_per_input=2, activation="tanh")
    x = jax.random.normal(jax.random.key(0), (5,))
    params = network.init(jax.random.key(1), x[None], masks)
    jacobian = np.asarray(jax.jit(jax.jacfwd(lambda v: network.apply(params, v, masks)))(x))
    assert jacobian.shape == (5, 2, 5)  # (output d, parameter k, input j)
    degrees = masked.input_degrees(order)
    earlier = degrees[None, :] < degrees[:, None]  # [output d, input j]
    for k in range(2):
        assert np.all(jacobian[:, k][~earlier] == 0)
        assert np.count_nonzero(jacobian[:, k][earlier]) >= 0.5 * earlier.sum()


@pytest.mark.parametrize("order_agnostic", [False, True])
def test_likelihoods_sum_to_one_for_every_mask_and_the_ensemble(order_agnostic):
    model, params, _ = _model_and_params(
        scale=3.0, num_masks=3, num_eval_masks=3, order_agnostic=order_agnostic
    )
    x = _all_binary(9).reshape(-1, 3, 3, 1)
    members = np.asarray(model.member_log_probs(params, x, 3), np.float64)  # (K, 512)
    for member in members:
        assert abs(logsumexp(member)) < 1e-4
        assert member.max() - member.min() > 5.0  # far from uniform: the check has teeth
    ensemble = logsumexp(members, axis=0) - np.log(3)
    assert abs(logsumexp(ensemble)) < 1e-4


def test_a_mask_that_lets_output_d_see_x_d_does_not_normalise():
    """Control for the test above: with a non-strict output mask the 'likelihood' cheats."""
    model, params, _ = _model_and_params(scale=3.0)
    degrees = [jnp.asarray(d[0]) for d in model.degrees]
    cheating = masked.masks_from_degrees(degrees)
    cheating[-1] = masked.mask_matrix(degrees[-2], degrees[-1], strict=False)
    x = _all_binary(9)
    logits = model.network.apply(params, x, cheating)[..., 0]
    log_p = np.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), -1)
    assert abs(logsumexp(np.asarray(log_p, np.float64))) > 0.1


@pytest.mark.parametrize("order_agnostic", [False, True])
def test_samples_follow_the_exact_likelihood(order_agnostic):
    model, params, _ = _model_and_params(
        spec=SPEC_4, scale=3.0, seed=2, num_masks=2, order_agnostic=order_agnostic
    )
    if order_agnostic:
        assert not np.array_equal(model.orders[0], np.arange(4))  # sampling must follow it
    state = TrainState.create(params, model.tx, jax.random.key(0))
    num = 40_000
    samples = np.asarray(model.sample(state, jax.random.key(2), num)).reshape(num, 4)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    states = _all_binary(4)
    probs = np.exp(np.asarray(model.log_prob(params, states.reshape(-1, 2, 2, 1), 0), np.float64))
    codes = samples.astype(int) @ (2 ** np.arange(3, -1, -1))  # same order as _all_binary
    freqs = np.bincount(codes, minlength=16) / num
    assert 0.5 * np.abs(freqs - probs).sum() < 0.02
    assert probs.max() > 3 / 16  # far from uniform


def test_sampling_is_one_loop_whose_program_does_not_grow_with_d():
    sizes = []
    for spec in (SPEC_4, SPEC_9):
        model, params, _ = _model_and_params(spec=spec)
        state = TrainState.create(params, model.tx, jax.random.key(0))
        jaxpr = jax.make_jaxpr(model.sample, static_argnums=2)(state, jax.random.key(1), 3).jaxpr
        loops = [eqn for eqn in jaxpr.eqns if eqn.primitive.name in ("scan", "while")]
        assert len(loops) == 1  # fori_loop with static bounds is a scan
        sizes.append(len(jaxpr.eqns))
    assert sizes[0] == sizes[1]


def test_ensemble_evaluation_is_logmeanexp_of_members():
    model, params, _ = _model_and_params(
        scale=2.0, num_masks=4, num_eval_masks=3, order_agnostic=True
    )
    state = TrainState.create(params, model.tx, jax.random.key(0))
    x = _all_binary(9)[::37].reshape(-1, 3, 3, 1)
    log_det = np.linspace(-1.0, 1.0, len(x)).astype(np.float32)
    outputs = model.eval_step(state, {"x": x, "log_det": log_det}, None, final=True)
    members = np.stack([np.asarray(model.log_prob(params, x, k), np.float64) for k in range(3)])
    expected = np.log(np.mean(np.exp(members), axis=0)) + log_det
    np.testing.assert_allclose(outputs["log_likelihood"], expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs["single_log_likelihood"], members[0] + log_det, rtol=1e-5)
    summary = model.summarize(jax.device_get(outputs), final=True, constants={})
    assert summary["nll_estimator"] == "exact-ensemble-3" and summary["num_eval_masks"] == 3
    np.testing.assert_allclose(summary["test_nll_nats"], -np.mean(expected), rtol=1e-5)
    np.testing.assert_allclose(
        summary["single_mask_nll_nats"], -np.mean(members[0] + log_det), rtol=1e-5
    )


def test_training_cycles_through_the_mask_sets():
    model, params, extras = _model_and_params(num_masks=3, order_agnostic=True)
    x = _all_binary(9)[:8].reshape(-1, 3, 3, 1)
    batch = {"x": x, "log_det": np.zeros(8, np.float32)}
    for step in range(4):
        mask_index = step % 3
        assert int(extras["mask_index"]) == mask_index
        loss, (_, extras) = model.loss(params, extras, batch, None)
        np.testing.assert_allclose(loss, -np.mean(model.log_prob(params, x, mask_index)), 1e-6)


def test_mask_sets_do_not_depend_on_their_number():
    """The first K mask sets are the same whatever num_masks is (ensembles are prefixes)."""
    small, _, _ = _model_and_params(num_masks=2, num_eval_masks=2, order_agnostic=True)
    large, _, _ = _model_and_params(num_masks=5, num_eval_masks=2, order_agnostic=True)
    for a, b in zip(small.degrees, large.degrees, strict=True):
        np.testing.assert_array_equal(a, b[:2])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_eval_masks", 5, r"config.model_config.num_eval_masks=5 must be at most"),
        ("activation", "gelu", r"config.model_config.activation='gelu'; allowed"),
        ("degrees", "sorted", r"config.model_config.degrees='sorted'; allowed"),
        ("num_masks", 0, r"config.model_config.num_masks=0 must be a positive integer"),
        ("hidden_sizes", (8, -1), r"config.model_config.hidden_sizes=\(8, -1\)"),
    ],
)
def test_bad_config_fields_are_named(tmp_path, field, value, message):
    config = _config(num_masks=4 if field != "num_masks" else 1)
    config.model_config[field] = value
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_bernoulli_model_needs_binary_data(tmp_path):
    continuous = DataSpec("test", (2,), 10, 10, None, None, False, (0.0, 1.0))
    with pytest.raises(ValueError, match="config.preprocess.binarize"):
        MADE(_config(), continuous)
    config = made_configs.get_config("tiny")
    config.preprocess.binarize = "none"  # found once the data is loaded, still before any write
    message = r"config.model='made' .* needs binary data: set config.preprocess.binarize"
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
