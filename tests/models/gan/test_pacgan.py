"""PacGAN's packed discriminator (model_config.pack) and the raw generator's mode coverage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gan
from genjax.data import toy2d
from genjax.data.pipeline import DataSpec
from genjax.evaluate import sample_quality
from genjax.models.gan.family import GAN, pack_examples
from genjax.train import train_and_evaluate

TOY_SPEC = DataSpec("toy2d/8gaussians", (2,), 1000, 1000, None, None, False, (-np.inf, np.inf))
_LEAKY_SLOPE = 0.2


def _toy_model(variant="tiny", **fields):
    config = gan.get_config(variant)
    config.model_config.update(fields)
    GAN.validate_config(config)
    model = GAN(config, TOY_SPEC)
    state = model.create_state(jax.random.key(0), np.zeros((1, 2), np.float32))
    return model, state


def test_pack_concatenates_consecutive_examples():
    vectors = np.arange(12.0).reshape(6, 2)  # (B, D)
    np.testing.assert_array_equal(
        pack_examples(vectors, 3), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    )
    images = np.random.default_rng(0).normal(size=(4, 2, 3, 5)).astype(np.float32)
    packed = np.asarray(pack_examples(images, 2))
    assert packed.shape == (2, 2, 3, 10)
    np.testing.assert_array_equal(packed[1], np.concatenate([images[2], images[3]], axis=-1))
    assert pack_examples(vectors, 1) is vectors
    with pytest.raises(ValueError, match="config.model_config.pack=4"):
        pack_examples(vectors, 4)


def _mlp_scores(params, x):
    """The MLP discriminator by hand: Dense, LeakyReLU(0.2) per hidden layer, Dense score."""
    names = sorted((n for n in params if n.startswith("Dense")), key=lambda n: int(n[6:]))
    h = np.asarray(x, np.float64)
    for name in names:
        h = h @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
        h = np.where(h > 0, h, _LEAKY_SLOPE * h)
    return (h @ np.asarray(params["score"]["kernel"]) + np.asarray(params["score"]["bias"]))[:, 0]


def _softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize("pack", [1, 2, 4])
def test_discriminator_loss_scores_packs_of_concatenated_samples(pack):
    """The loss equals the non-saturating discriminator loss of a hand-computed MLP on the
    packs [x_0 .. x_{m-1}], [x_m .. x_{2m-1}], ...; with m = 1 that is the ordinary path."""
    model, state = _toy_model(pack=pack)
    d_params = state.params["discriminator"]
    hidden = model.config.model_config.hidden_size
    assert d_params["Dense_0"]["kernel"].shape == (2 * pack, hidden)
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(2, 8, 2)).astype(np.float32)
    keys = jax.random.split(jax.random.key(2), 8)
    loss, (metrics, _) = model.discriminator_loss(
        d_params, {}, real, fake, jnp.zeros((8,), jnp.int32), keys
    )
    real_scores = _mlp_scores(d_params, real.reshape(8 // pack, 2 * pack))
    fake_scores = _mlp_scores(d_params, fake.reshape(8 // pack, 2 * pack))
    expected = _softplus(-real_scores).mean() + _softplus(fake_scores).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["train/d_real"]), real_scores.mean(), rtol=1e-5)


def test_generator_loss_scores_packs_of_fakes():
    model, state = _toy_model(pack=2)
    z = jax.random.normal(jax.random.key(3), (6, model.config.model_config.latent_size))
    g_variables = {"params": state.params["generator"]}
    fake = np.asarray(model.generate(g_variables, z, jnp.zeros((6,), jnp.int32))[0])
    loss, _ = model.generator_loss(
        state.params["generator"], {}, state.params["discriminator"], {}, z, jnp.zeros(6, int)
    )
    scores = _mlp_scores(state.params["discriminator"], fake.reshape(3, 4))
    np.testing.assert_allclose(float(loss), _softplus(-scores).mean(), rtol=1e-5)


def test_pack_is_validated_by_name():
    config = gan.get_config("tiny,pack4")
    config.batch_size = 66
    with pytest.raises(ValueError, match=r"pack=4 must divide config.batch_size=66"):
        GAN.validate_config(config)
    config = gan.get_config("tiny,pack2")
    config.model_config.conditioning = "concat"
    with pytest.raises(ValueError, match=r"pack=2 needs conditioning='none'"):
        GAN.validate_config(config)
    config.model_config.conditioning, config.model_config.pack = "none", 0
    with pytest.raises(ValueError, match=r"pack=0 must be a positive integer"):
        GAN.validate_config(config)


def test_raw_generator_is_scored_beside_the_moving_average():
    """A raw generator whose output layer is constant at one mode centre covers exactly that
    mode with every sample; the summary says so whatever the moving average does."""
    model, state = _toy_model()
    centre = toy2d.mode_centers("8gaussians")[3]
    g_params = jax.tree.map(lambda p: p, state.params["generator"])
    last = sorted(g_params, key=lambda n: int(n.split("_")[-1]))[-1]
    g_params[last] = {"kernel": jnp.zeros_like(g_params[last]["kernel"]), "bias": centre}
    state = state.replace(params={**state.params, "generator": g_params})
    constants = jax.device_get(model.evaluation_constants(state, jax.random.key(4), False))
    samples = constants["raw_generator_samples"]
    assert samples.shape == (model.config.sample_quality_samples, 2)
    summary = model.summarize({}, False, constants)
    assert summary["raw_modes_covered"] == 1 and summary["raw_high_quality_fraction"] == 1.0
    np.testing.assert_allclose(summary["raw_mode_kl"], np.log(8), rtol=1e-6)
    no_ema, _ = _toy_model(ema_decay=0.0)
    assert no_ema.evaluation_constants(state, jax.random.key(4), False) == {}


@pytest.mark.slow
def test_tiny_pacgan_trains_on_the_narrow_ring(tmp_path):
    config = gan.get_config("tiny,pack2,ring8")
    results = train_and_evaluate(config, str(tmp_path))
    assert results["step"] == config.num_steps and results["num_modes"] == 8
    assert 0 <= results["raw_modes_covered"] <= 8 and 0 <= results["modes_covered"] <= 8
    expected = sample_quality.mode_coverage(
        toy2d.mode_centers("ring8"), toy2d.mode_centers("ring8"), toy2d.mode_std("ring8")
    )
    assert expected["modes_covered"] == 8  # the scorer uses the ring's own centres and std
    assert results["mode_std"] == toy2d.mode_std("ring8")
