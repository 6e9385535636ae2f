"""Walking the latent space of a generator: interpolations and vector arithmetic.

    z = interpolate(z0, z1, num=8)                      # (8, latent), spherical by default
    grid = interpolation_grid(generate, key, latent_size, num_rows=6, num_cols=10)
    result = vector_arithmetic(generate, classify, key, latent_size, class_a=0, class_b=1)

Radford et al. (2016), sec. 6: walking between latent points shows smooth transitions (no
memorisation), and averages of a few latent vectors support arithmetic between concepts
("smiling woman - neutral woman + neutral man = smiling man", fig. 7). On digits the concept
here is stroke weight: mean z of heavy `class_a` digits - mean z of light `class_a` digits +
mean z of light `class_b` digits should give heavy `class_b` digits. Weight is measured as the
mean intensity ("ink") and the class by genjax's digit classifier, so the result is a number,
not only a picture.

`generate(z, labels) -> images in [0, 1]` and `classify(images) -> labels` are plain functions,
so the tools serve any generator with a Gaussian latent.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

INTERPOLATIONS = ("slerp", "linear")
GenerateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def interpolate(z0: jax.Array, z1: jax.Array, num: int, method: str = "slerp") -> jax.Array:
    """`num` points from z0 to z1 (both included): (latent,) x 2 -> (num, latent).

    'linear' is DCGAN's straight line; 'slerp' follows the great circle between them, scaling
    the radius linearly, so the points keep the typical norm of Gaussian samples (a straight
    line through a high-dimensional Gaussian passes through its improbable centre; White 2016,
    "Sampling Generative Networks").
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"interpolation method={method!r}; allowed: {INTERPOLATIONS}")
    t = jnp.linspace(0.0, 1.0, num)[:, None]  # (num, 1)
    if method == "linear":
        return (1.0 - t) * z0 + t * z1
    norm0, norm1 = jnp.linalg.norm(z0), jnp.linalg.norm(z1)
    u0, u1 = z0 / norm0, z1 / norm1
    omega = jnp.arccos(jnp.clip(jnp.dot(u0, u1), -1.0, 1.0))
    sin_omega = jnp.maximum(jnp.sin(omega), 1e-6)
    direction = (jnp.sin((1.0 - t) * omega) * u0 + jnp.sin(t * omega) * u1) / sin_omega
    return direction * ((1.0 - t) * norm0 + t * norm1)


def interpolation_grid(
    generate: GenerateFn,
    key: jax.Array,
    latent_size: int,
    num_rows: int,
    num_cols: int,
    num_classes: int | None = None,
    method: str = "slerp",
) -> np.ndarray:
    """Rows of `num_cols` images, each row walking between two random latent points:
    (num_rows * num_cols, *image_shape), row-major. A conditional generator keeps one label
    per row (row i shows class i mod `num_classes`)."""
    ends = jax.random.normal(key, (num_rows, 2, latent_size))
    z = jnp.concatenate([interpolate(a, b, num_cols, method) for a, b in ends])
    row_labels = np.arange(num_rows) % (num_classes or 1)
    labels = np.repeat(row_labels, num_cols)
    return np.asarray(generate(np.asarray(z), labels))


def ink(images: np.ndarray) -> np.ndarray:
    """Mean intensity of each image in [0, 1]: (N, ...) -> (N,), a stroke-weight measure."""
    return np.asarray(images, np.float64).reshape(len(images), -1).mean(axis=1)


def _group(latents, classes, weights, digit: int, heavy: bool, size: int) -> np.ndarray:
    """Indices of the `size` heaviest (or lightest) samples of class `digit`."""
    members = np.flatnonzero(classes == digit)
    if len(members) < size:
        raise ValueError(
            f"only {len(members)} samples of class {digit} among {len(classes)}; the "
            "generator rarely draws it: draw more (num_candidates) or choose another class."
        )
    order = members[np.argsort(weights[members])]
    return order[-size:] if heavy else order[:size]


def vector_arithmetic(
    generate: GenerateFn,
    classify: Callable[[np.ndarray], np.ndarray],
    key: jax.Array,
    latent_size: int,
    class_a: int,
    class_b: int,
    num_classes: int | None = None,
    num_candidates: int = 2000,
    group_size: int = 3,
    num_results: int = 8,
    noise_std: float = 0.25,
) -> dict:
    """DCGAN's vector arithmetic on averaged latents (Radford et al. 2016, sec. 6.3.2, fig. 7):
    heavy a - light a + light b -> heavy b?

    Draws `num_candidates` latents, generates and classifies them (a conditional generator is
    asked for every class in turn, and its label is the class), picks for each concept the
    `group_size` samples of highest or lowest ink, averages their latents, and generates
    `num_results` images from z_heavy_a - z_light_a + z_light_b plus N(0, noise_std^2) noise
    (the paper's perturbations of the result, fig. 7).

    Returns a dict: 'groups' {name: (group_size, *image)} exemplars, 'means' {name: image of
    the averaged latent}, 'results' (num_results, *image), and the measurements
    'ink_light_b', 'ink_heavy_b' (means over the exemplars), 'ink_results' (mean over the
    results) and 'results_read_as_b' (the fraction the classifier reads as class_b).
    """
    candidates_key, noise_key = jax.random.split(key)
    latents = np.asarray(jax.random.normal(candidates_key, (num_candidates, latent_size)))
    conditional = num_classes is not None
    labels = np.arange(num_candidates) % (num_classes or 1)
    images = np.asarray(generate(latents, labels))
    classes = labels if conditional else np.asarray(classify(images))
    weights = ink(images)
    picks = {
        "heavy_a": _group(latents, classes, weights, class_a, True, group_size),
        "light_a": _group(latents, classes, weights, class_a, False, group_size),
        "light_b": _group(latents, classes, weights, class_b, False, group_size),
        "heavy_b": _group(latents, classes, weights, class_b, True, group_size),
    }
    mean_z = {name: latents[index].mean(axis=0) for name, index in picks.items()}
    target = mean_z["heavy_a"] - mean_z["light_a"] + mean_z["light_b"]
    noise = noise_std * np.asarray(jax.random.normal(noise_key, (num_results, latent_size)))
    result_z = target[None] + noise
    label_of = {"heavy_a": class_a, "light_a": class_a, "light_b": class_b, "heavy_b": class_b}
    means = {
        name: np.asarray(generate(z[None], np.array([label_of[name]])))[0]
        for name, z in mean_z.items()
    }
    results = np.asarray(generate(result_z, np.full(num_results, class_b)))
    return {
        "groups": {name: images[index] for name, index in picks.items()},
        "means": means,
        "results": results,
        "ink_light_b": float(weights[picks["light_b"]].mean()),
        "ink_heavy_b": float(weights[picks["heavy_b"]].mean()),
        "ink_results": float(ink(results).mean()),
        "results_read_as_b": float(np.mean(np.asarray(classify(results)) == class_b)),
    }
