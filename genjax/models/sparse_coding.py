"""Sparse coding of image patches (Olshausen & Field 1996) (`config.model = 'sparse_coding'`).

Each patch x (P = p * p * C pixels, flattened) is explained by a sparse combination of the
rows of an overcomplete dictionary D (K atoms, (K, P), K > P, every atom of unit norm):

    codes(x) = argmin_a  E(a; D, x),   E(a; D, x) = 0.5 ||x - a D||^2 + penalty ||a||_1,

and the dictionary descends the reconstruction error of those codes, averaged over patches,
then is projected back onto unit-norm atoms (projected gradient). Fixing the atoms' norms is
what makes the L1 penalty mean anything: without it, scaling D up and the codes down lowers
||a||_1 at no cost in reconstruction (Olshausen & Field normalised the atoms' variance for the
same reason).

Inference is ISTA or FISTA (Beck & Teboulle 2009), pure, jitted and batched over patches, from
zero codes with the step 1 / L, L = the largest eigenvalue of D D^T (computed exactly: the
Lipschitz constant of the smooth part's gradient). The penalty follows scikit-learn's
`sparse_encode(..., algorithm='lasso_cd', alpha=penalty)` exactly: that function divides
`alpha` by the patch dimension P before calling `Lasso`, whose objective is
(1 / (2 P)) ||x - a D||^2 + alpha_Lasso ||a||_1; so E / P is `Lasso`'s objective with
`alpha_Lasso = penalty / P`, and both have the same minimiser. `tests/models/
test_sparse_coding.py` checks ISTA's and FISTA's codes against it.

Evaluation draws `eval_patches_per_image` patches from every test image at positions fixed by
the example's evaluation key (so two evaluations of one state see the same patches), infers
their codes at `penalty` and reports the reconstruction MSE per pixel and the fraction of
nonzero codes; the final evaluation repeats both for every penalty of `eval_penalties` on the
same dictionary: the reconstruction error against sparsity curve (`sparsity_curve` in
eval.json, `sparsity_curve.png`).
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.core.parallel import DATA_AXIS, example_keys
from genjax.core.state import TrainState
from genjax.evaluate import plots
from genjax.models import checks
from genjax.models.base import MAX_FILTERS, Model

INFERENCE_METHODS = ("fista", "ista")
# Stride of the patch grid behind `figures`, as a fraction of the patch size (half-overlaps).
_FIGURE_STRIDE_FRACTION = 2


# ---------------------------------------------------------------------------------------------
# Patches.


@functools.partial(jax.jit, static_argnames=("patch_size", "patches_per_image"))
def example_patches(
    keys: jax.Array, images: jax.Array, patch_size: int, patches_per_image: int
) -> jax.Array:
    """`patches_per_image` patches of each image at positions drawn from that image's key.

    The top-left corners are uniform over the positions where the patch lies inside the image,
    so one key always yields the same patches (evaluation uses the per-example evaluation keys).

    Args:
      keys: (B,) typed keys, one per image.
      images: (B, H, W, C), with patch_size <= H, W.
      patch_size: p, the patches' height and width.
      patches_per_image: M.

    Returns:
      (B, M, p * p * C): each patch flattened in (row, column, channel) order.
    """
    chex.assert_rank(images, 4)
    num_images, height, width, channels = images.shape
    chex.assert_shape(keys, (num_images,))

    def one_image(key, image):
        row_key, col_key = jax.random.split(key)
        rows = jax.random.randint(row_key, (patches_per_image,), 0, height - patch_size + 1)
        cols = jax.random.randint(col_key, (patches_per_image,), 0, width - patch_size + 1)
        cut = lambda row, col: jax.lax.dynamic_slice(
            image, (row, col, 0), (patch_size, patch_size, channels)
        ).reshape(-1)
        return jax.vmap(cut)(rows, cols)  # (M, P)

    return jax.vmap(one_image)(keys, images)


def extract_patches(
    key: jax.Array, images: jax.Array, patch_size: int, patches_per_image: int
) -> jax.Array:
    """`patches_per_image` random patches of each image, all flattened together.

    images (B, H, W, C) -> (B * M, p * p * C), image b's patches in rows b M .. (b + 1) M - 1;
    `example_patches` with one key per image split from `key`.
    """
    keys = jax.random.split(key, images.shape[0])
    patches = example_patches(keys, images, patch_size, patches_per_image)
    return patches.reshape((-1, patches.shape[-1]))


@jax.jit
def subtract_patch_means(patches: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each patch minus its own mean (its DC component): (..., P) -> ((..., P), (..., 1))."""
    means = patches.mean(axis=-1, keepdims=True)
    return patches - means, means


