"""The Hopfield experiment runner (genjax/workbench/hopfield.py): its outputs on the tiny
config, and bad configs refused before anything is written."""

import json

import pytest
from PIL import Image

from configs import hopfield as hopfield_configs
from genjax.workbench.hopfield import run_experiment


@pytest.mark.slow  # long: moved out of the default suite's 10 minutes
def test_run_experiment_tiny_writes_config_results_and_plots(tmp_path):
    config = hopfield_configs.get_config("tiny")
    workdir = tmp_path / "run"
    results = run_experiment(config, str(workdir))
    assert sorted(p.name for p in workdir.iterdir()) == [
        "capacity_curve.png",
        "config.json",
        "results.json",
        "retrieval.png",
    ]
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config.to_json())
    assert json.loads((workdir / "results.json").read_text()) == results
    table = results["capacity_table"]
    assert [row["load"] for row in table] == list(config.model_config.loads)
    assert table[0]["retrieval_rate"] == 1.0 and table[-1]["retrieval_rate"] < 0.5
    assert results["theoretical_capacity"] == 0.138
    assert 0.05 <= results["empirical_capacity"] <= 0.4
    digits = results["digit_retrieval"]
    assert len(digits["final_overlap"]) == config.model_config.num_digit_patterns
    with Image.open(workdir / "retrieval.png") as picture:
        width, height = picture.size
    assert height > width / config.model_config.num_digit_patterns  # three rows of tiles
    with Image.open(workdir / "capacity_curve.png") as picture:
        picture.verify()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model_config.order", "sideways", r"model_config.order='sideways'; allowed: \('fixed',"),
        ("model_config.loads", (0.1, -0.2), r"config.model_config.loads=.*positive"),
        ("model_config.flip_fraction", 0.5, r"config.model_config.flip_fraction=0.5; allowed"),
        ("model_config.num_trials", 0, r"config.model_config.num_trials=0; allowed"),
        ("dataset", "toy2d/moons", r"config.dataset='toy2d/moons'"),
        ("preprocess.binarize", "dynamic", r"config.preprocess.binarize='dynamic'; allowed"),
        ("compute_dtype", "bfloat16", r"config.compute_dtype='bfloat16'; allowed: 'float32'"),
    ],
)
def test_bad_config_raises_before_writing_anything(tmp_path, field, value, message):
    config = hopfield_configs.get_config("tiny")
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        run_experiment(config, str(workdir))
    assert not workdir.exists()
