"""The GAN family: alternating updates, critic steps, EMA, clipping, conditioning, end to end."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import acgan, dcgan, gan
from genjax.core import parallel
from genjax.data.pipeline import DataSpec
from genjax.models.gan.family import GAN
from genjax.train import train_and_evaluate

TOY_SPEC = DataSpec("toy2d/8gaussians", (2,), 1000, 1000, None, None, False, (-np.inf, np.inf))
DIGITS_SPEC = DataSpec("digits8x8", (8, 8, 1), 1400, 397, 10, 17, False, (-1.0, 1.0))


def _toy_model(**fields):
    config = gan.get_config("tiny")
    config.model_config.update(fields)
    GAN.validate_config(config)
    return GAN(config, TOY_SPEC), config


def _digits_model(**fields):
    config = dcgan.get_config("tiny")
    config.model_config.update(fields)
    GAN.validate_config(config)
    return GAN(config, DIGITS_SPEC), config


def _state(model, batch_size):
    example = np.zeros((1, *model.spec.example_shape), np.float32)
    return model.create_state(jax.random.key(0), example), _batch(model, batch_size)


def _batch(model, batch_size):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch_size, *model.spec.example_shape)).astype(np.float32)
    return {"x": x, "label": rng.integers(0, 10, batch_size).astype(np.int32)}


def _on_one_device(fn, num_replicated=1, num_sharded=1):
    """Per-device code (it calls pmean) compiled on a 1-device mesh."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    return parallel.data_parallel(fn, mesh, num_replicated=num_replicated, num_sharded=num_sharded)


def _equal(a, b) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("build", [_toy_model, _digits_model], ids=["mlp", "dcgan"])
def test_each_update_moves_only_its_own_network(build):
    model, _ = build()
    state, batch = _state(model, 16)
    key = jax.random.key(1)
    d_update = _on_one_device(
        lambda s, k, b: model.discriminator_update(s, b["x"], b["label"], k), num_replicated=2
    )
    after_d, _ = d_update(state, key, batch)
    assert not _equal(after_d.params["discriminator"], state.params["discriminator"])
    assert not _equal(after_d.opt_state["discriminator"], state.opt_state["discriminator"])
    assert _equal(after_d.params["generator"], state.params["generator"])
    assert _equal(after_d.opt_state["generator"], state.opt_state["generator"])
    assert _equal(after_d.extras["generator_stats"], state.extras["generator_stats"])
    assert _equal(after_d.extras["ema_generator"], state.extras["ema_generator"])

    g_update = _on_one_device(
        lambda s, k: model.generator_update(s, k, 16), num_replicated=2, num_sharded=0
    )
    after_g, _ = g_update(state, key)
    assert not _equal(after_g.params["generator"], state.params["generator"])
    assert not _equal(after_g.opt_state["generator"], state.opt_state["generator"])
    assert _equal(after_g.params["discriminator"], state.params["discriminator"])
    assert _equal(after_g.opt_state["discriminator"], state.opt_state["discriminator"])
    assert _equal(after_g.extras["discriminator_stats"], state.extras["discriminator_stats"])