def grid_positions(size: int, patch_size: int, stride: int) -> tuple[int, ...]:
    """Patch offsets 0, stride, 2 stride, ... along an axis of `size` pixels, plus the last one
    (size - patch_size) when the stride skips it, so the patches cover the whole axis."""
    positions = list(range(0, size - patch_size + 1, stride))
    if positions[-1] != size - patch_size:
        positions.append(size - patch_size)
    return tuple(positions)


@functools.partial(jax.jit, static_argnames=("patch_size", "stride"))
def grid_patches(images: jax.Array, patch_size: int, stride: int) -> jax.Array:
    """Every patch on a grid of `stride` (`grid_positions` in both directions), row-major:
    images (B, H, W, C) -> (B, G, p * p * C), G = (rows of the grid) x (its columns)."""
    chex.assert_rank(images, 4)
    rows = grid_positions(images.shape[1], patch_size, stride)
    cols = grid_positions(images.shape[2], patch_size, stride)
    patches = [
        images[:, row : row + patch_size, col : col + patch_size].reshape((images.shape[0], -1))
        for row in rows
        for col in cols
    ]
    return jnp.stack(patches, axis=1)


@functools.partial(jax.jit, static_argnames=("image_shape", "patch_size", "stride"))
def assemble_patches(
    patches: jax.Array, image_shape: tuple[int, int, int], patch_size: int, stride: int
) -> jax.Array:
    """The inverse of `grid_patches`: each pixel the mean of the patches covering it.

    patches (B, G, p * p * C) -> images (B, H, W, C), image_shape = (H, W, C).
    """
    height, width, channels = image_shape
    rows = grid_positions(height, patch_size, stride)
    cols = grid_positions(width, patch_size, stride)
    chex.assert_shape(patches, (None, len(rows) * len(cols), patch_size**2 * channels))
    tiles = patches.reshape((patches.shape[0], -1, patch_size, patch_size, channels))
    total = jnp.zeros((patches.shape[0], height, width, channels), patches.dtype)
    count = np.zeros((1, height, width, 1), np.float32)
    for index, (row, col) in enumerate((row, col) for row in rows for col in cols):
        total = total.at[:, row : row + patch_size, col : col + patch_size].add(tiles[:, index])
        count[:, row : row + patch_size, col : col + patch_size] += 1.0
    return total / count


# ---------------------------------------------------------------------------------------------
# The lasso: objective and solvers.


@jax.jit
def soft_threshold(values: jax.Array, threshold) -> jax.Array:
    """The proximal operator of threshold * |.|_1: sign(v) max(|v| - threshold, 0), elementwise
    (exact zeros inside [-threshold, threshold])."""
    return jnp.sign(values) * jnp.maximum(jnp.abs(values) - threshold, 0.0)


@jax.jit
def lasso_objective(codes: jax.Array, dictionary: jax.Array, x: jax.Array, penalty) -> jax.Array:
    """E(a) = 0.5 ||x - a D||^2 + penalty ||a||_1 of each patch (the module docstring's
    convention; scikit-learn's `Lasso` objective times P, with alpha = penalty / P).

    Args:
      codes: a (N, K).
      dictionary: D (K, P).
      x: patches (N, P).
      penalty: the L1 weight, >= 0.

    Returns:
      (N,).
    """
    chex.assert_rank([codes, dictionary, x], 2)
    residual = x - codes @ dictionary  # (N, P)
    return 0.5 * jnp.sum(residual**2, axis=1) + penalty * jnp.sum(jnp.abs(codes), axis=1)


