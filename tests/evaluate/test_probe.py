"""The linear probe: separable classes are found, label noise is not."""

import numpy as np
import pytest

from genjax.evaluate import probe


def _blobs(rng, num, num_classes=3, dims=5, spread=0.3):
    labels = rng.integers(num_classes, size=num)
    centres = np.eye(num_classes, dims) * 3.0
    return centres[labels] + spread * rng.normal(size=(num, dims)), labels


def test_separable_classes_are_classified_and_random_labels_are_at_chance():
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 300)
    test_x, test_y = _blobs(rng, 300)
    assert probe.linear_probe_accuracy(train_x, train_y, test_x, test_y) == 1.0
    shuffled = rng.permutation(train_y)
    chance = probe.linear_probe_accuracy(train_x, shuffled, test_x, rng.permutation(test_y))
    assert chance == pytest.approx(1 / 3, abs=0.1)


def test_features_are_standardised_with_the_training_statistics():
    """Scaling one informative feature by 1e6 and shifting it changes nothing."""
    rng = np.random.default_rng(1)
    train_x, train_y = _blobs(rng, 200, num_classes=2, dims=2, spread=1.0)
    test_x, test_y = _blobs(rng, 200, num_classes=2, dims=2, spread=1.0)
    scale = np.array([1e6, 1.0])
    accuracy = probe.linear_probe_accuracy(train_x, train_y, test_x, test_y)
    scaled = probe.linear_probe_accuracy(train_x * scale + 5, train_y, test_x * scale + 5, test_y)
    assert scaled == pytest.approx(accuracy)


def test_bad_inputs_are_named():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"train labels have shape \(3,\); expected \(4,\)"):
        probe.linear_probe_accuracy(x, np.zeros(3), x, np.zeros(4))
    with pytest.raises(ValueError, match="test features contain NaN"):
        probe.linear_probe_accuracy(x, np.arange(4) % 2, x + np.nan, np.zeros(4))
