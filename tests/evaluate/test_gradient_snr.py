"""Tests for genjax/evaluate/gradient_snr.py against known distributions and NumPy references."""

import collections
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from genjax.evaluate import gradient_snr as snr_lib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The synthetic gradient g = mu + sigma * eps over a small pytree, eps ~ N(0, I): its mean is
# mu, its variance sigma^2 and its per-element SNR |mu| / sigma, all known in closed form.
MU = {"a": np.array([1.0, -2.0, 0.0]), "b": {"c": np.array([[3.0, -1.0], [0.2, 4.0]])}}
SIGMA = {"a": np.array([1.0, 0.5, 2.0]), "b": {"c": np.array([[1.0, 2.0], [0.1, 0.5]])}}


def _as_float32(tree):
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float32), tree)


def _gaussian_grad_fn(sigma):
    """grad_fn(params, key) = params + sigma * eps, one fresh normal per leaf and element."""
    sigma = _as_float32(sigma)

    def grad_fn(params, key):
        leaves, treedef = jax.tree.flatten(params)
        leaf_keys = jax.random.split(key, len(leaves))
        noise = [
            jax.random.normal(k, leaf.shape) for k, leaf in zip(leaf_keys, leaves, strict=True)
        ]
        return jax.tree.map(
            lambda leaf, s, eps: leaf + s * eps, params, sigma, jax.tree.unflatten(treedef, noise)
        )

    return grad_fn


# Module-level, so every test that uses one shares its compiled program (grad_fn is static).
GAUSSIAN_GRAD_FN = _gaussian_grad_fn(SIGMA)
NOISE_SCALE = 0.1
SMALL_NOISE_GRAD_FN = _gaussian_grad_fn(jax.tree.map(lambda s: np.full_like(s, NOISE_SCALE), SIGMA))


def _keys(seed, num_draws):
    return jax.random.split(jax.random.key(seed), num_draws)


def _flat(tree):
    """All leaves of ``tree`` as one float64 vector, in flattening order."""
    return np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in jax.tree.leaves(tree)])


def test_recovers_known_mean_variance_and_snr():
    num_draws = 4000
    mean, var = snr_lib.gradient_draws_statistics(
        GAUSSIAN_GRAD_FN, _as_float32(MU), _keys(0, num_draws), chunk_size=500
    )
    assert jax.tree.structure(mean) == jax.tree.structure(MU)
    assert jax.tree.structure(var) == jax.tree.structure(MU)
    mu, sigma = _flat(MU), _flat(SIGMA)
    mean, var = _flat(mean), _flat(var)
    # Sample means: within 4 standard errors sigma / sqrt(N) of mu.
    np.testing.assert_array_less(np.abs(mean - mu), 4.0 * sigma / np.sqrt(num_draws))
    # Sample variances: (N - 1) s^2 / sigma^2 ~ chi^2_{N-1}; accept the central 1 - 1e-6 range
    # of that law, i.e. s^2 / sigma^2 in about [0.89, 1.12] for N = 4000.
    dof = num_draws - 1
    low, high = stats.chi2.ppf([0.5e-6, 1.0 - 0.5e-6], dof) / dof
    ratio = var / sigma**2
    assert np.all((ratio > low) & (ratio < high)), (ratio, low, high)
    # Per-element SNR |m| / s: by the delta method its standard error is
    # sqrt((1 + SNR^2 / 2) / N); accept 5 of them around |mu| / sigma.
    true_snr = np.abs(mu) / sigma
    snr_tolerance = 5.0 * np.sqrt((1.0 + true_snr**2 / 2.0) / num_draws)
    np.testing.assert_array_less(np.abs(np.abs(mean) / np.sqrt(var) - true_snr), snr_tolerance)


def test_gradient_snr_groups_match_known_snr():
    num_draws = 4000
    groups = snr_lib.prefix_groups({"a": ["a"], "c": ["b/c"]})
    summary = snr_lib.gradient_snr(
        GAUSSIAN_GRAD_FN, _as_float32(MU), _keys(1, num_draws), groups, chunk_size=500
    )
    assert list(summary) == ["a", "c"]
    for name, leaf_mu, leaf_sigma in (
        ("a", MU["a"], SIGMA["a"]),
        ("c", MU["b"]["c"], SIGMA["b"]["c"]),
    ):
        true_snr = np.abs(leaf_mu).ravel() / leaf_sigma.ravel()
        # The group SNR is a mean of per-element SNRs: its error is at most the largest
        # per-element error, bounded as in the test above.
        tolerance = 5.0 * np.max(np.sqrt((1.0 + true_snr**2 / 2.0) / num_draws))
        assert abs(summary[name]["snr"] - np.mean(true_snr)) < tolerance
        assert summary[name]["num_elements"] == leaf_mu.size
        assert summary[name]["num_draws"] == num_draws