@jax.jit
def lipschitz_constant(dictionary: jax.Array) -> jax.Array:
    """L = the largest eigenvalue of D D^T (= of D^T D, whichever is smaller), the Lipschitz
    constant of the gradient a -> -(x - a D) D^T of the reconstruction term. Scalar."""
    num_atoms, patch_dim = dictionary.shape
    gram = dictionary @ dictionary.T if num_atoms <= patch_dim else dictionary.T @ dictionary
    return jnp.linalg.eigvalsh(gram)[-1]


def _proximal_gradient_step(codes, dictionary, x, penalty, inverse_lipschitz):
    """One ISTA step from `codes` (N, K): soft(a + (x - a D) D^T / L, penalty / L)."""
    gradient_step = codes + inverse_lipschitz * ((x - codes @ dictionary) @ dictionary.T)
    return soft_threshold(gradient_step, penalty * inverse_lipschitz)


@jax.jit
def ista(dictionary: jax.Array, x: jax.Array, penalty, num_iterations: int) -> jax.Array:
    """Iterative shrinkage-thresholding (Daubechies, Defrise & De Mol 2004) from zero codes:

        a <- soft(a + (x - a D) D^T / L, penalty / L),   L = `lipschitz_constant(D)`,

    `num_iterations` times; the objective `lasso_objective` never increases.

    Args:
      dictionary: D (K, P).
      x: patches (N, P).
      penalty: the L1 weight, >= 0.
      num_iterations: how many steps (traced: other counts reuse the compiled program).

    Returns:
      codes (N, K).
    """
    chex.assert_rank([dictionary, x], 2)
    chex.assert_equal(dictionary.shape[1], x.shape[1])
    inverse_lipschitz = 1.0 / lipschitz_constant(dictionary)
    codes = jnp.zeros((x.shape[0], dictionary.shape[0]), x.dtype)
    step = lambda _, codes: _proximal_gradient_step(
        codes, dictionary, x, penalty, inverse_lipschitz
    )
    return jax.lax.fori_loop(0, num_iterations, step, codes)


@jax.jit
def fista(dictionary: jax.Array, x: jax.Array, penalty, num_iterations: int) -> jax.Array:
    """FISTA (Beck & Teboulle 2009, Section 4, constant step 1 / L) from zero codes:

        a_k = soft(y_k + (x - y_k D) D^T / L, penalty / L),
        t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2,
        y_{k+1} = a_k + ((t_k - 1) / t_{k+1}) (a_k - a_{k-1}),

    with y_1 = a_0 = 0, t_1 = 1: the objective gap falls as O(1 / k^2) against ISTA's O(1 / k).
    Same arguments and shapes as `ista`; returns a_k, which is sparse (y_k need not be).
    """
    chex.assert_rank([dictionary, x], 2)
    chex.assert_equal(dictionary.shape[1], x.shape[1])
    inverse_lipschitz = 1.0 / lipschitz_constant(dictionary)
    codes = jnp.zeros((x.shape[0], dictionary.shape[0]), x.dtype)

    def step(_, carry):
        codes, search_point, t = carry
        new_codes = _proximal_gradient_step(search_point, dictionary, x, penalty, inverse_lipschitz)
        new_t = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t**2))
        search_point = new_codes + ((t - 1.0) / new_t) * (new_codes - codes)
        return new_codes, search_point, new_t

    codes, _, _ = jax.lax.fori_loop(0, num_iterations, step, (codes, codes, jnp.ones((), x.dtype)))
    return codes


SOLVERS = {"fista": fista, "ista": ista}


# ---------------------------------------------------------------------------------------------
# The dictionary.


@jax.jit
def normalize_atoms(dictionary: jax.Array) -> jax.Array:
    """The projection onto unit-norm atoms: each row of D (K, P) divided by its norm (a zero
    row, which has no direction, stays zero)."""
    norms = jnp.linalg.norm(dictionary, axis=1, keepdims=True)
    return dictionary / jnp.where(norms > 0, norms, 1.0)


