"""Gradient signal-to-noise diagnostics for stochastic gradient estimators.

Rainforth et al. 2018 ("Tighter Variational Bounds are Not Necessarily Better", section 3, the
equation that defines the SNR) measure the quality of a Monte Carlo gradient estimator
Delta(theta) by its per-parameter signal-to-noise ratio

    SNR(theta) = | E[Delta(theta)] / sigma[Delta(theta)] |,

the expectation and standard deviation taken over the estimator's randomness at FIXED
parameters theta. They show that the IWAE inference-network gradient has SNR O(1 / sqrt(K)) in
the number of importance samples K, and Tucker et al. 2019 ("Doubly Reparameterized Gradient
Estimators for Monte Carlo Objectives") use the same diagnostic for their DReG estimators.

Here the expectation and variance are estimated from N independent draws of any gradient
function ``grad_fn(params, key)``, drawn in memory-bounded chunks and merged stably, then
summarised per named group of parameters (e.g. encoder vs decoder).
"""

import math
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax.evaluate.plots import new_figure, save_figure

GradFn = Callable[[Any, jax.Array], Any]
PathPredicate = Callable[[str], bool]

_NUM_PATHS_IN_ERRORS = 10


def _check_keys(keys: jax.Array) -> int:
    """Asserts ``keys`` is a (N,) array of typed PRNG keys and returns N."""
    if not (hasattr(keys, "dtype") and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)):
        raise ValueError(
            "keys must be typed PRNG keys (jax.random.key / jax.random.split), got dtype "
            f"{getattr(keys, 'dtype', type(keys))}; wrap raw uint32 keys with "
            "jax.random.wrap_key_data."
        )
    if keys.ndim != 1:
        raise ValueError(f"keys must have shape (N,), got {keys.shape}.")
    return keys.shape[0]


def _check_num_draws(num_draws: int) -> None:
    """An unbiased variance needs at least two draws."""
    if num_draws < 2:
        raise ValueError(f"num_draws={num_draws}: need N >= 2 draws for an unbiased variance.")


def _resolve_chunk_size(num_draws: int, chunk_size: int | None) -> int:
    """``chunk_size`` (default: all N draws at once), checked to be positive and to divide N."""
    if chunk_size is None:
        return num_draws
    if chunk_size < 1 or num_draws % chunk_size:
        raise ValueError(
            f"chunk_size={chunk_size} must be a positive divisor of the number of draws "
            f"N={num_draws}."
        )
    return chunk_size


def _accumulation_dtype(leaf: jax.Array) -> jnp.dtype:
    """At least float32: half-precision gradients are accumulated in float32."""
    return jnp.promote_types(leaf.dtype, jnp.float32)


@partial(jax.jit, static_argnames=("grad_fn", "chunk_size"))
def _draws_statistics(grad_fn: GradFn, chunk_size: int, params: Any, keys: jax.Array):
    """Compiled core of `gradient_draws_statistics`: (mean, sum of squared deviations M2)."""
    num_draws = keys.shape[0]
    num_chunks = num_draws // chunk_size

    # Shift: every draw is taken relative to the first one, so the accumulated quantities are
    # deviations of the size of the gradient noise, not of the gradient's common offset (the
    # subtraction of two nearby floats is exact).
    shift = grad_fn(params, keys[0])
    chex.assert_trees_all_equal_shapes(params, shift)
    shift = jax.tree.map(lambda leaf: leaf.astype(_accumulation_dtype(leaf)), shift)

    def chunk_statistics(chunk_keys):
        draws = jax.vmap(grad_fn, in_axes=(None, 0))(params, chunk_keys)  # leaves (C, ...)
        deviations = jax.tree.map(lambda draw, s: draw.astype(s.dtype) - s, draws, shift)
        chunk_mean = jax.tree.map(lambda d: jnp.mean(d, axis=0), deviations)
        chunk_m2 = jax.tree.map(
            lambda d, m: jnp.sum(jnp.square(d - m), axis=0), deviations, chunk_mean
        )
        return chunk_mean, chunk_m2

    def merge_chunk(carry, chunk_index_and_keys):
        # Chan, Golub & LeVeque (1979) pairwise update of (mean, M2): n_a = i C draws so far,
        # n_b = C new ones, so n_b / n = 1 / (i + 1) and n_a n_b / n = C i / (i + 1).
        running_mean, running_m2 = carry
        chunk_index, chunk_keys = chunk_index_and_keys
        chunk_mean, chunk_m2 = chunk_statistics(chunk_keys)

        def merged_mean_leaf(mean_a, mean_b):
            new_fraction = 1.0 / (chunk_index.astype(mean_a.dtype) + 1.0)
            return mean_a + (mean_b - mean_a) * new_fraction

        def merged_m2_leaf(mean_a, m2_a, mean_b, m2_b):
            index = chunk_index.astype(mean_a.dtype)
            cross_weight = chunk_size * index / (index + 1.0)
            return m2_a + m2_b + jnp.square(mean_b - mean_a) * cross_weight

        merged_mean = jax.tree.map(merged_mean_leaf, running_mean, chunk_mean)
        merged_m2 = jax.tree.map(merged_m2_leaf, running_mean, running_m2, chunk_mean, chunk_m2)
        return (merged_mean, merged_m2), None

    zeros = jax.tree.map(jnp.zeros_like, shift)
    key_chunks = keys.reshape(num_chunks, chunk_size)  # (chunks, C)
    (mean_deviation, m2), _ = jax.lax.scan(
        merge_chunk, (zeros, zeros), (jnp.arange(num_chunks), key_chunks)
    )
    mean = jax.tree.map(jnp.add, shift, mean_deviation)
    return mean, m2


