"""PixelCNN and Gated PixelCNN: masks against the Jacobian, the blind spot, exact normalisation
over every image, sampling against the likelihood, and the tiny config end to end."""

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pixelcnn as pixelcnn_configs
from genjax.core.state import TrainState
from genjax.data.pipeline import DataSpec
from genjax.models.autoregressive.pixelcnn import (
    PixelCNN,
    head_log_prob,
    head_sample,
    params_per_channel,
)
from genjax.train import ConfigError, train_and_evaluate


def _spec(shape, num_levels=2, num_classes=None, value_range=(0.0, 1.0)):
    return DataSpec("test", shape, 10, 10, num_classes, num_levels, num_levels == 2, value_range)


def _model(shape, architecture="gated", likelihood="bernoulli", num_levels=2, **overrides):
    """A small model on (H, W, C) images; features scale with C so every group has units."""
    config = pixelcnn_configs.get_config("tiny")
    mc = config.model_config
    mc.architecture, mc.likelihood = architecture, likelihood
    mc.features, mc.output_features, mc.num_mixtures = 4 * shape[-1], 4 * shape[-1], 2
    for name, value in overrides.items():
        mc[name] = value
    num_classes = 3 if mc.class_conditional else None
    return PixelCNN(config, _spec(shape, num_levels, num_classes))


def _params(model, shape, scale=1.5, seed=0):
    """Random parameters (NumPy draws: compiling JAX's initialisers takes seconds), of scale
    `scale` / sqrt(fan-in) for kernels, so the distributions are far from uniform."""
    abstract, _ = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        std = scale / np.sqrt(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 0.3 * scale
        return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)

    return jax.tree.map(draw, abstract)


def _all_images(shape, num_levels):
    """Every image with sub-pixels in 0 .. L-1, as unit-interval data (L^n, H, W, C)."""
    levels = np.array(list(itertools.product(range(num_levels), repeat=int(np.prod(shape)))))
    return (levels / (num_levels - 1)).astype(np.float32).reshape(-1, *shape)


def _dependencies(model, params, shape, num_images=4):
    """|d params(sub-pixel o) / d input(sub-pixel o')|, summed over parameters and over a few
    random inputs (so that no path is closed by chance by a ReLU): (n, n).

    Rows and columns are in raster-then-channel order, index (i * W + j) * C + c.
    """

    def jacobian(image):  # (H, W, C) -> (H, W, C, P, H, W, C)
        return jax.jacrev(lambda x: model.network.apply(params, x[None])[0])(image)

    images = jax.random.normal(jax.random.key(1), (num_images, *shape))
    jac = jax.jit(jax.vmap(jacobian))(images)
    num = int(np.prod(shape))
    return np.abs(np.asarray(jac)).sum(axis=(0, 4)).reshape(num, num)


def _index(shape, row, col, channel=0):
    return (row * shape[1] + col) * shape[2] + channel


@pytest.mark.parametrize(
    "shape, likelihood, num_levels, num_layers",
    [((5, 5, 1), "bernoulli", 2, 5), ((4, 4, 3), "logistic_mixture", 5, 4)],
)
def test_masks_against_the_jacobian(shape, likelihood, num_levels, num_layers):
    """No output depends on its own or a later sub-pixel (raster order, then R, G, B), in
    either architecture. With enough layers to cover the image, the Gated PixelCNN depends on
    every earlier sub-pixel; the plain PixelCNN of the same depth misses pixels up and to the
    right, its blind spot (van den Oord et al. 2016b, figure 1)."""
    num = int(np.prod(shape))
    earlier = np.tril(np.ones((num, num), bool), k=-1)  # input index < output index
    overrides = dict(num_layers=num_layers, first_kernel_size=3, kernel_size=3)
    gated = _model(shape, "gated", likelihood, num_levels, **overrides)
    gated_deps = _dependencies(gated, _params(gated, shape), shape)
    assert np.all(gated_deps[~earlier] == 0.0)
    assert np.all(gated_deps[earlier] > 0)
    plain = _model(shape, "pixelcnn", likelihood, num_levels, **overrides)
    plain_deps = _dependencies(plain, _params(plain, shape), shape)
    assert np.all(plain_deps[~earlier] == 0.0)
    centre = _index(shape, 2, 2)
    for row, col in ((2, 1), (1, 1), (1, 2), (1, 3)):  # left, up-left, up, up-right
        assert plain_deps[centre, _index(shape, row, col)] > 0
    for channel, before in ((1, 0), (2, 0), (2, 1)):  # G sees R; B sees R and G
        if channel < shape[-1]:
            assert plain_deps[_index(shape, 2, 2, channel), _index(shape, 2, 2, before)] > 0
    assert plain_deps[_index(shape, 2, 0), _index(shape, 1, 3)] == 0.0  # upper right: unseen


