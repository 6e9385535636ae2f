"""The shared model_config checks name the field, the value and what is allowed."""

import ml_collections
import pytest

from genjax.data.pipeline import DataSpec
from genjax.models import checks


def _mc(**fields):
    return ml_collections.ConfigDict(fields)


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4"])
def test_positive_ints_refuse_zero_floats_bools_and_strings(value):
    with pytest.raises(ValueError, match=r"config.model_config.k=.* must be a positive integer"):
        checks.check_positive_ints(_mc(k=value), ("k",))
    checks.check_positive_ints(_mc(k=3), ("k",))


def test_choices_and_bools_list_what_is_allowed():
    with pytest.raises(ValueError, match=r"config.model_config.act='gelu'; allowed: \('relu',\)"):
        checks.check_choices(_mc(act="gelu"), {"act": ("relu",)})
    with pytest.raises(ValueError, match=r"config.model_config.flag=1; allowed: \(True, False\)"):
        checks.check_bools(_mc(flag=1), ("flag",))


def test_sizes_accept_tuples_and_json_lists_and_check_their_length():
    assert checks.check_sizes(_mc(h=[4, 5]), "h") == (4, 5)  # config.json stores lists
    assert checks.check_sizes(_mc(h=()), "h", allow_empty=True) == ()
    with pytest.raises(ValueError, match=r"h=\(\) must be a non-empty tuple of positive integers"):
        checks.check_sizes(_mc(h=()), "h")
    with pytest.raises(ValueError, match=r"h=\(4, 0\) must be a non-empty tuple"):
        checks.check_sizes(_mc(h=(4, 0)), "h")
    with pytest.raises(ValueError, match=r"h=\(4,\) must be a tuple of 2 positive integers, one"):
        checks.check_sizes(_mc(h=(4,)), "h", 2, "one per layer")


def test_require_binary_says_how_to_binarize_and_names_the_dataset():
    spec = DataSpec("mnist5k", (28, 28, 1), 4000, 1000, 10, 256, False, (0.0, 1.0))
    message = (
        r"config.model='nade' needs binary data: set config.preprocess.binarize to 'dynamic' or "
        r"'fixed', or use x='y' \(config.dataset='mnist5k' is not binarized\)."
    )
    with pytest.raises(ValueError, match=message):
        checks.require_binary(spec, "config.model='nade'", "x='y'")
    binary = DataSpec("mnist5k", (28, 28, 1), 4000, 1000, 10, 256, True, (0.0, 1.0))
    checks.require_binary(binary, "config.model='nade'")


@pytest.mark.parametrize("value", [-0.1, "1", True, None, float("nan")])
def test_non_negative_numbers_refuse_negatives_strings_bools_and_nan(value):
    with pytest.raises(ValueError, match=r"config.model_config.weight=.* non-negative number"):
        checks.check_non_negative_numbers(ml_collections.ConfigDict({"weight": value}), ["weight"])
    checks.check_non_negative_numbers(ml_collections.ConfigDict({"weight": 0}), ["weight"])
    checks.check_non_negative_numbers(ml_collections.ConfigDict({"weight": 2.5}), ["weight"])