def gradient_draws_statistics(
    grad_fn: GradFn, params: Any, keys: jax.Array, chunk_size: int | None = None
) -> tuple[Any, Any]:
    """Per-element mean and unbiased variance of a stochastic gradient at fixed parameters.

    For N independent draws g_n = grad_fn(params, keys[n]) computes, element by element,

        mean = (1/N) sum_n g_n,    var = 1/(N - 1) sum_n (g_n - mean)^2,

    the plug-in estimates of E[Delta] and sigma[Delta]^2 in the SNR |E[Delta]| / sigma[Delta]
    of Rainforth et al. 2018 (section 3). Draws are evaluated ``chunk_size`` at a time with
    ``jax.vmap`` inside a ``jax.lax.scan``, so memory holds one chunk of gradients, never N.
    Accumulation is sound in float32 even when the gradient's mean dwarfs its spread: every
    draw is taken relative to the first draw g_0 (one extra evaluation of ``grad_fn``), each
    chunk's mean and sum of squared deviations are computed in two passes, and chunks are
    merged with the pairwise update of Chan, Golub & LeVeque (1979). Half-precision gradients
    are accumulated in float32.

    Everything is one ``jax.jit`` program, with ``grad_fn`` and ``chunk_size`` static: calling
    again with the same ``grad_fn`` object and the same shapes does not recompile (a freshly
    created lambda does).

    Args:
      grad_fn: ``(params, key) -> gradients``, a pytree with the structure and leaf shapes of
        ``params``; it must be traceable (vmap-able) and depend on ``key`` for its randomness.
      params: the fixed parameters, any pytree of arrays.
      keys: (N,) typed PRNG keys (``jax.random.split(jax.random.key(seed), N)``), N >= 2.
      chunk_size: draws per vmapped chunk; a positive divisor of N. None: all N at once.

    Returns:
      (mean, var): two pytrees with the structure and leaf shapes of ``params`` (dtype at
      least float32); ``var`` uses ddof = 1.

    Raises:
      ValueError: keys not (N,) typed keys, N < 2, or ``chunk_size`` not dividing N.
    """
    num_draws = _check_keys(keys)
    _check_num_draws(num_draws)
    chunk_size = _resolve_chunk_size(num_draws, chunk_size)
    mean, m2 = _draws_statistics(grad_fn, chunk_size, params, keys)
    var = jax.tree.map(lambda leaf: leaf / (num_draws - 1), m2)
    return mean, var


def _key_entry_name(entry: Any) -> str:
    """One pytree path entry as a plain name: dict key, attribute name or sequence index."""
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _path_to_string(path: Sequence[Any]) -> str:
    """A pytree key path as "/"-joined names, e.g. "params/data_encoder/Dense_0/kernel"."""
    return "/".join(_key_entry_name(entry) for entry in path)


