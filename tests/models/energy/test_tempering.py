"""Parallel tempering for RBMs: the swap against exact enumeration, sampling, and training."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models.energy import rbm, tempering


def _random_rbm(seed, num_visible, num_hidden, scale=1.5):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {
        "W": scale * jax.random.normal(keys[0], (num_visible, num_hidden)),
        "b_v": jax.random.normal(keys[1], (num_visible,)),
        "b_h": jax.random.normal(keys[2], (num_hidden,)),
    }


def _states(num_units):
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_units)))


def _log_tempered_marginals(params, base_bias, betas):
    """log p_beta(v), float64 (M, 2^V), the joints tempered: p_beta(v, h) proportional to
    exp(-beta E(v, h) - (1 - beta) E_base(v, h)), E_base = -base_bias . v, summed over h.

    Written from the energies, not from `rbm.interpolate`.
    """
    num_visible, num_hidden = params["W"].shape
    vs, hs = _states(num_visible), _states(num_hidden)
    W, b_v, b_h = (np.asarray(params[k], np.float64) for k in ("W", "b_v", "b_h"))
    minus_energy = (vs @ b_v)[:, None] + (hs @ b_h)[None] + vs @ W @ hs.T  # (2^V, 2^H)
    minus_base_energy = (vs @ base_bias)[:, None]  # (2^V, 1), h uniform under the base
    beta = betas[:, None, None]
    log_joint = beta * minus_energy[None] + (1 - beta) * minus_base_energy[None]
    log_tempered = np.logaddexp.reduce(log_joint, axis=2)  # (M, 2^V)
    return log_tempered - np.logaddexp.reduce(log_tempered, axis=1, keepdims=True)


@pytest.mark.parametrize("num_visible, num_temperatures", [(4, 3), (3, 4)])
def test_swap_leaves_the_product_of_tempered_distributions_invariant(num_visible, num_temperatures):
    """Every joint state of the M chains (2^(M V) = 4096) enumerated: the swap step's
    transition matrix, built from its acceptance probabilities, satisfies detailed balance
    with respect to prod_m p_{beta_m}(v_m), for both parities; and the stochastic swap
    follows that matrix."""
    num_hidden = 3
    params = _random_rbm(0, num_visible, num_hidden)
    base_bias = np.linspace(-1.0, 0.5, num_visible)
    base = rbm.base_rate_params(params, jnp.asarray(base_bias, jnp.float32))
    betas = tempering.tempering_betas(num_temperatures)
    log_marginals = _log_tempered_marginals(params, base_bias, betas.astype(np.float64))
    num_states_per_chain = 2**num_visible
    codes = np.array(list(itertools.product(range(num_states_per_chain), repeat=num_temperatures)))
    chains = _states(num_visible)[codes]  # (S, M, V), S = 2^(M V)
    log_pi = np.sum(log_marginals[np.arange(num_temperatures), codes], axis=1)  # (S,)
    np.testing.assert_allclose(np.logaddexp.reduce(log_pi), 0.0, atol=1e-9)
    log_acceptance = np.asarray(
        jax.jit(jax.vmap(lambda v: tempering.swap_log_acceptance(params, base, betas, v)))(
            jnp.asarray(chains, jnp.float32)
        ),
        np.float64,
    )  # (S, M-1)
    weights = num_states_per_chain ** np.arange(num_temperatures - 1, -1, -1)
    for parity in (0, 1):
        pairs = [m for m in range(num_temperatures - 1) if m % 2 == parity]
        sources, targets, probs = [], [], []
        # Each proposed pair swaps independently: sum over which of them are accepted.
        for outcome in itertools.product([False, True], repeat=len(pairs)):
            prob = np.ones(len(codes))
            new_codes = codes.copy()
            for m, accepted in zip(pairs, outcome, strict=True):
                a = np.exp(log_acceptance[:, m])
                prob *= a if accepted else 1 - a
                if accepted:
                    new_codes[:, [m, m + 1]] = new_codes[:, [m + 1, m]]
            sources.append(np.arange(len(codes)))
            targets.append(new_codes @ weights)
            probs.append(prob)
        sources, targets, probs = map(np.concatenate, (sources, targets, probs))
        flow = np.exp(log_pi[sources]) * probs  # pi(s) T(s -> s')
        # Detailed balance: the flow s -> s' equals the flow s' -> s for every pair.
        forward = {}
        for s, t, f in zip(sources, targets, flow, strict=True):
            forward[(s, t)] = forward.get((s, t), 0.0) + f
        for (s, t), f in forward.items():
            assert abs(f - forward.get((t, s), 0.0)) <= 1e-9 + 1e-5 * f  # float32 acceptance
        # Stationarity: pi T = pi.
        pushed = np.bincount(targets, weights=flow, minlength=len(codes))
        np.testing.assert_allclose(pushed, np.exp(log_pi), rtol=1e-5, atol=1e-12)
        # The stochastic swap from one state follows the matrix's row.
        state = int(np.argmax(np.exp(log_pi) * (log_acceptance.max(1) < -0.3)))
        num_draws = 4000
        swap = jax.jit(
            jax.vmap(
                lambda key, v, parity=parity: tempering.temperature_swap(
                    key, params, base, betas, v, parity
                )[0],
                (0, None),
            )
        )
        swapped = swap(
            jax.random.split(jax.random.key(parity), num_draws),
            jnp.asarray(chains[state], jnp.float32),
        )
        swapped_codes = np.asarray(swapped) @ (2 ** np.arange(num_visible - 1, -1, -1))
        landed = swapped_codes.astype(int) @ weights
        row = np.bincount(targets[sources == state], probs[sources == state], len(codes))
        empirical = np.bincount(landed, minlength=len(codes)) / num_draws
        assert np.all(row[empirical > 0] > 0)  # lands only where the matrix allows
        assert np.all(np.abs(empirical - row) < 4 * np.sqrt(row * (1 - row) / num_draws) + 1e-9)


def _bimodal_rbm():
    """4 visible units in two independent pairs, a strong hidden unit each: every pair is all
    on or all off (each pattern about 0.24), with a barrier between that Gibbs rarely crosses."""
    W = np.zeros((4, 2), np.float32)
    W[:2, 0], W[2:, 1] = 10.0, 10.0
    return {"W": jnp.asarray(W), "b_v": jnp.full(4, -4.0), "b_h": jnp.full(2, -12.0)}


def test_beta_one_chains_sample_the_model_marginal():
    """The beta = 1 chains after 50 steps against the exact marginal (total variation), on an
    RBM where plain Gibbs chains from the all-off state have mostly not left it yet."""
    params = _bimodal_rbm()
    exact = np.exp(_log_tempered_marginals(params, np.zeros(4), np.ones(1))[0])  # (16,)
    num_chain_sets, num_temperatures, num_steps = 4000, 4, 50
    base = rbm.base_rate_params(params)  # uniform: the tempered RBMs are beta * E(v, h)
    betas = tempering.tempering_betas(num_temperatures)
    v0 = jnp.zeros((num_chain_sets, num_temperatures, 4))
    keys = jax.random.split(jax.random.key(0), num_chain_sets)
    final, swap_rate = jax.jit(
        jax.vmap(
            lambda key, v: tempering.parallel_tempering_chain(
                params, base, key, v, betas, num_steps
            )
        )
    )(keys, v0)
    assert final.shape == (num_chain_sets, num_temperatures, 4)
    assert np.all((0 < swap_rate) & (swap_rate < 1))

    def total_variation(samples):
        codes = np.asarray(samples).astype(int) @ (2 ** np.arange(3, -1, -1))
        empirical = np.bincount(codes, minlength=16) / len(codes)
        return 0.5 * np.abs(empirical - exact).sum()

    gibbs = jax.jit(jax.vmap(lambda key, v: rbm.gibbs_chain(params, key, v, num_steps)))(
        keys, v0[:, 0]
    )
    # 4,000 exact draws would be about 0.02 off in total variation; measured 0.017 and 0.42.
    assert total_variation(final[:, 0]) < 0.04
    assert total_variation(gibbs) > 0.3  # what the swaps buy on this model


# The RBM family with sampler='pt' on the trainer.


@pytest.mark.slow
def test_tiny_pt_run_end_to_end(tmp_path):
    """`configs/rbm.py:pt,tiny` trains, keeps (B, M, V) chain sets, and reports AIS/exact and
    RAISE NLLs."""
    from configs import rbm as rbm_config
    from genjax.train import load_state, train_and_evaluate

    config = rbm_config.get_config("pt,tiny")
    results = train_and_evaluate(config, str(tmp_path))
    state = load_state(str(tmp_path))
    num_temperatures = config.model_config.num_temperatures
    assert state["extras"]["chains"].shape == (config.batch_size, num_temperatures, 64)
    assert results["nll_estimator"] == "exact"
    assert results["test_nll_nats"] < 64 * np.log(2)  # better than uniform after 20 steps
    # RAISE with 300 betas on this small model: within a nat of the exact NLL (measured 0.004).
    assert results["raise_betas"] == 300 and results["raise_chains"] == 1
    assert abs(results["test_nll_raise_nats"] - results["test_nll_nats"]) < 1.0


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sampler", "tempering", r"sampler='tempering'; allowed: \('cd', 'pcd', 'pt'\)"),
        ("num_temperatures", 1, r"num_temperatures=1 must be an integer of at least 2"),
        ("raise_chains", -1, r"raise_chains=-1 must be an integer >= 0"),
        ("raise_betas", 2, r"raise_betas=2 must be at least 3"),
    ],
)
def test_invalid_tempering_and_raise_config(tmp_path, field, value, message):
    from configs import rbm as rbm_config
    from genjax.train import ConfigError, validate

    config = rbm_config.get_config("pt,tiny")
    config.model_config[field] = value
    with pytest.raises(ConfigError, match=message):
        validate(config, str(tmp_path))


def test_tempering_betas():
    np.testing.assert_allclose(tempering.tempering_betas(5), [1.0, 0.75, 0.5, 0.25, 0.0])
    with pytest.raises(ValueError, match="num_temperatures=1 must be at least 2"):
        tempering.tempering_betas(1)


@pytest.mark.slow
def test_tempered_chain_sets_are_sharded_like_the_batch(tmp_path):
    """PT on 2 devices: each device advances the chain sets of its own examples, tempered
    towards the same (device-averaged) base rates, so chains and parameters equal a 1-device
    run's."""
    from genjax.train import load_state
    from tests.core.test_parallel import _train_on

    _train_on(1, str(tmp_path / "one"), "rbm", "pt,tiny")
    _train_on(2, str(tmp_path / "two"), "rbm", "pt,tiny")
    one, two = load_state(str(tmp_path / "one")), load_state(str(tmp_path / "two"))
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(two["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    chains_one, chains_two = one["extras"]["chains"], two["extras"]["chains"]
    assert chains_one.shape == chains_two.shape == (20, 10, 64)
    np.testing.assert_array_equal(chains_one, chains_two)
    assert np.any(chains_two[:10] != chains_two[10:])  # not one device's chains copied
