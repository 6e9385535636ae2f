"""The family registry: a `Model` subclass that sets `name` registers itself."""

import importlib
import pathlib

import pytest

from genjax import models
from genjax.models import base
from genjax.models.vae import VAE

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry that each test may change (every genjax family imported first)."""
    models.names()
    monkeypatch.setattr(base, "FAMILIES", dict(base.FAMILIES))
    return base.FAMILIES


def test_a_new_subclass_with_a_name_is_found_by_name(registry):
    class Mine(VAE):
        name = "my_vae"

    assert "my_vae" in models.names()
    assert models.get("my_vae") is Mine


def test_a_subclass_without_its_own_name_registers_nothing(registry):
    before = dict(registry)

    class Variant(VAE):  # inherits name = "vae" but does not set it
        pass

    assert registry == before and models.get("vae") is VAE


def test_two_families_with_one_name_are_refused_naming_both(registry):
    with pytest.raises(TypeError, match=r"Clash.*genjax\.models\.vae\.VAE.*'vae'"):

        class Clash(base.GradientModel):
            name = "vae"


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"model='nope' is not a registered model; allowed"):
        models.get("nope")
    with pytest.raises(ValueError, match=r"'hopfield'.*python -m experiments\.hopfield"):
        models.get("hopfield")


def test_every_family_has_a_config_and_every_config_a_family():
    """The registry (found by importing genjax/models) and configs/ name the same families
    (the Hopfield network has its own entry point)."""
    configured = set()
    for path in CONFIGS.glob("*.py"):
        if path.stem not in ("__init__", "common"):
            configured.add(importlib.import_module(f"configs.{path.stem}").get_config().model)
    assert configured - {"hopfield"} == set(models.names())