def _flatten_by_path(tree: Any) -> dict[str, np.ndarray]:
    """{"a/b/c": leaf as float64 NumPy array} for every leaf of ``tree``, in flattening order."""
    leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        _path_to_string(path): np.asarray(jax.device_get(leaf), dtype=np.float64)
        for path, leaf in leaves_with_paths
    }


def _summarise_elements(mean: np.ndarray, var: np.ndarray, num_draws: int) -> dict[str, float]:
    """The per-group numbers of `group_summary` for flat (M,) arrays of means and variances."""
    std = np.sqrt(var)
    informative = ~((std == 0.0) & (mean == 0.0))  # skip elements that never receive gradient
    with np.errstate(divide="ignore", invalid="ignore"):
        element_snr = np.abs(mean[informative]) / std[informative]  # std 0, mean != 0 -> inf
        snr_of_norm = np.linalg.norm(mean) / np.sqrt(np.sum(var))
    has_informative = element_snr.size > 0
    return {
        "snr": float(np.mean(element_snr)) if has_informative else math.nan,
        "snr_median": float(np.median(element_snr)) if has_informative else math.nan,
        "mean_abs": float(np.mean(np.abs(mean))),
        "std": float(np.mean(std)),
        "snr_of_norm": float(snr_of_norm),
        "num_elements": int(mean.size),
        "num_draws": int(num_draws),
    }


def group_summary(
    mean: Any,
    var: Any,
    num_draws: int,
    groups: Mapping[str, PathPredicate] | None = None,
) -> dict[str, dict[str, float]]:
    """Summarises per-element gradient means and variances by named groups of parameters.

    Each leaf is named by its pytree path, the "/"-joined dict keys, attribute names and
    sequence indices (``jax.tree_util.tree_flatten_with_path``), e.g.
    "params/data_encoder/Dense_0/kernel". A group collects the elements of every leaf whose
    path satisfies its predicate. With the per-element SNR |E g| / sigma[g] of Rainforth et al.
    2018 (section 3) and std = sqrt(var), each group reports

      - "snr": the mean over the group's elements of |mean| / std. Elements with std == 0 and
        mean == 0 (parameters that never receive gradient) are skipped; an element with
        std == 0 and mean != 0 (a deterministic gradient) counts as inf. NaN if all are skipped.
      - "snr_median": the median of the same per-element SNRs (robust to a few huge ones).
      - "mean_abs": the mean over all elements of |mean|.
      - "std": the mean over all elements of std.
      - "snr_of_norm": ||mean||_2 / sqrt(sum of var), the SNR of the group's gradient as one
        vector (signal norm over the root of the total variance).
      - "num_elements", "num_draws": counts, as Python ints.

    All values are plain Python numbers, so the result is JSON-serialisable.

    Args:
      mean: pytree of per-element gradient means (from `gradient_draws_statistics`).
      var: pytree of per-element variances, the same structure and shapes as ``mean``.
      num_draws: N, the number of draws behind ``mean`` and ``var`` (N >= 2).
      groups: {group name: predicate(path) -> bool}, e.g. from `prefix_groups`. None:
        {"all": every leaf}.

    Returns:
      {group name: {statistic name: value}}, in the order of ``groups``.

    Raises:
      ValueError: N < 2, or a group matching no leaf (the message lists available paths).
    """
    _check_num_draws(num_draws)
    chex.assert_trees_all_equal_shapes(mean, var)
    mean_by_path, var_by_path = _flatten_by_path(mean), _flatten_by_path(var)
    if groups is None:
        groups = {"all": lambda path: True}
    summary = {}
    for group_name, predicate in groups.items():
        paths = [path for path in mean_by_path if predicate(path)]
        if not paths:
            available = list(mean_by_path)[:_NUM_PATHS_IN_ERRORS]
            raise ValueError(
                f"Group {group_name!r} matches no parameter; available paths include "
                f"{available} ({len(mean_by_path)} in all)."
            )
        group_mean = np.concatenate([mean_by_path[path].ravel() for path in paths])  # (M,)
        group_var = np.concatenate([var_by_path[path].ravel() for path in paths])  # (M,)
        summary[group_name] = _summarise_elements(group_mean, group_var, num_draws)
    return summary