@pytest.mark.parametrize(
    "architecture, likelihood, shape, num_levels",
    [
        ("gated", "bernoulli", (3, 3, 1), 2),
        ("pixelcnn", "bernoulli", (3, 3, 1), 2),
        ("gated", "categorical", (1, 2, 3), 3),
        ("pixelcnn", "logistic_mixture", (1, 2, 3), 3),
    ],
)
def test_exact_likelihood_sums_to_one_over_all_images(architecture, likelihood, shape, num_levels):
    model = _model(shape, architecture, likelihood, num_levels)
    log_prob = jax.jit(model.log_prob)
    log_p = np.asarray(log_prob(_params(model, shape), _all_images(shape, num_levels)))
    np.testing.assert_allclose(jax.nn.logsumexp(log_p), 0.0, atol=2e-5)
    assert log_p.max() - log_p.min() > 1.0  # far from uniform: the test has something to check


def test_class_conditional_model_is_normalised_for_every_label():
    shape = (2, 2, 1)
    model = _model(shape, class_conditional=True)
    params, images = _params(model, shape), _all_images(shape, 2)
    log_prob = jax.jit(model.log_prob)
    log_p = [log_prob(params, images, jnp.full(len(images), label)) for label in range(3)]
    np.testing.assert_allclose(jax.nn.logsumexp(jnp.stack(log_p), axis=1), 0.0, atol=2e-5)
    assert not np.allclose(log_p[0], log_p[1], atol=1e-3)  # the label changes the model
    state = TrainState.create(params, model.tx, jax.random.key(0))
    assert model.sample(state, jax.random.key(1), 5).shape == (5, *shape)
    # Evaluation reports the marginal log p(x) under a uniform label prior (a distribution over
    # images, comparable with unconditional models) and log p(x | y) of the true label.
    labels = jnp.arange(len(images)) % 3
    outputs = jax.jit(model.eval_step, static_argnums=3)(
        state, {"x": images, "label": labels}, None, True
    )
    marginal = np.asarray(outputs["log_likelihood"])
    np.testing.assert_allclose(
        marginal, jax.nn.logsumexp(jnp.stack(log_p), 0) - np.log(3), atol=1e-5
    )
    np.testing.assert_allclose(jax.nn.logsumexp(marginal), 0.0, atol=2e-5)
    np.testing.assert_allclose(
        outputs["conditional_log_likelihood"], np.stack(log_p)[labels, np.arange(16)], atol=1e-5
    )
    summary = model.summarize(jax.device_get(outputs), True, None)
    assert summary["test_nll_nats"] == pytest.approx(-marginal.mean(), rel=1e-6)
    assert summary["label_prior"] == "uniform" and "conditional_nll_nats" in summary


def _total_variation(samples, log_p, shape, num_levels):
    """TV distance between the empirical distribution of `samples` and exp(log_p)."""
    weights = num_levels ** np.arange(int(np.prod(shape)))[::-1]
    levels = np.rint(samples.reshape(len(samples), -1) * (num_levels - 1)).astype(int)
    counts = np.bincount(levels @ weights, minlength=len(log_p))
    return 0.5 * np.abs(counts / len(samples) - np.exp(log_p)).sum()


@pytest.mark.parametrize(
    "architecture, likelihood, shape, num_levels",
    [("gated", "bernoulli", (2, 2, 1), 2), ("pixelcnn", "categorical", (1, 1, 3), 3)],
)
def test_samples_follow_the_likelihood(architecture, likelihood, shape, num_levels):
    """Sub-pixel by sub-pixel (2x2 binary) and channel by channel (one RGB pixel)."""
    model = _model(shape, architecture, likelihood, num_levels)
    params = _params(model, shape, scale=2.5)
    images = _all_images(shape, num_levels)  # enumerated in the order `_total_variation` counts
    log_p = np.asarray(jax.jit(model.log_prob)(params, images), np.float64)
    num = 20_000
    sample = jax.jit(model.sample_images, static_argnums=2)
    samples = np.asarray(sample(params, jax.random.key(3), num))
    assert samples.shape == (num, *shape)
    assert _total_variation(samples, log_p, shape, num_levels) < 0.02
    # The same counts are far from a model without dependencies (the product of marginals).
    probs = np.exp(log_p).reshape((num_levels,) * int(np.prod(shape)))
    axes = range(probs.ndim)
    marginals = [probs.sum(axis=tuple(a for a in axes if a != d)) for d in axes]
    independent = functools.reduce(np.multiply.outer, marginals).reshape(-1)
    assert _total_variation(samples, np.log(independent), shape, num_levels) > 0.05


def test_logistic_mixture_draws_follow_the_discretised_mass():
    """A logistic variate put in its grid bin (edge bins open) has the discretised mass."""
    num_levels, num = 8, 40_000
    outputs = jnp.array([0.5, -0.3, 0.0, -0.8, 0.2, 1.4, -2.5, -1.0, 0.5])  # logits, means, logs
    keys = jax.random.split(jax.random.key(4), num)
    draws = jax.vmap(lambda key: head_sample("logistic_mixture", outputs, key, num_levels))(keys)
    levels = jnp.arange(num_levels)
    log_p = head_log_prob("logistic_mixture", outputs, levels, num_levels)
    frequencies = np.bincount(np.asarray(draws), minlength=num_levels) / num
    assert 0.5 * np.abs(frequencies - np.exp(log_p)).sum() < 0.015


