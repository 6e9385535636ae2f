"""GANs on toy2d/8gaussians, the mode-collapse benchmark, with a selectable loss.

Launch:
  python -m experiments.train --config=configs/gan.py --workdir=runs/gan_ns
  python -m experiments.train --config=configs/gan.py:wgan_gp --workdir=runs/gan_wgan_gp
Variants (`--config=configs/gan.py:VARIANT`; several joined by commas, e.g. `wgan_gp,grid25`):
  minimax        the saturating loss of Goodfellow et al. (2014), eq. 1
  non_saturating the default: G maximises log D(G(z)) (Goodfellow et al. 2014, sec. 3)
  wgan           Wasserstein critic with weight clipping at 0.01, 5 critic steps, RMSProp at
                 5e-5 (Arjovsky et al. 2017, Algorithm 1)
  wgan_gp        Wasserstein critic with the gradient penalty lambda = 10, 5 critic steps, Adam
                 1e-4, betas (0, 0.9) (Gulrajani et al. 2017, Algorithm 1)
  hinge          the hinge loss (Lim & Ye 2017; Miyato et al. 2018)
  least_squares  LSGAN (Mao et al. 2017), targets a=0, b=1, c=1
  grid25         the 5x5 grid of Gaussians instead of the 8 Gaussians, wider networks
  ring8          the narrow ring: 8 Gaussians on a circle of radius 2, std 0.02 (Metz et al.
                 2017; VEEGAN)
  grid25_unit    the 5x5 grid divided by 2 sqrt 2 (std 0.0177), as WGAN-GP's toy code
  toy512         WGAN-GP's toy code (Gulrajani et al. 2017, gan_toy.py): 3 hidden layers of
                 512, a 2-D latent, Adam 1e-4 with betas (0.5, 0.9) for both networks and
                 every loss (put it after the loss variant: `wgan_gp,toy512,ring8`)
  lambda01       the gradient penalty lambda = 0.1 of that toy code (after `wgan_gp`)
  pack2, pack4   PacGAN (Lin et al. 2018): the discriminator scores packs of 2 or 4 samples
  tiny           a few steps on the same data: seconds

eval.json reports mode coverage from `sample_quality_samples` = 2,500 samples: the number of
modes holding at least 20% of a uniform share of all the samples (0.2 * 2,500 / M) in
high-quality samples (within 3 standard deviations of a mode), and the high-quality fraction
(Metz et al. 2017; Srivastava et al. 2017; the counting rule of Lin et al. 2018). Measured
(seed 0, 5,000 generator updates, 2 CPU cores):

  default (non-saturating)  8 / 8 modes, high-quality fraction 0.87       1.3 min
  wgan_gp                   6 / 8 modes, 0.31                             5.3 min
  grid25                    1 / 25 modes: collapse onto one mode, 0.88    3.1 min
  wgan_gp,grid25            0 / 25 modes, 0.04 (spread between modes)     13.1 min
"""

import ml_collections

from configs import common
from genjax.train import base_config


def gan_model_config(architecture: str, **fields) -> ml_collections.ConfigDict:
    """The `config.model = 'gan'` fields: a non-saturating GAN, no penalties, one critic
    step, Flax's default initialisation, a generator moving average of decay 0.999 sampled
    with the running batch norm statistics it averaged (no standing statistics); `fields`
    override."""
    model_config = ml_collections.ConfigDict(
        dict(
            architecture=architecture,
            loss="non_saturating",
            latent_size=64,
            hidden_size=128,
            num_hidden_layers=3,
            base_channels=32,
            discriminator_norm="none",
            spectral_norm=False,
            conditioning="none",
            aux_weight=1.0,
            critic_steps=1,
            gradient_penalty=0.0,
            r1_penalty=0.0,
            weight_clip=0.0,
            ema_decay=0.999,
            discriminator_learning_rate=0.0,
            pack=1,
            weight_init="default",
            standing_stats_batches=0,
        )
    )
    model_config.update(fields)
    return model_config


