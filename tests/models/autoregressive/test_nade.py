"""NADE: the one-pass conditionals against a naive loop, exact likelihoods, sampling."""

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from configs import nade as nade_configs
from genjax.core.state import TrainState
from genjax.data.pipeline import DataSpec
from genjax.models.autoregressive import nade
from genjax.models.autoregressive.nade import NADE
from genjax.nn import precision
from genjax.train import ConfigError, train_and_evaluate

SPEC_9 = DataSpec("test", (3, 3, 1), 10, 10, None, 2, True, (0.0, 1.0))
SPEC_4 = DataSpec("test", (2, 2, 1), 10, 10, None, 2, True, (0.0, 1.0))
METHODS = ("blocked", "cumsum", "scan")
conditional_logits = jax.jit(nade.conditional_logits, static_argnames="method")
log_prob = jax.jit(nade.log_prob, static_argnames="method")


def _params(num_inputs=9, num_hidden=7, mask_input=False, scale=3.0, seed=0):
    """Random parameters, scaled (with random biases) to make the distribution peaked."""
    params = nade.init_params(jax.random.key(seed), num_inputs, num_hidden, mask_input)
    b_key, c_key = jax.random.split(jax.random.key(seed + 100))
    params = jax.tree.map(lambda p: scale * p, params)
    params["b"] = jax.random.normal(b_key, (num_inputs,))
    params["c"] = jax.random.normal(c_key, (num_hidden,))
    return params


def _random_orders(num, num_inputs=9, seed=1):
    return jax.vmap(lambda k: jax.random.permutation(k, num_inputs))(
        jax.random.split(jax.random.key(seed), num)
    )


def _all_binary(num_dims: int) -> np.ndarray:
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_dims)), np.float32)


