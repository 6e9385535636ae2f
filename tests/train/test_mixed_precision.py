"""Mixed precision (`config.compute_dtype`): bfloat16 networks, float32 state and densities."""

import importlib

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import models
from genjax.core import parallel
from genjax.flows.flow import Flow
from genjax.models.autoregressive import nade
from genjax.models.energy import dbm, dbn, rbm
from genjax.nn import precision
from genjax.train import ConfigError, Experiment
from genjax.train import config as config_lib

NUM_STEPS = 5


def _flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _product_operand_dtypes(jaxpr) -> list[tuple[str, ...]]:
    """The operand dtypes of every matrix product and convolution in a jaxpr, nested jaxprs
    (jit, shard_map, scan) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found.append(tuple(str(var.aval.dtype) for var in eqn.invars))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found.extend(_product_operand_dtypes(sub))
    return found


def _train(config, num_steps=NUM_STEPS):
    """Initial params, params after `num_steps` updates, the losses (the family's main
    metric), and the experiment."""
    experiment = Experiment(config)
    state = experiment.init_state()
    initial = jax.device_get(state.params)
    iterator = experiment.dataset.train_iterator(experiment.examples_per_step)
    losses = []
    for _ in range(num_steps):
        state, metrics = experiment.train_step(
            state, parallel.shard_batch(next(iterator), experiment.mesh)
        )
        losses.append(float(metrics[experiment.model.main_metric]))
    return initial, jax.device_get(state), losses, experiment


def _flow_log_prob(model, params, x, keys):
    del keys
    return model.flow.apply(params, x, method=Flow.log_prob)


def _pixelcnn_log_prob(model, params, x, keys):
    del keys
    return model.log_prob(params, x, jnp.zeros(x.shape[0], jnp.int32))


# The plain-dict families (energy models, NADE) evaluate with their float32 parameters; these
# densities take the parameters as the train step casts them, to check that what is computed
# from bfloat16 products (free energies, bounds, log p) comes out float32.
def _train_params(model, params):
    return precision.cast_matrices(params, model.config.compute_dtype)


def _flat_batch(x):
    return x.reshape((x.shape[0], -1))


def _rbm_log_density(model, params, x, keys):
    del keys
    return -rbm.free_energy(_train_params(model, params), _flat_batch(x))


def _dbn_log_weights(model, params, x, keys):
    params = _train_params(model, params)
    return jax.vmap(lambda v, key: dbn.log_weights(params, key, v, 2))(_flat_batch(x), keys)


def _dbm_bound(model, params, x, keys):
    del keys
    params, v = _train_params(model, params), _flat_batch(x)
    return dbm.mean_field_bound(params, v, *dbm.mean_field(params, v, 2))


def _nade_log_prob(model, params, x, keys):
    orders = model.training_orders(keys)
    return nade.log_prob(_train_params(model, params), _flat_batch(x), orders, model.pass_method)


# The configs (config file[:variant], with `tiny` added) that test the families implementing
# bfloat16: config -> (family, the family's float32 log density of a batch
# (model, params, x, keys) -> (..., B), or None for a family without one).
CASES = {
    "vae": ("vae", lambda model, params, x, keys: model.log_weights(params, x, keys, 3)["log_w"]),
    "made": ("made", lambda model, params, x, keys: model.log_prob(params, x, 0)),
    "dcgan": ("gan", None),  # convolutions, transposed convolutions and batch norm
    "realnvp": ("flow", _flow_log_prob),  # convolutional couplings
    "glow": ("flow", _flow_log_prob),  # ActNorm, 1x1 convolutions (float32), couplings
    "maf": ("flow", _flow_log_prob),  # masked conditioners
    "pixelcnn": ("pixelcnn", _pixelcnn_log_prob),  # Gated PixelCNN
    "pixelcnn:plain": ("pixelcnn", _pixelcnn_log_prob),  # masked residual blocks
    "pixelcnn:conditional": ("pixelcnn", _pixelcnn_log_prob),  # class embedding
    "rbm": ("rbm", _rbm_log_density),  # CD-1
    "rbm:pcd": ("rbm", _rbm_log_density),  # persistent chains in the train state
    "grbm": ("rbm", _rbm_log_density),  # Gaussian visibles, learned sigma
    "dbn": ("dbn", _dbn_log_weights),  # the up-pass below the active layer
    "dbm": ("dbm", _dbm_bound),  # doubled-unit pretraining, mean field, persistent chains
    "nade": ("nade", _nade_log_prob),  # natural order
    "nade:order_agnostic": ("nade", _nade_log_prob),  # an ordering per example, input mask
}


def test_every_family_that_implements_bfloat16_is_tested_here():
    implemented = {name for name in models.names() if "bfloat16" in models.get(name).compute_dtypes}
    assert implemented == {family for family, _ in CASES.values()}


def test_planar_and_radial_flows_refuse_bfloat16_by_name():
    from configs import planar

    config = planar.get_config("tiny")
    config.compute_dtype = "bfloat16"
    with pytest.raises(ConfigError, match=r"compute_dtype='bfloat16' with .*architecture='planar'"):
        config_lib.validate(config)


# The staged families' stage lengths in these tests (both sum to their tiny configs' 20 steps):
# the NUM_STEPS Adam steps cross every stage, so the trajectories compare each stage's update
# (the first step's gradient is the first stage's; the jaxpr holds every stage's branch).
STAGE_STEPS = {"dbn": (2, 18), "dbm": (1, 1, 18)}

# The VAE (the case) and MADE run by default; the rest, longer to compile, in the slow
# set (CI runs both).
FAST_CASES = ("vae", "made")


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(case, marks=() if case in FAST_CASES else pytest.mark.slow)
        for case in sorted(CASES)
    ],
)
def runs(request):
    """Per dtype: NUM_STEPS steps of the tiny config as it is (Adam), and the first step's
    gradient, read off one SGD step of learning rate 1 from the same initial parameters."""
    module, _, variant = request.param.partition(":")
    config_module = importlib.import_module(f"configs.{module}")
    results = {"case": request.param}
    for dtype in ("float32", "bfloat16"):
        config = config_module.get_config(",".join(filter(None, (variant, "tiny"))))
        config.compute_dtype = dtype
        if request.param in STAGE_STEPS:
            config.model_config.stage_steps = STAGE_STEPS[request.param]
        results[dtype] = _train(config)
        config.optimizer, config.learning_rate = "sgd", 1.0
        initial, state, _, _ = _train(config, num_steps=1)
        results[f"{dtype}_gradient"] = _flat(initial) - _flat(state.params)
    return results


def test_bfloat16_training_stays_finite_and_close_to_float32(runs):
    _, _, losses32, _ = runs["float32"]
    _, _, losses16, _ = runs["bfloat16"]
    assert np.all(np.isfinite(losses16))
    # bfloat16 keeps 8 significant bits (relative spacing 2^-8 = 0.4%); the loss is a float32
    # sum of float32 densities of bfloat16 network outputs, so the first step's loss agrees to
    # 2e-4 at most (measured: the plain PixelCNN's, 1.7e-4), and the trajectories part slowly
    # (0.1% after 5 steps where the loss falls fastest, the toy flow's). A density summed in
    # bfloat16, or a term lost, is off by far more.
    np.testing.assert_allclose(losses16[0], losses32[0], rtol=5e-4)
    np.testing.assert_allclose(losses16, losses32, rtol=5e-3)


def test_bfloat16_gradients_are_close_to_float32(runs):
    # The first step's gradient, all parameters together: bfloat16's rounding through the
    # forward and backward passes moves it by 0.1-2% (measured; the most, 2.1%, for the Gated
    # PixelCNN). Biases are added in float32 (genjax.nn.precision): summed over every
    # position in bfloat16, their gradients moved the convolutional networks' by 8-15%.
    # (Compared as gradients,
    # not as Adam's parameters after several steps: Adam's g / sqrt(v) turns round-off in a
    # parameter with no true gradient, such as a bias just before batch norm, into steps of
    # the full learning rate.)
    gradient32, gradient16 = runs["float32_gradient"], runs["bfloat16_gradient"]
    assert np.linalg.norm(gradient32) > 0
    error = np.linalg.norm(gradient16 - gradient32) / np.linalg.norm(gradient32)
    assert error < 0.05, error


def test_parameters_and_optimizer_state_stay_float32(runs):
    _, state16, _, _ = runs["bfloat16"]
    for part in (state16.params, state16.opt_state):  # Adam: first and second moments
        floats = [leaf for leaf in jax.tree.leaves(part) if np.issubdtype(leaf.dtype, np.floating)]
        assert floats and {leaf.dtype for leaf in floats} == {np.dtype(np.float32)}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_networks_compute_in_the_chosen_dtype_and_densities_in_float32(runs, dtype):
    initial, _, _, experiment = runs[dtype]
    model = experiment.model
    batch = next(experiment.dataset.train_iterator(experiment.examples_per_step))
    # Every matrix product and convolution of the whole train step (forward and backward
    # passes, every network of the family) runs in the chosen dtype.
    placed = parallel.shard_batch(batch, experiment.mesh)
    jaxpr = jax.make_jaxpr(experiment.train_step)(experiment.init_state(), placed)
    products = set(_product_operand_dtypes(jaxpr.jaxpr))
    if runs["case"] == "glow" and dtype == "bfloat16":
        # Glow's 1x1 convolutions are bijectors, not networks: float32, like every log-det.
        products.discard(("float32", "float32"))
    assert products == {(dtype, dtype)}
    metrics = jax.eval_shape(experiment.train_step, experiment.init_state(), placed)[1]
    assert {value.dtype for value in metrics.values()} == {np.dtype(np.float32)}
    density = CASES[runs["case"]][1]
    if density is not None:
        keys = jax.random.split(jax.random.key(0), 8)
        log_p = jax.eval_shape(lambda p: density(model, p, batch["x"][:8], keys), initial)
        assert log_p.dtype == np.float32


def test_unknown_or_unsupported_compute_dtype_is_refused_by_name(monkeypatch):
    from configs import rbm, vae

    config = vae.get_config("tiny")
    config.compute_dtype = "float16"
    with pytest.raises(ConfigError, match=r"config\.compute_dtype='float16'.*'bfloat16'"):
        config_lib.validate(config)
    # Every family implements bfloat16 now (planar and radial flows refuse it, above); a family
    # that does not list it is refused by name.
    monkeypatch.setattr(models.get("rbm"), "compute_dtypes", ("float32",))
    config = rbm.get_config("tiny")
    config.compute_dtype = "bfloat16"
    with pytest.raises(ConfigError, match=r"compute_dtype='bfloat16'.*config\.model='rbm'"):
        config_lib.validate(config)
