"""PNG plots for samples, 2-D densities and training curves.

Figures are drawn on matplotlib's Agg canvas through ``matplotlib.figure.Figure`` directly
(no pyplot, so no windows, no global figure state and nothing to close). Every file is written
atomically: to a temporary file in the target directory, then ``os.replace``d onto ``path``,
so a reader (or a crash) never sees a half-written PNG.
"""

import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from genjax.core import util

_DPI = 100
_PANEL_INCHES = 4.0


def new_figure(num_rows: int = 1, num_cols: int = 1) -> Figure:
    """A constrained-layout Agg figure sized ``_PANEL_INCHES`` per panel."""
    figure = Figure(
        figsize=(_PANEL_INCHES * num_cols, _PANEL_INCHES * num_rows), dpi=_DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, tight: bool = False) -> None:
    """Writes ``figure`` to ``path`` as a PNG, atomically; ``tight`` crops (or grows) the
    canvas to what is drawn, labels outside the axes included."""
    bbox = "tight" if tight else None
    util.write_atomically(
        path, lambda file: figure.savefig(file, format="png", dpi=_DPI, bbox_inches=bbox)
    )


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) with C in {1, 3} -> float64 (N, H, W, C)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"Expected images (N, H, W) or (N, H, W, 1|3), got {images.shape}.")
    return images


def _grid_shape(num_images: int, num_rows: int | None) -> tuple[int, int]:
    """(rows, cols) of the tile grid: ceil(sqrt(N)) columns by default, else fill num_rows."""
    if num_rows is None:
        num_cols = math.ceil(math.sqrt(num_images))
        return math.ceil(num_images / num_cols), num_cols
    if not 1 <= num_rows <= num_images:
        raise ValueError(f"num_rows={num_rows} must lie in [1, {num_images}].")
    return num_rows, math.ceil(num_images / num_rows)