@jax.jit
def reconstruction_error(dictionary: jax.Array, codes: jax.Array, x: jax.Array) -> jax.Array:
    """0.5 ||x - a D||^2 averaged over patches: D (K, P), codes (N, K), x (N, P) -> scalar."""
    return 0.5 * jnp.mean(jnp.sum((x - codes @ dictionary) ** 2, axis=1))


@jax.jit
def dictionary_gradient(dictionary: jax.Array, codes: jax.Array, x: jax.Array) -> jax.Array:
    """d reconstruction_error / dD with the codes held fixed: -(1/N) a^T (x - a D), (K, P).

    At codes that minimise E, this is also the gradient of min_a E with respect to D (the
    envelope theorem; the L1 term does not depend on D), which is why the codes enter the
    update as constants.
    """
    return jax.grad(reconstruction_error)(dictionary, jax.lax.stop_gradient(codes), x)


@jax.jit
def projected_gradient_step(
    dictionary: jax.Array, codes: jax.Array, x: jax.Array, learning_rate
) -> jax.Array:
    """One plain projected-gradient step: normalize_atoms(D - learning_rate dE/dD), (K, P).
    (The family applies the config's optax optimizer instead; with 'sgd' and a constant rate
    this is its update.)"""
    return normalize_atoms(dictionary - learning_rate * dictionary_gradient(dictionary, codes, x))


@functools.partial(jax.jit, static_argnames=("image_shape", "patch_size"))
def tile_patches(patches: jax.Array, image_shape: tuple[int, int, int], patch_size: int):
    """Patches laid edge to edge and cropped to the image: (num, R * S, P) -> (num, H, W, C),
    with R = ceil(H / p) rows and S = ceil(W / p) columns of patches, row-major."""
    height, width, channels = image_shape
    rows, cols = math.ceil(height / patch_size), math.ceil(width / patch_size)
    tiles = patches.reshape((-1, rows, cols, patch_size, patch_size, channels))
    images = tiles.transpose((0, 1, 3, 2, 4, 5)).reshape(
        (-1, rows * patch_size, cols * patch_size, channels)
    )
    return images[:, :height, :width]


# ---------------------------------------------------------------------------------------------
# The family.


