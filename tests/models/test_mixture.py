"""Mixtures fitted by EM: densities against SciPy, EM against scikit-learn's GaussianMixture,
EM's monotone likelihood, k-means, stepwise EM's update, sampling, and refusals by name."""

import json
import os
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from configs import mixture as mixture_configs
from genjax.data import toy2d
from genjax.models import mixture
from genjax.train import ConfigError, train_and_evaluate, validate


def _model_config(**fields):
    mc = mixture_configs.mixture_model_config()
    mc.update(fields)
    return mc


def _toy_points(num=1500, name="8gaussians", seed=0):
    return toy2d.sample(name, np.random.default_rng(seed), num).astype(np.float32)


def _em(x, params, mc, distribution, covariance, iterations):
    """Full-batch EM from `params`: the log-likelihood before each iteration, and the end."""
    x = jnp.asarray(x)

    @jax.jit
    def iteration(params):
        joint = mixture.log_joint(params, x, distribution)
        log_p = jax.scipy.special.logsumexp(joint, axis=1)
        resp = jnp.exp(joint - log_p[:, None])
        stats_ = mixture.batch_statistics(resp, x, distribution, covariance)
        return mixture.maximize(stats_, distribution, covariance, mc), log_p.mean()

    history = []
    for _ in range(iterations):
        params, mean_log_p = iteration(params)
        history.append(float(mean_log_p))
    return params, np.array(history)


def _kmeans_init(x, k, distribution, covariance, mc, seed=0):
    _, labels = mixture.kmeans(jax.random.key(seed), jnp.asarray(x), k, 10)
    resp = jax.nn.one_hot(labels, k)
    stats_ = mixture.batch_statistics(resp, jnp.asarray(x), distribution, covariance)
    return mixture.maximize(stats_, distribution, covariance, mc)


@pytest.mark.parametrize("covariance", mixture.COVARIANCES)
def test_gaussian_component_densities_match_scipy(covariance):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3)).astype(np.float32)
    resp = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
    points = rng.normal(size=(50, 3)).astype(np.float32) * [1.0, 2.0, 0.5]
    mc = _model_config(reg_covar=1e-3)
    stats_ = mixture.batch_statistics(
        jnp.asarray(resp), jnp.asarray(points), "gaussian", covariance
    )
    params = mixture.maximize(stats_, "gaussian", covariance, mc)
    got = np.asarray(mixture.component_log_probs(params, jnp.asarray(x), "gaussian"))
    tril = np.asarray(params["scale_tril"], np.float64)
    for k in range(4):
        cov = tril[k] @ tril[k].T
        expected = stats.multivariate_normal(np.asarray(params["means"][k]), cov).logpdf(x)
        np.testing.assert_allclose(got[:, k], expected, rtol=1e-5, atol=1e-4)
        # The M-step's covariance: the responsibility-weighted covariance plus reg_covar.
        weights = resp[:, k] / resp[:, k].sum()
        centred = points - weights @ points
        full = (weights[:, None] * centred).T @ centred
        reference = {
            "full": full,
            "diag": np.diag(np.diag(full)),
            "spherical": np.eye(3) * np.mean(np.diag(full)),
        }[covariance] + 1e-3 * np.eye(3)
        np.testing.assert_allclose(cov, reference, rtol=1e-4, atol=1e-5)
    log_p = np.asarray(mixture.log_prob(params, jnp.asarray(x), "gaussian"))
    pi = np.asarray(jax.nn.softmax(params["logits"]), np.float64)
    np.testing.assert_allclose(log_p, np.log(np.exp(got.astype(np.float64)) @ pi), rtol=1e-5)


def test_bernoulli_component_densities_match_numpy():
    rng = np.random.default_rng(2)
    x = (rng.random((6, 10)) < 0.5).astype(np.float32)
    means = rng.uniform(0.05, 0.95, size=(3, 10)).astype(np.float32)
    params = {"logits": jnp.zeros(3), "means": jnp.asarray(means)}
    got = np.asarray(mixture.component_log_probs(params, jnp.asarray(x), "bernoulli"))
    expected = np.log(means[None] ** x[:, None] * (1 - means[None]) ** (1 - x[:, None])).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "covariance",
    [
        # 18 s for full covariances: in the slow set to keep the default suite under 10 min.
        pytest.param(covariance, marks=pytest.mark.slow) if covariance == "full" else covariance
        for covariance in mixture.COVARIANCES
    ],
)
def test_full_batch_em_matches_scikit_learn_from_the_same_start(covariance):
    """20 EM iterations from one k-means start against scikit-learn's `GaussianMixture` from
    the same start: in float64 the per-example log-likelihoods agree to 1e-9 (the same
    algorithm); in float32, genjax's default, the mean agrees to 1e-5 (the uncentred second
    moments lose a few digits for points far out in a narrow component: up to 7e-3 nats)."""
    points = _toy_points().astype(np.float64)  # float32 draws, exactly representable
    for x64 in (True, False):
        with jax.enable_x64(x64):
            x = points.astype(np.float64 if x64 else np.float32)
            mc = _model_config(reg_covar=1e-6)
            start = _kmeans_init(x, 8, "gaussian", covariance, mc)
            params, _ = _em(x, start, mc, "gaussian", covariance, 20)
            got = np.asarray(mixture.log_prob(params, jnp.asarray(x), "gaussian"))
        reference = _scikit_learn_em(points, start, covariance, 20)
        if x64:
            np.testing.assert_allclose(got, reference.score_samples(points), rtol=0, atol=1e-9)
        else:
            np.testing.assert_allclose(got.mean(), reference.score(points), atol=1e-5)
            np.testing.assert_allclose(got, reference.score_samples(points), atol=1e-2)


