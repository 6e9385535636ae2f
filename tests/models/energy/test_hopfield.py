"""Hopfield networks: Hebbian weights, energy descent, update order, retrieval and capacity.

Dynamics are checked against a NumPy loop that updates one unit at a time; energy descent is
checked after every single-unit update on random symmetric weights (not only Hebbian ones).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hopfield as hopfield_configs
from genjax.models.energy import hopfield

NUM_UNITS = 24
NUM_STATES = 8


def _random_symmetric_weights(seed, num_units=NUM_UNITS, zero_row=None):
    """Gaussian symmetric weights with a zero diagonal (and optionally a zero row/column)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(num_units, num_units)) / np.sqrt(num_units)
    weights = (weights + weights.T) / 2
    np.fill_diagonal(weights, 0.0)
    if zero_row is not None:
        weights[zero_row, :] = weights[:, zero_row] = 0.0
    return weights.astype(np.float32)


def _random_states(seed, shape):
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=shape).astype(np.float32)


def _numpy_sweeps(weights, bias, state, orders):
    """Reference asynchronous dynamics: a plain loop over units, one (N,) state."""
    state = np.array(state, np.float64)
    for order in np.asarray(orders):
        for unit in order:
            field = weights[unit] @ state + bias[unit]
            if field != 0:
                state[unit] = np.sign(field)
    return state


def _numpy_energy(weights, state, bias):
    return -0.5 * state @ weights @ state - bias @ state


def test_hebbian_weights_match_numpy_and_are_symmetric_with_zero_diagonal():
    patterns = _random_states(0, (7, 30))
    weights = np.asarray(hopfield.hebbian_weights(jnp.asarray(patterns)))
    expected = sum(np.outer(xi, xi) for xi in patterns.astype(np.float64)) / 30
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    np.testing.assert_array_equal(weights, weights.T)
    np.testing.assert_array_equal(np.diag(weights), 0.0)