def _to_unit_range(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Clips to ``value_range`` (NaN -> its low end) and maps it linearly onto [0, 1]."""
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range={value_range} must be increasing.")
    images = np.clip(np.nan_to_num(images, nan=low), low, high)
    return (images - low) / (high - low)


def _tile(
    images: np.ndarray, num_rows: int, num_cols: int, padding: int, pad_value: float
) -> np.ndarray:
    """(N, H, W, C) -> (rows H + (rows - 1) p, cols W + (cols - 1) p, C), row-major order.

    Tiles are separated by ``padding`` pixels of ``pad_value``; unused cells are filled with
    ``pad_value`` as well.
    """
    num_images, height, width, channels = images.shape
    grid_height = num_rows * height + (num_rows - 1) * padding
    grid_width = num_cols * width + (num_cols - 1) * padding
    grid = np.full((grid_height, grid_width, channels), pad_value, dtype=images.dtype)
    for index in range(num_images):
        row, col = divmod(index, num_cols)
        top, left = row * (height + padding), col * (width + padding)
        grid[top : top + height, left : left + width] = images[index]
    return grid


def save_image_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    num_rows: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    padding: int = 1,
) -> None:
    """Saves a batch of images as one tiled PNG, one image pixel per PNG pixel, no axes.

    Images fill the grid row by row; with ``num_rows=None`` the grid has ceil(sqrt(N)) columns
    and as many rows as needed (16 images -> 4 x 4, 10 -> 3 rows of 4). Values are clipped to
    ``value_range`` and mapped linearly to 0..255; tiles are separated by ``padding`` white
    pixels (the top of the range), so 16 images of 8 x 8 with ``padding=1`` give a 35 x 35
    PNG. Single-channel images are saved as grey-scale ("L"), three-channel ones as "RGB".

    Args:
      images: (N, H, W) or (N, H, W, C) with C in {1, 3}; NumPy or JAX array.
      path: destination PNG file; its directory is created if missing.
      num_rows: rows of the grid; the columns follow as ceil(N / num_rows).
      value_range: (low, high) of the pixel values, e.g. (-1, 1) for models on [-1, 1].
      padding: pixels between neighbouring tiles.
    """
    images = _to_unit_range(_as_nhwc(images), value_range)
    rows, cols = _grid_shape(images.shape[0], num_rows)
    grid = _tile(images, rows, cols, padding, pad_value=1.0)  # (rows H + .., cols W + .., C)
    pixels = np.round(grid * 255.0).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    picture = Image.fromarray(pixels)
    util.write_atomically(path, lambda file: picture.save(file, format="PNG"))


def filter_tiles(filters: np.ndarray) -> np.ndarray:
    """Each filter scaled on its own into [0, 1] with zero at 0.5: 0.5 + 0.5 w / max|w|.

    Args:
      filters: (N, H, W) or (N, H, W, C), e.g. each hidden unit's incoming weights reshaped
        to the image (an all-zero filter stays at 0.5).

    Returns:
      float64 array of the same shape.
    """
    filters = np.asarray(filters, np.float64)
    scale = np.max(np.abs(filters), axis=tuple(range(1, filters.ndim)), keepdims=True)
    return 0.5 + 0.5 * filters / np.where(scale > 0, scale, 1.0)


def save_filter_grid(filters: np.ndarray, path: str | os.PathLike) -> None:
    """Saves first-layer filters as one tiled grey-scale PNG (`filter_tiles`, then
    `save_image_grid` with one pixel per weight): mid-grey is a zero weight, white the filter's
    largest positive weight, black its most negative one.

    Args:
      filters: (N, H, W) or (N, H, W, 1), one tile per hidden unit.
      path: destination PNG file.
    """
    save_image_grid(filter_tiles(filters), path)


def save_image_rows(
    rows: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike, title: str = ""
) -> None:
    """Saves labelled rows of images in [0, 1] as one PNG: each row is a tiled strip with its
    label on the left (latent arithmetic: exemplars, averages, results).

    Args:
      rows: (label, images (N, H, W[, C])) per row; rows may hold different numbers of images.
      path: destination PNG file; written atomically.
      title: the figure's title.
    """
    if not rows:
        raise ValueError("save_image_rows needs at least one row.")
    strips = [
        (label, _tile(_to_unit_range(_as_nhwc(images), (0.0, 1.0)), 1, len(images), 1, 1.0))
        for label, images in rows
    ]
    widest = max(strip.shape[1] for _, strip in strips)
    figure = Figure(
        figsize=(2.0 + widest / 30.0, 0.9 * len(strips) + 0.5), dpi=_DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(strips), 1, squeeze=False)[:, 0]
    for ax, (label, strip) in zip(axes, strips, strict=True):
        pixels = strip[..., 0] if strip.shape[-1] == 1 else strip
        ax.imshow(pixels, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        ax.set_xlim(-0.5, widest - 0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        figure.suptitle(title)
    save_figure(figure, path, tight=True)  # the row labels sit left of the axes


def _check_points_2d(points: np.ndarray, name: str) -> np.ndarray:
    """Returns ``points`` as a float (N, 2) array or raises."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"Expected {name} of shape (N, 2), got {points.shape}.")
    return points


def save_scatter_2d(
    points: np.ndarray,
    path: str | os.PathLike,
    reference: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """Scatter plot of 2-D samples, optionally over reference points in another colour.

    Meant for toy 2-D data (moons, rings, grids of Gaussians): model samples in blue, the
    reference (e.g. data) in orange underneath, equal axis scales.

    Args:
      points: samples, shape (N, 2).
      path: destination PNG file.
      reference: optional reference points, shape (M, 2).
      title: optional axes title.

    Returns:
      The figure (saved; its axes' collections hold the plotted points).
    """
    points = _check_points_2d(points, "points")
    figure = new_figure()
    axes = figure.add_subplot()
    if reference is not None:
        reference = _check_points_2d(reference, "reference")
        axes.scatter(*reference.T, s=3, alpha=0.5, color="tab:orange", label="reference")
    axes.scatter(*points.T, s=3, alpha=0.5, color="tab:blue", label="samples")
    if reference is not None:
        axes.legend(loc="upper right", markerscale=3)
    axes.set_aspect("equal", adjustable="datalim")
    if title is not None:
        axes.set_title(title)
    save_figure(figure, path)
    return figure


def _density_on_grid(
    log_prob_fn: Callable[[np.ndarray], np.ndarray],
    bounds: tuple[float, float],
    resolution: int,
) -> np.ndarray:
    """exp(log_prob_fn) on a ``resolution`` x ``resolution`` grid over bounds^2, (R, R).

    Row i holds y = linspace(low, high)[i], column j holds x = linspace(low, high)[j], so it
    can be shown with ``imshow(origin="lower")``.
    """
    low, high = bounds
    axis = np.linspace(low, high, resolution)
    grid_x, grid_y = np.meshgrid(axis, axis)  # (R, R) each
    points = np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1).astype(np.float32)  # (R*R, 2)
    log_probs = np.asarray(log_prob_fn(points), dtype=np.float64)
    if log_probs.shape != (resolution * resolution,):
        raise ValueError(
            f"log_prob_fn returned shape {log_probs.shape} for {points.shape[0]} points."
        )
    return np.exp(log_probs).reshape(resolution, resolution)


def save_density_2d(
    log_prob_fn: Callable[[np.ndarray], np.ndarray],
    path: str | os.PathLike,
    bounds: tuple[float, float] = (-4.0, 4.0),
    resolution: int = 200,
    reference_log_prob_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    title: str | None = None,
) -> None:
    """Heat map of a 2-D density exp(log_prob_fn) on the square bounds x bounds.

    With ``reference_log_prob_fn`` the figure has two panels side by side, "model" (left) and
    "reference" (right), each with its own colour scale.

    Args:
      log_prob_fn: maps float32 points (N, 2) to log densities (N,); called once with
        N = resolution^2.
      path: destination PNG file.
      bounds: (low, high) of both coordinates.
      resolution: grid points per axis.
      reference_log_prob_fn: optional true log density, same signature.
      title: optional figure title.
    """
    panels = [("model", log_prob_fn)]
    if reference_log_prob_fn is not None:
        panels.append(("reference", reference_log_prob_fn))
    figure = new_figure(num_cols=len(panels))
    low, high = bounds
    for panel_index, (name, panel_log_prob_fn) in enumerate(panels, start=1):
        density = _density_on_grid(panel_log_prob_fn, bounds, resolution)  # (R, R)
        axes = figure.add_subplot(1, len(panels), panel_index)
        axes.imshow(density, origin="lower", extent=(low, high, low, high), cmap="viridis")
        axes.set_title(name)
    if title is not None:
        figure.suptitle(title)
    save_figure(figure, path)


def _read_metric_records(metrics_jsonl_path: str | os.PathLike) -> Iterator[dict]:
    """Yields the JSON objects of a metrics.jsonl, each checked to have a "step".

    Blank lines are skipped; undecodable lines (e.g. a last line still being written) are
    skipped with a warning.
    """
    with open(metrics_jsonl_path) as metrics_file:
        for line_number, line in enumerate(metrics_file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                message = f"{metrics_jsonl_path}:{line_number}: not JSON, skipped."
                warnings.warn(message, stacklevel=4)  # points at save_loss_curves' caller
                continue
            if "step" not in record:
                raise ValueError(f"{metrics_jsonl_path}:{line_number}: no 'step' key.")
            yield record


def _read_metric_series(metrics_jsonl_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a metrics.jsonl into {key: array [steps, values]} of shape (2, n) per key.

    Lines may carry different keys (train lines, eval lines); every numeric non-"step" key
    becomes a series, sorted by step, keys in order of first appearance.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    for record in _read_metric_records(metrics_jsonl_path):
        for key, value in record.items():
            if key != "step" and util.is_number(value):
                series.setdefault(key, []).append((record["step"], value))
    return {
        key: np.array(sorted(pairs, key=lambda pair: pair[0])).T for key, pairs in series.items()
    }


def save_loss_curves(
    metrics_jsonl_path: str | os.PathLike,
    path: str | os.PathLike,
    keys: Sequence[str] | None = None,
) -> None:
    """Plots metrics from a metrics.jsonl against "step", one subplot per key.

    Each line of the file is a JSON object with a "step" and numeric metrics; lines may have
    different key sets (e.g. "train/loss" every step, "eval/..." now and then). Subplots are
    laid out in rows of up to three; sparse series (<= 50 points) get point markers.

    Args:
      metrics_jsonl_path: the metrics.jsonl file.
      path: destination PNG file.
      keys: metrics to plot, in order; default every numeric key other than "step", in order
        of first appearance.

    Raises:
      ValueError: if a requested key never occurs, or there is nothing to plot.
    """
    series = _read_metric_series(metrics_jsonl_path)
    keys = list(series) if keys is None else list(keys)
    missing = [key for key in keys if key not in series]
    if missing:
        raise ValueError(f"Keys {missing} not in {metrics_jsonl_path}; found {sorted(series)}.")
    if not keys:
        raise ValueError(f"No numeric metrics in {metrics_jsonl_path}.")
    num_cols = min(3, len(keys))
    num_rows = math.ceil(len(keys) / num_cols)
    figure = new_figure(num_rows, num_cols)
    for panel_index, key in enumerate(keys, start=1):
        steps, values = series[key]
        axes = figure.add_subplot(num_rows, num_cols, panel_index)
        axes.plot(steps, values, marker="." if len(steps) <= 50 else None)
        axes.set_title(key)
        axes.set_xlabel("step")
    save_figure(figure, path)


def save_line_plot(
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
) -> Figure:
    """Generic line plot of several named series against shared x values, with a legend.

    Args:
      xs: x values, length n.
      series: {label: y values of length n}.
      path: destination PNG file.
      xlabel: x-axis label.
      ylabel: y-axis label.
      title: optional axes title.
      logx: use a logarithmic x axis (e.g. for the number of importance samples).

    Returns:
      The figure (saved; one line per series, in order).
    """
    xs = np.asarray(xs, dtype=np.float64)
    figure = new_figure()
    axes = figure.add_subplot()
    for label, ys in series.items():
        ys = np.asarray(ys, dtype=np.float64)
        if ys.shape != xs.shape:
            raise ValueError(f"Series {label!r} has shape {ys.shape}, xs has {xs.shape}.")
        axes.plot(xs, ys, marker=".", label=label)
    if logx:
        axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title is not None:
        axes.set_title(title)
    if series:
        axes.legend()
    save_figure(figure, path)
    return figure


def save_run_comparison(
    metrics_jsonl_paths: Mapping[str, str | os.PathLike],
    metric: str,
    path: str | os.PathLike,
    title: str | None = None,
) -> Figure:
    """One metric against step for several runs, one line per run (labels are the keys).

    Args:
      metrics_jsonl_paths: {run label: that run's metrics.jsonl}.
      metric: the key to plot, e.g. "eval/nll".
      path: destination PNG file.

    Returns:
      The figure (saved; one line per run, in order).

    Raises:
      ValueError: naming the runs whose logs never record `metric`.
    """
    series = {
        label: _read_metric_series(metrics_path).get(metric)
        for label, metrics_path in metrics_jsonl_paths.items()
    }
    missing = [label for label, values in series.items() if values is None]
    if missing:
        raise ValueError(f"metric {metric!r} never appears in the logs of runs {missing}")
    figure = new_figure()
    axes = figure.add_subplot()
    for label, (steps, values) in series.items():
        axes.plot(steps, values, marker="." if len(steps) <= 50 else None, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(title or metric)
    axes.legend()
    save_figure(figure, path)
    return figure


def save_band_panels(
    panels: Sequence[Mapping],
    path: str | os.PathLike,
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Side-by-side panels of mean curves with shaded bands (e.g. a mean over seeds +- one
    standard deviation).

    Args:
      panels: one mapping per panel with "xlabel", "ylabel", optional "title", and "series":
        {label: (x, mean, low, high)}, four arrays of one length n; drawn as a line through
        (x, mean) over a band filled between low and high. A label ending in " (raw)" is
        dashed (same colour as the label without it, when both are present).
      path: destination PNG file.
      title: optional figure title.
      ylim: optional (bottom, top) of every panel's y axis.

    Returns:
      The figure (saved): panel i is `figure.axes[i]`, its lines in series order, and its
      `collections` the bands in the same order.

    Raises:
      ValueError: a series whose four arrays differ in length.
    """
    figure = new_figure(num_cols=len(panels))
    for index, panel in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        colours: dict[str, str] = {}
        for label, arrays in panel["series"].items():
            x, mean, low, high = (np.asarray(a, dtype=np.float64) for a in arrays)
            if not x.shape == mean.shape == low.shape == high.shape or x.ndim != 1:
                raise ValueError(
                    f"series {label!r}: x, mean, low and high must be 1-D of one length; got "
                    f"{x.shape}, {mean.shape}, {low.shape}, {high.shape}"
                )
            base = label.removesuffix(" (raw)")
            style = {"linestyle": "--" if label != base else "-", "marker": "."}
            if base in colours:
                style["color"] = colours[base]
            (line,) = axes.plot(x, mean, label=label, **style)
            colours.setdefault(base, line.get_color())
            axes.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        axes.set_xlabel(panel["xlabel"])
        axes.set_ylabel(panel["ylabel"])
        if panel.get("title"):
            axes.set_title(panel["title"])
        if ylim is not None:
            axes.set_ylim(*ylim)
        axes.legend(fontsize="small")
    if title is not None:
        figure.suptitle(title)
    save_figure(figure, path)
    return figure