def _materialised_reference(grad_fn, params, keys):
    """NumPy float64 mean and var(ddof=1) of all draws, evaluated at once with vmap."""
    draws = jax.jit(jax.vmap(grad_fn, in_axes=(None, 0)))(params, keys)
    flat_draws = np.concatenate(
        [
            np.asarray(leaf, np.float64).reshape(keys.shape[0], -1)
            for leaf in jax.tree.leaves(draws)
        ],
        axis=1,
    )  # (N, elements)
    return flat_draws.mean(axis=0), flat_draws.var(axis=0, ddof=1), flat_draws


def _offset_params(offset):
    """MU shifted by a common ``offset``, float32."""
    return jax.tree.map(lambda leaf: jnp.asarray(offset + leaf, jnp.float32), MU)


def _naive_float32_variance(flat_draws):
    """One-pass E[g^2] - E[g]^2 in float32: what a careless accumulation computes."""
    draws32 = flat_draws.astype(np.float32)
    return np.mean(draws32**2, axis=0) - np.mean(draws32, axis=0) ** 2


@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("chunk_size", [1, 7, 21])
def test_chunked_statistics_equal_materialised_draws(chunk_size, offset):
    # Draws MU + offset + 0.1 eps, a deterministic function of the key. With offset 1e4 the
    # common part is 1e5 times the spread; the shifted, merged accumulation keeps the
    # variance exact to float32 rounding all the same.
    params, keys = _offset_params(offset), _keys(2, 21)
    mean, var = snr_lib.gradient_draws_statistics(
        SMALL_NOISE_GRAD_FN, params, keys, chunk_size=chunk_size
    )
    expected_mean, expected_var, _ = _materialised_reference(SMALL_NOISE_GRAD_FN, params, keys)
    # Mean: float32 rounding of numbers of size |MU| + offset.
    np.testing.assert_allclose(_flat(mean), expected_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_flat(var), expected_var, rtol=1e-4)


def test_variance_survives_a_large_common_offset_over_many_draws():
    # 4000 draws of 1e4 + MU + SIGMA eps in float32 (offset 5e3 to 1e5 times the spread) in
    # 8 merged chunks; the same compiled program as test_recovers_known_mean_variance_and_snr.
    params, keys = _offset_params(1e4), _keys(3, 4000)
    mean, var = snr_lib.gradient_draws_statistics(GAUSSIAN_GRAD_FN, params, keys, chunk_size=500)
    expected_mean, expected_var, flat_draws = _materialised_reference(
        GAUSSIAN_GRAD_FN, params, keys
    )
    np.testing.assert_allclose(_flat(var), expected_var, rtol=1e-4)
    np.testing.assert_allclose(_flat(mean), expected_mean, rtol=1e-6)
    # The naive one-pass variance is off by more than 100 %: the test can tell the difference.
    assert np.max(np.abs(_naive_float32_variance(flat_draws) / expected_var - 1.0)) > 1.0


def test_compiles_once_per_grad_fn_and_shapes():
    num_traces = []

    def grad_fn(params, key):
        num_traces.append(1)  # Python side effect: runs only while tracing
        return {"w": params["w"] * jax.random.normal(key, params["w"].shape)}

    params = {"w": jnp.ones((3,), jnp.float32)}
    snr_lib.gradient_draws_statistics(grad_fn, params, _keys(4, 8), chunk_size=4)
    traces_after_first_call = len(num_traces)
    assert traces_after_first_call > 0
    snr_lib.gradient_draws_statistics(grad_fn, params, _keys(5, 8), chunk_size=4)
    assert len(num_traces) == traces_after_first_call


