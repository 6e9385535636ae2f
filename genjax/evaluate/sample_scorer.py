"""One scale for the samples of every family: mode coverage on toy mixtures, and Fréchet
distance, precision/recall in a genjax-trained classifier's features on labelled images.

    scorer = SampleScorer(config.dataset, data_dir, reference_x)   # once per run
    metrics = scorer(samples_unit, labels=None)                     # a flat, JSON-able dict

`reference_x` is the test split in the unit-interval data space (the grey digits, whatever
preprocessing the model trained on), so models of binarized, dequantized and scaled digits
are scored against one reference. Sample counts, the reference size and the feature network
(with its own test accuracy) are reported beside the metrics.
"""

from __future__ import annotations

import warnings

import numpy as np

from genjax.data import toy2d
from genjax.evaluate import classifier as classifier_lib
from genjax.evaluate import sample_quality

PRECISION_RECALL_K = 3  # Kynkäänniemi et al. 2019, sec. 3
MIN_SAMPLES = 10


def _mixture_name(dataset: str) -> str | None:
    name = dataset.removeprefix("toy2d/")
    return name if dataset.startswith("toy2d/") and name in toy2d.MIXTURE_NAMES else None


def check_supported(dataset: str, example_shape: tuple, num_classes: int | None, num: int):
    """Raises ValueError unless `config.sample_quality_samples=num` can be scored on `dataset`:
    a toy2d Gaussian mixture, or images with labels (for the feature classifier)."""
    field = f"config.sample_quality_samples={num}"
    if num < MIN_SAMPLES:
        raise ValueError(f"{field} must be 0 (off) or at least {MIN_SAMPLES}.")
    if _mixture_name(dataset) is not None:
        return
    if len(example_shape) != 3 or num_classes is None:
        mixtures = tuple("toy2d/" + name for name in toy2d.MIXTURE_NAMES)
        raise ValueError(
            f"{field}: config.dataset={dataset!r} has no sample-quality reference; allowed: "
            f"the toy2d mixtures {mixtures} or image datasets with labels (e.g. 'mnist5k'). "
            "Set it to 0."
        )


class SampleScorer:
    """Scores unit-interval samples of one dataset (see the module docstring)."""

    def __init__(self, dataset: str, data_dir: str, reference_x: np.ndarray, progress=False):
        self.dataset = dataset
        self.data_dir = data_dir
        self.progress = progress
        self.mixture = _mixture_name(dataset)
        self.reference_x = np.asarray(reference_x, np.float32)
        self._classifier = None
        self._reference_features = None

    def _features(self, x: np.ndarray) -> np.ndarray:
        if self._classifier is None:  # trained on first use, then cached on disk
            self._classifier = classifier_lib.load_or_train(
                self.dataset, self.data_dir, progress=self.progress
            )
            self._reference_features = self._classifier.features(self.reference_x)
        return self._classifier.features(x)

    def __call__(self, samples: np.ndarray, labels: np.ndarray | None = None) -> dict:
        """Metrics of `samples` (N, *example_shape) in the unit-interval data space; `labels`
        (N,) the classes a conditional model was asked for (adds `label_accuracy`)."""
        samples = np.asarray(samples, np.float32)
        nonfinite = int(np.sum(~np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)))
        if self.mixture is not None:
            return {**self._mode_coverage(samples), "nonfinite_samples": nonfinite}
        # Samples are clipped to the data's [0, 1] range (a Gaussian decoder's may stray).
        features = self._features(np.clip(np.nan_to_num(samples), 0.0, 1.0))
        reference = self._reference_features
        mean, cov = sample_quality.gaussian_statistics(features)
        ref_mean, ref_cov = sample_quality.gaussian_statistics(reference)
        pr = sample_quality.precision_recall(reference, features, k=PRECISION_RECALL_K)
        info = self._classifier.info
        metrics = {
            "frechet_distance": sample_quality.frechet_distance(mean, cov, ref_mean, ref_cov),
            "precision": pr["precision"],
            "recall": pr["recall"],
            "precision_recall_k": PRECISION_RECALL_K,
            "sample_quality_num_samples": len(samples),
            "sample_quality_reference": f"{self.dataset} test split ({len(reference)} examples)",
            "feature_network": f"genjax DigitClassifier v{info['version']} "
            f"({info['feature_size']} features, trained on the train split)",
            "feature_network_test_accuracy": info["test_accuracy"],
        }
        if labels is not None:
            predicted = self._classifier.predict(np.clip(np.nan_to_num(samples), 0.0, 1.0))
            metrics["label_accuracy"] = float(np.mean(predicted == np.asarray(labels)))
        metrics["nonfinite_samples"] = nonfinite
        if nonfinite:  # a sampler that overflowed: its samples' statistics mean nothing
            warnings.warn(
                f"{nonfinite} of {len(samples)} samples are not finite (NaN or infinite "
                "pixels): their Fréchet distance, precision, recall and label accuracy are "
                "undefined and reported as NaN",
                stacklevel=2,
            )
            for name in ("frechet_distance", "precision", "recall", "label_accuracy"):
                if name in metrics:
                    metrics[name] = float("nan")
        return metrics

    def _mode_coverage(self, samples: np.ndarray) -> dict:
        coverage = sample_quality.mode_coverage(
            samples.reshape(len(samples), -1),
            toy2d.mode_centers(self.mixture),
            toy2d.mode_std(self.mixture),
        )
        coverage["sample_quality_num_samples"] = coverage.pop("num_samples")
        coverage["mode_std"] = coverage.pop("std")
        return coverage
