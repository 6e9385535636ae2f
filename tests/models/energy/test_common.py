"""The energy families' shared training defaults (Hinton 2010): weight decay on the weights
only, visible biases initialised from the training data's means; and first-layer filter images."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import dbm as dbm_configs
from configs import dbn as dbn_configs
from configs import grbm as grbm_configs
from configs import rbm as rbm_configs
from genjax.evaluate import plots
from genjax.models.energy import common
from genjax.train import ConfigError, Experiment, load_state, train_and_evaluate, validate


def _with_decay(config, optimizer, weight_decay_biases):
    config.optimizer, config.learning_rate, config.lr_schedule = optimizer, 0.1, "constant"
    config.weight_decay = 0.5
    config.model_config.weight_decay_biases = weight_decay_biases
    return config


def _zero_gradient_update(tx, params):
    """The optimizer's update for a zero loss gradient: weight decay's move alone."""
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    return updates


def _decay_step(optimizer, value):
    """The move of a parameter `value` that decay reaches, for a zero loss gradient, at rate 0.1
    and weight decay 0.5: SGD on the L2 gradient 0.5 value, or AdamW's decoupled -0.1 * 0.5
    value (Adam's own step on a zero gradient is 0)."""
    return -0.1 * 0.5 * np.asarray(value)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("config_name", ["rbm", "grbm"])
def test_rbm_weight_decay_reaches_the_weights_only_by_default(config_name, optimizer):
    config = (rbm_configs if config_name == "rbm" else grbm_configs).get_config("tiny")
    experiment = Experiment(_with_decay(config, optimizer, weight_decay_biases=False))
    params = experiment.init_state().params
    assert set(params) == (
        {"W", "b_v", "b_h", "log_sigma"} if config_name == "grbm" else {"W", "b_v", "b_h"}
    )
    params = jax.tree.map(lambda leaf: jnp.full_like(leaf, 2.0), params)
    updates = _zero_gradient_update(experiment.model.tx, params)
    np.testing.assert_allclose(updates["W"], _decay_step(optimizer, params["W"]), rtol=1e-6)
    for name in set(params) - {"W"}:  # biases and log sigma stay
        np.testing.assert_array_equal(updates[name], 0.0)
    # weight_decay_biases=True decays every parameter, as before.
    experiment = Experiment(_with_decay(config, optimizer, weight_decay_biases=True))
    updates = _zero_gradient_update(experiment.model.tx, params)
    for name in params:
        np.testing.assert_allclose(updates[name], _decay_step(optimizer, params[name]), rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("family", ["dbn", "dbm"])
def test_staged_weight_decay_reaches_the_stage_weights_only(family, optimizer):
    """Within each stage (an optax.multi_transform over the stage's keys), decay reaches the
    stage's weight matrices and nothing else."""
    config = (dbn_configs if family == "dbn" else dbm_configs).get_config("tiny")
    experiment = Experiment(_with_decay(config, optimizer, weight_decay_biases=False))
    params = jax.tree.map(lambda leaf: jnp.full_like(leaf, 2.0), experiment.init_state().params)
    for stage, tx in zip(experiment.model.stages, experiment.model.tx, strict=True):
        updates = _zero_gradient_update(tx, params)
        paths = jax.tree_util.tree_flatten_with_path(updates)[0]
        for path, update in paths:
            trained = path[0].key in stage.trained
            is_weight = str(path[-1].key).startswith("W")
            expected = -0.1 * 0.5 * 2.0 if trained and is_weight else 0.0
            np.testing.assert_allclose(update, expected, rtol=1e-6, err_msg=str(path))
        assert any(str(path[-1].key).startswith("W") for path, _ in paths)


def test_weights_only_mask():
    params = {
        "layer_0": {"W": jnp.ones((3, 2)), "b_v": jnp.ones(3), "b_h": jnp.ones(2)},
        "W1": jnp.ones((2, 2)),
        "b_h1": jnp.ones(2),
        "log_sigma": jnp.ones(3),
    }
    assert common.weights_only(params) == {
        "layer_0": {"W": True, "b_v": False, "b_h": False},
        "W1": True,
        "b_h1": False,
        "log_sigma": False,
    }


def test_visible_bias_from_data():
    x = jnp.asarray([[[0.0, 1.0], [1.0, 0.5]], [[0.0, 1.0], [0.0, 0.5]]])  # (2, 2, 2)
    mean = np.array([0.0, 1.0, 0.5, 0.5])
    smoothed = (mean * 1000 + 0.5) / 1001  # never 0 or 1
    np.testing.assert_allclose(
        common.visible_bias_from_data(x), np.log(smoothed / (1 - smoothed)), atol=2e-4
    )
    np.testing.assert_allclose(common.visible_bias_from_data(x, gaussian=True), mean)


def _np_logit_of_smoothed_mean(x):
    p = (np.asarray(x, np.float64).reshape(len(x), -1).mean(0) * 1000 + 0.5) / 1001
    return np.log(p) - np.log1p(-p)


@pytest.mark.parametrize("config_name", ["rbm", "grbm", "dbn", "dbm"])
def test_trainer_initialises_visible_biases_from_the_training_data(config_name):
    modules = {"rbm": rbm_configs, "grbm": grbm_configs, "dbn": dbn_configs, "dbm": dbm_configs}
    config = modules[config_name].get_config("tiny")
    assert config.model_config.visible_bias_init == "data_mean"  # the default
    experiment = Experiment(config)
    params = experiment.init_state().params
    train_x = experiment.dataset.init_batch(common.VISIBLE_MEAN_EXAMPLES)
    assert len(train_x) == min(common.VISIBLE_MEAN_EXAMPLES, experiment.spec.num_train)
    b_v = {"dbn": lambda p: p["layer_0"]["b_v"]}.get(config_name, lambda p: p["b_v"])(params)
    if config_name == "grbm":  # Gaussian visibles: the data's mean itself
        expected = np.asarray(train_x, np.float64).reshape(len(train_x), -1).mean(0)
    else:
        expected = _np_logit_of_smoothed_mean(train_x)
    np.testing.assert_allclose(b_v, expected, rtol=1e-4, atol=1e-5)
    if config_name != "grbm":
        assert np.std(expected) > 1.0  # the pixels' means do differ

    config.model_config.visible_bias_init = "zeros"
    params = Experiment(config).init_state().params
    np.testing.assert_array_equal(
        {"dbn": lambda p: p["layer_0"]["b_v"]}.get(config_name, lambda p: p["b_v"])(params), 0.0
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "visible_bias_init",
            "logit",
            r"config.model_config.visible_bias_init='logit'; allowed: \('data_mean', 'zeros'\)",
        ),
        (
            "weight_decay_biases",
            None,  # a typed ConfigDict field takes only None as a value of another type
            r"config.model_config.weight_decay_biases=None; allowed: \(True, False\)",
        ),
    ],
)
@pytest.mark.parametrize("module", [rbm_configs, dbn_configs, dbm_configs])
def test_invalid_shared_fields_are_named(tmp_path, module, field, value, message):
    config = module.get_config("tiny")
    config.model_config[field] = value
    with pytest.raises(ConfigError, match=message):
        validate(config, str(tmp_path))


