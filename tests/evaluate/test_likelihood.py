"""Likelihood estimators and the eval.json NLL summary against NumPy references."""

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from genjax.evaluate.likelihood import (
    active_units,
    chunked_iwae_log_likelihood,
    summarize_log_likelihood,
)


def test_chunked_iwae_equals_one_logsumexp_over_all_samples():
    def log_weights_fn(keys, num):
        return jax.vmap(lambda key: jax.random.normal(key, (num,)) * 3.0, out_axes=1)(keys)

    keys = jax.random.split(jax.random.key(0), 5)
    estimate, elbo = chunked_iwae_log_likelihood(log_weights_fn, keys, 12, 4)
    chunks = [
        np.asarray(log_weights_fn(jax.vmap(lambda k, c=c: jax.random.fold_in(k, c))(keys), 4))
        for c in range(3)
    ]
    log_w = np.concatenate(chunks, axis=0).astype(np.float64)  # (12, 5)
    np.testing.assert_allclose(estimate, logsumexp(log_w, axis=0) - np.log(12), rtol=1e-5)
    np.testing.assert_allclose(elbo, log_w.mean(axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        chunked_iwae_log_likelihood(log_weights_fn, keys, 10, 4)


def test_active_units_counts_variance_above_threshold():
    rng = np.random.default_rng(0)
    means = np.concatenate([rng.normal(size=(500, 3)), 0.01 * rng.normal(size=(500, 2))], 1)
    assert active_units(means) == 3
    assert active_units(means, threshold=1e-5) == 5


def test_summarize_log_likelihood_matches_numpy():
    log_likelihood = np.random.default_rng(0).normal(-100.0, 5.0, size=400)
    summary = summarize_log_likelihood(log_likelihood, num_dims=784, estimator="iwae-5000")
    assert summary["test_nll_nats"] == pytest.approx(-log_likelihood.mean())
    assert summary["test_nll_stderr"] == pytest.approx(log_likelihood.std(ddof=1) / 20.0)
    assert summary["test_bits_per_dim"] == pytest.approx(-log_likelihood.mean() / 784 / np.log(2))
    assert summary["nll_estimator"] == "iwae-5000" and summary["num_test_examples"] == 400


def test_data_space_fields_name_the_space_and_convert_dequantized_bits_per_dim():
    from genjax.data.pipeline import DataSpec
    from genjax.evaluate.likelihood import data_space_fields

    def spec(num_levels, binarized):
        return DataSpec("d", (4, 4, 1), 10, 10, None, num_levels, binarized, (0.0, 1.0))

    summary = {"test_nll_nats": -20.0, "test_bits_per_dim": -20.0 / (16 * np.log(2))}
    assert "binar" in data_space_fields(summary, spec(256, True), False)["nll_space"]
    assert "256-level" in data_space_fields(summary, spec(256, False), False)["nll_space"]
    assert "continuous" in data_space_fields(summary, spec(None, False), False)["nll_space"]
    fields = data_space_fields(summary, spec(256, False), True)
    # 16 dims, 256 levels: (-20 + 16 ln 256) / (16 ln 2) = 8 - 20 / (16 ln 2)
    assert fields["test_bits_per_dim"] == pytest.approx(8.0 - 20.0 / (16 * np.log(2)))
    assert fields["test_bits_per_dim_unit_cube"] == summary["test_bits_per_dim"]