def test_draws_statistics_rejects_bad_arguments():
    grad_fn, params = GAUSSIAN_GRAD_FN, _as_float32(MU)
    with pytest.raises(ValueError, match="N >= 2"):
        snr_lib.gradient_draws_statistics(grad_fn, params, _keys(0, 1))
    with pytest.raises(ValueError, match="chunk_size=4"):
        snr_lib.gradient_draws_statistics(grad_fn, params, _keys(0, 10), chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size=0"):
        snr_lib.gradient_draws_statistics(grad_fn, params, _keys(0, 10), chunk_size=0)
    with pytest.raises(ValueError, match="typed PRNG keys"):
        snr_lib.gradient_draws_statistics(grad_fn, params, jax.random.key_data(_keys(0, 10)))


# Hand-made statistics for group_summary: a Flax-like tree with an encoder and a decoder.
SUMMARY_MEAN = {
    "params": {
        "encoder": {
            "Dense_0": {"kernel": np.array([[1.0, -2.0], [0.0, 0.5]]), "bias": np.array([0.0, 3.0])}
        },
        "encoder_2": {"bias": np.array([4.0])},
        "decoder": {"bias": np.array([-1.0, 0.25, 2.0])},
    }
}
SUMMARY_VAR = {
    "params": {
        "encoder": {
            "Dense_0": {"kernel": np.array([[4.0, 1.0], [9.0, 0.25]]), "bias": np.array([0.0, 1.0])}
        },
        "encoder_2": {"bias": np.array([16.0])},
        "decoder": {"bias": np.array([1.0, 0.0625, 0.25])},
    }
}


def test_group_summary_matches_numpy():
    groups = snr_lib.prefix_groups({"encoder": ["params/encoder"], "decoder": ["params/decoder"]})
    summary = snr_lib.group_summary(SUMMARY_MEAN, SUMMARY_VAR, num_draws=100, groups=groups)
    assert list(summary) == ["encoder", "decoder"]

    # Encoder: kernel (4 elements) and bias (2); "params/encoder_2" is not part of it.
    encoder_mean = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 3.0])
    encoder_std = np.array([2.0, 1.0, 3.0, 0.5, 0.0, 1.0])
    # Element 4 (mean 0, std 0) is skipped; element 2 (mean 0, std 3) has SNR 0 and counts.
    encoder_snr = np.array([0.5, 2.0, 0.0, 1.0, 3.0])
    expected_encoder = {
        "snr": np.mean(encoder_snr),  # 1.3
        "snr_median": 1.0,
        "mean_abs": np.mean(np.abs(encoder_mean)),  # 6.5 / 6
        "std": np.mean(encoder_std),  # 7.5 / 6
        "snr_of_norm": np.sqrt(1 + 4 + 0.25 + 9) / np.sqrt(4 + 1 + 9 + 0.25 + 1),
        "num_elements": 6,
        "num_draws": 100,
    }
    # Decoder: std (1, 0.25, 0.5), SNR (1, 1, 4).
    expected_decoder = {
        "snr": 2.0,
        "snr_median": 1.0,
        "mean_abs": 3.25 / 3,
        "std": 1.75 / 3,
        "snr_of_norm": np.sqrt(1 + 0.0625 + 4) / np.sqrt(1 + 0.0625 + 0.25),
        "num_elements": 3,
        "num_draws": 100,
    }
    for name, expected in (("encoder", expected_encoder), ("decoder", expected_decoder)):
        assert sorted(summary[name]) == sorted(expected)
        for statistic, value in expected.items():
            np.testing.assert_allclose(summary[name][statistic], value, rtol=1e-12)
            assert type(summary[name][statistic]) in (float, int)
    json.dumps(summary)  # plain Python numbers


def test_group_summary_default_group_is_all_elements():
    summary = snr_lib.group_summary(SUMMARY_MEAN, SUMMARY_VAR, num_draws=10)
    assert list(summary) == ["all"]
    mean, std = _flat(SUMMARY_MEAN), np.sqrt(_flat(SUMMARY_VAR))
    assert summary["all"]["num_elements"] == mean.size == 10
    np.testing.assert_allclose(summary["all"]["mean_abs"], np.mean(np.abs(mean)), rtol=1e-12)
    kept = ~((mean == 0) & (std == 0))
    np.testing.assert_allclose(
        summary["all"]["snr"], np.mean(np.abs(mean[kept]) / std[kept]), rtol=1e-12
    )


def test_group_summary_paths_and_prefix_groups():
    seen_paths = []
    snr_lib.group_summary(
        SUMMARY_MEAN, SUMMARY_VAR, 10, groups={"record": lambda path: seen_paths.append(path) or 1}
    )
    assert sorted(seen_paths) == [
        "params/decoder/bias",
        "params/encoder/Dense_0/bias",
        "params/encoder/Dense_0/kernel",
        "params/encoder_2/bias",
    ]
    groups = snr_lib.prefix_groups(
        {
            "encoders": ["params/encoder", "params/encoder_2/"],
            "kernel": ["params/encoder/Dense_0/kernel"],
        }
    )
    encoders = [path for path in seen_paths if groups["encoders"](path)]
    assert sorted(encoders) == [
        "params/encoder/Dense_0/bias",
        "params/encoder/Dense_0/kernel",
        "params/encoder_2/bias",
    ]
    assert [path for path in seen_paths if groups["kernel"](path)] == [
        "params/encoder/Dense_0/kernel"
    ]
    assert not snr_lib.prefix_groups({"enc": ["params/enc"]})["enc"]("params/encoder/Dense_0/bias")
    # Sequence indices and attribute names (here of a namedtuple) join the path as well.
    moments = collections.namedtuple("Moments", ["first", "second"])
    other_paths = []
    tree = {"layers": [np.ones(2), np.ones(1)], "state": moments(np.ones(1), np.ones(3))}
    snr_lib.group_summary(tree, tree, 2, {"record": lambda path: other_paths.append(path) or 1})
    assert other_paths == ["layers/0", "layers/1", "state/first", "state/second"]


