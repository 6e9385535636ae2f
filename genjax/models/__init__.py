"""Model families, looked up by `config.model`.

A family lives in its own module and plugs in through `genjax.models.base.Model`; adding one
is a new module plus one line in `_FAMILIES` (module path and class name, imported lazily so
that the trainer never imports a family it does not train).
"""

from __future__ import annotations

import importlib

_FAMILIES: dict[str, str] = {
    "vae": "genjax.models.vae:VAE",
}


def names() -> tuple[str, ...]:
    """The registered values of `config.model`."""
    return tuple(sorted(_FAMILIES))


def get(name: str):
    """The `Model` subclass registered as `name`."""
    if name not in _FAMILIES:
        raise ValueError(f"config.model={name!r} is not a registered model; allowed: {names()}")
    module_name, class_name = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build(config, spec):
    """An instance of the family `config.model` for data described by `spec`."""
    return get(config.model)(config, spec)
