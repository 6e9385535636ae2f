"""Pure loss, bound and likelihood functions over arrays (no Flax modules)."""

from genjax.objectives.likelihoods import (
    bernoulli_log_prob,
    bits_per_dim,
    discretized_logistic_log_prob,
    discretized_logistic_mixture_log_prob,
    gaussian_log_prob,
)
from genjax.objectives.vi import (
    effective_sample_size,
    elbo,
    gaussian_kl,
    importance_weights,
    iwae_bound,
)

__all__ = [
    "bernoulli_log_prob",
    "bits_per_dim",
    "discretized_logistic_log_prob",
    "discretized_logistic_mixture_log_prob",
    "effective_sample_size",
    "elbo",
    "gaussian_kl",
    "gaussian_log_prob",
    "importance_weights",
    "iwae_bound",
]
