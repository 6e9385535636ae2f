"""GAN losses, gradient penalties and weight clipping as pure functions over arrays.

The losses take discriminator (or critic) outputs, one per example, as arrays of shape (B,)
and return scalar batch means; every loss is written to be *minimised* by the network it
belongs to. For the sigmoid GANs the outputs are logits l with D(x) = sigmoid(l), and
log D and log(1 - D) are computed as -softplus(-l) and -softplus(l), so the values and their
gradients stay finite for any finite logit (a naive log(sigmoid(50)) form gives log(0) = -inf
in float32).

The penalties take the critic as a function ``critic_fn: (B, *event) -> (B,)`` that scores
each example independently; it may close over parameters, labels and the like, so the same
penalty serves unconditional and conditional critics:

    penalty = gradient_penalty(lambda x: critic.apply(params, x, labels), real, fake, key)

``GAN_LOSSES`` / ``gan_loss(name)`` map a configuration name to the (discriminator, generator)
pair of losses.
"""

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

CriticFn = Callable[[jax.Array], jax.Array]


def _check_scores(*scores: jax.Array) -> None:
    """Asserts that the discriminator outputs are (B,) arrays of one shape."""
    chex.assert_rank(scores, 1)
    chex.assert_equal_shape(scores)


# ----------------------------------------------------------------------------- sigmoid GANs


