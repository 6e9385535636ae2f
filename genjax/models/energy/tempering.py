"""Parallel tempering for RBMs: persistent chains at several temperatures that swap states.

Desjardins, Courville, Bengio, Vincent & Delalleau (2010), "Tempered Markov chain Monte Carlo
for training of restricted Boltzmann machines"; Cho, Raiko & Ilin (2010), "Parallel tempering
is efficient for learning restricted Boltzmann machines".

One chain set holds M visible states v (M, V), chain m at inverse temperature beta_m with
1 = beta_0 > ... > beta_{M-1} >= 0. The tempered distributions are those of this codebase's
AIS path (`rbm.interpolate` against a base-rate RBM, `rbm.base_rate_params`), whose joints
are geometric averages (Salakhutdinov & Murray 2008):

    p_beta(v, h) proportional to exp(-beta E(v, h) - (1 - beta) E_base(v, h)),

an ordinary RBM with W and b_h scaled by beta and visible biases mixed linearly (its marginal
p_beta(v) is not p_base(v)^(1 - beta) p(v)^beta: the hidden units are summed out after the
averaging). With the uniform base (zero visible biases) this is the plain beta * E(v, h)
scaling; with the data's base rates the hottest chain (beta = 0) draws independent pixels at
the data's means, exactly, in one Gibbs sweep.

A step sweeps every chain once (block Gibbs at its own beta), then proposes swaps between
neighbours (m, m+1) for every m of one parity, even or odd at random, and accepts each with
the Metropolis rule on the tempered marginals (free energies F_beta, hidden units summed out):

    log a = min(0, log p*_m(v_{m+1}) + log p*_{m+1}(v_m) - log p*_m(v_m) - log p*_{m+1}(v_{m+1})),

log p*_beta(v) = -F_beta(v). The proposed pairs are disjoint and each swap satisfies detailed
balance for the product of the tempered marginals, so the step leaves that product invariant;
the beta = 1 chain is a chain on the model's own marginal, and its states are the negative
phase of training (`rbm_family`, `sampler='pt'`).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax.models.energy import rbm


def tempering_betas(num_temperatures: int) -> np.ndarray:
    """Inverse temperatures 1 = beta_0 > ... > beta_{M-1} = 0, evenly spaced: float32 (M,)."""
    if num_temperatures < 2:
        raise ValueError(f"num_temperatures={num_temperatures} must be at least 2")
    return np.linspace(1.0, 0.0, num_temperatures, dtype=np.float32)


def tempered_params(params: dict, base: dict, beta: jax.Array) -> dict:
    """`rbm.interpolate(base, params, beta)` with W kept in its own dtype (bfloat16 stays so)."""
    tempered = rbm.interpolate(base, params, beta)
    tempered["W"] = tempered["W"].astype(params["W"].dtype)
    return tempered


def tempered_log_unnormalized(
    params: dict, base: dict, betas: jax.Array, v: jax.Array
) -> jax.Array:
    """-F_{beta_m}(v_m) for each chain: betas (M,), v (M, ..., V) -> (M, ...)."""
    return jax.vmap(lambda beta, x: -rbm.free_energy(tempered_params(params, base, beta), x))(
        betas, v
    )


def tempered_sweep(key: jax.Array, params: dict, base: dict, betas, v: jax.Array) -> jax.Array:
    """One block Gibbs sweep of each chain at its own temperature: v (M, V) -> (M, V)."""
    keys = jax.random.split(key, betas.shape[0])
    return jax.vmap(
        lambda chain_key, beta, x: rbm.gibbs_step(chain_key, tempered_params(params, base, beta), x)
    )(keys, betas, v)


def swap_log_acceptance(params: dict, base: dict, betas, v: jax.Array) -> jax.Array:
    """Metropolis log acceptance of swapping neighbours (m, m+1), m = 0..M-2: (M-1,).

    v (M, V) holds one chain set; the rule is on the tempered free energies (module docstring).
    """
    betas = jnp.asarray(betas)
    own = tempered_log_unnormalized(params, base, betas, v)  # (M,)
    up = tempered_log_unnormalized(params, base, betas[:-1], v[1:])  # p*_m(v_{m+1})
    down = tempered_log_unnormalized(params, base, betas[1:], v[:-1])  # p*_{m+1}(v_m)
    return jnp.minimum(0.0, up + down - own[:-1] - own[1:])


def swap_permutation(accepted: jax.Array) -> jax.Array:
    """Source chain of each position after the accepted swaps of disjoint pairs (m, m+1).

    accepted (M-1,) bool, no two adjacent entries True -> an index permutation (M,).
    """
    no = jnp.zeros((1,), bool)
    take_next = jnp.concatenate([accepted, no])  # chain m takes v_{m+1}
    take_previous = jnp.concatenate([no, accepted])  # chain m+1 takes v_m
    return jnp.arange(accepted.shape[0] + 1) + take_next - take_previous


def temperature_swap(
    key: jax.Array, params: dict, base: dict, betas, v: jax.Array, parity: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Proposes swapping (m, m+1) for every m with m % 2 == parity; accepts by Metropolis.

    Returns the chains after the swaps (M, V) and which pairs swapped (M-1,) bool (pairs not
    proposed are False).
    """
    chex.assert_rank(v, 2)
    log_acceptance = swap_log_acceptance(params, base, betas, v)  # (M-1,)
    proposed = jnp.arange(log_acceptance.shape[0]) % 2 == parity
    uniform = jax.random.uniform(key, log_acceptance.shape)
    accepted = proposed & (jnp.log(uniform) < log_acceptance)
    return v[swap_permutation(accepted)], accepted


def parallel_tempering_step(
    key: jax.Array, params: dict, base: dict, betas, v: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A sweep of every chain, then swaps of one random parity: v (M, V) -> (M, V).

    Returns the new chains and the numbers of swaps accepted and proposed (scalars).
    """
    sweep_key, parity_key, swap_key = jax.random.split(key, 3)
    v = tempered_sweep(sweep_key, params, base, betas, v)
    parity = jax.random.bernoulli(parity_key).astype(jnp.int32)
    v, accepted = temperature_swap(swap_key, params, base, betas, v, parity)
    num_proposed = (betas.shape[0] - parity) // 2  # pairs (m, m+1) with m % 2 == parity
    return v, (jnp.sum(accepted), num_proposed)


def parallel_tempering_chain(
    params: dict, base: dict, key: jax.Array, v0: jax.Array, betas, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """`num_steps` parallel-tempering steps from v0 (M, V), step t with `fold_in(key, t)`.

    Returns the final chains (M, V) (row 0 is the beta = 1 chain) and the fraction of the
    proposed swaps that were accepted.
    """
    betas = jnp.asarray(betas)
    chex.assert_shape(v0, (betas.shape[0], None))

    def step(v, index):
        return parallel_tempering_step(jax.random.fold_in(key, index), params, base, betas, v)

    v, (num_accepted, num_proposed) = jax.lax.scan(step, v0, jnp.arange(num_steps))
    return v, jnp.sum(num_accepted) / jnp.maximum(jnp.sum(num_proposed), 1)