def _scikit_learn_em(x, start, covariance, iterations):
    weights = np.asarray(jax.nn.softmax(jnp.asarray(start["logits"])), np.float64)
    tril = np.asarray(start["scale_tril"], np.float64)
    precisions = np.linalg.inv(tril @ np.swapaxes(tril, 1, 2))
    precisions_init = {
        "full": precisions,
        "diag": np.diagonal(precisions, axis1=1, axis2=2),
        "spherical": precisions[:, 0, 0],
    }[covariance]
    reference = GaussianMixture(
        len(weights),
        covariance_type=covariance,
        reg_covar=1e-6,
        max_iter=iterations,
        tol=0.0,
        weights_init=weights / weights.sum(),
        means_init=np.asarray(start["means"], np.float64),
        precisions_init=precisions_init,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return reference.fit(x.astype(np.float64))


@pytest.mark.parametrize(
    "distribution, covariance",
    [("gaussian", "full"), ("gaussian", "diag"), ("gaussian", "spherical"), ("bernoulli", "full")],
)
def test_em_never_lowers_the_log_likelihood(distribution, covariance):
    if distribution == "bernoulli":
        rng = np.random.default_rng(3)
        prototypes = rng.random((3, 16)) < 0.5
        x = (prototypes[rng.integers(0, 3, 600)] ^ (rng.random((600, 16)) < 0.15)).astype(
            np.float32
        )
    else:
        x = _toy_points(name="grid25")
    mc = _model_config(reg_covar=1e-6, min_probability=1e-6)
    start = _kmeans_init(x, 6, distribution, covariance, mc, seed=4)
    _, history = _em(x, start, mc, distribution, covariance, 30)
    assert history[-1] > history[0] + 1e-3  # it moved
    # Monotone up to float32 rounding of a mean of about 1,000 log-likelihoods.
    assert np.all(np.diff(history) >= -2e-5 * np.abs(history[:-1])), np.diff(history).min()


def test_kmeans_plus_plus_seeds_on_data_and_lloyd_reaches_a_fixed_point():
    x = jnp.asarray(_toy_points(name="grid25"))
    seeds = mixture.kmeans_plus_plus(jax.random.key(0), x, 25)
    distances = np.min(np.sum((np.asarray(x)[:, None] - np.asarray(seeds)[None]) ** 2, -1), 0)
    np.testing.assert_array_equal(distances, 0.0)  # every seed is a data point
    assert len(np.unique(np.asarray(seeds), axis=0)) == 25
    centres, labels = mixture.kmeans(jax.random.key(0), x, 25, 50)
    labels = np.asarray(labels)
    np.testing.assert_array_equal(labels, np.asarray(mixture.assign(x, centres)))
    for k in np.unique(labels):  # each centre is the mean of its points
        np.testing.assert_allclose(centres[k], np.asarray(x)[labels == k].mean(0), atol=1e-5)


@pytest.mark.slow  # long: moved out of the default suite's 10 minutes
def test_stepwise_em_blends_the_statistics_with_its_step_size(tmp_path):
    """One train step: s <- (1 - eta) s + eta s_batch with eta = (t + 2)^-alpha, then the
    M-step; with alpha = 0 the step is plain EM on the batch."""
    from genjax.core import parallel
    from genjax.train import Experiment

    for alpha in (0.6, 0.0):
        config = mixture_configs.get_config("toy,tiny")
        config.model_config.stepwise_alpha = alpha
        experiment = Experiment(config)
        state = experiment.init_state()
        before = jax.device_get(state.extras["stats"])
        params = jax.device_get(state.params)  # the step donates the state
        batch = next(experiment.dataset.train_iterator(experiment.examples_per_step))
        new_state, metrics = experiment.train_step(
            state, parallel.shard_batch(batch, experiment.mesh)
        )
        model = experiment.model
        x = jnp.asarray(batch["x"])
        joint = mixture.log_joint(params, x, "gaussian")
        resp = jax.nn.softmax(joint, axis=1)
        batch_stats = mixture.batch_statistics(resp, x, "gaussian", "full")
        eta = 2.0**-alpha
        assert float(metrics["train/step_size"]) == pytest.approx(eta)
        expected = jax.tree.map(lambda s, b, eta=eta: (1 - eta) * s + eta * b, before, batch_stats)
        got = jax.device_get(new_state.extras["stats"])
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
        want = mixture.maximize(expected, "gaussian", "full", config.model_config)
        for name in want:
            np.testing.assert_allclose(new_state.params[name], want[name], rtol=1e-4, atol=1e-5)
        nll = -float(mixture.log_prob(params, x, "gaussian").mean())
        assert float(metrics["train/nll"]) == pytest.approx(nll, rel=1e-5)
        assert model.name == "mixture"


def test_samples_follow_the_mixture():
    means = jnp.array([[-3.0, 0.0], [2.0, 1.0]])
    scale_tril = jnp.array([[[1.0, 0.0], [0.5, 0.5]], [[0.3, 0.0], [0.0, 2.0]]])
    params = {"logits": jnp.log(jnp.array([0.3, 0.7])), "means": means, "scale_tril": scale_tril}
    config = mixture_configs.get_config("toy,tiny")
    from genjax.data import load_dataset

    model = mixture.Mixture(config, load_dataset(config).spec)
    state = type("State", (), {"params": params})()
    x = np.asarray(model.sample(state, jax.random.key(0), 40_000), np.float64)
    pi = np.array([0.3, 0.7])
    covs = np.asarray(scale_tril @ jnp.swapaxes(scale_tril, 1, 2), np.float64)
    mean = pi @ np.asarray(means)
    second = sum(pi[k] * (covs[k] + np.outer(means[k], means[k])) for k in range(2))
    cov = second - np.outer(mean, mean)
    # 4 standard errors of the mean of 40,000 draws.
    assert np.all(np.abs(x.mean(0) - mean) < 4 * np.sqrt(np.diag(cov) / len(x)))
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.03, atol=0.03)