def _starts_with_any(prefixes: tuple[str, ...], path: str) -> bool:
    """Whether ``path`` equals a prefix or continues it after a "/"."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def prefix_groups(prefixes: Mapping[str, Sequence[str]]) -> dict[str, PathPredicate]:
    """Path predicates for `group_summary` from lists of path prefixes.

    {"encoder": ["params/data_encoder", "params/latent_encoders"]} gives a predicate that
    accepts paths starting with either prefix. Prefixes match whole path components:
    "params/dense_1" selects "params/dense_1/kernel" but not "params/dense_10/kernel"; a
    trailing "/" on a prefix is ignored.

    Args:
      prefixes: {group name: non-empty sequence of path prefixes}.

    Returns:
      {group name: predicate(path: str) -> bool}.

    Raises:
      ValueError: a group given a bare string or an empty sequence of prefixes.
    """
    predicates = {}
    for group_name, group_prefixes in prefixes.items():
        if isinstance(group_prefixes, str) or not group_prefixes:
            raise ValueError(
                f"Group {group_name!r}: expected a non-empty sequence of prefixes, got "
                f"{group_prefixes!r}."
            )
        cleaned = tuple(prefix.rstrip("/") for prefix in group_prefixes)
        predicates[group_name] = partial(_starts_with_any, cleaned)
    return predicates


def gradient_snr(
    grad_fn: GradFn,
    params: Any,
    keys: jax.Array,
    groups: Mapping[str, PathPredicate] | None = None,
    chunk_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Gradient SNR per parameter group (Rainforth et al. 2018, section 3) from N draws.

    `gradient_draws_statistics` followed by `group_summary`; see those for the details.

    Args:
      grad_fn: ``(params, key) -> gradients`` with the structure of ``params``.
      params: the fixed parameters.
      keys: (N,) typed PRNG keys, N >= 2.
      groups: {group name: predicate(path) -> bool}; None: one group "all".
      chunk_size: draws per vmapped chunk, a divisor of N; None: all at once.

    Returns:
      {group name: {"snr", "snr_median", "mean_abs", "std", "snr_of_norm", "num_elements",
      "num_draws"}}, plain Python numbers.
    """
    mean, var = gradient_draws_statistics(grad_fn, params, keys, chunk_size=chunk_size)
    return group_summary(mean, var, keys.shape[0], groups=groups)


def _check_rows(rows: Sequence[Mapping[str, Any]], required: Sequence[str]) -> None:
    """Every row holds every required key."""
    if not rows:
        raise ValueError("rows is empty: nothing to plot.")
    for row_index, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"Row {row_index} lacks key(s) {missing}; it has {sorted(row)}.")


def _series_points(
    rows: Sequence[Mapping[str, Any]], x: str, y: str, series: tuple[str, ...]
) -> dict[tuple, list[tuple[float, float]]]:
    """{series values: [(x, y), ...] sorted by x}, series in order of first appearance.

    Points that a log-log axis cannot show (non-finite or non-positive x or y) are dropped.
    """
    points: dict[tuple, list[tuple[float, float]]] = {}
    for row in rows:
        x_value, y_value = float(row[x]), float(row[y])
        line = points.setdefault(tuple(row[field] for field in series), [])
        if math.isfinite(x_value) and math.isfinite(y_value) and x_value > 0 and y_value > 0:
            line.append((x_value, y_value))
    return {key: sorted(line) for key, line in points.items()}


