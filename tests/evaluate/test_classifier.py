"""Tests for genjax/evaluate/classifier.py: the offline feature network of the sample metrics.

One short training on digits8x8 (1,442 train / 355 test 8x8 digits, levels 0..16) in a
module-private data directory serves most tests; the reference test images are the raw levels
divided by 16, computed here rather than through the module.
"""

import json
import shutil

import jax
import numpy as np
import pytest

from genjax.data import pipeline, preprocess
from genjax.evaluate import classifier
from tests import checks

DATASET = "digits8x8"
MAX_LEVEL = 16  # digits8x8 intensities are 0..16
NUM_TEST = 355
NUM_STEPS = 200  # ~18 epochs of 1,442 digits: test accuracy 0.90, binarized 0.83
MIN_TEST_ACCURACY = 0.85  # chance is 0.1
# Bernoulli(pixel) draws of the blurry 8x8 digits lose detail; most labels must survive.
MIN_BINARIZED_AGREEMENT = 0.75


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def trained(data_dir):
    """The digits8x8 classifier of `load_or_train`, trained once for the module."""
    return classifier.load_or_train(DATASET, data_dir, num_steps=NUM_STEPS, progress=False)


@pytest.fixture(scope="module")
def test_split(data_dir):
    """digits8x8 test images as unit intensities (355, 8, 8, 1) and labels (355,)."""
    raw = pipeline.load_raw(DATASET, data_dir, "test")
    return raw["x"].astype(np.float32) / MAX_LEVEL, raw["label"]


def _cache_dir(data_dir, num_steps, seed=0):
    settings = {
        "version": classifier.CLASSIFIER_VERSION,
        "num_steps": num_steps,
        "batch_size": classifier.DEFAULT_BATCH_SIZE,
        "learning_rate": classifier.DEFAULT_LEARNING_RATE,
        "feature_size": classifier.DEFAULT_FEATURE_SIZE,
    }
    return classifier.cache_dir(data_dir, DATASET, seed, settings)


def test_minibatch_indices_visit_every_example_once_per_epoch():
    order = classifier.minibatch_indices(10, num_steps=5, batch_size=4, seed=3)  # two epochs
    assert order.shape == (5, 4)
    flat = order.reshape(-1)
    np.testing.assert_array_equal(np.sort(flat[:10]), np.arange(10))
    np.testing.assert_array_equal(np.sort(flat[10:]), np.arange(10))
    np.testing.assert_array_equal(order, classifier.minibatch_indices(10, 5, 4, seed=3))


def test_binarize_half_draws_bernoulli_pixels_in_the_first_half_only():
    x = np.random.default_rng(0).uniform(size=(200, 8, 8, 1)).astype(np.float32)
    out = np.asarray(classifier.binarize_half(jax.random.key(0), x))
    assert out.shape == x.shape
    assert set(np.unique(out[:100])) == {0.0, 1.0}
    np.testing.assert_array_equal(out[100:], x[100:])
    # E[b] = x: over 6,400 pixels the mean of b - x has standard deviation < 0.5 / 80.
    assert abs(np.mean(out[:100] - x[:100])) < 0.02