def minimax_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Discriminator loss of the original GAN: -E[log D(x)] - E[log(1 - D(G(z)))].

    The negation of the value function V(D, G) of Goodfellow et al. 2014 ("Generative
    Adversarial Nets"), eq. 1, which D maximises; D = sigmoid(logit), so the loss is
    mean(softplus(-real_logits)) + mean(softplus(fake_logits)), the binary cross-entropy of
    labelling real examples 1 and generated ones 0. It is also the discriminator loss of the
    non-saturating GAN (sec. 3 of the paper changes only the generator's loss).

    Args:
      real_logits: discriminator logits on data x, shape (B,).
      fake_logits: discriminator logits on samples G(z), shape (B,).

    Returns:
      The scalar loss, in nats, >= 0; it is 2 log 2 when D outputs 1/2 everywhere.
    """
    _check_scores(real_logits, fake_logits)
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def minimax_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """Saturating generator loss of the original GAN: E[log(1 - D(G(z)))], minimised by G.

    The generator's term of eq. 1 of Goodfellow et al. 2014, computed as
    -mean(softplus(fake_logits)). Its gradient in a logit is -sigmoid(logit) / B, which
    vanishes when D confidently rejects the samples (very negative logits, early in training):
    the saturation that motivates ``non_saturating_generator_loss``.

    Args:
      fake_logits: discriminator logits on samples G(z), shape (B,).

    Returns:
      The scalar loss, <= 0.
    """
    _check_scores(fake_logits)
    return -jnp.mean(jax.nn.softplus(fake_logits))


def non_saturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating generator loss -E[log D(G(z))].

    Goodfellow et al. 2014, sec. 3: instead of minimising log(1 - D(G(z))), G maximises
    log D(G(z)), which has the same fixed point but strong gradients early in training.
    Computed as mean(softplus(-fake_logits)); its gradient in a logit is -sigmoid(-logit) / B,
    close to -1 / B where D confidently rejects the sample.

    Args:
      fake_logits: discriminator logits on samples G(z), shape (B,).

    Returns:
      The scalar loss, in nats, >= 0.
    """
    _check_scores(fake_logits)
    return jnp.mean(jax.nn.softplus(-fake_logits))


# ------------------------------------------------------------------------------ Wasserstein


def wasserstein_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """WGAN critic loss E[f(G(z))] - E[f(x)].

    Arjovsky, Chintala & Bottou 2017 ("Wasserstein GAN"), eq. 3: the critic f maximises
    E[f(x)] - E[f(G(z))], an estimate of the Wasserstein-1 distance when f is 1-Lipschitz;
    this is its negation, for minimisation. Enforce the Lipschitz constraint with
    ``clip_weights`` (WGAN) or ``gradient_penalty`` (WGAN-GP).

    Args:
      real_scores: critic outputs on data x, shape (B,).
      fake_scores: critic outputs on samples G(z), shape (B,).

    Returns:
      The scalar loss; minus the estimated Wasserstein distance.
    """
    _check_scores(real_scores, fake_scores)
    return jnp.mean(fake_scores) - jnp.mean(real_scores)


def wasserstein_generator_loss(fake_scores: jax.Array) -> jax.Array:
    """WGAN generator loss -E[f(G(z))] (Arjovsky et al. 2017, Algorithm 1, generator step).

    Args:
      fake_scores: critic outputs on samples G(z), shape (B,).

    Returns:
      The scalar loss.
    """
    _check_scores(fake_scores)
    return -jnp.mean(fake_scores)


# ------------------------------------------------------------------------------------ hinge


def hinge_discriminator_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """Hinge discriminator loss E[relu(1 - D(x))] + E[relu(1 + D(G(z)))].

    Lim & Ye 2017 ("Geometric GAN"), as used with spectral normalisation by Miyato et al. 2018
    ("Spectral Normalization for Generative Adversarial Networks"), whose V_D = E[min(0,
    -1 + D(x))] + E[min(0, -1 - D(G(z)))] D maximises; this is its negation. D(x) is the raw
    (unsquashed) discriminator output.

    Args:
      real_scores: discriminator outputs on data x, shape (B,).
      fake_scores: discriminator outputs on samples G(z), shape (B,).

    Returns:
      The scalar loss, >= 0; zero once real scores are >= 1 and fake scores <= -1.
    """
    _check_scores(real_scores, fake_scores)
    real_term = jnp.mean(jax.nn.relu(1.0 - real_scores))
    fake_term = jnp.mean(jax.nn.relu(1.0 + fake_scores))
    return real_term + fake_term


def hinge_generator_loss(fake_scores: jax.Array) -> jax.Array:
    """Hinge-GAN generator loss -E[D(G(z))] (Lim & Ye 2017; Miyato et al. 2018): the same
    loss as WGAN's generator, named for the hinge pairing.

    Args:
      fake_scores: discriminator outputs on samples G(z), shape (B,).

    Returns:
      The scalar loss.
    """
    return wasserstein_generator_loss(fake_scores)


# ---------------------------------------------------------------------------- least squares


def least_squares_discriminator_loss(
    real_scores: jax.Array,
    fake_scores: jax.Array,
    real_target: float = 1.0,
    fake_target: float = 0.0,
) -> jax.Array:
    """LSGAN discriminator loss 1/2 E[(D(x) - b)^2] + 1/2 E[(D(G(z)) - a)^2].

    Mao et al. 2017 ("Least Squares Generative Adversarial Networks"), eq. 2, with b =
    ``real_target`` and a = ``fake_target``. The defaults b = 1, a = 0 (with c = 1 in
    ``least_squares_generator_loss``) are the 0-1 coding of their sec. 3.2.3; a = -1, b = 1,
    c = 0 is the paper's Pearson chi^2 choice. D(x) is the raw (unsquashed) output.

    Args:
      real_scores: discriminator outputs on data x, shape (B,).
      fake_scores: discriminator outputs on samples G(z), shape (B,).
      real_target: b, the target for real examples.
      fake_target: a, the target for generated examples.

    Returns:
      The scalar loss, >= 0.
    """
    _check_scores(real_scores, fake_scores)
    real_term = 0.5 * jnp.mean(jnp.square(real_scores - real_target))
    fake_term = 0.5 * jnp.mean(jnp.square(fake_scores - fake_target))
    return real_term + fake_term


def least_squares_generator_loss(fake_scores: jax.Array, target: float = 1.0) -> jax.Array:
    """LSGAN generator loss 1/2 E[(D(G(z)) - c)^2] (Mao et al. 2017, eq. 2; c = 1, sec. 3.2.3).

    Args:
      fake_scores: discriminator outputs on samples G(z), shape (B,).
      target: c, the value G wants D to believe for generated examples.

    Returns:
      The scalar loss, >= 0.
    """
    _check_scores(fake_scores)
    return 0.5 * jnp.mean(jnp.square(fake_scores - target))


# ---------------------------------------------------------------------------------- registry


class GANLoss(NamedTuple):
    """A GAN objective: the loss each player minimises.

    ``discriminator(real_scores, fake_scores) -> scalar`` and ``generator(fake_scores) ->
    scalar``, both over (B,) discriminator outputs (logits for 'minimax' and
    'non_saturating').
    """

    discriminator: Callable[[jax.Array, jax.Array], jax.Array]
    generator: Callable[[jax.Array], jax.Array]


GAN_LOSSES: dict[str, GANLoss] = {
    "minimax": GANLoss(minimax_discriminator_loss, minimax_generator_loss),
    "non_saturating": GANLoss(minimax_discriminator_loss, non_saturating_generator_loss),
    "wasserstein": GANLoss(wasserstein_critic_loss, wasserstein_generator_loss),
    "hinge": GANLoss(hinge_discriminator_loss, hinge_generator_loss),
    "least_squares": GANLoss(least_squares_discriminator_loss, least_squares_generator_loss),
}


def gan_loss(name: str) -> GANLoss:
    """The (discriminator, generator) losses named by ``config.model_config.loss``.

    Args:
      name: one of the keys of ``GAN_LOSSES``.

    Returns:
      The ``GANLoss`` pair.

    Raises:
      ValueError: for an unknown name; the message lists the allowed names.
    """
    if name not in GAN_LOSSES:
        raise ValueError(f"config.model_config.loss={name!r}; allowed: {tuple(GAN_LOSSES)}")
    return GAN_LOSSES[name]


# -------------------------------------------------------------------- gradient regularisers


def interpolates(real: jax.Array, fake: jax.Array, epsilon: jax.Array) -> jax.Array:
    """Points epsilon * real + (1 - epsilon) * fake on the segments between paired examples.

    The x-hat of Gulrajani et al. 2017 ("Improved Training of Wasserstein GANs"),
    Algorithm 1, line 6.

    Args:
      real: data, shape (B, *event).
      fake: generated samples, same shape as ``real``.
      epsilon: interpolation weights in [0, 1], shape (B,); broadcast over the event axes.

    Returns:
      The interpolates, shape (B, *event); example i is ``real[i]`` at epsilon 1 and
      ``fake[i]`` at epsilon 0.
    """
    chex.assert_equal_shape([real, fake])
    chex.assert_rank(epsilon, 1)
    chex.assert_equal_shape_prefix([real, epsilon], 1)
    epsilon = jnp.reshape(epsilon, epsilon.shape + (1,) * (real.ndim - 1))  # (B, 1, ..., 1)
    return epsilon * real + (1.0 - epsilon) * fake


def _input_gradients(critic_fn: CriticFn, x: jax.Array) -> jax.Array:
    """d critic_fn(x)_i / d x_i for every example i, shape (B, *event), in one backward pass.

    The gradient of sum_i critic_fn(x)_i in x; row i is the per-example gradient only because
    critic_fn(x)_i depends on x_i alone.
    """
    chex.assert_axis_dimension_gt(x, 0, 0)  # (B, *event), B > 0; event may be ()

    def summed_scores(inputs: jax.Array) -> jax.Array:
        scores = critic_fn(inputs)
        chex.assert_shape(scores, (inputs.shape[0],))
        return jnp.sum(scores)

    return jax.grad(summed_scores)(x)


def _squared_norms(gradients: jax.Array) -> jax.Array:
    """Squared L2 norms over the event axes: (B, *event) -> (B,)."""
    return jnp.sum(jnp.square(gradients), axis=tuple(range(1, gradients.ndim)))


def _safe_sqrt(squared_norms: jax.Array) -> jax.Array:
    """sqrt with a zero (not NaN) derivative at 0, so a flat critic can still be trained."""
    positive = squared_norms > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared_norms, 1.0)), 0.0)


