"""Sparse coding: ISTA and FISTA against scikit-learn's lasso, the objective and the soft
threshold against NumPy, the projected dictionary step against a NumPy transcription, patches,
evaluation, sampling, and refusals by name."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from sklearn.decomposition import sparse_encode
from sklearn.linear_model import Lasso

from configs import sparse_coding as sparse_coding_configs
from genjax.core import parallel
from genjax.core.state import TrainState
from genjax.data import DataSpec, load_dataset
from genjax.models import sparse_coding
from genjax.train import ConfigError, Experiment, train_and_evaluate, validate


def _unit_dictionary(rng, num_atoms, patch_dim):
    atoms = rng.normal(size=(num_atoms, patch_dim))
    return atoms / np.linalg.norm(atoms, axis=1, keepdims=True)


def _lasso_problem(seed=0, num_atoms=32, patch_dim=16, num_patches=12):
    """A random 2x overcomplete unit-norm dictionary (K, P) and patches (N, P), float64."""
    rng = np.random.default_rng(seed)
    return _unit_dictionary(rng, num_atoms, patch_dim), rng.normal(size=(num_patches, patch_dim))


def _numpy_objective(codes, dictionary, x, penalty):
    residual = x - codes @ dictionary
    return 0.5 * np.sum(residual**2, axis=1) + penalty * np.sum(np.abs(codes), axis=1)


def test_soft_threshold_and_the_lasso_objective_match_numpy():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(5, 7)).astype(np.float32)
    got = np.asarray(sparse_coding.soft_threshold(jnp.asarray(values), 0.4))
    expected = np.where(values > 0.4, values - 0.4, np.where(values < -0.4, values + 0.4, 0.0))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.all((got == 0) == (np.abs(values) <= 0.4))  # exact zeros inside the threshold
    dictionary, x = _lasso_problem(seed=2)
    codes = rng.laplace(size=(x.shape[0], dictionary.shape[0])) * (rng.random((12, 32)) < 0.3)
    with jax.enable_x64(True):
        got = sparse_coding.lasso_objective(
            jnp.asarray(codes), jnp.asarray(dictionary), jnp.asarray(x), 0.7
        )
        lipschitz = float(sparse_coding.lipschitz_constant(jnp.asarray(dictionary)))
    np.testing.assert_allclose(got, _numpy_objective(codes, dictionary, x, 0.7), rtol=1e-12)
    np.testing.assert_allclose(lipschitz, np.linalg.norm(dictionary, 2) ** 2, rtol=1e-12)


@pytest.mark.parametrize("solver", sparse_coding.INFERENCE_METHODS)
def test_codes_equal_scikit_learns_lasso_on_the_same_dictionary_and_penalty(solver):
    """3,000 ISTA or FISTA iterations against scikit-learn's coordinate-descent lasso on one
    random 2x overcomplete unit-norm dictionary (K=32 atoms, P=16) and 12 Gaussian patches:

    - `Lasso(alpha=penalty / P, fit_intercept=False, tol=1e-14)`: every code to 1e-9 in
      float64 (measured: 1e-13), the same support, the same objective to 1e-12;
    - `sparse_encode(algorithm='lasso_cd', alpha=penalty)`, the dictionary learner's own
      encoder, which stops at its duality-gap tolerance 1e-8: to 1e-6 (measured: 1.3e-7);
    - in float32, genjax's default, to 2e-5 (measured: 5.5e-6).

    Penalties 0.5 and 1.0 leave 16-32% of the codes active; at smaller ones (0.2: 45%, 14
    atoms for 16 pixels) the active atoms are nearly collinear and ISTA needs far more
    iterations (3,000 reach 2e-2), which is why the family defaults to FISTA.
    """
    dictionary, x = _lasso_problem()
    patch_dim = dictionary.shape[1]
    solve = sparse_coding.SOLVERS[solver]
    for penalty in (0.5, 1.0):
        reference = np.stack(
            [
                Lasso(alpha=penalty / patch_dim, fit_intercept=False, tol=1e-14, max_iter=10**6)
                .fit(dictionary.T, patch)
                .coef_
                for patch in x
            ]
        )
        encoded = sparse_encode(x, dictionary, algorithm="lasso_cd", alpha=penalty, max_iter=10**5)
        with jax.enable_x64(True):
            codes = np.asarray(solve(jnp.asarray(dictionary), jnp.asarray(x), penalty, 3000))
        assert codes.dtype == np.float64
        np.testing.assert_allclose(codes, reference, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(codes != 0, reference != 0)
        np.testing.assert_allclose(
            _numpy_objective(codes, dictionary, x, penalty),
            _numpy_objective(reference, dictionary, x, penalty),
            rtol=1e-12,
        )
        np.testing.assert_allclose(codes, encoded, rtol=0, atol=1e-6)
        codes32 = solve(
            jnp.asarray(dictionary, jnp.float32), jnp.asarray(x, jnp.float32), penalty, 3000
        )
        np.testing.assert_allclose(np.asarray(codes32), reference, rtol=0, atol=2e-5)


def test_fista_reaches_a_lower_objective_than_ista_in_the_same_iterations():
    """After 30 iterations from zero, FISTA's objective is below ISTA's on every patch; both
    are above the optimum (scikit-learn's lasso) and below E(0)."""
    dictionary, x = _lasso_problem(seed=3)
    penalty = 0.3
    reference = sparse_encode(x, dictionary, algorithm="lasso_cd", alpha=penalty, max_iter=10**5)
    optimum = _numpy_objective(reference, dictionary, x, penalty)
    with jax.enable_x64(True):
        objectives = {
            solver: _numpy_objective(
                np.asarray(solve(jnp.asarray(dictionary), jnp.asarray(x), penalty, 30)),
                dictionary,
                x,
                penalty,
            )
            for solver, solve in sparse_coding.SOLVERS.items()
        }
    assert np.all(objectives["fista"] < objectives["ista"])
    for objective in objectives.values():
        assert np.all(objective >= optimum - 1e-9)
        assert np.all(objective < 0.5 * np.sum(x**2, axis=1))


def test_the_dictionary_step_is_a_gradient_step_then_unit_norm_atoms():
    """dE/dD = -(1/N) a^T (x - a D) and one projected step, against NumPy."""
    rng = np.random.default_rng(4)
    dictionary = _unit_dictionary(rng, 12, 9)
    codes = rng.laplace(size=(30, 12)) * (rng.random((30, 12)) < 0.4)
    x = rng.normal(size=(30, 9))
    gradient = -(codes.T @ (x - codes @ dictionary)) / len(x)
    moved = dictionary - 0.05 * gradient
    expected = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    with jax.enable_x64(True):
        args = (jnp.asarray(dictionary), jnp.asarray(codes), jnp.asarray(x))
        got_gradient = np.asarray(sparse_coding.dictionary_gradient(*args))
        got = np.asarray(sparse_coding.projected_gradient_step(*args, 0.05))
    np.testing.assert_allclose(got_gradient, gradient, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-12)


@pytest.mark.slow  # 4 s: compiles the whole train step
def test_a_train_step_codes_patches_then_takes_the_projected_sgd_step():
    """The family's step with `optimizer='sgd'` at a constant rate: FISTA codes of each
    example's patches (means removed), then `normalize_atoms(D - rate dE/dD)`, as NumPy."""
    config = sparse_coding_configs.get_config("tiny")
    config.optimizer, config.lr_schedule, config.learning_rate = "sgd", "constant", 0.5
    experiment = Experiment(config)
    state = experiment.init_state()
    dictionary = np.asarray(state.params["dictionary"], np.float64)
    step_key = jax.random.fold_in(state.key, state.step)
    batch = next(experiment.dataset.train_iterator(experiment.examples_per_step))
    new_state, metrics = experiment.train_step(state, parallel.shard_batch(batch, experiment.mesh))
    mc = config.model_config
    keys = jax.vmap(lambda position: jax.random.fold_in(step_key, position))(
        jnp.arange(config.batch_size)
    )
    patches = sparse_coding.example_patches(keys, jnp.asarray(batch["x"]), 4, mc.patches_per_image)
    patches = np.asarray(patches, np.float64).reshape((-1, 16))
    patches -= patches.mean(axis=1, keepdims=True)
    codes = np.asarray(
        sparse_coding.fista(
            jnp.asarray(dictionary, jnp.float32),
            jnp.asarray(patches, jnp.float32),
            mc.penalty,
            mc.inference_iterations,
        ),
        np.float64,
    )
    moved = dictionary + 0.5 * codes.T @ (patches - codes @ dictionary) / len(patches)
    expected = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    np.testing.assert_allclose(new_state.params["dictionary"], expected, atol=2e-5)
    mse = np.mean((patches - codes @ dictionary) ** 2)
    assert float(metrics["train/reconstruction_mse"]) == pytest.approx(mse, rel=1e-4)
    assert float(metrics["train/active_fraction"]) == pytest.approx(np.mean(codes != 0))
    # Samples are example-shaped; the atoms come out as patches.
    samples = experiment.model.sample(new_state, jax.random.key(2), 3)
    assert samples.shape == (3, *experiment.spec.example_shape)
    filters = experiment.model.first_layer_filters(new_state)
    np.testing.assert_array_equal(filters.reshape((32, 16)), new_state.params["dictionary"])


def test_patches_are_windows_of_their_image_fixed_by_its_key():
    rng = np.random.default_rng(5)
    images = rng.random((3, 7, 9, 2)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 3)
    patches = np.asarray(sparse_coding.example_patches(keys, images, 3, 20))
    assert patches.shape == (3, 20, 18)
    windows = [
        [
            np.asarray(images[b, r : r + 3, c : c + 3]).reshape(-1)
            for r in range(5)
            for c in range(7)
        ]
        for b in range(3)
    ]
    for b in range(3):
        for patch in patches[b]:
            assert any(np.array_equal(patch, window) for window in windows[b])
    again = sparse_coding.example_patches(keys, images, 3, 20)
    np.testing.assert_array_equal(again, patches)  # one key, one set of patches
    flat = sparse_coding.extract_patches(jax.random.key(0), images, 3, 20)
    np.testing.assert_array_equal(flat, patches.reshape((60, 18)))
    # The grid covers the image; assembling its patches gives the image back.
    assert sparse_coding.grid_positions(9, 3, 2) == (0, 2, 4, 6)
    assert sparse_coding.grid_positions(8, 3, 2) == (0, 2, 4, 5)
    grid = sparse_coding.grid_patches(images, 3, 2)
    back = sparse_coding.assemble_patches(grid, (7, 9, 2), 3, 2)
    np.testing.assert_allclose(back, images, rtol=1e-6)
    # Patches laid edge to edge (samples) undo a grid of stride p, then crop to the image.
    edge_to_edge = sparse_coding.grid_patches(images[:, :6], 3, 3).reshape((-1, 18))
    tiled = sparse_coding.tile_patches(edge_to_edge, (6, 9, 2), 3)
    np.testing.assert_array_equal(tiled, images[:, :6])
    cropped = sparse_coding.tile_patches(edge_to_edge, (5, 8, 2), 3)
    np.testing.assert_array_equal(cropped, images[:, :5, :8])
    centred, means = sparse_coding.subtract_patch_means(jnp.asarray(patches))
    np.testing.assert_allclose(centred + means, patches, atol=1e-6)
    np.testing.assert_allclose(np.asarray(centred).mean(axis=-1), 0.0, atol=1e-6)


def test_evaluation_is_reproducible_and_its_curve_agrees_with_the_penalty_it_shares():
    config = sparse_coding_configs.get_config("tiny")
    config.model_config.eval_penalties = (0.3, 0.1)
    dataset = load_dataset(config)
    model = sparse_coding.SparseCoding(config, dataset.spec)
    atoms = _unit_dictionary(np.random.default_rng(6), 32, 16).astype(np.float32)
    state = TrainState.create(
        {"dictionary": jnp.asarray(atoms)}, optax.identity(), jax.random.key(0)
    )
    batch = next(dataset.eval_batches("test", 50))
    keys = jax.random.split(jax.random.key(1), 50)
    eval_step = jax.jit(model.eval_step, static_argnums=3)
    outputs = jax.device_get(eval_step(state, batch, keys, True))
    again = jax.device_get(eval_step(state, batch, keys, True))
    for name in outputs:
        np.testing.assert_array_equal(outputs[name], again[name])
    assert outputs["reconstruction_mse"].shape == (50,)
    assert outputs["curve_mse"].shape == (50, 2)
    np.testing.assert_allclose(outputs["curve_mse"][:, 1], outputs["reconstruction_mse"], rtol=1e-6)
    summary = model.summarize(outputs, True, {})
    assert summary["sparsity_curve"][1]["penalty"] == 0.1
    assert summary["sparsity_curve"][1]["mse"] == pytest.approx(summary["test_reconstruction_mse"])
    # A larger penalty: fewer active codes, a larger error.
    assert summary["sparsity_curve"][0]["active_fraction"] < summary["test_active_fraction"]
    assert summary["sparsity_curve"][0]["mse"] > summary["test_reconstruction_mse"]


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(patch_size=0), r"patch_size=0 must be a positive integer"),
        (dict(num_atoms=-3), r"num_atoms=-3 must be a positive integer"),
        (dict(penalty=-0.1), r"penalty=-0.1 must be a non-negative number"),
        (dict(inference="lars"), r"inference='lars'; allowed: \('fista', 'ista'\)"),
        (dict(eval_penalties=()), r"eval_penalties=\(\) must be a non-empty tuple"),
        (dict(eval_penalties=(0.1, -1.0)), r"eval_penalties=\(0.1, -1.0\) must be a non-empty"),
    ],
)
def test_bad_fields_are_refused_by_name(fields, message):
    config = sparse_coding_configs.get_config("tiny")
    config.model_config.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_a_patch_larger_than_the_image_is_refused_before_anything_is_written(tmp_path):
    config = sparse_coding_configs.get_config("tiny")
    config.model_config.patch_size = 9
    workdir = tmp_path / "run"
    message = r"patch_size=9 is larger than the images of config.dataset='digits8x8' \(8 x 8\)"
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(workdir))
    assert not workdir.exists() or not any(workdir.iterdir())


