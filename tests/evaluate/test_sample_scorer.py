"""The sample scorer: which datasets it serves, and its metrics on samples of known quality."""

import numpy as np
import pytest

from genjax.data import toy2d
from genjax.data.pipeline import default_data_dir, load_raw
from genjax.evaluate import classifier, sample_scorer


def test_unsupported_datasets_and_sizes_are_refused_by_name():
    with pytest.raises(ValueError, match="'toy2d/moons' has no sample-quality reference"):
        sample_scorer.check_supported("toy2d/moons", (2,), None, 100)
    with pytest.raises(ValueError, match="'binarized_mnist' has no sample-quality"):
        sample_scorer.check_supported("binarized_mnist", (28, 28, 1), None, 100)
    with pytest.raises(ValueError, match="at least 10"):
        sample_scorer.check_supported("mnist5k", (28, 28, 1), 10, 5)
    sample_scorer.check_supported("toy2d/grid25", (2,), None, 100)
    sample_scorer.check_supported("digits8x8", (8, 8, 1), 10, 100)


def test_samples_of_the_density_itself_cover_every_mode():
    samples = toy2d.sample("grid25", np.random.default_rng(0), 2500)
    scores = sample_scorer.SampleScorer("toy2d/grid25", "", np.zeros((1, 2)))(samples)
    assert scores["modes_covered"] == scores["num_modes"] == 25
    assert scores["sample_quality_num_samples"] == 2500
    collapsed = np.repeat(toy2d.mode_centers("grid25")[:3], 800, axis=0)
    assert (
        sample_scorer.SampleScorer("toy2d/grid25", "", np.zeros((1, 2)))(collapsed)["modes_covered"]
        == 3
    )


def test_the_test_split_scores_perfectly_against_itself_and_noise_does_not():
    reader = classifier.load_or_train("digits8x8", default_data_dir(), progress=False)
    raw = load_raw("digits8x8", default_data_dir(), "test")
    test_x = raw["x"].astype(np.float32) / 16.0
    scorer = sample_scorer.SampleScorer("digits8x8", default_data_dir(), test_x)
    perfect = scorer(test_x, labels=raw["label"])
    assert abs(perfect["frechet_distance"]) < 1e-3
    assert perfect["precision"] == perfect["recall"] == 1.0
    assert perfect["label_accuracy"] == pytest.approx(reader.info["test_accuracy"])
    assert perfect["feature_network_test_accuracy"] == reader.info["test_accuracy"]
    noise = np.random.default_rng(0).uniform(0, 1, test_x.shape).astype(np.float32)
    bad = scorer(noise)
    assert bad["frechet_distance"] > 10 * max(perfect["frechet_distance"], 1.0)
    assert bad["precision"] < 0.1
    assert "label_accuracy" not in bad
    assert perfect["nonfinite_samples"] == bad["nonfinite_samples"] == 0

    # A sampler that overflowed (Glow at 652 steps on mnist5k): one NaN sample makes the
    # statistics undefined; the run still ends with its other metrics and says how many.
    overflowed = test_x.copy()
    overflowed[3, 2] = np.nan
    with pytest.warns(UserWarning, match=r"1 of 355 samples are not finite"):
        scores = scorer(overflowed, labels=raw["label"])
    assert scores["nonfinite_samples"] == 1
    for name in ("frechet_distance", "precision", "recall", "label_accuracy"):
        assert np.isnan(scores[name])
