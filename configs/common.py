"""What the configs share: the binarized-mnist5k training setup, the `tiny` settings, and
variants named on the command line (`--config=configs/rbm.py:pcd,tiny`)."""

from collections.abc import Callable, Mapping

import ml_collections

from genjax.train import base_config

Variant = Callable[[ml_collections.ConfigDict], None]


def binarized_mnist5k(
    model: str, model_config: ml_collections.ConfigDict, **fields
) -> ml_collections.ConfigDict:
    """`base_config` for `model` on mnist5k with dynamic binarization, batches of 100, Adam 1e-3
    with a cosine decay; `fields` set any other top-level field, e.g. `num_steps=10_000`."""
    config = base_config()
    config.model = model
    config.model_config = model_config
    config.dataset = "mnist5k"
    config.preprocess.binarize = "dynamic"
    config.batch_size = 100
    config.eval_batch_size = 100
    config.learning_rate = 1e-3
    config.lr_schedule = "cosine"
    return set_fields(config, fields)


def set_fields(config: ml_collections.ConfigDict, fields: dict) -> ml_collections.ConfigDict:
    """Sets top-level `fields` on `config` (a KeyError names an unknown one); returns it."""
    for field, value in fields.items():
        if field not in config:
            raise KeyError(f"{field!r} is not a top-level config field; fields: {sorted(config)}")
        config[field] = value
    return config


def apply_tiny(config: ml_collections.ConfigDict) -> None:
    """The `tiny` training settings: digits8x8, 20 steps of 20, frequent evaluation and
    checkpoints, no sample grids during training: seconds on a laptop core (tests, smoke runs).
    Each config then shrinks its own model."""
    config.dataset = "digits8x8"
    config.batch_size = 20
    config.eval_batch_size = 200
    config.num_steps = 20
    config.log_every = 5
    config.eval_every = 10
    config.checkpoint_every = 10
    config.sample_every = 0
    config.num_samples = 16
    config.progress_bar = False


def apply_tiny_keeping_toy2d(config: ml_collections.ConfigDict) -> None:
    """`apply_tiny`, except that a toy2d dataset chosen before (`toy,tiny`) is kept, with
    evaluation on 1,000 points and 500 samples."""
    dataset = config.dataset
    apply_tiny(config)
    if dataset.startswith("toy2d/"):
        config.dataset, config.eval_batch_size, config.num_samples = dataset, 1000, 500


def apply_variants(
    config: ml_collections.ConfigDict, arg: str | None, variants: Mapping[str, Variant]
) -> None:
    """Applies the comma-separated variant names of `arg` in order ('' and 'default' change
    nothing); an unknown name raises ValueError listing the allowed ones."""
    for name in (arg or "").split(","):
        name = name.strip()
        if name in ("", "default"):
            continue
        if name not in variants:
            raise ValueError(
                f"unknown config variant {name!r}; allowed: {('default', *variants)} "
                "(several may be joined with commas)"
            )
        variants[name](config)


def dequantized_mnist5k(
    model: str, model_config: ml_collections.ConfigDict, **fields
) -> ml_collections.ConfigDict:
    """`binarized_mnist5k`'s setup on the 8-bit digits instead: no binarization, uniform
    dequantization (Uria et al. 2013), for models of continuous densities (flows)."""
    config = binarized_mnist5k(model, model_config, **fields)
    config.preprocess.binarize = "none"
    config.preprocess.dequantize = True
    return config


def apply_toy2d(config: ml_collections.ConfigDict, name: str = "8gaussians") -> None:
    """A 2-D toy density with a closed form (its entropy is the floor of the test NLL): raw
    coordinates, batches of 256, evaluation on the 10,000 test points."""
    config.dataset = f"toy2d/{name}"
    config.preprocess.binarize = "none"
    config.preprocess.dequantize = False
    config.preprocess.logit_alpha = 0.0
    config.preprocess.scale = "unit"
    config.batch_size = 256
    config.eval_batch_size = 1000
    config.num_samples = 2000
