"""Likelihood estimators shared by the families, and the `eval.json` NLL summary."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genjax.data import toy2d
from genjax.objectives import bits_per_dim, iwae_bound


def chunked_iwae_log_likelihood(
    log_weights_fn: Callable[[jax.Array, int], jax.Array],
    keys: jax.Array,
    num_samples: int,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """The k-sample importance-weighted estimate of log p(x), in bounded memory.

    Burda et al. (2016) evaluate log p(x) with the k = 5000 IWAE bound; holding all 5000
    samples of a batch at once would not fit, so the samples are drawn `chunk_size` at a time
    with `jax.lax.map` and combined with one logsumexp.

    Args:
      log_weights_fn: `(keys (B,), num) -> log_w (num, B)`, the log importance weights of
        `num` fresh samples per example.
      keys: (B,) one typed key per example; chunk c uses `fold_in(key, c)`.
      num_samples: k, a multiple of `chunk_size`.
      chunk_size: samples per chunk.

    Returns:
      (log_likelihood (B,), elbo (B,)): the IWAE-k estimate and the mean log weight.
    """
    if num_samples % chunk_size:
        raise ValueError(f"num_samples={num_samples} must be a multiple of chunk_size={chunk_size}")
    num_chunks = num_samples // chunk_size

    def one_chunk(chunk_index):
        chunk_keys = jax.vmap(lambda key: jax.random.fold_in(key, chunk_index))(keys)
        return log_weights_fn(chunk_keys, chunk_size)  # (chunk, B)

    log_w = jax.lax.map(one_chunk, jnp.arange(num_chunks))  # (chunks, chunk, B)
    log_w = log_w.reshape(num_samples, -1)  # (K, B)
    return iwae_bound(log_w, axis=0), jnp.mean(log_w, axis=0)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """The mean of per-example values (N,) and its standard error std / sqrt(N) (NaN for
    N = 1), in float64."""
    values = np.asarray(values, np.float64)
    num = len(values)
    stderr = float(np.std(values, ddof=1) / np.sqrt(num)) if num > 1 else float("nan")
    return float(np.mean(values)), stderr


def summarize_log_likelihood(
    log_likelihood: np.ndarray, num_dims: int, estimator: str, split: str = "test"
) -> dict:
    """Per-example log p(x) estimates -> the NLL fields of `eval.json`.

    Returns `{split}_nll_nats` (mean negative log-likelihood), `{split}_nll_stderr` (its
    standard error over examples), `{split}_bits_per_dim`, `nll_estimator` and the count.
    """
    num = len(log_likelihood)
    mean_log_likelihood, stderr = mean_and_stderr(log_likelihood)
    nll = -mean_log_likelihood
    return {
        f"{split}_nll_nats": nll,
        f"{split}_nll_stderr": stderr,
        f"{split}_bits_per_dim": float(bits_per_dim(nll, num_dims)),
        "nll_estimator": estimator,
        f"num_{split}_examples": num,
    }


def summarize_importance_sampled(
    outputs: dict, final: bool, num_dims: int, monitor_samples: int, eval_samples: int
) -> dict:
    """The summary of a family evaluated by importance sampling (VAE, Helmholtz machine):
    monitoring (`final=False`), the mean ELBO and the IWAE-`monitor_samples` NLL from
    `outputs["elbo"]` and `outputs["iwae"]`; final, `summarize_log_likelihood`'s fields of
    `outputs["log_likelihood"]` (estimator 'iwae-`eval_samples`') and `test_elbo`."""
    if not final:
        return {
            "elbo": float(np.mean(outputs["elbo"])),
            f"nll_iwae{monitor_samples}": float(-np.mean(outputs["iwae"])),
        }
    summary = summarize_log_likelihood(outputs["log_likelihood"], num_dims, f"iwae-{eval_samples}")
    summary["test_elbo"] = float(np.mean(outputs["elbo"]))
    return summary


def summarize_exact_likelihood(
    log_likelihood: np.ndarray, num_dims: int, toy_name: str | None, final: bool
) -> dict:
    """The summary of a family with an exact likelihood: `summarize_log_likelihood`'s fields
    (estimator 'exact'), and on a toy2d density known in closed form (`toy_name`) its entropy
    and `entropy_gap_nats`, the NLL above it. `final=False` gives the monitoring subset: `nll`,
    `bits_per_dim` and `entropy_gap`."""
    summary = summarize_log_likelihood(log_likelihood, num_dims, "exact")
    if toy_name is not None:
        entropy, entropy_stderr = toy2d.entropy(toy_name)
        summary["entropy_nats"], summary["entropy_stderr"] = entropy, entropy_stderr
        summary["entropy_gap_nats"] = summary["test_nll_nats"] - entropy
    if final:
        return summary
    monitor = {"nll": summary["test_nll_nats"], "bits_per_dim": summary["test_bits_per_dim"]}
    if "entropy_gap_nats" in summary:
        monitor["entropy_gap"] = summary["entropy_gap_nats"]
    return monitor


def active_units(posterior_means: np.ndarray, threshold: float = 1e-2) -> int:
    """Burda et al. (2016) active units: A_u = Cov_x(E_q[z_u | x]) > threshold.

    Args:
      posterior_means: (N, U), E_q[z | x_n] for every test example.
    """
    return int(np.sum(np.var(np.asarray(posterior_means, np.float64), axis=0) > threshold))


def log_mean_exp(member_log_probs: jax.Array) -> jax.Array:
    """Mixture of K equally weighted members: (K, B) log p_k(x) -> (B,) log (1/K) sum_k p_k."""
    return iwae_bound(member_log_probs, axis=0)  # logsumexp - log K


def ensemble_outputs(member_log_probs: jax.Array, log_det: jax.Array) -> dict:
    """Per-example eval outputs from (K, B) member log-likelihoods: the ensemble and member 0."""
    return {
        "log_likelihood": log_mean_exp(member_log_probs) + log_det,
        "single_log_likelihood": member_log_probs[0] + log_det,
    }


def summarize_ensemble(
    outputs: dict, final: bool, num_dims: int, num_members: int, member_name: str
) -> dict:
    """eval.json fields for an exact model evaluated as a K-member ensemble.

    `test_nll_nats` is the ensemble (K = 1: the single member), estimator 'exact' or
    'exact-ensemble-K'; `single_{member_name}_nll_nats` etc. are member 0's.
    """
    if not final:
        return {
            "nll": float(-np.mean(outputs["log_likelihood"])),
            f"single_{member_name}_nll": float(-np.mean(outputs["single_log_likelihood"])),
        }
    estimator = "exact" if num_members == 1 else f"exact-ensemble-{num_members}"
    summary = summarize_log_likelihood(outputs["log_likelihood"], num_dims, estimator)
    single = summarize_log_likelihood(outputs["single_log_likelihood"], num_dims, "exact")
    for field in ("test_nll_nats", "test_nll_stderr", "test_bits_per_dim"):
        summary[f"single_{member_name}_{field.removeprefix('test_')}"] = single[field]
    summary[f"num_eval_{member_name}s"] = num_members
    return summary


def data_space_fields(summary: dict, spec, dequantized: bool) -> dict:
    """`eval.json` fields saying which space `test_nll_nats` is in, for a final `summary`.

    - Discrete data scored by a probability mass (binarized data, PixelCNN levels): the NLL is
      a mass; nothing changes.
    - Uniformly dequantized L-level data scored by a density on [0, 1]^D (the NLL includes the
      log-det of every preprocessing step back to that cube): `test_bits_per_dim` becomes the
      discrete-space figure of published tables, (nll + D ln L) / (D ln 2), an upper bound on
      the discrete NLL (Theis et al. 2016), and `test_bits_per_dim_unit_cube` keeps the other.
    - Continuous data (toy2d): a density of the data as given.

    Args:
      summary: a family's final summary with `test_nll_nats` and `test_bits_per_dim`.
      spec: the run's `DataSpec`.
      dequantized: whether `config.preprocess.dequantize` applied.
    """
    if spec.num_levels is None:
        return {"nll_space": "density of the continuous data as given"}
    if spec.binarized:
        return {"nll_space": "probability mass of the binary (binarized) data"}
    if not dequantized:
        return {"nll_space": f"probability mass of the {spec.num_levels}-level discrete data"}
    num_dims, num_levels = spec.num_dims, spec.num_levels
    discrete_nll = summary["test_nll_nats"] + num_dims * np.log(num_levels)
    return {
        "nll_space": (
            "density of the uniformly dequantized data on [0, 1]^D, every preprocessing "
            f"log-det included; test_bits_per_dim is in the {num_levels}-level discrete space: "
            f"(nll + D ln {num_levels}) / (D ln 2), as published tables report it"
        ),
        "test_bits_per_dim": float(bits_per_dim(discrete_nll, num_dims)),
        "test_bits_per_dim_unit_cube": summary["test_bits_per_dim"],
    }
