"""Linear probes: how linearly separable the classes are in a representation.

A multinomial logistic regression (scikit-learn's `LogisticRegression`, L-BFGS, L2 penalty C)
is fitted on the training split's features, standardised with the training split's mean and
standard deviation, and scored by accuracy on the test split. Run on a model's codes and on the
raw pixels with the same settings, it says whether the codes are better features than the data
itself (the feature-quality evaluation of autoencoders since Vincent et al. 2008, Bengio et al.
2007).
"""

from __future__ import annotations

import warnings

import numpy as np

# L2 penalty strength (scikit-learn's inverse regularisation C) and the solver's iteration cap.
DEFAULT_C = 1.0
MAX_ITERATIONS = 1000


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits shifted and scaled by the training split's per-feature mean and std
    (constant features are only shifted)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def _check(features: np.ndarray, labels: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64).reshape((len(features), -1))
    labels = np.asarray(labels)
    if labels.shape != (len(features),):
        raise ValueError(
            f"{split} labels have shape {labels.shape}; expected ({len(features)},), one per "
            f"{split} feature vector."
        )
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{split} features contain NaN or infinite values.")
    return features, labels


def linear_probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    c: float = DEFAULT_C,
    seed: int = 0,
) -> float:
    """Test accuracy of a logistic regression fitted on the training features.

    Args:
      train_features, test_features: (N, ...) features, flattened to (N, F).
      train_labels, test_labels: (N,) integer class labels.
      c: scikit-learn's inverse L2 penalty strength.
      seed: the solver's random state.

    Returns:
      The fraction of test examples classified correctly.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = _check(train_features, train_labels, "train")
    test_x, test_y = _check(test_features, test_labels, "test")
    train_x, test_x = _standardise(train_x, test_x)
    classifier = LogisticRegression(C=c, max_iter=MAX_ITERATIONS, random_state=seed)
    with warnings.catch_warnings():  # an unconverged fit is still a fair probe at the cap
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(train_x, train_y)
    return float(np.mean(classifier.predict(test_x) == test_y))