def test_data_that_are_not_images_are_refused_by_name():
    config = sparse_coding_configs.get_config("tiny")
    points = DataSpec("toy2d/8gaussians", (2,), 100, 100, None, None, False, (-4.0, 4.0))
    with pytest.raises(ValueError, match=r"codes image patches; config.dataset='toy2d/8gauss"):
        sparse_coding.SparseCoding(config, points)


def test_config_fields_are_the_documented_ones():
    documented = sparse_coding.SparseCoding.__doc__
    for field in sparse_coding_configs.sparse_coding_model_config():
        assert f"      {field}:" in documented, field
    assert isinstance(sparse_coding_configs.sparse_coding_model_config(), ml_collections.ConfigDict)


@pytest.mark.slow
def test_the_tiny_config_trains_and_writes_its_curve_and_atoms(tmp_path):
    workdir = str(tmp_path / "tiny")
    train_and_evaluate(sparse_coding_configs.get_config("tiny"), workdir)
    with open(os.path.join(workdir, "eval.json")) as f:
        results = json.load(f)
    assert results["step"] == 20 and results["model"] == "sparse_coding"
    assert 0 < results["test_reconstruction_mse"] and 0 < results["test_active_fraction"] < 1
    curve = results["sparsity_curve"]
    assert [point["penalty"] for point in curve] == [0.03, 0.3]
    assert curve[0]["mse"] < curve[1]["mse"]
    assert curve[0]["active_fraction"] > curve[1]["active_fraction"]
    for name in ("filters.png", "sparsity_curve.png", "reconstructions.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
