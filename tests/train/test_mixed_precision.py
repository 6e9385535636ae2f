"""Mixed precision (`config.compute_dtype`): bfloat16 networks, float32 state and densities."""

import importlib

import jax
import jax.extend.core
import numpy as np
import pytest

from genjax import models
from genjax.train import ConfigError, Experiment, parallel
from genjax.train import config as config_lib

NUM_STEPS = 5


def _flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _dot_operand_dtypes(jaxpr) -> list[tuple[str, ...]]:
    """The operand dtypes of every matrix product in a jaxpr, nested jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(tuple(str(var.aval.dtype) for var in eqn.invars))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found.extend(_dot_operand_dtypes(sub))
    return found


def _train(config):
    """Initial params, params after NUM_STEPS updates, the losses, and the experiment."""
    experiment = Experiment(config)
    state = experiment.init_state()
    initial = jax.device_get(state.params)
    iterator = experiment.dataset.train_iterator(config.batch_size)
    losses = []
    for _ in range(NUM_STEPS):
        state, metrics = experiment.train_step(
            state, parallel.shard_batch(next(iterator), experiment.mesh)
        )
        losses.append(float(metrics["train/loss"]))
    return initial, jax.device_get(state), losses, experiment


# The families that implement bfloat16, their tiny configs, and each one's float32 log density
# of a batch (model, params, x, keys) -> (..., B).
FAMILIES = {
    "vae": (
        "vae",
        lambda model, params, x, keys: model.log_weights(params, x, keys, 3)["log_w"],
    ),
    "made": ("made", lambda model, params, x, keys: model.log_prob(params, x, 0)),
}


def test_every_family_that_implements_bfloat16_is_tested_here():
    implemented = {name for name in models.names() if "bfloat16" in models.get(name).compute_dtypes}
    assert implemented == set(FAMILIES)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def runs(request):
    config_module = importlib.import_module(f"configs.{FAMILIES[request.param][0]}")
    results = {"family": request.param}
    for dtype in ("float32", "bfloat16"):
        config = config_module.get_config("tiny")
        config.compute_dtype = dtype
        results[dtype] = _train(config)
    return results


def test_bfloat16_training_stays_finite_and_close_to_float32(runs):
    initial, state32, losses32, _ = runs["float32"]
    _, state16, losses16, _ = runs["bfloat16"]
    assert np.all(np.isfinite(losses16))
    # bfloat16 keeps 8 significant bits (relative spacing 2^-8 = 0.4%); the loss is a float32
    # sum of float32 densities of bfloat16 network outputs, so it lands much closer.
    np.testing.assert_allclose(losses16, losses32, rtol=1e-3)
    # The updates themselves agree: the bfloat16 run's distance from the float32 run is a
    # small fraction of how far both moved from the shared initial parameters.
    moved = np.linalg.norm(_flat(state32.params) - _flat(initial))
    apart = np.linalg.norm(_flat(state16.params) - _flat(state32.params))
    assert moved > 0 and apart < 0.1 * moved, (apart, moved)


def test_parameters_and_optimizer_state_stay_float32(runs):
    _, state16, _, _ = runs["bfloat16"]
    for part in (state16.params, state16.opt_state):
        floats = [leaf for leaf in jax.tree.leaves(part) if np.issubdtype(leaf.dtype, np.floating)]
        assert {leaf.dtype for leaf in floats} == {np.dtype(np.float32)}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_networks_compute_in_the_chosen_dtype_and_densities_in_float32(runs, dtype):
    initial, state, _, experiment = runs[dtype]
    model = experiment.model
    batch = next(experiment.dataset.train_iterator(8))
    keys = jax.random.split(jax.random.key(0), 8)
    jaxpr = jax.make_jaxpr(lambda params: model.loss(params, state.extras, batch, keys))(initial)
    products = _dot_operand_dtypes(jaxpr.jaxpr)
    assert products and set(products) == {(dtype, dtype)}
    density = FAMILIES[runs["family"]][1]
    log_p = jax.eval_shape(lambda params: density(model, params, batch["x"], keys), initial)
    assert log_p.dtype == np.float32


def test_unknown_or_unsupported_compute_dtype_is_refused_by_name():
    from configs import rbm, vae

    config = vae.get_config("tiny")
    config.compute_dtype = "float16"
    with pytest.raises(ConfigError, match=r"config\.compute_dtype='float16'.*'bfloat16'"):
        config_lib.validate(config)
    config = rbm.get_config("tiny")
    config.compute_dtype = "bfloat16"
    with pytest.raises(ConfigError, match=r"compute_dtype='bfloat16'.*config\.model='rbm'"):
        config_lib.validate(config)
