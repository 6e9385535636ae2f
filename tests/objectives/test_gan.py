"""Tests for genjax/objectives/gan.py against hand-written NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.objectives import gan

# Discriminator outputs with extreme logits (+-50), where log(1 - sigmoid(50)) is log(0) in
# float32, mixed with moderate ones. All values are exact in float32.
REAL_LOGITS = np.array([-50.0, -2.5, 0.0, 0.75, 3.0, 50.0])
FAKE_LOGITS = np.array([50.0, -50.0, 1.5, 0.0, -0.25, -4.0])
IMAGE_SHAPE = (4, 4, 1)  # event shape of the image-shaped penalty inputs
BATCH_SIZE = 6


def _np_log_sigmoid(logits):
    """log D = log(1 / (1 + exp(-l))), written out in float64 (finite for |l| <= 50)."""
    return np.log(1.0 / (1.0 + np.exp(-logits)))


def _np_log_one_minus_sigmoid(logits):
    """log(1 - D) = log(1 / (1 + exp(l))), written out in float64."""
    return np.log(1.0 / (1.0 + np.exp(logits)))


def _f32(array):
    return jnp.asarray(array, jnp.float32)


# ------------------------------------------------------------------------------- GAN losses


def test_naive_log_one_minus_sigmoid_overflows_in_float32():
    """Why the losses use softplus: the direct form is -inf at a logit of 50."""
    naive = jnp.log(1.0 - jax.nn.sigmoid(_f32(50.0)))
    assert np.isneginf(naive)


def test_minimax_discriminator_loss_matches_numpy():
    loss = gan.minimax_discriminator_loss(_f32(REAL_LOGITS), _f32(FAKE_LOGITS))
    expected = -np.mean(_np_log_sigmoid(REAL_LOGITS)) - np.mean(
        _np_log_one_minus_sigmoid(FAKE_LOGITS)
    )
    assert loss.shape == ()
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_minimax_discriminator_loss_is_two_log_two_at_chance():
    loss = gan.minimax_discriminator_loss(jnp.zeros(5), jnp.zeros(5))
    np.testing.assert_allclose(loss, 2.0 * np.log(2.0), rtol=1e-6)


def test_minimax_generator_loss_matches_numpy():
    loss = gan.minimax_generator_loss(_f32(FAKE_LOGITS))
    np.testing.assert_allclose(loss, np.mean(_np_log_one_minus_sigmoid(FAKE_LOGITS)), rtol=1e-6)


def test_non_saturating_generator_loss_matches_numpy():
    loss = gan.non_saturating_generator_loss(_f32(FAKE_LOGITS))
    np.testing.assert_allclose(loss, -np.mean(_np_log_sigmoid(FAKE_LOGITS)), rtol=1e-6)


def test_generator_gradients_match_numpy_sigmoid_formulas():
    """d/dl log(1 - sigmoid(l)) = -sigmoid(l); d/dl -log sigmoid(l) = -sigmoid(-l); /B each."""
    fake = _f32(FAKE_LOGITS)
    sigmoid = 1.0 / (1.0 + np.exp(-FAKE_LOGITS))
    sigmoid_of_minus = 1.0 / (1.0 + np.exp(FAKE_LOGITS))  # 1 - sigmoid, without cancellation
    minimax_gradient = jax.grad(gan.minimax_generator_loss)(fake)
    non_saturating_gradient = jax.grad(gan.non_saturating_generator_loss)(fake)
    np.testing.assert_allclose(minimax_gradient, -sigmoid / BATCH_SIZE, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(
        non_saturating_gradient, -sigmoid_of_minus / BATCH_SIZE, rtol=1e-5, atol=1e-30
    )


def test_minimax_generator_saturates_where_non_saturating_does_not():
    """Goodfellow et al. 2014, sec. 3: when D rejects the samples, log(1 - D) has no gradient."""
    batch_size = 4
    rejected = jnp.full((batch_size,), -50.0)  # D(G(z)) = sigmoid(-50) ~ 2e-22
    minimax_gradient = jax.grad(gan.minimax_generator_loss)(rejected)
    non_saturating_gradient = jax.grad(gan.non_saturating_generator_loss)(rejected)
    assert np.all(np.abs(minimax_gradient) < 1e-20)
    np.testing.assert_allclose(non_saturating_gradient, -1.0 / batch_size, rtol=1e-6)


def test_wasserstein_losses_match_numpy():
    real, fake = _f32(REAL_LOGITS), _f32(FAKE_LOGITS)
    np.testing.assert_allclose(
        gan.wasserstein_critic_loss(real, fake),
        np.mean(FAKE_LOGITS) - np.mean(REAL_LOGITS),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        gan.wasserstein_generator_loss(fake), -np.mean(FAKE_LOGITS), rtol=1e-6
    )


def test_hinge_losses_match_numpy():
    real, fake = _f32(REAL_LOGITS), _f32(FAKE_LOGITS)
    expected = np.mean(np.maximum(0.0, 1.0 - REAL_LOGITS)) + np.mean(
        np.maximum(0.0, 1.0 + FAKE_LOGITS)
    )
    np.testing.assert_allclose(gan.hinge_discriminator_loss(real, fake), expected, rtol=1e-6)
    np.testing.assert_allclose(gan.hinge_generator_loss(fake), -np.mean(FAKE_LOGITS), rtol=1e-6)


def test_hinge_discriminator_loss_is_zero_beyond_the_margins():
    loss = gan.hinge_discriminator_loss(jnp.array([1.0, 2.0, 50.0]), jnp.array([-1.0, -3.0, -50.0]))
    assert loss == 0.0


def test_least_squares_losses_match_numpy_with_default_targets():
    real, fake = _f32(REAL_LOGITS), _f32(FAKE_LOGITS)
    expected = 0.5 * np.mean((REAL_LOGITS - 1.0) ** 2) + 0.5 * np.mean(FAKE_LOGITS**2)
    np.testing.assert_allclose(
        gan.least_squares_discriminator_loss(real, fake), expected, rtol=1e-6
    )
    np.testing.assert_allclose(
        gan.least_squares_generator_loss(fake), 0.5 * np.mean((FAKE_LOGITS - 1.0) ** 2), rtol=1e-6
    )


def test_least_squares_losses_match_numpy_with_pearson_targets():
    """The a = -1, b = 1, c = 0 coding of Mao et al. 2017."""
    real, fake = _f32(REAL_LOGITS), _f32(FAKE_LOGITS)
    loss = gan.least_squares_discriminator_loss(real, fake, real_target=1.0, fake_target=-1.0)
    expected = 0.5 * np.mean((REAL_LOGITS - 1.0) ** 2) + 0.5 * np.mean((FAKE_LOGITS + 1.0) ** 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(
        gan.least_squares_generator_loss(fake, target=0.0), 0.5 * np.mean(FAKE_LOGITS**2), rtol=1e-6
    )


@pytest.mark.parametrize("name", tuple(gan.GAN_LOSSES))
def test_losses_reject_mismatched_or_non_vector_scores(name):
    loss = gan.gan_loss(name)
    with pytest.raises(AssertionError):
        loss.discriminator(jnp.zeros(4), jnp.zeros(5))
    with pytest.raises(AssertionError):
        loss.discriminator(jnp.zeros((4, 1)), jnp.zeros((4, 1)))
    with pytest.raises(AssertionError):
        loss.generator(jnp.zeros((4, 1)))


# --------------------------------------------------------------------------------- registry


def test_gan_loss_names_and_pairs():
    assert tuple(gan.GAN_LOSSES) == (
        "minimax",
        "non_saturating",
        "wasserstein",
        "hinge",
        "least_squares",
    )
    expected_pairs = {
        "minimax": (gan.minimax_discriminator_loss, gan.minimax_generator_loss),
        "non_saturating": (gan.minimax_discriminator_loss, gan.non_saturating_generator_loss),
        "wasserstein": (gan.wasserstein_critic_loss, gan.wasserstein_generator_loss),
        "hinge": (gan.hinge_discriminator_loss, gan.hinge_generator_loss),
        "least_squares": (gan.least_squares_discriminator_loss, gan.least_squares_generator_loss),
    }
    for name, (discriminator, generator) in expected_pairs.items():
        pair = gan.gan_loss(name)
        assert pair is gan.GAN_LOSSES[name]
        assert pair.discriminator is discriminator
        assert pair.generator is generator
        discriminator_loss, generator_loss = pair  # unpacks as a 2-tuple
        assert discriminator_loss(jnp.zeros(3), jnp.zeros(3)).shape == ()
        assert generator_loss(jnp.zeros(3)).shape == ()


def test_gan_loss_rejects_unknown_name_with_field_and_allowed_values():
    with pytest.raises(ValueError) as error:
        gan.gan_loss("vanilla")
    message = str(error.value)
    assert message.startswith("config.model_config.loss='vanilla'; allowed: (")
    for name in ("minimax", "non_saturating", "wasserstein", "hinge", "least_squares"):
        assert repr(name) in message


# ----------------------------------------------------------------- interpolates and norms


def _image_batch(seed, batch_size=BATCH_SIZE):
    """A (B, 4, 4, 1) float32 batch, also returned as float64 for references."""
    images = np.random.default_rng(seed).standard_normal((batch_size, *IMAGE_SHAPE))
    images = images.astype(np.float32)
    return jnp.asarray(images), images.astype(np.float64)


def test_interpolates_lie_on_segments():
    (real, real_np), (fake, fake_np) = _image_batch(0), _image_batch(1)
    epsilon_np = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 0.125])
    x_hat = np.asarray(gan.interpolates(real, fake, _f32(epsilon_np)), np.float64)
    assert x_hat.shape == (BATCH_SIZE, *IMAGE_SHAPE)
    epsilon_b = epsilon_np[:, None, None, None]
    np.testing.assert_allclose(x_hat, epsilon_b * real_np + (1 - epsilon_b) * fake_np, atol=1e-6)
    np.testing.assert_allclose(x_hat - fake_np, epsilon_b * (real_np - fake_np), atol=1e-6)
    np.testing.assert_array_equal(x_hat[0], fake_np[0])  # epsilon 0: the generated example
    np.testing.assert_array_equal(x_hat[4], real_np[4])  # epsilon 1: the data example


def _linear_critic(weights, bias=0.3):
    """f(x)_i = <w, x_i> + b: the input gradient is w for every example."""

    def critic(x):  # (B, *event) -> (B,)
        return jnp.sum(x * weights, axis=tuple(range(1, x.ndim))) + bias

    return critic


def _unit_weights(seed, norm=1.0):
    weights = np.random.default_rng(seed).standard_normal(IMAGE_SHAPE)
    return weights * (norm / np.linalg.norm(weights))


def _mlp_critic(seed):
    """A small nonlinear critic closing over its parameters, scoring examples independently."""
    rng = np.random.default_rng(seed)
    num_inputs, num_hidden = int(np.prod(IMAGE_SHAPE)), 8
    params = {
        "w1": _f32(rng.standard_normal((num_inputs, num_hidden)) / 4.0),
        "b1": _f32(rng.standard_normal(num_hidden)),
        "w2": _f32(rng.standard_normal(num_hidden)),
    }

    def critic(x):  # (B, 4, 4, 1) -> (B,)
        hidden = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])  # (B, H)
        return hidden @ params["w2"]

    return critic


def test_gradient_norms_match_per_example_jacobian():
    critic = _mlp_critic(0)
    x, _ = _image_batch(2)
    norms = gan.gradient_norms(critic, x)
    jacobian = np.asarray(jax.jacrev(critic)(x), np.float64)  # (B, B, 4, 4, 1)
    assert norms.shape == (BATCH_SIZE,)
    for i in range(BATCH_SIZE):
        others = np.delete(jacobian[i], i, axis=0)
        np.testing.assert_array_equal(others, 0.0)  # the critic treats examples independently
        np.testing.assert_allclose(norms[i], np.linalg.norm(jacobian[i, i]), rtol=1e-5)


def test_gradient_norms_of_linear_critic_are_norm_of_weights():
    x, _ = _image_batch(3)
    norms = gan.gradient_norms(_linear_critic(_f32(_unit_weights(0, norm=2.5))), x)
    np.testing.assert_allclose(norms, np.full(BATCH_SIZE, 2.5), rtol=1e-6)


def test_gradient_norms_reject_critic_with_wrong_output_shape():
    x, _ = _image_batch(4)
    with pytest.raises(AssertionError):
        gan.gradient_norms(lambda inputs: jnp.sum(inputs, axis=(2, 3)), x)  # (B, 4)


# ------------------------------------------------------------------------ gradient penalty


def _keys(kind, seed=0, batch_size=BATCH_SIZE):
    key = jax.random.key(seed)
    return key if kind == "single" else jax.random.split(key, batch_size)


def _epsilons(keys):
    """The documented draws: uniform(key, (B,)) for one key, uniform(key[i], ()) per example."""
    if keys.ndim == 0:
        epsilon = jax.random.uniform(keys, (BATCH_SIZE,))
    else:
        epsilon = jnp.stack([jax.random.uniform(key, ()) for key in keys])
    return np.asarray(epsilon, np.float64)


@pytest.mark.parametrize("key_kind", ("single", "per_example"))
def test_gradient_penalty_is_zero_for_unit_norm_linear_critic(key_kind):
    (real, _), (fake, _) = _image_batch(5), _image_batch(6)
    critic = _linear_critic(_f32(_unit_weights(1)))
    penalty = gan.gradient_penalty(critic, real, fake, _keys(key_kind))
    assert penalty.shape == ()
    assert abs(float(penalty)) < 1e-6


@pytest.mark.parametrize("key_kind", ("single", "per_example"))
@pytest.mark.parametrize("norm", (0.5, 2.5))
def test_gradient_penalty_of_linear_critic_is_squared_norm_gap(key_kind, norm):
    (real, _), (fake, _) = _image_batch(7), _image_batch(8)
    critic = _linear_critic(_f32(_unit_weights(2, norm=norm)))
    penalty = gan.gradient_penalty(critic, real, fake, _keys(key_kind))
    np.testing.assert_allclose(penalty, (norm - 1.0) ** 2, rtol=1e-5)


@pytest.mark.parametrize("key_kind", ("single", "per_example"))
def test_gradient_penalty_of_sum_of_squares_critic_matches_numpy(key_kind):
    """f(x)_i = ||x_i||^2 has gradient 2 x_hat_i, so the penalty reveals the interpolates."""
    (real, real_np), (fake, fake_np) = _image_batch(9), _image_batch(10)
    keys = _keys(key_kind)
    epsilon = _epsilons(keys)
    assert np.all((epsilon >= 0.0) & (epsilon <= 1.0))
    assert np.unique(epsilon).size == BATCH_SIZE  # one draw per example

    def critic(x):
        return jnp.sum(jnp.square(x), axis=(1, 2, 3))

    penalty = gan.gradient_penalty(critic, real, fake, keys)
    epsilon_b = epsilon[:, None, None, None]
    x_hat = epsilon_b * real_np + (1.0 - epsilon_b) * fake_np
    gradient_norm = np.linalg.norm(2.0 * x_hat.reshape(BATCH_SIZE, -1), axis=1)
    expected = np.mean((gradient_norm - 1.0) ** 2)
    assert expected > 0.1
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)


def test_gradient_penalty_with_per_example_keys_does_not_depend_on_batch_split():
    """Each device sees its slice of the keys; the mean of the shard means is the full mean."""
    (real, _), (fake, _) = _image_batch(11), _image_batch(12)
    critic, keys = _mlp_critic(1), _keys("per_example")
    full = gan.gradient_penalty(critic, real, fake, keys)
    half = BATCH_SIZE // 2
    first = gan.gradient_penalty(critic, real[:half], fake[:half], keys[:half])
    second = gan.gradient_penalty(critic, real[half:], fake[half:], keys[half:])
    np.testing.assert_allclose(full, (first + second) / 2.0, rtol=1e-6)


def test_gradient_penalty_target_norm():
    (real, _), (fake, _) = _image_batch(13), _image_batch(14)
    critic = _linear_critic(_f32(_unit_weights(3, norm=3.0)))
    penalty = gan.gradient_penalty(critic, real, fake, _keys("single"), target_norm=2.0)
    np.testing.assert_allclose(penalty, 1.0, rtol=1e-5)


def test_gradient_penalty_gradient_in_critic_weights():
    """d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||, and finite (zero) at w = 0."""
    (real, _), (fake, _) = _image_batch(15), _image_batch(16)
    key = _keys("single")

    def penalty_of_weights(weights):
        return gan.gradient_penalty(_linear_critic(weights), real, fake, key)

    weights = _unit_weights(4, norm=2.0)
    gradient = jax.jit(jax.grad(penalty_of_weights))(_f32(weights))
    np.testing.assert_allclose(gradient, 2.0 * (2.0 - 1.0) * weights / 2.0, rtol=1e-5, atol=1e-6)
    gradient_at_zero = jax.grad(penalty_of_weights)(jnp.zeros(IMAGE_SHAPE))
    np.testing.assert_array_equal(gradient_at_zero, 0.0)


def test_gradient_penalty_compiles_with_critic_closing_over_params():
    (real, _), (fake, _) = _image_batch(17), _image_batch(18)
    key = _keys("single")
    weights = _f32(_unit_weights(5, norm=1.5))

    @jax.jit
    def penalty(weights, real, fake, key):
        return gan.gradient_penalty(_linear_critic(weights), real, fake, key)

    np.testing.assert_allclose(penalty(weights, real, fake, key), 0.25, rtol=1e-5)


def test_gradient_penalty_rejects_raw_and_misshaped_keys():
    (real, _), (fake, _) = _image_batch(19), _image_batch(20)
    critic = _linear_critic(_f32(_unit_weights(6)))
    raw_key = jax.random.key_data(jax.random.key(0))  # uint32 (2,), the legacy format
    with pytest.raises(TypeError):
        gan.gradient_penalty(critic, real, fake, raw_key)
    with pytest.raises(AssertionError):
        gan.gradient_penalty(critic, real, fake, _keys("per_example", batch_size=BATCH_SIZE + 1))


# ------------------------------------------------------------------------------------- R1


def test_r1_penalty_of_linear_critic_is_squared_weight_norm():
    real, _ = _image_batch(21)
    penalty = gan.r1_penalty(_linear_critic(_f32(_unit_weights(7, norm=1.7))), real)
    np.testing.assert_allclose(penalty, 1.7**2, rtol=1e-5)


def test_r1_penalty_of_half_squared_norm_is_mean_squared_norm():
    real, real_np = _image_batch(22)

    def critic(x):  # f(x) = 0.5 ||x||^2, gradient x
        return 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))

    expected = np.mean(np.sum(real_np**2, axis=(1, 2, 3)))
    np.testing.assert_allclose(gan.r1_penalty(critic, real), expected, rtol=1e-5)


# -------------------------------------------------------------------------- weight clipping


def test_clip_weights_bounds_every_leaf_and_keeps_small_values():
    clip_value = 0.01
    rng = np.random.default_rng(0)
    params = {
        "conv": {"kernel": _f32(rng.uniform(-0.03, 0.03, (3, 3, 1, 4))), "bias": _f32([0.005])},
        "dense": [_f32(rng.standard_normal((4, 2))), jnp.asarray([-0.02, 0.0, 0.02], jnp.bfloat16)],
    }
    clipped = gan.clip_weights(params, clip_value)
    assert jax.tree.structure(clipped) == jax.tree.structure(params)
    for leaf, clipped_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(clipped), strict=True):
        assert clipped_leaf.shape == leaf.shape and clipped_leaf.dtype == leaf.dtype
        bound = float(jnp.asarray(clip_value, leaf.dtype))  # c rounded to the leaf's dtype
        leaf, clipped_leaf = np.asarray(leaf, np.float64), np.asarray(clipped_leaf, np.float64)
        assert np.all(np.abs(clipped_leaf) <= bound)
        inside = np.abs(leaf) <= clip_value
        np.testing.assert_array_equal(clipped_leaf[inside], leaf[inside])
        np.testing.assert_array_equal(clipped_leaf[~inside], np.sign(leaf[~inside]) * bound)
    assert np.any(np.abs(np.asarray(params["conv"]["kernel"])) > clip_value)  # clipping happened


# ---------------------------------------------------------------------- auxiliary classifier


def test_auxiliary_classifier_loss_matches_numpy_log_softmax():
    rng = np.random.default_rng(0)
    class_logits = rng.standard_normal((5, 10)).astype(np.float32).astype(np.float64) * 3.0
    class_logits[0, 3] = 80.0  # extreme logits: exp overflows float32 without max-shifting
    labels = np.array([3, 0, 9, 4, 4])
    shifted = class_logits - class_logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(5), labels])
    loss = gan.auxiliary_classifier_loss(_f32(class_logits), jnp.asarray(labels))
    assert loss.shape == ()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_auxiliary_classifier_loss_rejects_bad_shapes_and_float_labels():
    with pytest.raises(AssertionError):
        gan.auxiliary_classifier_loss(jnp.zeros((4, 3)), jnp.zeros(5, jnp.int32))
    with pytest.raises(AssertionError):
        gan.auxiliary_classifier_loss(jnp.zeros((4, 3)), jnp.zeros(4, jnp.float32))