def test_energy_matches_numpy_on_batches():
    weights = _random_symmetric_weights(1)
    bias = np.random.default_rng(2).normal(size=NUM_UNITS).astype(np.float32)
    states = _random_states(3, (2, 3, NUM_UNITS))
    energies = np.asarray(hopfield.energy(weights, states, bias))
    assert energies.shape == (2, 3)
    expected = [[_numpy_energy(weights, s, bias) for s in row] for row in states]
    np.testing.assert_allclose(energies, expected, rtol=1e-5, atol=1e-5)
    no_bias = np.asarray(hopfield.energy(weights, states))
    np.testing.assert_allclose(no_bias, energies + states @ bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", hopfield.ORDER_MODES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_energy_never_increases_on_any_single_unit_update(order, with_bias):
    weights = _random_symmetric_weights(4)
    bias = np.random.default_rng(5).normal(size=NUM_UNITS).astype(np.float32) if with_bias else None
    states = _random_states(6, (NUM_STATES, NUM_UNITS))
    final, energies = hopfield.run_async(
        weights, states, order, 3, key=jax.random.key(7), bias=bias, return_energies=True
    )
    assert energies.shape == (3, NUM_UNITS, NUM_STATES)  # (sweeps, updates, states)
    initial = np.asarray(hopfield.energy(weights, states, bias))  # (B,)
    trajectory = np.concatenate([initial[None], np.asarray(energies).reshape(-1, NUM_STATES)])
    steps = np.diff(trajectory, axis=0)  # (3 N, B): one entry per single-unit update
    assert steps.max() <= 1e-5, steps.max()
    assert np.all(trajectory[-1] < trajectory[0])  # the states did move downhill
    np.testing.assert_allclose(trajectory[-1], hopfield.energy(weights, final, bias), rtol=1e-6)


def test_fixed_order_updates_units_in_index_order():
    weights = _random_symmetric_weights(8)
    bias = np.zeros(NUM_UNITS, np.float32)
    states = _random_states(9, (NUM_STATES, NUM_UNITS))
    final, _ = hopfield.run_async(weights, states, "fixed", 2)
    forward = np.tile(np.arange(NUM_UNITS), (2, 1))
    expected = [_numpy_sweeps(weights, bias, state, forward) for state in states]
    np.testing.assert_array_equal(np.asarray(final), expected)
    # The order matters for these states, so the comparison above pins it down.
    reverse = [_numpy_sweeps(weights, bias, state, forward[:, ::-1]) for state in states]
    assert not np.array_equal(expected, reverse)


def test_random_order_uses_a_fresh_permutation_per_sweep():
    weights = _random_symmetric_weights(10)
    bias = np.random.default_rng(11).normal(size=NUM_UNITS).astype(np.float32)
    states = _random_states(12, (NUM_STATES, NUM_UNITS))
    key = jax.random.key(13)
    orders = np.asarray(hopfield.sweep_orders("random", NUM_UNITS, 3, key))  # (3, N)
    np.testing.assert_array_equal(np.sort(orders, axis=1), np.tile(np.arange(NUM_UNITS), (3, 1)))
    assert len({tuple(order) for order in orders}) == 3
    final, _ = hopfield.run_async(weights, states, "random", 3, key=key, bias=bias)
    expected = [_numpy_sweeps(weights, bias, state, orders) for state in states]
    np.testing.assert_array_equal(np.asarray(final), expected)


def test_async_sweep_follows_an_explicit_order_and_keeps_units_with_zero_field():
    weights = _random_symmetric_weights(14, zero_row=3)  # unit 3 always has field 0
    bias = np.zeros(NUM_UNITS, np.float32)
    states = _random_states(15, (NUM_STATES, NUM_UNITS))
    order = np.random.default_rng(16).permutation(NUM_UNITS)
    final, _ = hopfield.async_sweep(weights, states, jnp.asarray(order))
    expected = [_numpy_sweeps(weights, bias, state, order[None]) for state in states]
    np.testing.assert_array_equal(np.asarray(final), expected)
    np.testing.assert_array_equal(np.asarray(final)[:, 3], states[:, 3])


def test_unknown_order_mode_is_rejected():
    with pytest.raises(ValueError, match=r"order='sideways'; allowed: \('fixed', 'random'\)"):
        hopfield.sweep_orders("sideways", 4, 1)


@pytest.mark.parametrize("flip_fraction", [0.0, 0.1, 0.25, 0.37])
def test_corrupt_flips_exactly_the_requested_number_of_units(flip_fraction):
    patterns = _random_states(17, (3, 4, 50))
    probes = np.asarray(hopfield.corrupt(jax.random.key(18), jnp.asarray(patterns), flip_fraction))
    num_flips = (probes != patterns).sum(axis=-1)  # (3, 4)
    expected = int(np.floor(flip_fraction * 50 + 0.5))
    assert hopfield.num_flipped_units(50, flip_fraction) == expected
    np.testing.assert_array_equal(num_flips, expected)
    np.testing.assert_array_equal(np.abs(probes), 1.0)
    if expected:  # different rows flip different units
        assert len({tuple(row) for row in (probes != patterns).reshape(12, 50)}) > 1


def test_overlap():
    a = _random_states(19, (5, 40))
    np.testing.assert_allclose(hopfield.overlap(a, a), 1.0)
    np.testing.assert_allclose(hopfield.overlap(a, -a), -1.0)
    np.testing.assert_allclose(hopfield.overlap(a, a[:1]), (a * a[:1]).mean(-1), rtol=1e-6)


def test_stored_patterns_are_fixed_points_and_retrieved_at_low_load():
    num_units, num_patterns = 200, 5  # alpha = 0.025, far below 0.138
    for seed in range(3):
        pattern_key, corrupt_key, retrieve_key = jax.random.split(jax.random.key(seed), 3)
        patterns = hopfield.random_patterns(pattern_key, num_patterns, num_units)
        weights = hopfield.hebbian_weights(patterns)
        final, num_sweeps = hopfield.retrieve(weights, patterns, retrieve_key, 30)
        np.testing.assert_array_equal(final, patterns)
        np.testing.assert_array_equal(num_sweeps, 1)  # one sweep that changes nothing
        probes = hopfield.corrupt(corrupt_key, patterns, 0.1)
        np.testing.assert_allclose(hopfield.overlap(probes, patterns), 0.8)
        final, num_sweeps = hopfield.retrieve(weights, probes, retrieve_key, 30)
        np.testing.assert_array_equal(final, patterns)
        assert np.all(np.asarray(num_sweeps) >= 2)


def test_capacity_curve_retrieves_at_low_load_and_fails_at_high_load(monkeypatch):
    num_traces = []  # `random_patterns` runs once per trace of the jitted trials

    def counting_random_patterns(*args):
        num_traces.append(1)
        return random_patterns(*args)

    random_patterns = hopfield.random_patterns
    monkeypatch.setattr(hopfield, "random_patterns", counting_random_patterns)
    curve = hopfield.capacity_curve(
        jax.random.key(20), 200, (0.025, 0.4), num_trials=2, flip_fraction=0.1, max_sweeps=30
    )
    np.testing.assert_array_equal(curve["patterns"], [5, 80])
    assert curve["retrieval_rate"][0] == 1.0 and curve["mean_overlap"][0] == 1.0
    assert curve["retrieval_rate"][1] < 0.5
    assert curve["mean_overlap"][1] < 0.8  # below the overlap the probes started from
    assert len(num_traces) == 1  # one compilation serves every load (zero-padded patterns)
    assert set(curve) == {
        "loads",
        "patterns",
        "retrieval_rate",
        "retrieval_rate_stderr",
        "mean_overlap",
        "mean_sweeps",
    }


def test_empirical_capacity_interpolates_the_first_crossing():
    loads = [0.1, 0.2, 0.3]
    assert hopfield.empirical_capacity(loads, [1.0, 0.6, 0.2]) == pytest.approx(0.225)
    assert hopfield.empirical_capacity(loads, [1.0, 0.9, 0.7]) == 0.3
    assert np.isnan(hopfield.empirical_capacity(loads, [0.4, 0.2, 0.0]))


def test_configs_validate_and_unknown_variant_is_rejected():
    hopfield.validate_config(hopfield_configs.get_config())
    hopfield.validate_config(hopfield_configs.get_config("tiny"))
    with pytest.raises(ValueError, match=r"allowed: \('default', 'tiny'\)"):
        hopfield_configs.get_config("huge")
