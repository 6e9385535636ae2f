"""Tests for genjax/evaluate/plots.py: valid PNGs, known layouts, atomic writes."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from genjax.evaluate import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _open_png(path):
    """Checks that ``path`` is a complete PNG and returns it decoded."""
    with open(path, "rb") as png_file:
        assert png_file.read(8) == PNG_SIGNATURE
    with Image.open(path) as picture:
        picture.verify()
    picture = Image.open(path)
    picture.load()
    return picture


def _assert_only_file(directory, name):
    """The directory holds ``name`` and nothing else (no temporary files left behind)."""
    assert sorted(os.listdir(directory)) == [name]


def _constant_images(num_images, height, width, channels=None):
    """Image i is filled with i / (num_images - 1), so tiles identify their position."""
    values = np.linspace(0.0, 1.0, num_images)
    shape = (num_images, height, width) + (() if channels is None else (channels,))
    return np.broadcast_to(values.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


def _expected_byte(value):
    return int(np.round(value * 255.0))


def test_image_grid_layout_and_pixels_grayscale(tmp_path):
    images = _constant_images(16, 8, 8, channels=1)
    path = tmp_path / "grid.png"
    plots.save_image_grid(images, path)
    picture = _open_png(path)
    _assert_only_file(tmp_path, "grid.png")
    # 4 x 4 tiles of 8 x 8 separated by 1-pixel white lines: 4 * 8 + 3 = 35.
    assert picture.mode == "L"
    assert picture.size == (35, 35)
    pixels = np.asarray(picture)
    for index in range(16):
        row, col = divmod(index, 4)
        tile = pixels[row * 9 : row * 9 + 8, col * 9 : col * 9 + 8]
        assert np.all(tile == _expected_byte(index / 15)), index
    assert np.all(pixels[8, :] == 255) and np.all(pixels[:, 17] == 255)


def test_image_grid_without_padding_is_exact_tiling(tmp_path):
    images = np.random.default_rng(0).uniform(size=(6, 5, 7))  # (N, H, W), no channel axis
    path = tmp_path / "grid.png"
    plots.save_image_grid(images, path, num_rows=2, padding=0)
    pixels = np.asarray(_open_png(path))
    assert pixels.shape == (2 * 5, 3 * 7)
    expected = np.round(images * 255.0).astype(np.uint8)
    expected = expected.reshape(2, 3, 5, 7).transpose(0, 2, 1, 3).reshape(10, 21)
    np.testing.assert_array_equal(pixels, expected)


def test_image_grid_rgb_value_range_and_clipping(tmp_path):
    images = np.zeros((3, 4, 4, 3))
    images[0] = -1.0
    images[0, ..., 0] = 1.0  # pure red: top of [-1, 1] in R, bottom in G and B
    images[1] = -5.0  # clipped to -1 -> black
    images[2] = 0.0  # middle of [-1, 1] -> 128
    path = tmp_path / "rgb.png"
    plots.save_image_grid(images, path, value_range=(-1.0, 1.0))
    picture = _open_png(path)
    assert picture.mode == "RGB"
    # Default layout for 3 images: ceil(sqrt(3)) = 2 columns, 2 rows; the 4th cell is blank.
    assert picture.size == (2 * 4 + 1, 2 * 4 + 1)
    pixels = np.asarray(picture)
    np.testing.assert_array_equal(pixels[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(pixels[0, 5], [0, 0, 0])
    np.testing.assert_array_equal(pixels[5, 0], [128, 128, 128])
    assert np.all(pixels[5:, 5:] == 255)


@pytest.mark.parametrize(
    "num_images, num_rows, expected_rows, expected_cols",
    ((10, None, 3, 4), (16, None, 4, 4), (1, None, 1, 1), (10, 2, 2, 5), (7, 7, 7, 1)),
)
def test_image_grid_shapes(tmp_path, num_images, num_rows, expected_rows, expected_cols):
    path = tmp_path / "grid.png"
    plots.save_image_grid(_constant_images(num_images, 3, 2), path, num_rows=num_rows, padding=0)
    assert _open_png(path).size == (expected_cols * 2, expected_rows * 3)


def test_image_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        plots.save_image_grid(np.zeros((4, 8, 8, 2)), tmp_path / "bad.png")
    with pytest.raises(ValueError):
        plots.save_image_grid(np.zeros((4, 8, 8)), tmp_path / "bad.png", num_rows=5)
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    plots.save_image_grid(_constant_images(4, 8, 8), path)
    original_bytes = path.read_bytes()

    def write_half_then_fail(self, file, *args, **kwargs):
        file.write(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plots.save_image_grid(_constant_images(9, 8, 8), path)
    assert path.read_bytes() == original_bytes
    _assert_only_file(tmp_path, "grid.png")


def test_overwrite_and_create_parent_directory(tmp_path):
    path = tmp_path / "samples" / "step_10" / "grid.png"
    plots.save_image_grid(_constant_images(4, 8, 8), path)
    plots.save_image_grid(_constant_images(9, 8, 8), path)
    assert _open_png(path).size == (3 * 8 + 2, 3 * 8 + 2)
    _assert_only_file(path.parent, "grid.png")


def test_scatter_2d(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "scatter.png"
    points = rng.normal(size=(500, 2))
    figure = plots.save_scatter_2d(points, path)
    assert _open_png(path).mode in ("RGB", "RGBA")
    (collection,) = figure.axes[0].collections
    np.testing.assert_allclose(collection.get_offsets(), points)
    path_with_reference = tmp_path / "scatter_ref.png"
    samples, reference = rng.normal(size=(500, 2)), rng.normal(size=(300, 2))
    figure = plots.save_scatter_2d(samples, path_with_reference, reference, title="moons")
    _open_png(path_with_reference)
    axes = figure.axes[0]
    # The reference is drawn first (underneath), then the samples.
    np.testing.assert_allclose(axes.collections[0].get_offsets(), reference)
    np.testing.assert_allclose(axes.collections[1].get_offsets(), samples)
    assert axes.get_title() == "moons"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["reference", "samples"]
    assert sorted(os.listdir(tmp_path)) == ["scatter.png", "scatter_ref.png"]
    with pytest.raises(ValueError):
        plots.save_scatter_2d(rng.normal(size=(10, 3)), tmp_path / "bad.png")


def test_density_2d_grid_and_panels(tmp_path):
    calls = []

    def standard_normal_log_prob(points):
        calls.append(points)
        return stats.multivariate_normal(mean=np.zeros(2)).logpdf(points)

    def shifted_log_prob(points):
        return stats.multivariate_normal(mean=np.ones(2)).logpdf(points)

    single_path, double_path = tmp_path / "model.png", tmp_path / "compare.png"
    plots.save_density_2d(standard_normal_log_prob, single_path, bounds=(-3, 3), resolution=50)
    points = calls[0]
    assert points.shape == (50 * 50, 2)
    np.testing.assert_allclose(points.min(axis=0), [-3, -3])
    np.testing.assert_allclose(points.max(axis=0), [3, 3])
    plots.save_density_2d(
        standard_normal_log_prob,
        double_path,
        bounds=(-3, 3),
        resolution=50,
        reference_log_prob_fn=shifted_log_prob,
        title="model vs truth",
    )
    single, double = _open_png(single_path), _open_png(double_path)
    assert double.size == (2 * single.size[0], single.size[1])  # two panels side by side
    assert sorted(os.listdir(tmp_path)) == ["compare.png", "model.png"]


def test_density_2d_rejects_wrong_output_shape(tmp_path):
    with pytest.raises(ValueError):
        plots.save_density_2d(lambda points: points, tmp_path / "bad.png", resolution=10)
    assert os.listdir(tmp_path) == []


def _write_metrics(path, records, trailing_garbage=""):
    with open(path, "w") as metrics_file:
        for record in records:
            metrics_file.write(json.dumps(record) + "\n")
        metrics_file.write(trailing_garbage)


MIXED_RECORDS = (
    [{"step": step, "train/loss": 1.0 / step, "train/lr": 1e-3} for step in range(1, 101)]
    + [{"step": step, "eval/elbo": -90.0 + step / 50, "eval/note": "ok"} for step in (50, 100)]
    + [{"step": 100, "eval/bpd": 1.2, "eval/is_best": True}]
)


def test_loss_curves_with_mixed_key_sets(tmp_path, monkeypatch):
    metrics_path, plot_path = tmp_path / "metrics.jsonl", tmp_path / "plots" / "loss.png"
    _write_metrics(metrics_path, MIXED_RECORDS)
    series = plots._read_metric_series(metrics_path)
    # Strings and booleans are not metrics; keys keep their order of first appearance.
    assert list(series) == ["train/loss", "train/lr", "eval/elbo", "eval/bpd"]
    np.testing.assert_allclose(series["eval/elbo"], [[50, 100], [-89.0, -88.0]])

    plots.save_loss_curves(metrics_path, plot_path)
    default = _open_png(plot_path)
    # Four keys: rows of up to three subplots -> 2 rows of 3 panels.
    assert default.size == (3 * 400, 2 * 400)

    selected_path = tmp_path / "plots" / "selected.png"
    plots.save_loss_curves(metrics_path, selected_path, keys=["eval/elbo", "train/loss"])
    assert _open_png(selected_path).size == (2 * 400, 400)
    assert sorted(os.listdir(plot_path.parent)) == ["loss.png", "selected.png"]


def test_loss_curves_errors_and_partial_last_line(tmp_path):
    metrics_path = tmp_path / "metrics.jsonl"
    _write_metrics(metrics_path, MIXED_RECORDS, trailing_garbage='{"step": 101, "train/lo')
    with pytest.warns(UserWarning, match="not JSON"):
        plots.save_loss_curves(metrics_path, tmp_path / "loss.png", keys=["train/loss"])
    with pytest.raises(ValueError, match="eval/fid"), pytest.warns(UserWarning):
        plots.save_loss_curves(metrics_path, tmp_path / "missing.png", keys=["eval/fid"])
    assert not (tmp_path / "missing.png").exists()


def test_line_plot(tmp_path):
    path = tmp_path / "iwae_vs_k.png"
    ks = [1, 2, 4, 8, 16]
    series = {"iwae": [-90.0, -89.0, -88.5, -88.2, -88.1], "elbo": [-90.0] * 5}
    figure = plots.save_line_plot(
        ks, series, path, xlabel="K", ylabel="nats", title="bound vs K", logx=True
    )
    _open_png(path)
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.lines] == ["iwae", "elbo"]
    for line, values in zip(axes.lines, series.values(), strict=True):
        np.testing.assert_allclose(line.get_xdata(), ks)
        np.testing.assert_allclose(line.get_ydata(), values)
    assert axes.get_xscale() == "log" and axes.get_xlabel() == "K"
    _assert_only_file(tmp_path, "iwae_vs_k.png")
    with pytest.raises(ValueError):
        plots.save_line_plot(ks, {"short": [1.0, 2.0]}, tmp_path / "bad.png", "K", "nats")
    _assert_only_file(tmp_path, "iwae_vs_k.png")


def test_run_comparison_draws_each_runs_metric_against_step(tmp_path):
    paths = {}
    for name, offset in (("a", 0.0), ("b", 1.0)):
        paths[name] = tmp_path / f"{name}.jsonl"
        _write_metrics(paths[name], [{"step": s, "eval/nll": offset + 1 / s} for s in (3, 1, 2)])
    figure = plots.save_run_comparison(paths, "eval/nll", tmp_path / "compare.png")
    _open_png(tmp_path / "compare.png")
    lines = figure.axes[0].lines
    assert [line.get_label() for line in lines] == ["a", "b"]
    np.testing.assert_allclose(lines[1].get_xdata(), [1, 2, 3])  # sorted by step
    np.testing.assert_allclose(lines[1].get_ydata(), [2.0, 1.5, 1 + 1 / 3])
    with pytest.raises(ValueError, match=r"runs \['a'\]"):
        plots.save_run_comparison({"a": paths["a"]}, "eval/fid", tmp_path / "missing.png")


def test_band_panels_draw_mean_lines_over_their_bands(tmp_path):
    x = np.array([0.0, 10.0, 20.0])
    mean, low, high = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0]), np.array([2, 3, 5])
    panels = [
        {"xlabel": "updates", "ylabel": "modes", "title": "left",
         "series": {"gan": (x, mean, low, high), "gan (raw)": (x, mean + 1, low, high + 1)}},
        {"xlabel": "seconds", "ylabel": "modes", "series": {"gan": (2 * x, mean, low, high)}},
    ]  # fmt: skip
    path = tmp_path / "bands.png"
    figure = plots.save_band_panels(panels, path, title="coverage", ylim=(-1.0, 6.0))
    assert _open_png(path).size == (2 * 400, 400)
    left, right = figure.axes
    solid, dashed = left.lines
    np.testing.assert_allclose(solid.get_xydata(), np.stack([x, mean], axis=1))
    np.testing.assert_allclose(dashed.get_ydata(), mean + 1)
    assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
    assert solid.get_color() == dashed.get_color()  # a run and its raw generator share a colour
    # The band is the polygon between low and high: its vertices span exactly those values.
    vertices = left.collections[0].get_paths()[0].vertices
    assert vertices[:, 1].min() == low.min() and vertices[:, 1].max() == high.max()
    np.testing.assert_allclose(right.lines[0].get_xdata(), 2 * x)
    assert right.get_xlabel() == "seconds" and left.get_title() == "left"
    assert left.get_ylim() == right.get_ylim() == (-1.0, 6.0)
    with pytest.raises(ValueError, match="'short'"):
        plots.save_band_panels(
            [{"xlabel": "", "ylabel": "", "series": {"short": (x, mean[:2], low, high)}}],
            tmp_path / "bad.png",
        )