def read_filter_tiles(path, num_filters, tile_shape):
    """The tiles of a `plots.save_filter_grid` PNG, row by row: (num_filters, *tile_shape) in
    0..255, cut out of the grid of ceil(sqrt(N)) columns separated by 1 white pixel."""
    pixels = np.asarray(Image.open(path))
    height, width = tile_shape
    num_cols = int(np.ceil(np.sqrt(num_filters)))
    num_rows = int(np.ceil(num_filters / num_cols))
    assert pixels.shape == (num_rows * (height + 1) - 1, num_cols * (width + 1) - 1)
    tiles = []
    for index in range(num_filters):
        row, col = divmod(index, num_cols)
        top, left = row * (height + 1), col * (width + 1)
        tiles.append(pixels[top : top + height, left : left + width])
    return np.stack(tiles)


def assert_filters_png_shows(path, weights, image_shape):
    """filters.png holds, tile j, hidden unit j's incoming weights weights[:, j] (V,) reshaped
    to the image and scaled on their own so that 0 is mid-grey and max |w| is black or white."""
    weights = np.asarray(weights, np.float64)
    num_filters = min(weights.shape[1], 100)
    filters = weights[:, :num_filters].T.reshape((num_filters, *image_shape))
    expected = 0.5 + 0.5 * filters / np.abs(filters).max(axis=(1, 2), keepdims=True)
    tiles = read_filter_tiles(path, num_filters, image_shape)
    np.testing.assert_allclose(tiles, np.round(255 * expected), atol=1)


def test_filter_tiles_scale_each_filter_on_its_own():
    filters = np.array([[[1.0, -2.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(
        plots.filter_tiles(filters), [[[0.75, 0.0], [0.5, 0.625]], [[0.5, 0.5], [0.5, 0.5]]]
    )


def test_first_layer_filters_are_the_weight_columns_as_images():
    weights = np.arange(2 * 3 * 150, dtype=np.float32).reshape(6, 150)
    filters = common.first_layer_filters(weights, (2, 3, 1))
    assert filters.shape == (100, 2, 3, 1)  # at most 100 units
    np.testing.assert_array_equal(filters[7, :, :, 0], weights[:, 7].reshape(2, 3))
    assert common.first_layer_filters(weights, (6,)) is None  # not images


@pytest.mark.slow
def test_rbm_run_writes_its_filters(tmp_path):
    config = rbm_configs.get_config("tiny")
    config.num_steps, config.eval_every, config.checkpoint_every = 4, 4, 4
    train_and_evaluate(config, str(tmp_path))
    weights = load_state(str(tmp_path))["params"]["W"]  # (64, 16)
    assert_filters_png_shows(os.path.join(tmp_path, "filters.png"), weights, (8, 8))


@pytest.mark.slow
def test_toy_grbm_run_writes_no_filters(tmp_path):
    config = grbm_configs.get_config("tiny")
    config.num_steps, config.eval_every, config.checkpoint_every = 4, 4, 4
    train_and_evaluate(config, str(tmp_path))
    assert os.path.exists(os.path.join(tmp_path, "eval.json"))
    assert not os.path.exists(os.path.join(tmp_path, "filters.png"))