@pytest.mark.slow  # long: moved out of the default suite's 10 minutes
def test_training_is_bitwise_deterministic_in_the_seed(data_dir):
    raw = pipeline.load_raw(DATASET, data_dir, "train")
    x, labels = raw["x"].astype(np.float32) / MAX_LEVEL, raw["label"]
    # The module and batch shape of `trained`: only the 6-step schedule compiles anew.
    train = lambda seed: classifier.train_classifier(x, labels, 10, seed=seed, num_steps=6)
    first, again, other_seed = train(0), train(0), train(1)
    checks.assert_trees_equal(first, again)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(other_seed), strict=True):
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_test_accuracy_is_well_above_chance_and_is_the_stored_one(trained, test_split):
    x, labels = test_split
    logits = trained.module.apply(trained.params, x)  # one unbatched pass, (355, 10)
    predictions = trained.predict(x, batch_size=100)  # four padded batches
    np.testing.assert_array_equal(predictions, np.argmax(np.asarray(logits), axis=-1))
    accuracy = np.mean(predictions == labels)
    assert accuracy > MIN_TEST_ACCURACY
    assert trained.info["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert trained.accuracy(x, labels) == pytest.approx(accuracy, abs=1e-12)
    assert trained.info["num_train"] == 1442 and trained.info["num_test"] == NUM_TEST
    assert trained.info["dataset"] == DATASET and trained.info["seed"] == 0


def test_features_are_the_penultimate_relu_activations(trained, test_split):
    x, _ = test_split
    features = trained.features(x, batch_size=100)
    assert isinstance(features, np.ndarray)
    assert features.shape == (NUM_TEST, classifier.DEFAULT_FEATURE_SIZE)
    assert features.min() >= 0.0 and features.max() > 0.0
    direct = trained.module.apply(trained.params, x, method=classifier.DigitClassifier.features)
    np.testing.assert_allclose(features, np.asarray(direct), rtol=1e-5, atol=1e-5)


def test_binarized_and_grey_digits_get_the_same_label(trained, test_split):
    x, labels = test_split
    binarized = preprocess.binarize_fixed(x, seed=1)
    agreement = np.mean(trained.predict(binarized) == trained.predict(x))
    assert agreement > MIN_BINARIZED_AGREEMENT
    assert trained.accuracy(binarized, labels) > 0.7


def test_inputs_outside_the_unit_interval_are_refused(trained, test_split):
    x, _ = test_split
    with pytest.raises(ValueError, match="unit-interval"):
        trained.features(2.0 * x - 1.0)
    with pytest.raises(ValueError, match="shape"):
        trained.features(x[..., 0])


def test_second_call_loads_the_cache_without_data_or_training(
    trained, test_split, data_dir, monkeypatch
):
    def refuse(*args, **kwargs):
        raise AssertionError("the cached classifier must not be retrained or its data read")

    monkeypatch.setattr(classifier, "train_classifier", refuse)
    monkeypatch.setattr(pipeline, "load_dataset", refuse)
    loaded = classifier.load_or_train(DATASET, data_dir, num_steps=NUM_STEPS, progress=False)
    checks.assert_trees_equal(loaded.params, trained.params)
    x, _ = test_split
    np.testing.assert_array_equal(loaded.features(x), trained.features(x))
    info = json.loads((_cache_dir(data_dir, NUM_STEPS) / classifier.INFO_FILE).read_text())
    assert info["test_accuracy"] == trained.info["test_accuracy"] > MIN_TEST_ACCURACY
    assert loaded.info == info


def _spy_training(monkeypatch, params):
    """Replaces training by returning `params`; returns the list of recorded calls."""
    calls = []

    def train(*args, **kwargs):
        calls.append(kwargs["num_steps"])
        return params

    monkeypatch.setattr(classifier, "train_classifier", train)
    return calls


def test_incomplete_directories_are_not_taken_for_a_cache(trained, data_dir, monkeypatch):
    finished = _cache_dir(data_dir, NUM_STEPS)
    directory = _cache_dir(data_dir, num_steps=3)  # another tag, trained by the spy
    # A leftover temporary sibling and a directory at the final path, both without info.json.
    shutil.copytree(finished / "params", directory.parent / f".{directory.name}.tmp-1-dead/params")
    shutil.copytree(finished / "params", directory / "params")
    calls = _spy_training(monkeypatch, trained.params)
    rebuilt = classifier.load_or_train(DATASET, data_dir, num_steps=3, progress=False)
    assert calls == [3]
    assert (directory / classifier.INFO_FILE).is_file()
    assert rebuilt.info["num_steps"] == 3
    checks.assert_trees_equal(rebuilt.params, trained.params)


def test_an_interrupted_save_leaves_no_directory(trained, data_dir, monkeypatch):
    directory = _cache_dir(data_dir, num_steps=4)
    _spy_training(monkeypatch, trained.params)

    def interrupted(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(classifier, "_move_into_place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        classifier.load_or_train(DATASET, data_dir, num_steps=4, progress=False)
    assert not directory.exists()
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(f".{directory.name}")]


def test_datasets_without_images_are_refused():
    # The session's shared data directory (tests/conftest.py), where other tests prepare toy2d.
    with pytest.raises(ValueError, match=r"image dataset; 'toy2d/8gaussians'"):
        classifier.load_or_train("toy2d/8gaussians", progress=False)