@pytest.mark.parametrize("likelihood", ["categorical", "logistic_mixture"])
@pytest.mark.parametrize("num_levels", [17, 256])
def test_heads_normalise_over_the_levels_of_each_subpixel(likelihood, num_levels):
    """Given its parameters, the probabilities of all levels of a sub-pixel sum to 1; the
    masks keep a sub-pixel out of its own parameters, so this is the conditional's normaliser.
    Parameters of scale 4 include sharp, clamped and far-off logistic components."""
    num_params = params_per_channel(likelihood, num_levels, num_mixtures=3)

    @jax.jit
    def log_normaliser(outputs):  # (2, 3, 3, 3, P) -> (2, 3, 3, 3)
        def at_level(level):
            levels = jnp.full(outputs.shape[:-1], level)
            return head_log_prob(likelihood, outputs, levels, num_levels)

        return jax.nn.logsumexp(jax.vmap(at_level)(jnp.arange(num_levels)), axis=0)

    for scale in (1.0, 4.0):
        outputs = scale * jax.random.normal(jax.random.key(2), (2, 3, 3, 3, num_params))
        np.testing.assert_allclose(log_normaliser(outputs), 0.0, atol=1e-4)


def test_loss_is_the_exact_nll_of_the_discrete_data():
    shape = (3, 3, 1)
    spec = _spec(shape, num_levels=2, value_range=(-1.0, 1.0))  # symmetric scale
    config = pixelcnn_configs.get_config("tiny")
    model = PixelCNN(config, spec)
    params = _params(model, shape)
    unit = _all_images(shape, 2)[:7]
    x = 2.0 * unit - 1.0
    np.testing.assert_array_equal(model.from_levels(model.to_levels(x)), x)
    batch = {"x": x, "log_det": np.full(7, 9 * np.log(2.0), np.float32), "label": np.zeros(7)}
    loss, (metrics, _) = jax.jit(model.loss)(params, {}, batch, None)
    log_p = jax.jit(model.log_prob)(params, x)
    np.testing.assert_allclose(loss, -log_p.mean(), rtol=1e-6)  # log_det is not added
    np.testing.assert_allclose(metrics["train/bits_per_dim"], loss / (9 * np.log(2.0)), rtol=1e-6)
    state = TrainState.create(params, model.tx, jax.random.key(0))
    outputs = jax.jit(model.eval_step, static_argnums=3)(state, batch, None, True)
    summary = model.summarize(jax.device_get(outputs), final=True, constants={})
    assert summary["nll_estimator"] == "exact"
    np.testing.assert_allclose(summary["test_nll_nats"], -np.mean(log_p), rtol=1e-5)
    sample = jax.jit(model.sample, static_argnums=2)
    samples = sample(state, jax.random.key(1), 3)
    assert samples.shape == (3, *shape) and set(np.unique(samples)) <= {-1.0, 1.0}
    # Per-image keys: image n is the same whatever the number of images drawn with it.
    np.testing.assert_array_equal(sample(state, jax.random.key(1), 5)[:3], samples)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("architecture", "lstm", "config.model_config.architecture='lstm'; allowed"),
        ("likelihood", "gaussian", "config.model_config.likelihood='gaussian'; allowed"),
        ("kernel_size", 4, "config.model_config.kernel_size=4; allowed: odd"),
        ("num_layers", 0, "config.model_config.num_layers=0 must be a positive integer"),
        ("class_conditional", True, "architecture='gated'"),
    ],
)
def test_bad_config_fields_are_named(tmp_path, field, value, message):
    config = pixelcnn_configs.get_config("tiny")
    config.model_config[field] = value
    if field == "class_conditional":
        config.model_config.architecture = "pixelcnn"
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_continuous_preprocessing_is_refused():
    config = pixelcnn_configs.get_config("categorical")
    config.preprocess.dequantize = True
    with pytest.raises(ConfigError, match="config.preprocess.dequantize=True"):
        train_and_evaluate(config, "/nonexistent/never/written")


def test_model_refuses_data_it_cannot_describe():
    config = pixelcnn_configs.get_config("tiny")
    with pytest.raises(ValueError, match="config.preprocess.binarize"):
        PixelCNN(config, _spec((4, 4, 1), num_levels=17))
    config.model_config.likelihood = "categorical"
    with pytest.raises(ValueError, match="multiple of 6"):
        PixelCNN(config, _spec((4, 4, 3), num_levels=256))
    with pytest.raises(ValueError, match="discrete images"):
        PixelCNN(config, DataSpec("toy", (2,), 10, 10, None, None, False, (-np.inf, np.inf)))