def _naive_logits(params: dict, x: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Larochelle & Murray's eq. 3 position by position, O(D^2 H), NumPy float64.

    x (B, D), orders (B, D); returns logits (B, D) in the natural layout.
    """
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    logits = np.zeros(x.shape)
    for b, (row, order) in enumerate(zip(x, orders, strict=True)):
        for position, dim in enumerate(order):
            seen = order[:position]
            a = p["c"] + p["W"][:, seen] @ row[seen]
            if "U" in p:
                a = a + p["U"][:, seen].sum(axis=1)
            logits[b, dim] = p["b"][dim] + p["V"][dim] @ (1.0 / (1.0 + np.exp(-a)))
    return logits


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mask_input", [False, True])
@pytest.mark.parametrize("order_kind", ["natural", "shared", "per_example"])
def test_one_pass_equals_a_naive_loop(method, mask_input, order_kind):
    params = _params(mask_input=mask_input)
    x = (np.random.default_rng(0).uniform(size=(6, 9)) > 0.5).astype(np.float32)
    if order_kind == "natural":
        order = jnp.arange(9)
    elif order_kind == "shared":
        order = _random_orders(1)[0]
    else:
        order = _random_orders(6)
    logits = conditional_logits(params, x, order, method)
    orders = np.broadcast_to(np.asarray(order), x.shape)
    np.testing.assert_allclose(logits, _naive_logits(params, x, orders), rtol=1e-5, atol=1e-5)
    bits = x * np.log(1 / (1 + np.exp(-logits))) + (1 - x) * np.log(1 / (1 + np.exp(logits)))
    np.testing.assert_allclose(log_prob(params, x, order, method), bits.sum(1), rtol=1e-5)


def _blocked_loss(params, x, order, block_size):
    """Mean -log p(x | order) through the blocked pass with a given block size."""
    x_ordered = nade._ordered(x, order)
    logits = nade._ordered_logits_blocked(params, x_ordered, order, block_size)
    return -jnp.mean(jnp.sum(x_ordered * logits - jnp.logaddexp(0.0, logits), axis=1))


def _scan_loss(params, x, order):
    """The same loss through the sequential recursion (the `lax.scan` over positions)."""
    x_ordered = nade._ordered(x, order)
    logits = nade._ordered_logits_scan(params, x_ordered, order)
    return -jnp.mean(jnp.sum(x_ordered * logits - jnp.logaddexp(0.0, logits), axis=1))


@pytest.mark.parametrize(
    "block_size, mask_input, per_example",
    [(5, False, False), (5, True, True), (8, True, False), (8, False, True), (1, True, True)]
    + [(64, True, True)],  # 37 = 7 * 5 + 2 = 4 * 8 + 5; 64 > D: a single block
)
def test_blocked_pass_and_its_gradients_equal_the_recursion(block_size, mask_input, per_example):
    """Logits against the NumPy loop, loss and every parameter's gradient against the scan, for
    D = 37 not a multiple of most block sizes."""
    params = _params(num_inputs=37, num_hidden=11, mask_input=mask_input, scale=1.0)
    x = (np.random.default_rng(2).uniform(size=(5, 37)) > 0.5).astype(np.float32)
    order = _random_orders(5, num_inputs=37) if per_example else jnp.arange(37)
    x_ordered = nade._ordered(x, order)
    logits = nade._ordered_logits_blocked(params, x_ordered, order, block_size)
    orders = np.broadcast_to(np.asarray(order), x.shape)
    naive = np.take_along_axis(_naive_logits(params, x, orders), orders, axis=1)
    np.testing.assert_allclose(logits, naive, rtol=1e-5, atol=1e-5)
    loss, grads = jax.value_and_grad(_blocked_loss)(params, x, order, block_size)
    expected_loss, expected = jax.value_and_grad(_scan_loss)(params, x, order)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    assert grads.keys() == expected.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_blocked_pass_in_bfloat16_matches_the_recursion_and_stays_float32():
    """With bfloat16 W, V, U (the mixed-precision train step) the pre-activations are float32
    sums in both passes: logits float32, equal up to bfloat16 rounding of the readouts."""
    params = precision.cast_matrices(
        _params(num_inputs=37, num_hidden=11, mask_input=True), "bfloat16"
    )
    x = (np.random.default_rng(3).uniform(size=(5, 37)) > 0.5).astype(np.float32)
    order = _random_orders(5, num_inputs=37)
    x_ordered = nade._ordered(x, order)
    blocked = nade._ordered_logits_blocked(params, x_ordered, order)
    scan = nade._ordered_logits_scan(params, x_ordered, order)
    assert blocked.dtype == scan.dtype == jnp.float32
    np.testing.assert_allclose(blocked, scan, rtol=2e-2, atol=2e-2)
    grads = jax.grad(_blocked_loss)(params, x, order, nade.BLOCK_SIZE)
    expected = jax.grad(_scan_loss)(params, x, order)
    for name in grads:
        assert grads[name].dtype == params[name].dtype
        np.testing.assert_allclose(
            np.asarray(grads[name], np.float32),
            np.asarray(expected[name], np.float32),
            rtol=5e-2,
            atol=5e-3,
            err_msg=name,
        )


def _largest_array(jaxpr) -> int:
    """The most elements of any value in a jaxpr, its sub-jaxprs (scan bodies, remat) included."""
    sizes = [0]
    for eqn in jaxpr.eqns:
        sizes += [int(np.prod(var.aval.shape)) for var in eqn.outvars if hasattr(var.aval, "shape")]
        for sub in jax.core.jaxprs_in_params(eqn.params):
            sizes.append(_largest_array(sub))
    return max(sizes)


def test_blocked_gradient_never_holds_the_batch_by_positions_by_hidden_tensor():
    """The blocked pass and its gradient keep one block (B, K, H) at a time; the largest value
    is the (D / K, B, H) stack of pre-activations saved at block starts, K times smaller than
    the (B, D, H) that the cumsum pass materializes and the scan's gradient stores."""
    batch, num_inputs, num_hidden = 16, 64, 16
    params = _params(num_inputs=num_inputs, num_hidden=num_hidden)
    x = jnp.zeros((batch, num_inputs))
    full = batch * num_inputs * num_hidden
    largest = {}
    for method in ("blocked", "cumsum", "scan"):
        loss = lambda p, m=method: nade.log_prob(p, x, jnp.arange(num_inputs), m).sum()  # noqa: E731
        largest[method] = _largest_array(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    block_starts = (num_inputs // nade.BLOCK_SIZE) * batch * num_hidden
    assert largest == {"blocked": block_starts, "cumsum": full, "scan": full}


def test_auto_pass_is_blocked_on_cpu():
    assert nade.resolve_pass_method("auto") == (
        "blocked" if jax.default_backend() == "cpu" else "cumsum"
    )


@pytest.mark.parametrize("method", METHODS)
def test_conditionals_depend_exactly_on_earlier_inputs(method):
    """d logit_d / d x_j is zero unless x_j comes before x_d, and non-zero for every earlier x_j
    (NADE shares W over positions, so a cheat or a model ignoring its inputs fails here)."""
    params = _params(mask_input=True)
    x = jax.random.uniform(jax.random.key(3), (9,))
    jacobian_fn = jax.jit(
        jax.jacfwd(lambda v, order: nade.conditional_logits(params, v[None], order, method)[0])
    )
    for order in [jnp.arange(9), *_random_orders(3)]:
        jacobian = np.asarray(jacobian_fn(x, order))  # (D out, D in)
        position = np.argsort(np.asarray(order))
        earlier = position[None, :] < position[:, None]  # [output d, input j]
        assert np.all(jacobian[~earlier] == 0)
        assert np.all(jacobian[earlier] != 0)


@pytest.mark.parametrize("mask_input", [False, True])
def test_likelihoods_sum_to_one(mask_input):
    params = _params(mask_input=mask_input)
    x = _all_binary(9)
    for order in [jnp.arange(9), *_random_orders(2, seed=4)]:
        log_p = np.asarray(log_prob(params, x, order), np.float64)
        assert abs(logsumexp(log_p)) < 1e-4
        assert log_p.max() - log_p.min() > 5.0  # far from uniform


def _family(spec=SPEC_9, **overrides):
    """The NADE family on `spec` and peaked random parameters of its shape."""
    config = nade_configs.get_config("tiny")
    for name, value in overrides.items():
        config.model_config[name] = value
    model = NADE(config, spec)
    mc = config.model_config
    return model, _params(spec.num_dims, mc.num_hidden, mc.mask_input)


def test_ensemble_evaluation_sums_to_one_and_is_logmeanexp_of_members():
    model, params = _family(order_agnostic=True, mask_input=True, num_eval_orderings=3)
    state = TrainState.create(params, model.tx, jax.random.key(0))
    x = _all_binary(9)
    log_det = np.zeros(len(x), np.float32)
    outputs = model.eval_step(state, {"x": x.reshape(-1, 3, 3, 1), "log_det": log_det}, None, True)
    np.testing.assert_array_equal(model.orders[0], np.arange(9))
    members = np.stack(
        [np.asarray(log_prob(params, x, order), np.float64) for order in model.orders]
    )
    expected = np.log(np.mean(np.exp(members), axis=0))
    np.testing.assert_allclose(outputs["log_likelihood"], expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs["single_log_likelihood"], members[0], rtol=1e-5)
    assert abs(logsumexp(np.asarray(outputs["log_likelihood"], np.float64))) < 1e-4
    summary = model.summarize(jax.device_get(outputs), final=True, constants={})
    assert summary["nll_estimator"] == "exact-ensemble-3"
    np.testing.assert_allclose(summary["single_ordering_nll_nats"], -members[0].mean(), rtol=1e-5)


@pytest.mark.parametrize("use_family", [True, False])
def test_samples_follow_the_exact_likelihood(use_family):
    """Empirical frequencies of 40,000 samples against exp(log p) over all 16 states."""
    num = 40_000
    states = _all_binary(4)
    if use_family:
        model, params = _family(spec=SPEC_4, mask_input=True)
        state = TrainState.create(params, model.tx, jax.random.key(0))
        samples = np.asarray(model.sample(state, jax.random.key(1), num)).reshape(num, 4)
        order = jnp.arange(4)
    else:
        params = _params(num_inputs=4, num_hidden=5, seed=2)
        order = jnp.array([2, 0, 3, 1])
        samples = np.asarray(nade.sample(params, jax.random.key(1), num, order))
    probs = np.exp(np.asarray(nade.log_prob(params, states, order), np.float64))
    codes = samples.astype(int) @ (2 ** np.arange(3, -1, -1))
    freqs = np.bincount(codes, minlength=16) / num
    assert 0.5 * np.abs(freqs - probs).sum() < 0.02
    assert probs.max() > 3 / 16


def test_sampling_is_one_loop_whose_program_does_not_grow_with_d():
    sizes = []
    for spec in (SPEC_4, SPEC_9):
        model, params = _family(spec=spec)
        state = TrainState.create(params, model.tx, jax.random.key(0))
        jaxpr = jax.make_jaxpr(model.sample, static_argnums=2)(state, jax.random.key(1), 3).jaxpr
        loops = [eqn for eqn in jaxpr.eqns if eqn.primitive.name in ("scan", "while")]
        assert len(loops) == 1  # fori_loop with static bounds is a scan
        sizes.append(len(jaxpr.eqns))
    assert sizes[0] == sizes[1]


def test_order_agnostic_training_draws_an_ordering_per_example():
    model, params = _family(order_agnostic=True, mask_input=True)
    keys = jax.random.split(jax.random.key(5), 8)
    orders = np.asarray(model.training_orders(keys))
    assert orders.shape == (8, 9) and len({tuple(o) for o in orders}) > 1
    assert all(sorted(o) == list(range(9)) for o in orders)
    x = _all_binary(9)[::61][:8]
    batch = {"x": x.reshape(-1, 3, 3, 1), "log_det": np.zeros(8, np.float32)}
    loss, _ = model.loss(params, {}, batch, keys)
    np.testing.assert_allclose(loss, -np.mean(nade.log_prob(params, x, orders)), rtol=1e-5)
    fixed, _ = _family()
    np.testing.assert_array_equal(fixed.training_orders(keys), np.arange(9))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_eval_orderings", 4, r"num_eval_orderings=4 needs config.model_config.order_agnostic"),
        ("num_hidden", 0, r"config.model_config.num_hidden=0 must be a positive integer"),
        ("pass_method", "loop", r"config.model_config.pass_method='loop'; allowed"),
        (
            "num_eval_orderings",
            0,
            r"config.model_config.num_eval_orderings=0 must be a positive integer",
        ),
    ],
)
def test_bad_config_fields_are_named(tmp_path, field, value, message):
    config = nade_configs.get_config("tiny")
    config.model_config[field] = value
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