@pytest.mark.slow
def test_tiny_configs_train_and_report_the_exact_nll(tmp_path):
    for variant in ("tiny", "toy,tiny"):
        workdir = str(tmp_path / variant)
        train_and_evaluate(mixture_configs.get_config(variant), workdir)
        with open(os.path.join(workdir, "eval.json")) as f:
            results = json.load(f)
        assert results["nll_estimator"] == "exact" and results["step"] == 20
        assert np.isfinite(results["test_nll_nats"])
    assert results["entropy_gap_nats"] > -0.05  # no model beats the true density
    assert 1 <= results["components_above_1e-3"] <= 4
    assert 1.0 <= results["weight_perplexity"] <= 4.0 + 1e-9


def test_the_summary_counts_the_components_in_use():
    config = mixture_configs.get_config("toy,tiny")
    from genjax.data import load_dataset

    model = mixture.Mixture(config, load_dataset(config).spec)
    outputs = {"log_likelihood": np.array([-1.0, -2.0, -3.0])}
    uniform = model.summarize(outputs, True, {"weights": np.full(4, 0.25)})
    assert uniform["components_above_1e-3"] == 4
    assert uniform["weight_perplexity"] == pytest.approx(4.0)
    one_dead = model.summarize(outputs, True, {"weights": np.array([0.5, 0.5, 0.0, 0.0])})
    assert one_dead["components_above_1e-3"] == 2
    assert one_dead["weight_perplexity"] == pytest.approx(2.0)
    assert uniform["test_nll_nats"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_components=0), r"num_components=0 must be a positive"),
        (dict(distribution="poisson"), r"distribution='poisson'; allowed: \('gaussian', 'bern"),
        (dict(covariance="tied"), r"covariance='tied'; allowed: \('full', 'diag', 'spherical'\)"),
        (dict(stepwise_alpha=1.5), r"stepwise_alpha=1.5 must be in \[0, 1\]"),
        (dict(min_probability=0.5), r"min_probability=0.5 must be in \(0, 0.5\)"),
        (dict(num_components=200, init_examples=100), r"init_examples=100 must be at least"),
    ],
)
def test_bad_fields_are_refused_by_name(fields, message):
    config = mixture_configs.get_config("tiny")
    config.model_config.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_a_model_that_does_not_fit_the_data_is_refused_before_anything_is_written(tmp_path):
    bernoulli_on_intensities = mixture_configs.get_config("tiny")
    bernoulli_on_intensities.preprocess.binarize = "none"
    gaussian_on_binary = mixture_configs.get_config("tiny")
    gaussian_on_binary.model_config.distribution = "gaussian"
    for config, message in (
        (bernoulli_on_intensities, r"distribution='bernoulli'"),
        (gaussian_on_binary, r"distribution='gaussian' is a density on continuous data"),
    ):
        workdir = tmp_path / "run"
        with pytest.raises(ConfigError, match=message):
            train_and_evaluate(config, str(workdir))
        assert not workdir.exists() or not any(workdir.iterdir())


def test_config_fields_are_the_documented_ones():
    documented = mixture.Mixture.__doc__
    for field in mixture_configs.mixture_model_config():
        assert f"      {field}:" in documented, field
    assert isinstance(mixture_configs.mixture_model_config(), ml_collections.ConfigDict)
