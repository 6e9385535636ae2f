"""The autoregressive configs end to end: `tiny` trains, evaluates and samples; and a config
runs unchanged on the TFDS catalog's `binarized_mnist` (`--config.dataset=binarized_mnist`
is the only change; the data path is the same for every family).

The catalog cannot be downloaded here, so its data source is replaced by one that serves what
TFDS serves for that dataset: splits of {"image": uint8 (28, 28, 1) in {0, 1}} with no label.
Everything after the data source (name check, level detection, binarization, the model) is
the real code path.
"""

import importlib
import json
import os

import numpy as np
import pytest

from genjax.data import pipeline
from genjax.train import train_and_evaluate

CONFIGS = ["made", "nade", pytest.param("pixelcnn", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", CONFIGS)
def test_tiny_config_trains_evaluates_and_samples(tmp_path, name):
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(
        importlib.import_module(f"configs.{name}").get_config("tiny"), workdir
    )
    with open(os.path.join(workdir, "eval.json")) as f:
        saved = json.load(f)
    assert saved == results and saved["model"] == name and saved["nll_estimator"] == "exact"
    assert 0 < saved["test_nll_nats"] < 64 * np.log(2.0)  # better than a fair coin per pixel
    assert saved["num_test_examples"] == 355  # every digits8x8 test digit, none twice
    assert os.listdir(os.path.join(workdir, "samples"))


class _FakeSource:
    """A TFDS random-access data source over a list of example dicts."""

    def __init__(self, images: np.ndarray):
        self.examples = [{"image": image} for image in images]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitems__(self, indices):
        return [self.examples[i] for i in indices]


def _binary_images(seed: int, num: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((num, 28, 28, 1)) < 0.2).astype(np.uint8)


@pytest.fixture
def fake_binarized_mnist(monkeypatch):
    splits = {"train": _binary_images(0, 40), "validation": _binary_images(1, 8)}
    splits["test"] = _binary_images(2, 20)

    def catalog_source(name, data_dir):
        assert name == "binarized_mnist", name
        return {split: _FakeSource(images) for split, images in splits.items()}

    monkeypatch.setattr(pipeline, "_catalog_source", catalog_source)
    pipeline.load_raw.cache_clear()
    yield splits
    pipeline.load_raw.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["made", "nade", "pixelcnn"])
def test_config_runs_on_binarized_mnist(fake_binarized_mnist, tmp_path, name):
    config = importlib.import_module(f"configs.{name}").get_config("tiny")
    config.dataset = "binarized_mnist"  # the documented override, nothing else changed
    config.data_dir = str(tmp_path / "tfds")
    config.num_steps, config.eval_every, config.checkpoint_every = 4, 4, 4
    config.batch_size, config.eval_batch_size = 20, 10

    dataset = pipeline.load_dataset(config)
    assert dataset.spec.example_shape == (28, 28, 1)
    assert dataset.spec.binarized and dataset.spec.num_levels == 2
    test_x = np.concatenate([batch["x"] for batch in dataset.eval_batches("test", 10)])
    # Dynamic binarization of pixels that are already 0 or 1 keeps them as stored.
    np.testing.assert_array_equal(test_x, fake_binarized_mnist["test"].astype(np.float32))

    results = train_and_evaluate(config, str(tmp_path / "run"))
    assert results["dataset"] == "binarized_mnist" and results["nll_estimator"] == "exact"
    assert results["num_test_examples"] == 20
    assert 0 < results["test_nll_nats"] < np.inf