def test_group_summary_deterministic_and_silent_elements():
    mean = {"w": np.array([0.0, 2.0, 1.0]), "silent": np.zeros(2)}
    var = {"w": np.array([0.0, 0.0, 1.0]), "silent": np.zeros(2)}
    groups = snr_lib.prefix_groups({"w": ["w"], "silent": ["silent"]})
    summary = snr_lib.group_summary(mean, var, 5, groups)
    # w: element 0 (mean 0, std 0) skipped; element 1 (mean 2, std 0) has SNR inf.
    assert summary["w"]["snr"] == np.inf
    np.testing.assert_allclose(summary["w"]["snr_of_norm"], np.sqrt(5.0), rtol=1e-12)
    # A group whose elements never receive gradient: no SNR at all.
    assert np.isnan(summary["silent"]["snr"]) and np.isnan(summary["silent"]["snr_median"])
    assert summary["silent"]["mean_abs"] == 0.0 and summary["silent"]["num_elements"] == 2


def test_group_summary_and_prefix_groups_reject_bad_arguments():
    groups = snr_lib.prefix_groups({"encoder": ["params/encoder"], "nothing": ["params/flow"]})
    with pytest.raises(ValueError, match=r"'nothing'.*params/decoder/bias"):
        snr_lib.group_summary(SUMMARY_MEAN, SUMMARY_VAR, num_draws=10, groups=groups)
    with pytest.raises(ValueError, match="N >= 2"):
        snr_lib.group_summary(SUMMARY_MEAN, SUMMARY_VAR, num_draws=1)
    with pytest.raises(ValueError, match="'encoder'"):
        snr_lib.prefix_groups({"encoder": "params/encoder"})
    with pytest.raises(ValueError, match="'encoder'"):
        snr_lib.prefix_groups({"encoder": []})


def _snr_rows():
    """IWAE encoder SNR falling as K^-1/2 and DReG's rising, for two groups."""
    rows = []
    for num_importance_samples in (1, 10, 100):
        for group, scale in (("encoder", 1.0), ("decoder", 5.0)):
            for estimator, exponent in (("iwae", -0.5), ("dreg", 0.5)):
                snr = scale * num_importance_samples**exponent
                rows.append(
                    {
                        "estimator": estimator,
                        "group": group,
                        "num_importance_samples": num_importance_samples,
                        "snr": snr,
                        "snr_of_norm": 2.0 * snr,
                    }
                )
    return rows


def test_save_snr_plot_writes_png(tmp_path):
    path = tmp_path / "plots" / "snr.png"
    snr_lib.save_snr_plot(_snr_rows(), path, title="encoder SNR")
    with open(path, "rb") as png_file:
        assert png_file.read(8) == PNG_SIGNATURE
    with Image.open(path) as picture:
        picture.verify()
    assert os.path.getsize(path) > 1000
    assert sorted(os.listdir(path.parent)) == ["snr.png"]  # no temporary file left behind


def test_save_snr_plot_draws_one_log_log_line_per_series(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(snr_lib, "save_figure", lambda figure, path: saved.append(figure))
    snr_lib.save_snr_plot(_snr_rows()[::-1], tmp_path / "snr.png", y="snr_of_norm")
    (axes,) = saved[0].axes
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert sorted(lines) == ["dreg / decoder", "dreg / encoder", "iwae / decoder", "iwae / encoder"]
    np.testing.assert_allclose(lines["iwae / encoder"].get_xdata(), [1, 10, 100])
    np.testing.assert_allclose(
        lines["iwae / encoder"].get_ydata(), 2.0 * np.array([1.0, 10**-0.5, 0.1])
    )
    assert axes.get_xscale() == axes.get_yscale() == "log"
    assert axes.get_xlabel() == "num_importance_samples"
    assert axes.get_ylabel() == "snr_of_norm"
    assert lines["iwae / encoder"].get_marker() not in (None, "", "None")


def test_save_snr_plot_rejects_missing_key(tmp_path):
    rows = _snr_rows()
    del rows[3]["estimator"]
    with pytest.raises(ValueError, match="estimator"):
        snr_lib.save_snr_plot(rows, tmp_path / "snr.png")
    with pytest.raises(ValueError, match="elbo"):
        snr_lib.save_snr_plot(_snr_rows(), tmp_path / "snr.png", y="elbo")
    assert not os.path.exists(tmp_path / "snr.png")
