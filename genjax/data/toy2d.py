"""Two-dimensional toy densities: NumPy samplers and, where known, closed-form log densities.

The samplers follow the toy-data conventions of FFJORD (Grathwohl et al., 2019,
"FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models",
`lib/toy_data.py`), which most flow and score-model papers reuse, with one change: every
random draw comes from an explicit `np.random.Generator`, so a seed fixes the data. `grid25`
is the 5 x 5 grid of Gaussians of VEEGAN (Srivastava et al., 2017), the usual GAN
mode-collapse benchmark; `ring8` is the narrow ring of the same papers (Metz et al. 2017,
"Unrolled Generative Adversarial Networks"; VEEGAN), and `grid25_unit` is `grid25` divided
by 2 sqrt(2), the rescaling of the WGAN-GP toy code (Gulrajani et al. 2017, `gan_toy.py`),
which gives each coordinate unit standard deviation.

    name          density known?   what it is
    moons         no               sklearn two moons, noise 0.1
    8gaussians    yes              8 equal-weight isotropic Gaussians on a circle
    checkerboard  yes              uniform on 8 of the 16 squares of a 4 x 4 board
    pinwheel      no               5 curved arms (Johnson et al., 2016)
    swissroll     no               sklearn swiss roll, noise 1.0, seen from above
    circles       no               sklearn two concentric circles, noise 0.08
    grid25        yes              25 equal-weight isotropic Gaussians on a 5 x 5 grid
    ring8         yes              8 equal-weight Gaussians on a circle of radius 2, std 0.02
    grid25_unit   yes              grid25 / (2 sqrt 2): centres 0.71 apart, std 0.0177

`log_prob` is written with `jax.numpy`, so it takes NumPy or JAX arrays and can be jitted
(the name is a static Python string).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

TOY2D_NAMES = (
    "moons",
    "8gaussians",
    "checkerboard",
    "pinwheel",
    "swissroll",
    "circles",
    "grid25",
    "ring8",
    "grid25_unit",
)
DENSITY_NAMES = ("8gaussians", "checkerboard", "grid25", "ring8", "grid25_unit")
MIXTURE_NAMES = ("8gaussians", "grid25", "ring8", "grid25_unit")

# FFJORD divides the 8gaussians data by this literal (not by sqrt(2)); kept for comparability.
_EIGHT_GAUSSIANS_DIVISOR = 1.414
_EIGHT_GAUSSIANS_RADIUS = 4.0
_EIGHT_GAUSSIANS_NOISE_STD = 0.5
_GRID25_COORDINATES = (-4.0, -2.0, 0.0, 2.0, 4.0)
_GRID25_STD = 0.05
# Metz et al. 2017 (sec. 3.1) and VEEGAN (sec. 5.1): radius 2, std 0.02.
_RING8_RADIUS = 2.0
_RING8_STD = 0.02
# gan_toy.py of Gulrajani et al. 2017 divides its 25-Gaussian data by 2.828 (2 sqrt 2 to 3
# digits): the per-coordinate std of the centres {-4, ..., 4} is sqrt(8) = 2 sqrt 2.
_GRID25_UNIT_DIVISOR = 2.0 * math.sqrt(2.0)
# Checkerboard: side of one square and the number of filled squares (total area 8 * 2^2 = 32).
_CHECKER_SQUARE_SIDE = 2.0
_CHECKER_NUM_FILLED_SQUARES = 8
# Monte Carlo entropy estimates of the mixtures: fixed seed and sample count.
ENTROPY_SEED = 20190101
ENTROPY_NUM_SAMPLES = 1_000_000


def _check_name(name: str, allowed: tuple[str, ...], what: str) -> None:
    if name not in allowed:
        raise ValueError(f"{what} {name!r} is not one of the allowed names: {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------
# Samplers. Each returns float32 (num, 2).
# ---------------------------------------------------------------------------------------------


def _sklearn_seed(rng: np.random.Generator) -> int:
    """A 32-bit seed drawn from `rng`, for the sklearn generators that want a RandomState."""
    return int(rng.integers(0, 2**31 - 1))


def _sample_moons(rng: np.random.Generator, num: int) -> np.ndarray:
    """sklearn `make_moons(noise=0.1)`, then `x * 2 + [-1, -0.2]` (FFJORD)."""
    from sklearn.datasets import make_moons  # sklearn.datasets is slow to import; load on use.

    points, _ = make_moons(n_samples=num, noise=0.1, random_state=_sklearn_seed(rng))
    return points * 2.0 + np.array([-1.0, -0.2])


def _sample_eight_gaussians(rng: np.random.Generator, num: int) -> np.ndarray:
    """A uniformly chosen centre of `mode_centers('8gaussians')` plus N(0, 0.5^2 I) / 1.414."""
    unscaled_centers = _EIGHT_GAUSSIANS_RADIUS * _eight_unit_directions()  # (8, 2)
    component = rng.integers(0, len(unscaled_centers), size=num)
    noise = rng.standard_normal((num, 2)) * _EIGHT_GAUSSIANS_NOISE_STD
    return (unscaled_centers[component] + noise) / _EIGHT_GAUSSIANS_DIVISOR


def _sample_checkerboard(rng: np.random.Generator, num: int) -> np.ndarray:
    """FFJORD: x1 ~ U(-2, 2), x2 ~ U(0, 1) - 2 * randint(0, 2) + floor(x1) mod 2; both x 2."""
    x1 = rng.random(num) * 4.0 - 2.0
    x2 = rng.random(num) - 2.0 * rng.integers(0, 2, size=num) + np.mod(np.floor(x1), 2.0)
    return np.stack([x1, x2], axis=1) * 2.0


def _sample_pinwheel(rng: np.random.Generator, num: int) -> np.ndarray:
    """FFJORD's pinwheel (Johnson et al., 2016, "Composing graphical models with neural
    networks"): 5 arms; radial std 0.3, tangential std 0.1, rate 0.25, the whole times 2.

    FFJORD draws `num // 5` points per arm; here arm `i mod 5` is given to point i (so any
    `num` works and the arms hold equal counts up to one) before the rows are permuted.
    """
    num_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm_angles = np.linspace(0.0, 2.0 * np.pi, num_arms, endpoint=False)
    features = rng.standard_normal((num, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    arm = np.arange(num) % num_arms
    angles = arm_angles[arm] + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
    rotations = rotations.T.reshape(-1, 2, 2)  # (num, 2, 2)
    return 2.0 * rng.permutation(np.einsum("ti,tij->tj", features, rotations))


def _sample_swissroll(rng: np.random.Generator, num: int) -> np.ndarray:
    """sklearn `make_swiss_roll(noise=1.0)`, columns [0, 2], divided by 5 (FFJORD)."""
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(n_samples=num, noise=1.0, random_state=_sklearn_seed(rng))
    return points[:, [0, 2]] / 5.0


def _sample_circles(rng: np.random.Generator, num: int) -> np.ndarray:
    """sklearn `make_circles(factor=0.5, noise=0.08)`, times 3 (FFJORD)."""
    from sklearn.datasets import make_circles

    points, _ = make_circles(n_samples=num, factor=0.5, noise=0.08, random_state=_sklearn_seed(rng))
    return points * 3.0


def _sample_grid25(rng: np.random.Generator, num: int) -> np.ndarray:
    """A uniformly chosen centre of {-4, -2, 0, 2, 4}^2 plus N(0, 0.05^2 I) (VEEGAN)."""
    centers = mode_centers("grid25").astype(np.float64)
    component = rng.integers(0, len(centers), size=num)
    return centers[component] + rng.standard_normal((num, 2)) * _GRID25_STD


def _sample_mixture(name: str, rng: np.random.Generator, num: int) -> np.ndarray:
    """A uniformly chosen centre of `mode_centers(name)` plus N(0, mode_std(name)^2 I)."""
    centers = mode_centers(name).astype(np.float64)
    component = rng.integers(0, len(centers), size=num)
    return centers[component] + rng.standard_normal((num, 2)) * mode_std(name)


_SAMPLERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "moons": _sample_moons,
    "8gaussians": _sample_eight_gaussians,
    "checkerboard": _sample_checkerboard,
    "pinwheel": _sample_pinwheel,
    "swissroll": _sample_swissroll,
    "circles": _sample_circles,
    "grid25": _sample_grid25,
    "ring8": functools.partial(_sample_mixture, "ring8"),
    "grid25_unit": functools.partial(_sample_mixture, "grid25_unit"),
}


def sample(name: str, rng: np.random.Generator, num: int) -> np.ndarray:
    """Draws `num` points from the toy distribution `name`.

    Conventions (FFJORD, Grathwohl et al. 2019; grid25 from VEEGAN, Srivastava et al. 2017):

    - `moons`: sklearn `make_moons(noise=0.1)`, then `x * 2 + [-1, -0.2]`.
    - `8gaussians`: centres `4 * (cos t, sin t)` for t in {0, pi/4, ..., 7 pi/4}, chosen
      uniformly, plus N(0, 0.5^2 I) noise; everything divided by 1.414.
    - `checkerboard`: x1 ~ U(-2, 2), x2 ~ U(0, 1) - 2 * randint(0, 2) + (floor(x1) mod 2),
      then both coordinates times 2: uniform on 8 squares of side 2 in [-4, 4)^2.
    - `pinwheel`: 5 arms, radial std 0.3, tangential std 0.1, rate 0.25, times 2.
    - `swissroll`: sklearn `make_swiss_roll(noise=1.0)`, columns [0, 2], divided by 5.
    - `circles`: sklearn `make_circles(factor=0.5, noise=0.08)`, times 3.
    - `grid25`: centres {-4, -2, 0, 2, 4}^2, chosen uniformly, plus N(0, 0.05^2 I).
    - `ring8`: centres `2 (cos t, sin t)`, t in {0, pi/4, ..., 7 pi/4}, chosen uniformly,
      plus N(0, 0.02^2 I) (Metz et al. 2017; VEEGAN).
    - `grid25_unit`: centres {-4, -2, 0, 2, 4}^2 / (2 sqrt 2), plus N(0, (0.05 / (2 sqrt
      2))^2 I): `grid25` divided by 2 sqrt 2 (WGAN-GP's toy code).

    The sklearn-based samplers take their `random_state` from one draw of `rng`.

    Args:
      name: one of `TOY2D_NAMES`.
      rng: the only source of randomness; the same generator state gives the same points.
      num: number of points.

    Returns:
      float32 array of shape (num, 2).
    """
    _check_name(name, TOY2D_NAMES, "toy2d name")
    return _SAMPLERS[name](rng, num).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Mixture geometry.
# ---------------------------------------------------------------------------------------------


def _eight_unit_directions() -> np.ndarray:
    """(8, 2) unit vectors at angles 0, pi/4, ..., 7 pi/4."""
    angles = np.arange(8) * (np.pi / 4.0)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def mode_centers(name: str) -> np.ndarray:
    """The component means of a Gaussian-mixture toy density.

    Args:
      name: `8gaussians` (centres `4 (cos t, sin t) / 1.414`, t = k pi / 4), `ring8`
        (`2 (cos t, sin t)`), `grid25` (centres {-4, -2, 0, 2, 4}^2, row-major with the
        first coordinate slowest) or `grid25_unit` (the same divided by 2 sqrt 2).

    Returns:
      float32 array (num_modes, 2): (8, 2) or (25, 2).
    """
    _check_name(name, MIXTURE_NAMES, "mixture name")
    if name == "8gaussians":
        centers = _EIGHT_GAUSSIANS_RADIUS * _eight_unit_directions() / _EIGHT_GAUSSIANS_DIVISOR
    elif name == "ring8":
        centers = _RING8_RADIUS * _eight_unit_directions()
    else:
        grid = np.array(_GRID25_COORDINATES)
        centers = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
        if name == "grid25_unit":
            centers = centers / _GRID25_UNIT_DIVISOR
    return centers.astype(np.float32)


def mode_std(name: str) -> float:
    """The per-coordinate standard deviation of every component of a mixture toy density.

    `8gaussians`: 0.5 / 1.414 (about 0.354); `grid25`: 0.05; `ring8`: 0.02; `grid25_unit`:
    0.05 / (2 sqrt 2) (about 0.0177).
    """
    _check_name(name, MIXTURE_NAMES, "mixture name")
    stds = {
        "8gaussians": _EIGHT_GAUSSIANS_NOISE_STD / _EIGHT_GAUSSIANS_DIVISOR,
        "grid25": _GRID25_STD,
        "ring8": _RING8_STD,
        "grid25_unit": _GRID25_STD / _GRID25_UNIT_DIVISOR,
    }
    return stds[name]


# ---------------------------------------------------------------------------------------------
# Closed-form log densities.
# ---------------------------------------------------------------------------------------------


def has_density(name: str) -> bool:
    """Whether `log_prob(name, .)` and `entropy(name)` are available (see `DENSITY_NAMES`)."""
    _check_name(name, TOY2D_NAMES, "toy2d name")
    return name in DENSITY_NAMES


def density_name(dataset: str) -> str | None:
    """'8gaussians' for the dataset 'toy2d/8gaussians' when that density is known in closed
    form; None for any other dataset."""
    name = dataset.removeprefix("toy2d/")
    return name if dataset.startswith("toy2d/") and has_density(name) else None


def _check_has_density(name: str) -> None:
    _check_name(name, TOY2D_NAMES, "toy2d name")
    if name not in DENSITY_NAMES:
        raise ValueError(
            f"the density of toy2d {name!r} is not known in closed form; "
            f"names with one: {', '.join(DENSITY_NAMES)}"
        )


def _mixture_log_prob(x: jax.Array, centers: np.ndarray, std: float) -> jax.Array:
    """log (1/K) sum_k N(x; mu_k, std^2 I) for x (N, 2), centers (K, 2) -> (N,)."""
    squared_distance = jnp.sum((x[:, None, :] - centers[None, :, :]) ** 2, axis=-1)  # (N, K)
    log_normalizer = math.log(2.0 * math.pi * std**2) + math.log(len(centers))
    return logsumexp(-0.5 * squared_distance / std**2, axis=-1) - log_normalizer


def _checkerboard_log_prob(x: jax.Array) -> jax.Array:
    """log(1/32) on the 8 filled squares, -inf elsewhere, for x (N, 2) -> (N,).

    In board units u = x / 2, a point is inside when u is in [-2, 2)^2 and
    floor(u1) + floor(u2) is even, which is exactly the support of the sampler.
    """
    board = x / _CHECKER_SQUARE_SIDE
    cell = jnp.floor(board)
    on_board = jnp.all((board >= -2.0) & (board < 2.0), axis=-1)
    filled = jnp.mod(cell[:, 0] + cell[:, 1], 2.0) == 0.0
    log_density = -math.log(_checker_support_area())
    return jnp.where(on_board & filled, log_density, -jnp.inf).astype(x.dtype)


def _checker_support_area() -> float:
    return _CHECKER_NUM_FILLED_SQUARES * _CHECKER_SQUARE_SIDE**2


def log_prob(name: str, x: jax.Array | np.ndarray) -> jax.Array:
    """Exact log density of a toy distribution with a closed form.

    - the mixtures (`MIXTURE_NAMES`): equal-weight mixtures of isotropic Gaussians with means
      `mode_centers(name)` and standard deviation `mode_std(name)`, evaluated with logsumexp.
    - `checkerboard`: log(1/32) inside the 8 squares of side 2, -inf outside.

    Works on NumPy or JAX arrays and under `jax.jit` (with `name` static).

    Args:
      name: one of `DENSITY_NAMES`; other toy names raise ValueError.
      x: points, shape (N, 2).

    Returns:
      log p(x), shape (N,), a JAX array (float32 for float32 or integer input).
    """
    _check_has_density(name)
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[-1] != 2:
        raise ValueError(f"x must have shape (N, 2); got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if name == "checkerboard":
        return _checkerboard_log_prob(x)
    return _mixture_log_prob(x, mode_centers(name).astype(x.dtype), mode_std(name))


# ---------------------------------------------------------------------------------------------
# Entropies.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _monte_carlo_entropy(name: str) -> tuple[float, float]:
    """-mean log p(x) over `ENTROPY_NUM_SAMPLES` points drawn with `ENTROPY_SEED`."""
    points = sample(name, np.random.default_rng(ENTROPY_SEED), ENTROPY_NUM_SAMPLES)
    log_density = np.asarray(jax.jit(log_prob, static_argnums=0)(name, points), np.float64)
    value = -float(np.mean(log_density))
    standard_error = float(np.std(log_density, ddof=1) / np.sqrt(len(log_density)))
    return value, standard_error


def entropy(name: str) -> tuple[float, float]:
    """Differential entropy H[p] = -E_p[log p(x)] of a toy density, in nats.

    - `checkerboard`: exact, log 32 (uniform on an area of 8 squares x 4), stderr 0.0.
    - the mixtures (`MIXTURE_NAMES`): the mixture entropy has no closed form; it is estimated by
      Monte Carlo as -mean(log_prob(x_i)) over 10^6 samples drawn with the fixed seed
      `ENTROPY_SEED`, so the value is deterministic; the standard error is
      std(log_prob(x_i)) / sqrt(10^6). (For well-separated modes it approaches
      log K + log(2 pi e std^2); the mixtures here are nearly so.) Cached per process.

    Returns:
      (value, standard_error), floats; standard_error is 0.0 when the value is exact.
    """
    _check_has_density(name)
    if name == "checkerboard":
        return math.log(_checker_support_area()), 0.0
    return _monte_carlo_entropy(name)
