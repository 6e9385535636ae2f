"""The Hopfield experiment (configs/hopfield.py, experiments/hopfield.py): the capacity curve
against the load P / N and the retrieval of digit prototypes from corrupted probes, with its
plots and results.json. The network itself is `genjax.models.energy.hopfield`.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genjax.core.util import write_json_atomic
from genjax.data import pipeline
from genjax.evaluate import plots
from genjax.models.energy.hopfield import (
    CAPACITY_THRESHOLD,
    THEORETICAL_CAPACITY,
    capacity_curve,
    digit_prototypes,
    digit_retrieval,
    empirical_capacity,
    validate_config,
)

# Digit tiles are upscaled to at least this many pixels a side in the retrieval grid.
_MIN_TILE_PIXELS = 56


def _load_digit_prototypes(config) -> tuple[np.ndarray, tuple[int, ...]]:
    """The stored prototypes (K, N) of classes 0..K-1 and the image shape; checks the classes."""
    dataset = pipeline.load_dataset(config)
    spec, wanted = dataset.spec, config.model_config.num_digit_patterns
    if not spec.is_image or spec.num_classes is None or spec.num_classes < wanted:
        raise ValueError(
            f"config.model_config.num_digit_patterns={wanted}; allowed: at most the "
            f"{spec.num_classes or 0} classes of the images of config.dataset={config.dataset!r}."
        )
    prototypes = digit_prototypes(dataset, "train", config.eval_batch_size)  # (C, N)
    return prototypes[:wanted], spec.example_shape


def _draw_capacity_lines(axes, capacity: float) -> None:
    """Vertical lines at the theoretical alpha_c = 0.138 and (if finite) the measured one."""
    axes.axvline(
        THEORETICAL_CAPACITY,
        color="black",
        linestyle="--",
        label=f"theoretical capacity {THEORETICAL_CAPACITY} (Amit et al. 1985)",
    )
    if math.isfinite(capacity):
        label = f"empirical capacity {capacity:.3f} (rate {CAPACITY_THRESHOLD})"
        axes.axvline(capacity, color="tab:red", linestyle=":", label=label)


def _save_capacity_plot(curve: dict, capacity: float, path: str, title: str) -> None:
    """Retrieval rate and mean overlap against alpha, with alpha_c = 0.138 marked."""
    figure = Figure(figsize=(6.5, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    stderr = np.nan_to_num(curve["retrieval_rate_stderr"])
    axes.errorbar(
        curve["loads"],
        curve["retrieval_rate"],
        yerr=stderr,
        marker=".",
        capsize=2,
        label="retrieval rate (exact)",
    )
    axes.plot(curve["loads"], curve["mean_overlap"], marker=".", label="mean final overlap")
    _draw_capacity_lines(axes, capacity)
    axes.set_xlabel("load alpha = P / N (patterns per neuron)")
    axes.set_ylabel("fraction")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(title)
    figure.legend(loc="outside lower center", ncols=2, fontsize="small")
    plots.save_figure(figure, path)


def _save_retrieval_grid(digits: dict, prototypes: np.ndarray, image_shape, path: str) -> None:
    """Rows: stored prototypes, corrupted probes, retrieved states (-1 black, +1 white)."""
    rows = np.concatenate([prototypes, digits["probes"], digits["retrieved"]])  # (3K, N)
    images = rows.reshape((-1, *image_shape))  # (3K, H, W, C)
    scale = max(1, -(-_MIN_TILE_PIXELS // image_shape[0]))
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    plots.save_image_grid(images, path, num_rows=3, value_range=(-1.0, 1.0), padding=scale)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _capacity_table(curve: dict) -> list[dict]:
    """One JSON row per load (NaN standard errors become null)."""
    return [
        {
            "load": float(curve["loads"][index]),
            "patterns": int(curve["patterns"][index]),
            "retrieval_rate": float(curve["retrieval_rate"][index]),
            "retrieval_rate_stderr": _finite_or_none(curve["retrieval_rate_stderr"][index]),
            "mean_overlap": float(curve["mean_overlap"][index]),
            "mean_sweeps": float(curve["mean_sweeps"][index]),
        }
        for index in range(len(curve["loads"]))
    ]


def _digit_summary(digits: dict, config) -> dict:
    """The JSON record of the digit demo."""
    num_patterns = len(digits["exact"])
    return {
        "dataset": config.dataset,
        "classes": list(range(num_patterns)),
        "num_units": int(digits["probes"].shape[1]),
        "flip_fraction": config.model_config.flip_fraction,
        "final_overlap": digits["final_overlap"].tolist(),
        "exact": digits["exact"].tolist(),
        "exact_retrieval_rate": float(digits["exact"].mean()),
        "nearest_pattern": digits["nearest_pattern"].tolist(),
        "sweeps": digits["sweeps"].tolist(),
        "mean_pairwise_pattern_overlap": _mean_off_diagonal(digits["pattern_overlaps"]),
    }


def _mean_off_diagonal(matrix: np.ndarray) -> float | None:
    size = matrix.shape[0]
    if size < 2:
        return None
    return float((matrix.sum() - np.trace(matrix)) / (size * (size - 1)))


def run_experiment(config, workdir: str) -> dict:
    """The capacity curve and the digit retrieval demo of configs/hopfield.py.

    Validates the config and loads the digits before writing anything; then writes, each
    atomically, into `workdir`: config.json, capacity_curve.png (retrieval rate and mean
    overlap against alpha with the theoretical alpha_c = 0.138), retrieval.png (rows: stored
    digit prototypes, corrupted probes, retrieved states) and results.json.

    Args:
      config: a configs/hopfield.py ConfigDict.
      workdir: output directory, created if missing.

    Returns:
      The results.json payload: 'capacity_table' (one row per load), 'empirical_capacity'
      (`empirical_capacity` at threshold 0.5, None when below it at the smallest load),
      'theoretical_capacity', 'capacity_threshold', 'num_neurons' and 'digit_retrieval'.

    Raises:
      ValueError: naming the bad config field and its allowed values; nothing is written.
    """
    validate_config(config)
    prototypes, image_shape = _load_digit_prototypes(config)  # (K, N)
    model_config = config.model_config
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
    capacity_key, digit_key = jax.random.split(jax.random.key(config.seed))
    curve = capacity_curve(
        capacity_key,
        model_config.num_neurons,
        model_config.loads,
        model_config.num_trials,
        model_config.flip_fraction,
        model_config.max_sweeps,
        model_config.order,
        progress_bar=config.progress_bar,
    )
    capacity = empirical_capacity(curve["loads"], curve["retrieval_rate"])
    title = f"N = {model_config.num_neurons}, {model_config.flip_fraction:.0%} of units flipped"
    _save_capacity_plot(curve, capacity, os.path.join(workdir, "capacity_curve.png"), title)
    digits = digit_retrieval(
        digit_key,
        prototypes,
        model_config.flip_fraction,
        model_config.max_sweeps,
        model_config.order,
    )
    _save_retrieval_grid(digits, prototypes, image_shape, os.path.join(workdir, "retrieval.png"))
    results = {
        "num_neurons": model_config.num_neurons,
        "capacity_table": _capacity_table(curve),
        "empirical_capacity": _finite_or_none(capacity),
        "capacity_threshold": CAPACITY_THRESHOLD,
        "theoretical_capacity": THEORETICAL_CAPACITY,
        "digit_retrieval": _digit_summary(digits, config),
    }
    write_json_atomic(os.path.join(workdir, "results.json"), results)
    return results