def gradient_norms(critic_fn: CriticFn, x: jax.Array) -> jax.Array:
    """Per-example input-gradient norms ||d critic_fn(x)_i / d x_i||_2.

    Computed as the gradient of sum_i critic_fn(x)_i in x, one backward pass for the whole
    batch. This equals the per-example gradient only if the critic treats examples
    independently (critic_fn(x)_i depends on x_i alone): no batch normalisation in training
    mode, no minibatch-discrimination or minibatch-stddev layers, no attention across the
    batch. Gulrajani et al. 2017 (sec. 4) drop batch norm from the critic for this reason.

    The norm is differentiable everywhere (its derivative at a zero gradient is taken as 0),
    so penalties built on it can be trained by double back-propagation.

    Args:
      critic_fn: maps inputs (B, *event) to scores (B,), examples independently.
      x: inputs, shape (B, *event), e.g. images (B, H, W, C).

    Returns:
      The norms, shape (B,).
    """
    return _safe_sqrt(_squared_norms(_input_gradients(critic_fn, x)))


def _is_typed_key(key: jax.Array) -> bool:
    return jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key)


def _uniform_per_example(key: jax.Array, batch_size: int, dtype) -> jax.Array:
    """(B,) U[0, 1) draws: ``uniform(key, (B,))`` for one key, ``uniform(key[i], ())`` for (B,)."""
    if not _is_typed_key(key):
        raise TypeError(
            f"Expected a typed key from jax.random.key (shape () or (B,)), got dtype {key.dtype}."
        )
    if key.ndim == 0:
        return jax.random.uniform(key, (batch_size,), dtype)
    chex.assert_shape(key, (batch_size,))
    return jax.vmap(lambda example_key: jax.random.uniform(example_key, (), dtype))(key)


