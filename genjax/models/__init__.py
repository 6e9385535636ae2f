"""Model families, looked up by `config.model`.

A family lives in its own module and plugs in through `genjax.models.base.Model`; adding one
is a new module plus one line in `_FAMILIES` (module path and class name, imported lazily so
that the trainer never imports a family it does not train).
"""

from __future__ import annotations

import importlib

_FAMILIES: dict[str, str] = {
    "dbm": "genjax.models.energy.dbm:DBM",
    "dbn": "genjax.models.energy.dbn:DBN",
    "flow": "genjax.models.flow:FlowModel",
    "gan": "genjax.models.gan.family:GAN",
    "made": "genjax.models.autoregressive.made:MADE",
    "nade": "genjax.models.autoregressive.nade:NADE",
    "pixelcnn": "genjax.models.autoregressive.pixelcnn:PixelCNN",
    "rbm": "genjax.models.energy.rbm_family:RBM",
    "vae": "genjax.models.vae:VAE",
}

# Models with no training loop of their own, run by a dedicated entry point instead.
_OTHER_ENTRY_POINTS = {"hopfield": "python -m experiments.hopfield"}


def unregistered_message(name: str) -> str:
    """The error for a `config.model` that is not a registered family, with a hint."""
    message = f"config.model={name!r} is not a registered model; allowed: {names()}"
    if name in _OTHER_ENTRY_POINTS:
        message += (
            f". {name!r} stores patterns without a training loop: run it with "
            f"`{_OTHER_ENTRY_POINTS[name]} --config=... --workdir=...`."
        )
    return message


def names() -> tuple[str, ...]:
    """The registered values of `config.model`."""
    return tuple(sorted(_FAMILIES))


def get(name: str):
    """The `Model` subclass registered as `name`."""
    if name not in _FAMILIES:
        raise ValueError(unregistered_message(name))
    module_name, class_name = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build(config, spec):
    """An instance of the family `config.model` for data described by `spec`."""
    return get(config.model)(config, spec)
