"""Model families, looked up by `config.model`.

A family is a subclass of `genjax.models.base.Model` that sets `name` (its `config.model`
value): defining the class registers it (`base.FAMILIES`). `names()` and `get()` first import
every module of this package once, so a new family module is found where it lies; a family
defined in a user's own code registers when that code is imported.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from genjax.models import base

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


@functools.cache
def _import_families() -> None:
    """Imports every module of this package (once), registering the families they define."""
    for module in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        importlib.import_module(module.name)


def names() -> tuple[str, ...]:
    """The registered values of `config.model`."""
    _import_families()
    return tuple(sorted(base.FAMILIES))


def get(name: str):
    """The `Model` subclass registered as `name`."""
    _import_families()
    if name not in base.FAMILIES:
        raise ValueError(unregistered_message(name))
    return base.FAMILIES[name]


def build(config, spec):
    """An instance of the family `config.model` for data described by `spec`."""
    return get(config.model)(config, spec)
