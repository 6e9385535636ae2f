"""GAN networks: DCGAN shapes, conditioning, spectral normalisation's Lipschitz bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models.gan import networks


def _init(module, x, labels):
    return jax.jit(lambda key, x, y: module.init(key, x, y, False))(jax.random.key(0), x, labels)


def _apply(module, variables, x, labels, train):
    """module.apply compiled (eager Flax dispatches op by op), batch statistics mutable."""
    apply = jax.jit(lambda v, x, y: module.apply(v, x, y, train, mutable=True)[0])
    return apply(variables, x, labels)


@pytest.mark.parametrize(
    "shape, num_upsamples", [((28, 28, 1), 2), ((32, 32, 3), 3), ((8, 8, 1), 1)]
)
def test_dcgan_generator_and_discriminator_shapes(shape, num_upsamples):
    """Shapes by abstract evaluation (no compilation): 28x28, 32x32 RGB and 8x8 images."""
    assert networks.dcgan_num_upsamples(*shape[:2]) == num_upsamples
    generator = networks.DCGANGenerator(shape, base_channels=4)
    z, labels = jnp.ones((3, 5)), jnp.zeros(3, jnp.int32)
    variables = jax.eval_shape(lambda k: generator.init(k, z, labels, False), jax.random.key(0))
    x = jax.eval_shape(lambda v: generator.apply(v, z, labels, False), variables)
    assert x.shape == (3, *shape)
    # One transposed convolution per doubling: the paper's all-convolutional generator.
    convs = [name for name in variables["params"] if name.startswith("ConvTranspose")]
    assert len(convs) == num_upsamples
    discriminator = networks.DCGANDiscriminator(base_channels=4)
    d_vars = jax.eval_shape(
        lambda k, x: discriminator.init(k, x, labels, False), jax.random.key(0), x
    )
    out = jax.eval_shape(
        lambda v, x: discriminator.apply(v, x, labels, True, mutable=True)[0], d_vars, x
    )
    assert out.scores.shape == (3,) and out.class_logits is None


def test_images_that_cannot_be_halved_are_refused():
    with pytest.raises(ValueError, match="7x7"):
        networks.dcgan_num_upsamples(7, 7)


def test_concat_conditioning_feeds_the_label_to_both_networks():
    generator = networks.DCGANGenerator((8, 8, 1), 4, conditioning="concat", num_classes=10)
    z = jnp.ones((2, 5))
    variables = _init(generator, z, jnp.zeros(2, jnp.int32))
    x0 = _apply(generator, variables, z, jnp.array([0, 0]), False)
    x1 = _apply(generator, variables, z, jnp.array([3, 3]), False)
    assert float(jnp.abs(x0 - x1).max()) > 1e-5
    assert float(jnp.abs(x0).max()) <= 1.0  # tanh output
    discriminator = networks.MLPDiscriminator(8, 1, conditioning="concat", num_classes=10)
    d_vars = _init(discriminator, x0, jnp.zeros(2, jnp.int32))
    s0 = _apply(discriminator, d_vars, x0, jnp.array([0, 0]), True).scores
    s1 = _apply(discriminator, d_vars, x0, jnp.array([3, 3]), True).scores
    assert float(jnp.abs(s0 - s1).max()) > 1e-5


def test_acgan_discriminator_predicts_the_label_without_seeing_it():
    discriminator = networks.DCGANDiscriminator(4, conditioning="acgan", num_classes=10)
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    variables = _init(discriminator, x, jnp.zeros(2, jnp.int32))
    out0 = _apply(discriminator, variables, x, jnp.array([0, 0]), True)
    out1 = _apply(discriminator, variables, x, jnp.array([7, 7]), True)
    assert out0.class_logits.shape == (2, 10)
    np.testing.assert_array_equal(out0.scores, out1.scores)
    np.testing.assert_array_equal(out0.class_logits, out1.class_logits)


def test_spectral_norm_makes_the_discriminator_1_lipschitz():
    """Each layer's weight divided by its largest singular value, 1-Lipschitz activations:
    after the power iteration has converged no input gradient exceeds norm 1, while the same
    network without spectral norm has larger ones."""
    x = jax.random.normal(jax.random.key(2), (64, 6)) * 3.0
    labels = jnp.zeros(64, jnp.int32)

    def max_input_gradient(spectral_norm):
        module = networks.MLPDiscriminator(32, 3, spectral_norm=spectral_norm)
        variables = module.init(jax.random.key(3), x, labels, False)
        variables = jax.tree.map(lambda v: v * 4.0, variables)  # large weights

        @jax.jit
        def power_iterations(variables):  # u is updated on every training call
            def body(_, variables):
                _, updates = module.apply(variables, x, labels, True, mutable=True)
                return {**variables, **updates}

            return jax.lax.fori_loop(0, 50, body, variables)

        variables = power_iterations(variables)

        def score(point):
            out = module.apply(variables, point[None], labels[:1], False, mutable=True)[0]
            return out.scores[0]

        gradients = jax.jit(jax.vmap(jax.grad(score)))(x)
        return float(jnp.linalg.norm(gradients, axis=-1).max())

    assert max_input_gradient(True) <= 1.0 + 1e-3
    assert max_input_gradient(False) > 2.0


def test_dcgan_initializers_draw_from_the_papers_normals():
    """weight_init='dcgan' (Radford et al. 2016, sec. 4; the reference code's batch norm):
    kernels N(0, 0.02^2), batch norm scales N(1, 0.02^2); 'default' adds nothing to Flax's.
    Sample mean and std of 65,536 draws within 5 standard errors."""
    kernel_init = networks.layer_init("dcgan")["kernel_init"]
    scale_init = networks.batch_norm_init("dcgan")["scale_init"]
    kernel = np.asarray(kernel_init(jax.random.key(0), (256, 256)), np.float64)
    scale = np.asarray(scale_init(jax.random.key(1), (65536,)), np.float64)
    for values, mean in ((kernel, 0.0), (scale, 1.0)):
        assert abs(values.mean() - mean) < 5 * 0.02 / 256
        assert abs(values.std() / 0.02 - 1) < 5 / np.sqrt(2 * 65536)
    assert networks.layer_init("default") == {} and networks.batch_norm_init("default") == {}


def test_an_unknown_weight_init_is_refused_by_name():
    message = r"weight_init='xavier'; allowed: \('default', 'dcgan'\)"
    for make in (networks.layer_init, networks.batch_norm_init):
        with pytest.raises(ValueError, match=message):
            make("xavier")