def gradient_penalty(
    critic_fn: CriticFn,
    real: jax.Array,
    fake: jax.Array,
    key: jax.Array,
    target_norm: float = 1.0,
) -> jax.Array:
    """WGAN-GP penalty E[(||grad f(x_hat)||_2 - target_norm)^2] on random interpolates.

    Gulrajani et al. 2017 ("Improved Training of Wasserstein GANs"), eq. 3 and Algorithm 1:
    x_hat = epsilon x + (1 - epsilon) G(z) with epsilon ~ U[0, 1] drawn per example, and the
    penalty (||grad_x_hat f(x_hat)||_2 - 1)^2 averaged over the batch. The caller multiplies
    by lambda (10 in the paper) and adds it to ``wasserstein_critic_loss``. Gradients flow into
    ``real`` and ``fake`` too; stop them there if the generator should not see the penalty.

    Args:
      critic_fn: maps inputs (B, *event) to scores (B,), examples independently (see
        ``gradient_norms``); close over the critic's parameters (and labels, if conditional).
      real: data, shape (B, *event).
      fake: generated samples, same shape as ``real``.
      key: a typed key (``jax.random.key``). Either a single key, from which all B epsilons
        are drawn as ``uniform(key, (B,))``, or a (B,) key array with one key per example,
        epsilon_i = ``uniform(key[i], ())``, so that the draws do not depend on how the batch
        is split across devices.
      target_norm: the gradient norm the penalty pulls towards (1 for 1-Lipschitz).

    Returns:
      The scalar mean penalty, >= 0.
    """
    chex.assert_equal_shape([real, fake])
    epsilon = _uniform_per_example(key, real.shape[0], real.dtype)  # (B,)
    x_hat = interpolates(real, fake, epsilon)  # (B, *event)
    norms = gradient_norms(critic_fn, x_hat)  # (B,)
    return jnp.mean(jnp.square(norms - target_norm))


def r1_penalty(critic_fn: CriticFn, real: jax.Array) -> jax.Array:
    """R1 penalty E[||grad D(x)||_2^2] on real data.

    Mescheder, Geiger & Nowozin 2018 ("Which Training Methods for GANs do actually
    Converge?"), eq. 9, *without* its gamma / 2 factor: the caller multiplies by gamma / 2 and
    adds it to the discriminator loss. D is the discriminator's logit (pre-sigmoid) output.
    The same per-example independence as in ``gradient_norms`` is required.

    Args:
      critic_fn: maps inputs (B, *event) to discriminator outputs (B,), examples
        independently; close over the parameters (and labels, if conditional).
      real: data, shape (B, *event).

    Returns:
      The scalar mean squared gradient norm, >= 0.
    """
    return jnp.mean(_squared_norms(_input_gradients(critic_fn, real)))


def clip_weights(params: chex.ArrayTree, clip_value: float) -> chex.ArrayTree:
    """Clips every leaf of ``params`` to [-clip_value, clip_value].

    The WGAN weight clipping of Arjovsky et al. 2017, Algorithm 1 (c = 0.01), applied to the
    critic's parameters after each critic update; a pure map over the pytree.

    Args:
      params: a pytree of arrays.
      clip_value: c > 0.

    Returns:
      A pytree of the same structure, shapes and dtypes; entries already in [-c, c] unchanged.
    """
    return jax.tree.map(lambda leaf: jnp.clip(leaf, -clip_value, clip_value), params)


def auxiliary_classifier_loss(class_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """AC-GAN auxiliary classification loss: mean softmax cross-entropy -E[log P(C = c | X)].

    Odena, Olah & Shlens 2017 ("Conditional Image Synthesis with Auxiliary Classifier GANs"),
    L_C of eq. 2-3, negated for minimisation (both D and G maximise L_C); computed with
    ``optax.softmax_cross_entropy_with_integer_labels``. Apply it to the class logits of both
    real and generated examples, as the paper does.

    Args:
      class_logits: the auxiliary classifier's logits, shape (B, num_classes).
      labels: integer class labels in [0, num_classes), shape (B,).

    Returns:
      The scalar loss, in nats, >= 0.
    """
    chex.assert_rank([class_logits, labels], [2, 1])
    chex.assert_equal_shape_prefix([class_logits, labels], 1)
    chex.assert_type(labels, int)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(class_logits, labels))