class SparseCoding(Model):
    """Sparse coding of image patches (`config.model = 'sparse_coding'`); see the module
    docstring.

    model_config fields:
      patch_size: p, the patches' height and width (at most the images').
      num_atoms: K, the dictionary's size; K > p * p * C makes it overcomplete.
      penalty: the L1 weight of E(a) = 0.5 ||x - a D||^2 + penalty ||a||_1, >= 0 (scikit-learn's
        `sparse_encode` alpha for 'lasso_cd').
      inference: 'fista' | 'ista', the lasso solver for training and evaluation.
      inference_iterations: the solver's iterations per patch in training, from zero codes.
      eval_inference_iterations: the same in evaluation and the figures: more, so that the
        reported codes are the lasso's solution (on the trained 8x8 dictionary, FISTA's mean
        objective is within 1e-4 of scikit-learn's optimum after 100 iterations and 1e-6 after
        300, its nonzero fraction within 1% and 0.2% of the optimum's).
      patches_per_image: random patches each training image contributes to a step.
      subtract_mean: remove each patch's mean (its DC component) before coding, and add it back
        after decoding. The mean is most of a digit patch's energy but no structure: left in,
        it dominates the reconstruction error and costs every patch an active "brightness"
        code, while Olshausen & Field's images were zero-mean (whitened) to begin with.
      eval_patches_per_image: patches per test image, at positions fixed by the example's key.
      eval_penalties: the penalties of the final evaluation's reconstruction error against
        sparsity curve, each coding the test patches with the one trained dictionary.

    The config's optimizer (`config.optimizer`, `learning_rate`, `lr_schedule`) updates the
    dictionary; each update is followed by the projection onto unit-norm atoms.
    """

    name = "sparse_coding"
    main_metric = "train/reconstruction_mse"
    likelihood_model = False
    evaluation_fields = ("eval_patches_per_image", "eval_penalties", "eval_inference_iterations")

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_positive_ints(
            mc,
            (
                "patch_size",
                "num_atoms",
                "inference_iterations",
                "eval_inference_iterations",
                "patches_per_image",
                "eval_patches_per_image",
            ),
        )
        checks.check_non_negative_numbers(mc, ("penalty",))
        checks.check_choice(mc, "inference", INFERENCE_METHODS)
        checks.check_bools(mc, ("subtract_mean",))
        penalties = mc.eval_penalties
        if (
            not isinstance(penalties, tuple | list)
            or not penalties
            or not all(
                isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
                for value in penalties
            )
        ):
            raise ValueError(
                f"config.model_config.eval_penalties={penalties!r} must be a non-empty tuple of "
                "non-negative numbers, the penalties of the reconstruction error against "
                "sparsity curve."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        mc = config.model_config
        if not spec.is_image:
            raise ValueError(
                f"config.model='sparse_coding' codes image patches; config.dataset={spec.name!r} "
                f"has examples of shape {spec.example_shape}, not images (H, W, C)."
            )
        height, width, self.channels = spec.example_shape
        if mc.patch_size > min(height, width):
            raise ValueError(
                f"config.model_config.patch_size={mc.patch_size} is larger than the images of "
                f"config.dataset={spec.name!r} ({height} x {width}); allowed: 1 to "
                f"{min(height, width)}."
            )
        self.patch_size = mc.patch_size
        self.patch_dim = mc.patch_size**2 * self.channels
        self.solver = SOLVERS[mc.inference]

    # -- patches and codes ----------------------------------------------------------------------

    def _prepare(self, patches: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(patches to code, their means): the means subtracted when `subtract_mean`, else 0."""
        if self.config.model_config.subtract_mean:
            return subtract_patch_means(patches)
        return patches, jnp.zeros((*patches.shape[:-1], 1), patches.dtype)

    def _codes(self, dictionary: jax.Array, x: jax.Array, penalty, evaluation: bool) -> jax.Array:
        """The configured solver's codes of x (N, P) -> (N, K), with the training's or the
        evaluation's number of iterations."""
        mc = self.config.model_config
        iterations = mc.eval_inference_iterations if evaluation else mc.inference_iterations
        return self.solver(dictionary, x, penalty, iterations)

    def _patch_statistics(self, dictionary, x, penalty) -> dict:
        """Codes of x (..., M, P) at `penalty` -> per-image (...) means over the M patches of
        the squared error per pixel, the nonzero-code fraction, E and the patch energy."""
        flat = x.reshape((-1, self.patch_dim))
        codes = self._codes(dictionary, flat, penalty, evaluation=True)  # (N, K)
        residual = flat - codes @ dictionary
        per_patch = {
            "reconstruction_mse": jnp.mean(residual**2, axis=1),
            "active_fraction": jnp.mean(codes != 0, axis=1),
            "lasso_objective": lasso_objective(codes, dictionary, flat, penalty),
            "patch_energy": jnp.mean(flat**2, axis=1),
        }
        return {
            name: value.reshape(x.shape[:-1]).mean(axis=-1) for name, value in per_patch.items()
        }

    # -- the protocol ---------------------------------------------------------------------------

    def init(self, key, example_x):
        """Atoms drawn from a standard normal and normalised: uniform on the unit sphere.
        `extras` keeps running means over training patches for `sample`: of the patch means
        (`patch_mean`) and of the codes' magnitudes (`code_scale`)."""
        del example_x
        mc = self.config.model_config
        atoms = jax.random.normal(key, (mc.num_atoms, self.patch_dim), jnp.float32)
        extras = {
            "patch_mean": jnp.zeros((), jnp.float32),
            "code_scale": jnp.zeros((), jnp.float32),
        }
        return {"dictionary": normalize_atoms(atoms)}, extras

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """Codes of this device's patches by the solver (constants for the gradient), the
        gradient of their reconstruction error averaged over devices, the optimizer's update,
        then the projection onto unit-norm atoms."""
        mc = self.config.model_config
        x = batch["x"]  # (B, H, W, C)
        step_key = jax.random.fold_in(state.key, state.step)
        keys = example_keys(step_key, 0, x.shape[0])
        patches = example_patches(keys, x, self.patch_size, mc.patches_per_image)
        patches, means = self._prepare(patches.reshape((-1, self.patch_dim)))  # (B M, P)
        dictionary = state.params["dictionary"]
        codes = self._codes(dictionary, patches, mc.penalty, evaluation=False)  # (B M, K)
        codes = jax.lax.stop_gradient(codes)
        grads = {"dictionary": dictionary_gradient(dictionary, codes, patches)}
        grads = jax.lax.pmean(grads, DATA_AXIS)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = {"dictionary": normalize_atoms(params["dictionary"])}
        residual = patches - codes @ dictionary
        batch_stats = jax.lax.pmean(
            {"patch_mean": means.mean(), "code_scale": jnp.abs(codes).mean()}, DATA_AXIS
        )
        weight = 1.0 / (state.step.astype(jnp.float32) + 1.0)  # running means over the steps
        extras = jax.tree.map(
            lambda old, new: old + weight * (new - old), state.extras, batch_stats
        )
        metrics = jax.lax.pmean(
            {
                "train/loss": lasso_objective(codes, dictionary, patches, mc.penalty).mean(),
                "train/reconstruction_mse": jnp.mean(residual**2),
                "train/active_fraction": jnp.mean(codes != 0),
            },
            DATA_AXIS,
        )
        metrics["train/grad_norm"] = optax.global_norm(grads)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, extras=extras
        )
        return new_state, metrics

    def eval_step(self, state, batch, keys, final):
        """Per test image (B,): means over its `eval_patches_per_image` patches (positions from
        its key) of the squared error per pixel, the nonzero-code fraction, E and the patch
        energy at `penalty`; `final` adds `curve_*` (B, len(eval_penalties)) for the curve."""
        mc = self.config.model_config
        patches = example_patches(keys, batch["x"], self.patch_size, mc.eval_patches_per_image)
        patches, _ = self._prepare(patches)  # (B, M, P)
        dictionary = state.params["dictionary"]
        penalties = (mc.penalty, *mc.eval_penalties) if final else (mc.penalty,)
        # One solver in the program, mapped over the penalties: (1 [+ E], B) each.
        statistics = jax.lax.map(
            lambda penalty: self._patch_statistics(dictionary, patches, penalty),
            jnp.asarray(penalties, patches.dtype),
        )
        outputs = {name: value[0] for name, value in statistics.items()}
        if final:
            outputs["curve_mse"] = statistics["reconstruction_mse"][1:].T
            outputs["curve_active_fraction"] = statistics["active_fraction"][1:].T
        return outputs

    def summarize(self, outputs, final, constants):
        """Test means: `test_reconstruction_mse` (per pixel), `test_active_fraction` (nonzero
        codes), `test_lasso_objective` (E per patch), `test_relative_error` (squared error over
        the coded patches' energy); final adds `sparsity_curve`, one {penalty, mse,
        active_fraction} per `eval_penalties`."""
        del constants
        mean = lambda name: float(np.mean(np.asarray(outputs[name], np.float64)))
        summary = {
            "test_reconstruction_mse": mean("reconstruction_mse"),
            "test_active_fraction": mean("active_fraction"),
            "test_lasso_objective": mean("lasso_objective"),
            "test_relative_error": mean("reconstruction_mse") / max(mean("patch_energy"), 1e-30),
        }
        if final:
            mse = np.mean(np.asarray(outputs["curve_mse"], np.float64), axis=0)
            active = np.mean(np.asarray(outputs["curve_active_fraction"], np.float64), axis=0)
            summary["penalty"] = float(self.config.model_config.penalty)
            summary["sparsity_curve"] = [
                {"penalty": float(penalty), "mse": float(m), "active_fraction": float(a)}
                for penalty, m, a in zip(
                    self.config.model_config.eval_penalties, mse, active, strict=True
                )
            ]
        return summary

    def sample(self, state, key, num):
        """Independent patches tiled edge to edge and cropped to the image size: a patch model
        has no image-level structure, so the tiles do not continue each other. Each patch
        decodes codes drawn i.i.d. from the Laplace prior the L1 penalty corresponds to, with
        the training codes' mean magnitude as its scale (the lasso's MAP codes are sparser
        than draws from their prior), plus the training patches' mean brightness when
        `subtract_mean`. -> (num, H, W, C) in model space."""
        height, width, _ = self.spec.example_shape
        num_patches = math.ceil(height / self.patch_size) * math.ceil(width / self.patch_size)
        dictionary = state.params["dictionary"]
        codes = state.extras["code_scale"] * jax.random.laplace(
            key, (num * num_patches, dictionary.shape[0])
        )
        patches = codes @ dictionary
        if self.config.model_config.subtract_mean:
            patches = patches + state.extras["patch_mean"]
        return tile_patches(patches, self.spec.example_shape, self.patch_size)

    def first_layer_filters(self, state):
        """The first `MAX_FILTERS` atoms as patches, (min(K, MAX_FILTERS), p, p, C): not
        example-shaped (the trainer's filters.png takes any image size)."""
        atoms = np.asarray(jax.device_get(state.params["dictionary"]))[:MAX_FILTERS]
        return atoms.reshape((-1, self.patch_size, self.patch_size, self.channels))

    def figures(self, state, key, test_x, to_unit):
        """`sparsity_curve.png`: the reconstruction MSE per pixel against the fraction of
        nonzero codes over `eval_penalties`, on every patch of `test_x` on a grid of stride p/2
        (eval.json's `sparsity_curve` is the same curve over the whole test split's random
        patches); `reconstructions.png`: `test_x` and its reconstruction at `penalty` from
        those overlapping patches, each pixel the mean of the patches covering it."""
        del key
        mc = self.config.model_config
        stride = max(1, self.patch_size // _FIGURE_STRIDE_FRACTION)
        dictionary = state.params["dictionary"]
        patches, means = self._prepare(grid_patches(jnp.asarray(test_x), self.patch_size, stride))
        curve = [
            jax.device_get(self._patch_statistics(dictionary, patches, penalty))
            for penalty in mc.eval_penalties
        ]
        codes = self._codes(
            dictionary, patches.reshape((-1, self.patch_dim)), mc.penalty, evaluation=True
        )
        decoded = (codes @ dictionary).reshape(patches.shape) + means
        reconstructed = assemble_patches(decoded, self.spec.example_shape, self.patch_size, stride)
        mse = [float(np.mean(point["reconstruction_mse"])) for point in curve]
        active = [float(np.mean(point["active_fraction"])) for point in curve]

        def write_curve(path):
            figure = plots.new_figure()
            axes = figure.add_subplot()
            axes.plot(active, mse, marker="o")
            for penalty, x, y in zip(mc.eval_penalties, active, mse, strict=True):
                axes.annotate(f"{penalty:g}", (x, y), textcoords="offset points", xytext=(4, 4))
            axes.set_xlabel("fraction of nonzero codes")
            axes.set_yscale("log")
            axes.set_ylabel("reconstruction MSE per pixel")
            axes.set_title(
                f"{len(test_x)} test images, {patches.shape[1]} patches each (labels: penalty)",
                fontsize="small",
            )
            plots.save_figure(figure, path)

        def write_reconstructions(path):
            plots.save_image_rows(
                [
                    ("test", np.clip(to_unit(np.asarray(test_x)), 0.0, 1.0)),
                    (f"penalty {mc.penalty:g}", np.clip(to_unit(np.asarray(reconstructed)), 0, 1)),
                ],
                path,
            )

        return {"sparsity_curve.png": write_curve, "reconstructions.png": write_reconstructions}