def save_snr_plot(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    x: str = "num_importance_samples",
    y: str = "snr",
    series: Sequence[str] = ("estimator", "group"),
    title: str | None = None,
) -> None:
    """Log-log plot of a gradient SNR against a setting, one line per estimator and group.

    The kind of plot in Rainforth et al. 2018 and Tucker et al. 2019: e.g. the encoder's SNR
    against the number of importance samples K, which falls as K^(-1/2) for the IWAE
    inference-network gradient (Rainforth et al.) but not for DReG (Tucker et al.). One line per
    distinct combination of the ``series`` fields (labelled "dreg / encoder"), points sorted by
    x, markers on; both axes are logarithmic, so points with non-finite or non-positive x or y
    are not drawn. The PNG is written atomically.

    Args:
      rows: one dict per point, e.g. {"estimator": "dreg", "group": "encoder",
        "num_importance_samples": 10, "snr": 3.2, ...}; extra keys are ignored.
      path: destination PNG file; its directory is created if missing.
      x: the key plotted on the x axis.
      y: the key plotted on the y axis (e.g. "snr", "snr_of_norm").
      series: the keys whose values distinguish lines; () draws one line.
      title: optional axes title.

    Raises:
      ValueError: ``rows`` empty, or a row lacking ``x``, ``y`` or a ``series`` key.
    """
    series = (series,) if isinstance(series, str) else tuple(series)
    _check_rows(rows, (x, y) + series)
    figure = new_figure()
    axes = figure.add_subplot()
    for series_values, line in _series_points(rows, x, y, series).items():
        label = " / ".join(str(value) for value in series_values) or y
        xs = [point[0] for point in line]
        ys = [point[1] for point in line]
        axes.plot(xs, ys, marker="o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    if title is not None:
        axes.set_title(title)
    axes.legend()
    save_figure(figure, path)


def largest_chunk_size(num_draws: int, draw_cost: int, budget: int = 200_000) -> int:
    """The largest divisor of `num_draws` whose chunk costs at most `budget` units (at least 1).

    Args:
      num_draws: N, the number of draws.
      draw_cost: the cost of one draw, e.g. K samples x B examples.
      budget: the cost one chunk may have (bounds the memory of one vmapped chunk).
    """
    limit = max(1, budget // max(draw_cost, 1))
    return max(d for d in range(1, num_draws + 1) if num_draws % d == 0 and d <= limit)


def estimator_snr_rows(
    loss_fn: Callable[[Any, jax.Array, str, int], jax.Array],
    params: Any,
    estimators: Sequence[str],
    num_samples: Sequence[int],
    key: jax.Array,
    num_draws: int,
    groups: Mapping[str, PathPredicate],
    batch_size: int = 1,
    progress: bool = True,
) -> list[dict]:
    """SNR per estimator, number of samples K and parameter group, at fixed parameters.

    The experiment of Rainforth et al. 2018 (fig. 1, 3) and Tucker et al. 2019 (fig. 2): the
    same `num_draws` keys for every (estimator, K), so the estimators see the same draws.

    Args:
      loss_fn: loss_fn(params, key, estimator, K) -> scalar loss whose gradient is the
        estimator's (e.g. `VAE.estimator_loss` of one batch).
      params: the fixed parameters.
      estimators: the estimator names passed to `loss_fn`.
      num_samples: the values of K.
      key: one typed key; draw i uses `fold_in(key, i)`.
      num_draws: N >= 2 draws per (estimator, K).
      groups: {name: predicate(path)} (`prefix_groups`).
      batch_size: B, the examples in one loss, only to size memory-bounded chunks.
      progress: show a tqdm bar over the (estimator, K) pairs.

    Returns:
      One row per (estimator, K, group): {"estimator", "num_importance_samples", "group"} and
      the `group_summary` statistics.
    """
    from tqdm.auto import tqdm

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_draws))
    rows = []
    pairs = [(name, k) for name in estimators for k in num_samples]
    for estimator, k in tqdm(pairs, desc="gradient SNR", disable=not progress):

        def grad_fn(p, draw_key, estimator=estimator, k=k):
            return jax.grad(lambda q: loss_fn(q, draw_key, estimator, k))(p)

        chunk_size = largest_chunk_size(num_draws, k * batch_size)
        summary = gradient_snr(grad_fn, params, keys, groups=groups, chunk_size=chunk_size)
        for group, statistics in summary.items():
            rows.append(
                {"estimator": estimator, "num_importance_samples": k, "group": group} | statistics
            )
    return rows


def snr_markdown(rows: Sequence[Mapping[str, Any]], value: str = "snr") -> str:
    """A Markdown table of `estimator_snr_rows`: one row per K, one column per (estimator,
    group), cells the `value` statistic to 3 significant digits."""
    _check_rows(rows, ("estimator", "group", "num_importance_samples", value))
    columns = list(dict.fromkeys((row["estimator"], row["group"]) for row in rows))
    cells = {(r["num_importance_samples"], r["estimator"], r["group"]): r[value] for r in rows}
    ks = sorted({row["num_importance_samples"] for row in rows})
    header = "| K | " + " | ".join(f"{e} {g}" for e, g in columns) + " |"
    lines = [header, "|" + " ---: |" * (len(columns) + 1)]
    for k in ks:
        values = [cells.get((k, e, g)) for e, g in columns]
        lines.append(
            f"| {k} | " + " | ".join("—" if v is None else f"{v:.3g}" for v in values) + " |"
        )
    return "\n".join(lines) + "\n"
