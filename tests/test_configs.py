"""Every shipped config and variant is valid, and variants combine with commas."""

import importlib
import pathlib

import pytest

from configs import common
from genjax.models.energy import hopfield
from genjax.train import base_config, validate

CONFIG_NAMES = sorted(
    path.stem
    for path in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
    if path.stem not in ("__init__", "common")
)


def _validate(name: str, config) -> None:
    if name == "hopfield":  # no training loop: its own entry point and checks
        hopfield.validate_config(config)
    else:
        validate(config)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_variant_alone_and_with_tiny_is_valid(name):
    module = importlib.import_module(f"configs.{name}")
    _validate(name, module.get_config())
    assert "tiny" in module.VARIANTS, f"configs/{name}.py has no tiny variant"
    for variant in module.VARIANTS:
        config = module.get_config(variant)
        _validate(name, config)
        combined = module.get_config(f"{variant},tiny")
        _validate(name, combined)
        assert combined.num_steps <= module.get_config("tiny").num_steps or name in ("dbn", "dbm")
    with pytest.raises(ValueError, match=r"unknown config variant 'huge'; allowed: \('default'"):
        module.get_config("tiny,huge")


def test_variants_apply_in_order_and_default_changes_nothing():
    calls = []
    variants = {"a": lambda config: calls.append("a"), "b": lambda config: calls.append("b")}
    config = base_config()
    common.apply_variants(config, " b, default,a ", variants)
    assert calls == ["b", "a"]
    common.apply_variants(config, None, variants)
    assert calls == ["b", "a"]


def test_unknown_top_level_field_is_refused():
    with pytest.raises(KeyError, match="'num_step' is not a top-level config field"):
        common.binarized_mnist5k("made", base_config().model_config, num_step=10)