def test_ema_follows_its_formula_for_weights_and_batch_norm_statistics():
    """ema_t = d_t ema_{t-1} + (1 - d_t) g_t with d_t = min(0.5, (1 + t) / (10 + t)): the
    warm-up's 0.1, 0.18, 0.25, 0.31, then the cap 0.5 from t = 8."""
    model, _ = _digits_model(ema_decay=0.5)
    state, batch = _state(model, 20)
    step = _on_one_device(model.train_step)
    ema = state.extras["ema_generator"]
    for t in range(10):
        state, _ = step(state, batch)
        decay = min(0.5, (1 + t) / (10 + t))
        current = {"params": state.params["generator"], **state.extras["generator_stats"]}
        expected = jax.tree.map(lambda e, g, d=decay: d * e + (1 - d) * g, ema, current)
        assert "batch_stats" in current
        for got, want in zip(
            jax.tree.leaves(state.extras["ema_generator"]), jax.tree.leaves(expected), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        ema = state.extras["ema_generator"]
    # ...and the average lags the weights: it is not a copy of them.
    assert not _equal(ema["params"], state.params["generator"])


def test_one_step_is_critic_steps_discriminator_updates_and_one_generator_update():
    model, _ = _toy_model(critic_steps=3)
    assert model.train_batches_per_step == 3
    state, batch = _state(model, 3 * 8)
    state, metrics = _on_one_device(model.train_step)(state, batch)
    counts = {  # Adam's and the schedule's update counters
        name: {
            int(count)
            for _, count in optax.tree_utils.tree_get_all_with_path(state.opt_state[name], "count")
        }
        for name in ("generator", "discriminator")
    }
    assert counts == {"generator": {1}, "discriminator": {3}}
    assert int(state.step) == 1
    assert {"train/d_loss", "train/g_loss", "train/d_grad_norm"} <= set(metrics)


def test_micro_batches_are_strided_slices_of_the_step_batch():
    """Critic step j sees examples j, j + k, ...: replaying those slices one by one through
    `discriminator_update` gives the step's discriminator exactly."""
    model, _ = _toy_model(critic_steps=2)
    state, batch = _state(model, 2 * 8)
    stepped, _ = _on_one_device(model.train_step)(state, batch)
    d_update = _on_one_device(
        lambda s, k, b: model.discriminator_update(s, b["x"], b["label"], k), num_replicated=2
    )
    step_key = jax.random.fold_in(state.key, state.step)
    replay = state
    for j in range(2):
        micro = {name: value[j::2] for name, value in batch.items()}
        replay, _ = d_update(replay, jax.random.fold_in(step_key, j), micro)
    for got, want in zip(
        jax.tree.leaves(stepped.params["discriminator"]),
        jax.tree.leaves(replay.params["discriminator"]),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_weight_clipping_bounds_the_critic():
    model, _ = _toy_model(loss="wasserstein", weight_clip=0.01)
    state, batch = _state(model, 16)
    state, _ = _on_one_device(model.train_step)(state, batch)
    leaves = jax.tree.leaves(state.params["discriminator"])
    assert max(float(jnp.abs(leaf).max()) for leaf in leaves) <= 0.01
    assert max(float(jnp.abs(leaf).max()) for leaf in leaves) == pytest.approx(0.01)


def test_gradient_penalty_enters_the_critic_loss():
    """With lambda > 0 the loss is the Wasserstein loss plus lambda times the penalty."""
    model, _ = _toy_model(loss="wasserstein", gradient_penalty=10.0)
    state, batch = _state(model, 16)
    keys = jax.random.split(jax.random.key(2), 16)
    fake = jnp.asarray(batch["x"])[::-1] * 0.5
    args = (state.params["discriminator"], state.extras["discriminator_stats"])
    loss, (metrics, _) = model.discriminator_loss(*args, batch["x"], fake, batch["label"], keys)
    assert metrics["train/gradient_penalty"] > 0
    np.testing.assert_allclose(
        loss, metrics["train/d_loss"] + 10.0 * metrics["train/gradient_penalty"], rtol=1e-6
    )


def test_batch_norm_critic_with_a_penalty_is_refused():
    config = dcgan.get_config("tiny")
    config.model_config.gradient_penalty = 10.0
    with pytest.raises(ValueError, match="discriminator_norm='batch' with a gradient penalty"):
        GAN.validate_config(config)


def test_conditional_models_need_labels():
    config = acgan.get_config("tiny")
    no_labels = DataSpec("binarized_mnist", (28, 28, 1), 10, 10, None, 2, True, (0.0, 1.0))
    with pytest.raises(ValueError, match="conditioning='acgan' needs labels"):
        GAN(config, no_labels)


def test_samples_cycle_through_the_classes_and_follow_the_label():
    model, _ = _digits_model(conditioning="concat")
    state, _ = _state(model, 20)
    np.testing.assert_array_equal(model.sample_labels(12), np.arange(12) % 10)
    z = jax.random.normal(jax.random.key(3), (4, model.config.model_config.latent_size))
    ema = state.extras["ema_generator"]
    x0, _ = model.generate(ema, z, jnp.zeros(4, jnp.int32))
    x1, _ = model.generate(ema, z, jnp.ones(4, jnp.int32))
    assert x0.shape == (4, 8, 8, 1)
    assert float(jnp.abs(x0 - x1).max()) > 1e-4
    assert float(jnp.abs(x0).max()) <= 1.0  # tanh output for data scaled to [-1, 1]


def _leaves_named(tree, name):
    """Every leaf of `tree` whose last path key is `name`, as float64 NumPy arrays."""
    return [
        np.asarray(leaf, np.float64)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if path[-1].key == name
    ]


def test_dcgan_config_initialises_as_the_paper():
    """configs/dcgan.py's weight_init='dcgan' reaches both networks: every kernel's mean and
    std match N(0, 0.02^2) within 5 standard errors, biases are 0, batch norm scales lie near
    N(1, 0.02^2) draws (not Flax's ones) and its offsets are 0."""
    assert dcgan.get_config().model_config.weight_init == "dcgan"
    model, _ = _digits_model()
    networks, _ = jax.jit(model.init)(jax.random.key(0), np.zeros((4, 8, 8, 1), np.float32))
    for params in networks.values():
        kernels = _leaves_named(params, "kernel")
        assert kernels
        for kernel in kernels:
            assert abs(kernel.mean()) < 5 * 0.02 / np.sqrt(kernel.size)
            assert abs(kernel.std() / 0.02 - 1) < 5 / np.sqrt(2 * kernel.size)
        for bias in _leaves_named(params, "bias"):
            np.testing.assert_array_equal(bias, 0.0)
    scales = np.concatenate(_leaves_named(networks["generator"], "scale"))
    assert scales.size > 0 and np.all(scales != 1.0) and np.all(np.abs(scales - 1) < 5 * 0.02)
    assert abs(scales.mean() - 1) < 5 * 0.02 / np.sqrt(scales.size)


MNIST_SPEC = DataSpec("mnist5k", (28, 28, 1), 5000, 1000, 10, 256, False, (-1.0, 1.0))


@pytest.mark.slow
def test_standing_statistics_are_the_ema_generators_own_batch_statistics():
    """Brock et al. (2019)'s standing statistics: each batch norm layer's mean and variance,
    recomputed for the moving average's weights, equal the averages over the batches of the
    mean and variance of that layer's input (the output of the Dense / ConvTranspose before
    it) in a training-mode pass, read here with Flax's `capture_intermediates` and reduced in
    NumPy; `sample` then uses them."""
    config = dcgan.get_config("tiny")
    config.model_config.standing_stats_batches = 3
    GAN.validate_config(config)
    model = GAN(config, MNIST_SPEC)  # 28x28: two batch norm layers, one after a convolution
    _, extras = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))

    @jax.jit
    def perturbed(params):  # weights unlike the raw generator's, whose statistics are stale
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(5), len(leaves))
        noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
        return jax.tree.unflatten(treedef, noisy)

    ema = extras["ema_generator"]
    ema = {**ema, "params": perturbed(ema["params"])}
    key, batch_size = jax.random.key(7), 16
    standing = jax.jit(model.standing_statistics, static_argnums=(2, 3))(ema, key, 3, batch_size)
    assert _equal(standing["params"], ema["params"])  # the weights are untouched
    generator = model._networks(axis_name=None)[0]  # batch norm over this batch only

    @jax.jit
    def pre_norm_activations(z, labels):
        _, captured = generator.apply(
            ema,
            z,
            labels,
            True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda module, _: isinstance(
                module, (nn.Dense, nn.ConvTranspose)
            ),
        )
        return {name: value["__call__"][0] for name, value in captured["intermediates"].items()}

    @jax.jit
    def draws(batch_key):  # the draws of standing_statistics: per batch (z, labels) keys
        z_key, label_key = jax.random.split(batch_key)
        z = jax.random.normal(z_key, (batch_size, config.model_config.latent_size))
        return z, jax.random.randint(label_key, (batch_size,), 0, model.num_classes)

    batch_keys = jax.random.split(key, 3)
    activations = [jax.device_get(pre_norm_activations(*draws(k))) for k in batch_keys]
    # BatchNorm_0 follows Dense_0; BatchNorm_1 follows ConvTranspose_0 (ConvTranspose_1 is the
    # output layer, not normalised).
    inputs = {"BatchNorm_0": "Dense_0", "BatchNorm_1": "ConvTranspose_0"}
    assert set(standing["batch_stats"]) == set(inputs)
    for norm, layer in inputs.items():
        per_batch = [np.asarray(a[layer], np.float64) for a in activations]
        axes = tuple(range(per_batch[0].ndim - 1))  # all but the channel axis
        mean = np.mean([x.mean(axis=axes) for x in per_batch], axis=0)
        var = np.mean([x.var(axis=axes) for x in per_batch], axis=0)
        stats = standing["batch_stats"][norm]
        np.testing.assert_allclose(stats["mean"], mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats["var"], var, rtol=1e-4, atol=1e-6)
        # ...and they are not the running statistics the moving average carried.
        assert not np.allclose(ema["batch_stats"][norm]["var"], var, rtol=0.1)

    # `sample` draws with the recomputed statistics (batches of config.batch_size).
    @jax.jit
    def sample_and_expected(ema, key):
        samples = model.sample(types.SimpleNamespace(extras={"ema_generator": ema}), key, 4)
        own_key, standing_key = jax.random.split(key)
        variables = model.standing_statistics(ema, standing_key, 3, config.batch_size)
        z = jax.random.normal(own_key, (4, config.model_config.latent_size))
        return samples, model.generate(variables, z, jnp.zeros(4, jnp.int32))[0]

    samples, expected = sample_and_expected(ema, jax.random.key(9))
    np.testing.assert_allclose(samples, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "module, variant",
    [
        pytest.param(gan, "wgan_gp,tiny", marks=pytest.mark.slow),
        pytest.param(dcgan, "tiny", marks=pytest.mark.slow),
        # the image path, conditioning and the classifier features
        pytest.param(acgan, "tiny", marks=pytest.mark.slow),
    ],
)
def test_tiny_configs_train_and_report_sample_quality(tmp_path, module, variant):
    config = module.get_config(variant)
    results = train_and_evaluate(config, str(tmp_path))
    assert results["step"] == config.num_steps
    assert results["sample_quality_num_samples"] == config.sample_quality_samples
    if config.dataset.startswith("toy2d/"):
        assert results["num_modes"] == 8 and 0 <= results["modes_covered"] <= 8
    else:
        assert np.isfinite(results["frechet_distance"]) and results["frechet_distance"] > 0
        assert 0 <= results["precision"] <= 1 and 0 <= results["recall"] <= 1
        assert results["feature_network_test_accuracy"] > 0.5
    if config.model_config.conditioning != "none":
        assert 0 <= results["label_accuracy"] <= 1
    assert (tmp_path / "samples" / f"step_{config.num_steps:08d}.png").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("loss", "vanilla", r"config.model_config.loss='vanilla'; allowed: \('minimax'"),
        ("conditioning", "film", r"conditioning='film'; allowed"),
        ("ema_decay", 1.0, r"ema_decay=1.0 must be in \[0, 1\)"),
        ("gradient_penalty", -1.0, r"gradient_penalty=-1.0 must be a non-negative number"),
        ("critic_steps", 0, r"critic_steps=0 must be a positive integer"),
        ("weight_init", "xavier", r"weight_init='xavier'; allowed: \('default', 'dcgan'\)"),
        ("standing_stats_batches", -1, r"standing_stats_batches=-1 must be a non-negative int"),
        ("standing_stats_batches", 4, r"architecture='mlp' has no batch norm in its generator"),
    ],
)
def test_bad_fields_are_refused_by_name(field, value, message):
    config = gan.get_config("tiny")
    config.model_config[field] = value
    with pytest.raises(ValueError, match=message):
        GAN.validate_config(config)


def test_dcgan_on_vectors_is_refused():
    config = gan.get_config("tiny")
    config.model_config.architecture = "dcgan"
    with pytest.raises(ValueError, match="architecture='dcgan' needs images"):
        GAN(config, TOY_SPEC)