def gan_config(model_config: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
    """`base_config` for a GAN: Adam 2e-4 with beta1 = 0.5 (Radford et al. 2016, sec. 4),
    a constant rate, sample-quality metrics at every evaluation; `fields` override."""
    config = base_config()
    config.model = "gan"
    config.model_config = model_config
    config.learning_rate = 2e-4
    config.adam_b1 = 0.5
    config.sample_quality_samples = 1000
    return common.set_fields(config, fields)


def image_gan_config(
    model_config: ml_collections.ConfigDict, **fields
) -> ml_collections.ConfigDict:
    """`gan_config` on mnist5k's 8-bit digits scaled to [-1, 1] (tanh outputs, Radford et al.
    2016, sec. 4), not binarized or dequantized, batches of 64; sample quality from 1,000
    samples against the 1,000 test digits in the features of genjax's digit classifier."""
    config = gan_config(model_config, batch_size=64, eval_batch_size=500, **fields)
    config.dataset = "mnist5k"
    config.preprocess.scale = "symmetric"
    return config


def apply_image_tiny(config: ml_collections.ConfigDict) -> None:
    """`common.apply_tiny` (digits8x8, 20 steps) with small DCGAN networks and 200 samples
    for the sample-quality metrics."""
    common.apply_tiny(config)
    config.sample_quality_samples = 200
    config.model_config.base_channels, config.model_config.latent_size = 8, 16


def apply_loss(name: str):
    """A variant that selects `model_config.loss`."""

    def apply(config: ml_collections.ConfigDict) -> None:
        config.model_config.loss = name

    apply.__doc__ = f"model_config.loss = {name!r}"
    return apply


def apply_wgan(config: ml_collections.ConfigDict) -> None:
    """Arjovsky et al. (2017), Algorithm 1: clipping at c = 0.01, n_critic = 5, RMSProp at
    5e-5 (second-moment decay 0.99, the default of the PyTorch RMSprop their code used)."""
    mc = config.model_config
    mc.loss, mc.weight_clip, mc.critic_steps = "wasserstein", 0.01, 5
    config.optimizer, config.learning_rate, config.rmsprop_decay = "rmsprop", 5e-5, 0.99


def apply_wgan_gp(config: ml_collections.ConfigDict) -> None:
    """Gulrajani et al. (2017), Algorithm 1: lambda = 10, n_critic = 5, Adam 1e-4, betas
    (0, 0.9); the critic has no batch norm (layer norm on images)."""
    mc = config.model_config
    mc.loss, mc.gradient_penalty, mc.critic_steps = "wasserstein", 10.0, 5
    if mc.discriminator_norm == "batch":
        mc.discriminator_norm = "layer"
    config.learning_rate, config.adam_b1, config.adam_b2 = 1e-4, 0.0, 0.9


def apply_grid25(config: ml_collections.ConfigDict) -> None:
    """The 5x5 grid of Gaussians (std 0.05): 25 modes to cover, with wider networks (4 hidden
    layers of 400; 128 units cover none of the modes in 5,000 steps)."""
    config.dataset = "toy2d/grid25"
    config.model_config.hidden_size, config.model_config.num_hidden_layers = 400, 4


def apply_dataset(name: str):
    """A variant that trains on `toy2d/<name>`."""

    def apply(config: ml_collections.ConfigDict) -> None:
        config.dataset = f"toy2d/{name}"

    apply.__doc__ = f"config.dataset = 'toy2d/{name}'"
    return apply


def apply_toy512(config: ml_collections.ConfigDict) -> None:
    """The toy setting of Gulrajani et al. (2017), `gan_toy.py`: generator and critic MLPs of
    3 hidden layers of 512 units, z ~ N(0, I_2), Adam 1e-4 with betas (0.5, 0.9) for both
    networks; applied after a loss variant, it gives every loss the same optimizer."""
    mc = config.model_config
    mc.hidden_size, mc.num_hidden_layers, mc.latent_size = 512, 3, 2
    config.learning_rate, config.adam_b1, config.adam_b2 = 1e-4, 0.5, 0.9


def apply_lambda01(config: ml_collections.ConfigDict) -> None:
    """WGAN-GP's penalty weight of its toy code, lambda = 0.1 (`LAMBDA = .1` in gan_toy.py)."""
    config.model_config.gradient_penalty = 0.1


def apply_pack(pack: int):
    """A variant that sets PacGAN's `model_config.pack`."""

    def apply(config: ml_collections.ConfigDict) -> None:
        config.model_config.pack = pack

    apply.__doc__ = f"model_config.pack = {pack} (Lin et al. 2018)"
    return apply


def apply_tiny(config: ml_collections.ConfigDict) -> None:
    """The same data, a small network, 20 steps and 500 evaluation samples: seconds."""
    config.num_steps, config.log_every, config.eval_every = 20, 5, 10
    config.checkpoint_every, config.sample_every, config.progress_bar = 10, 0, False
    config.batch_size, config.num_samples, config.sample_quality_samples = 64, 200, 500
    config.model_config.hidden_size, config.model_config.num_hidden_layers = 16, 2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = gan_config(
        gan_model_config("mlp"),
        num_steps=5_000,
        eval_every=500,
        checkpoint_every=1_000,
        log_every=100,
    )
    common.apply_toy2d(config)
    config.sample_quality_samples = 2500
    config.num_samples = 2500
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {
    "minimax": apply_loss("minimax"),
    "non_saturating": apply_loss("non_saturating"),
    "wgan": apply_wgan,
    "wgan_gp": apply_wgan_gp,
    "hinge": apply_loss("hinge"),
    "least_squares": apply_loss("least_squares"),
    "grid25": apply_grid25,
    "ring8": apply_dataset("ring8"),
    "grid25_unit": apply_dataset("grid25_unit"),
    "toy512": apply_toy512,
    "lambda01": apply_lambda01,
    "pack2": apply_pack(2),
    "pack4": apply_pack(4),
    "tiny": apply_tiny,
}
