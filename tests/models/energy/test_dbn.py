"""Deep belief nets and staged training: the bound against exhaustive enumeration in NumPy, the
1-layer reduction to an RBM, and greedy stages that leave every other layer untouched."""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from configs import dbn as dbn_configs
from genjax.data.pipeline import DataSpec
from genjax.models import staged
from genjax.models.energy import dbn, rbm
from genjax.train import ConfigError, Experiment, load_state, train_and_evaluate, validate

SPEC = DataSpec("test", (3, 4, 1), 10, 10, None, 2, True, (0.0, 1.0))


def _random_dbn(key, sizes, scale=1.0):
    """A DBN over sizes[0] visibles with weights and biases ~ N(0, scale^2)."""
    params = dbn.init_params(key, sizes[0], sizes[1:])
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [
        scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(tree, leaves)


def _bits(num_units):
    """Every binary vector of length num_units, (2**num_units, num_units) float64."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_units)))


def _np_layers(params):
    return [
        {name: np.asarray(value, np.float64) for name, value in params[dbn.layer_name(i)].items()}
        for i in range(len(params))
    ]


def _np_log_bernoulli(x, logits):
    return np.sum(x * logits - np.logaddexp(0.0, logits), axis=-1)


def _np_log_joint(layers, v, latents):
    """log p(v, x_1, .., x_{L-1}) of the DBN, in float64, from the definitions."""
    top = layers[-1]

    def neg_free_energy(x):
        return x @ top["b_v"] + np.sum(np.logaddexp(0.0, top["b_h"] + x @ top["W"]), -1)

    log_z_top = logsumexp(neg_free_energy(_bits(top["W"].shape[0])))
    states = [v, *latents]
    log_joint = neg_free_energy(states[-1]) - log_z_top
    for layer, below, above in zip(layers[:-1], states[:-1], states[1:], strict=True):
        log_joint = log_joint + _np_log_bernoulli(below, layer["b_v"] + above @ layer["W"].T)
    return log_joint


def _np_log_q(layers, v, latents):
    states = [v, *latents]
    return sum(
        _np_log_bernoulli(above, layer["b_h"] + below @ layer["W"])
        for layer, below, above in zip(layers[:-1], states[:-1], states[1:], strict=True)
    )


def _np_exact(params, v):
    """(log p(v), the variational bound E_q[log p(v, x) - log q(x | v)]) by enumeration."""
    layers = _np_layers(params)
    latent_sizes = [layer["W"].shape[0] for layer in layers[1:]]
    log_joints, log_qs = [], []
    for latents in itertools.product(*[_bits(n) for n in latent_sizes]):
        latents = [np.broadcast_to(x, (len(v), len(x))) for x in latents]
        log_joints.append(_np_log_joint(layers, v, latents))
        log_qs.append(_np_log_q(layers, v, latents))
    log_joints, log_qs = np.stack(log_joints), np.stack(log_qs)  # (configurations, N)
    bound = np.sum(np.exp(log_qs) * (log_joints - log_qs), axis=0)
    return logsumexp(log_joints, axis=0), bound


@pytest.mark.parametrize("sizes", [(4, 3, 3), (4, 3, 3, 2)])
def test_bound_is_below_the_exact_log_likelihood(sizes):
    params = _random_dbn(jax.random.key(0), sizes)
    v = _bits(sizes[0])  # every visible vector
    log_p, exact_bound = _np_exact(params, v)
    np.testing.assert_allclose(logsumexp(log_p), 0.0, atol=1e-10)  # p(v) normalizes
    assert np.all(exact_bound <= log_p + 1e-10)
    assert np.max(log_p - exact_bound) > 1e-2  # a real gap: the test can tell them apart
    # The Monte Carlo bound is unbiased for the exact one.
    num_samples = 4_000
    log_z_top = rbm.log_partition_exact(dbn.top_layer(params))
    keys = jax.random.split(jax.random.key(1), len(v))
    log_w = jax.vmap(lambda x, key: dbn.log_weights(params, key, x, num_samples))(
        jnp.asarray(v, jnp.float32), keys
    )
    log_w = np.asarray(log_w, np.float64) - float(log_z_top)
    stderr = log_w.std(axis=1) / np.sqrt(num_samples)
    assert np.all(np.abs(log_w.mean(axis=1) - exact_bound) < 5 * stderr + 1e-4)
    # The importance-weighted estimate from the same samples is tighter (Jensen).
    importance_weighted = logsumexp(log_w, axis=1) - np.log(num_samples)
    assert np.all(importance_weighted >= log_w.mean(axis=1))


def test_one_layer_dbn_is_an_rbm():
    params = _random_dbn(jax.random.key(2), (6, 4))
    v = jnp.asarray(_bits(6), jnp.float32)
    log_w = jax.vmap(lambda x, key: dbn.log_weights(params, key, x, 3))(
        v, jax.random.split(jax.random.key(3), len(v))
    )
    free_energy = rbm.free_energy(params["layer_0"], v)
    # Equal up to float32 rounding: the vmapped and the batched free energy may sum in another
    # order (1 ulp apart on some CPUs); every sample's weight is the same number.
    np.testing.assert_allclose(
        log_w, jnp.broadcast_to(-free_energy[:, None], log_w.shape), rtol=1e-6, atol=0
    )
    np.testing.assert_array_equal(log_w, jnp.broadcast_to(log_w[:, :1], log_w.shape))

    # Through the family: evaluation constants, per-example outputs and the summary.
    model = dbn.DBN(_config(hidden_sizes=(5,), stage_steps=(20,)), SPEC)
    state = model.create_state(jax.random.key(0), jnp.zeros((1, 3, 4, 1)))
    state = state.replace(params=_random_dbn(jax.random.key(4), (12, 5)))
    constants = jax.device_get(model.evaluation_constants(state, jax.random.key(5), True))
    assert constants["exact"]
    x = jax.random.bernoulli(jax.random.key(6), 0.5, (7, 3, 4, 1)).astype(jnp.float32)
    batch = {"x": x, "log_det": jnp.zeros(7)}
    outputs = model.eval_step(state, batch, jax.random.split(jax.random.key(7), 7), True)
    summary = model.summarize(jax.device_get(outputs), True, constants)
    layer = state.params["layer_0"]
    expected = rbm.log_likelihood(layer, x.reshape(7, -1), rbm.log_partition_exact(layer))
    np.testing.assert_allclose(summary["test_nll_nats"], -np.mean(expected), rtol=1e-6)
    assert summary["importance_weighted_nll"] == pytest.approx(summary["test_nll_nats"], 1e-6)
    assert summary["nll_estimator"] == "dbn-variational-bound (exact log Z)"


def test_layer_input_is_the_probability_up_pass_without_gradient():
    params = _random_dbn(jax.random.key(8), (5, 4, 3, 2))
    v = jax.random.bernoulli(jax.random.key(9), 0.5, (6, 5)).astype(jnp.float32)
    layers = _np_layers(params)
    x = np.asarray(v, np.float64)
    for layer in layers[:2]:
        x = 1.0 / (1.0 + np.exp(-(layer["b_h"] + x @ layer["W"])))
    np.testing.assert_allclose(dbn.layer_input(params, v, 2), x, rtol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(dbn.layer_input(p, v, 2)))(params)
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads))


def test_sample_shapes_and_range():
    for sizes in [(5, 4), (5, 4, 3), (5, 4, 3, 2)]:
        samples = dbn.sample(_random_dbn(jax.random.key(10), sizes), jax.random.key(11), 7, 5)
        assert samples.shape == (7, 5)
        assert np.all((samples > 0) & (samples < 1))  # p(v = 1 | x_1), not bits


def _config(**model_fields):
    config = dbn_configs.get_config("tiny")
    for name, value in model_fields.items():
        config.model_config[name] = value
    config.num_steps = sum(config.model_config.stage_steps)
    return config


def test_stage_index_and_starts():
    assert staged.stage_starts((3, 2, 4)) == (0, 3, 5)
    stages = [int(staged.stage_index(jnp.int32(step), (3, 2, 4))) for step in range(11)]
    assert stages == [0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(
    "stage_steps, num_steps, message",
    [
        ((10,), 10, r"stage_steps=\(10,\) must hold 2 positive integers.*'layer_0', 'layer_1'"),
        ((10, 0), 10, r"stage_steps=\(10, 0\) must hold 2 positive integers"),
        ((10, 10), 25, r"stage_steps=\(10, 10\) sums to 20, but config.num_steps=25"),
    ],
)
def test_invalid_stage_steps_are_named(stage_steps, num_steps, message):
    config = _config()
    config.model_config.stage_steps = stage_steps
    config.num_steps = num_steps
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_stage_optimizer_trains_only_its_keys_with_a_stage_long_schedule():
    config = _config()
    config.optimizer, config.lr_schedule, config.learning_rate = "sgd", "cosine", 0.1
    tx = staged.stage_optimizer(config, staged.Stage("s", ("a",)), num_steps=4)
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    grads = {"a": jnp.ones(3), "b": jnp.ones(2)}
    opt_state = tx.init(params)
    for step in range(4):
        updates, opt_state = tx.update(grads, opt_state, params)
        expected = -0.1 * 0.5 * (1 + np.cos(np.pi * step / 4))  # cosine over the stage
        np.testing.assert_allclose(updates["a"], expected, rtol=1e-6)
        np.testing.assert_array_equal(updates["b"], 0.0)
    # AdamW's moments and weight decay exist for the stage's keys only.
    config.optimizer, config.weight_decay = "adamw", 0.5
    tx = staged.stage_optimizer(config, staged.Stage("s", ("a",)), num_steps=4)
    updates, opt_state = tx.update(jax.tree.map(jnp.zeros_like, grads), tx.init(params), params)
    assert np.all(np.asarray(updates["a"]) < 0)  # decay alone moves "a"
    np.testing.assert_array_equal(updates["b"], 0.0)
    moment_shapes = [leaf.shape for leaf in jax.tree.leaves(opt_state) if leaf.ndim]
    assert moment_shapes == [(3,), (3,)]  # mu and nu of "a"


def _counts(opt_state):
    """{stage: optimizer step counts} from a saved opt_state."""
    counts = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if jax.tree_util.keystr(path).endswith("['count']"):
            counts.setdefault(path[0].idx, set()).add(int(leaf))
    return counts


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory):
    """The tiny DBN trained end to end, with a checkpoint at the end of stage 0."""
    workdir = str(tmp_path_factory.mktemp("dbn"))
    config = dbn_configs.get_config("tiny")
    stage_0_end = config.model_config.stage_steps[0]
    assert config.checkpoint_every == stage_0_end and config.keep_checkpoints >= 2
    initial = jax.device_get(Experiment(config).init_state())
    results = train_and_evaluate(config, workdir)
    after_stage_0 = load_state(workdir, step=stage_0_end)
    return config, workdir, initial, after_stage_0, load_state(workdir), results


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _moved(a, b):
    return max(
        np.abs(x - y).max() for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_stages_train_one_layer_each(staged_run):
    config, _, initial, after_stage_0, final, _ = staged_run
    stage_0, stage_1 = config.model_config.stage_steps
    assert after_stage_0["step"] == stage_0 and final["step"] == stage_0 + stage_1
    # Stage 0 moves layer 0 only; stage 1 moves layer 1 only.
    assert _moved(after_stage_0["params"]["layer_0"], initial.params["layer_0"]) > 1e-3
    _assert_equal(after_stage_0["params"]["layer_1"], initial.params["layer_1"])
    _assert_equal(final["params"]["layer_0"], after_stage_0["params"]["layer_0"])
    assert _moved(final["params"]["layer_1"], initial.params["layer_1"]) > 1e-3
    # One optimizer state per stage, each advanced only during its own stage.
    assert _counts(after_stage_0["opt_state"]) == {0: {stage_0}, 1: {0}}
    assert _counts(final["opt_state"]) == {0: {stage_0}, 1: {stage_1}}
    _assert_equal(final["opt_state"][0], after_stage_0["opt_state"][0])
    # The top RBM's input means (its AIS base rates) accumulate during its stage only.
    assert final["extras"]["num_batches"] == stage_1


def test_staged_run_outputs(staged_run):
    config, workdir, _, _, _, results = staged_run
    with open(os.path.join(workdir, "eval.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    assert saved["nll_estimator"] == "dbn-variational-bound (exact log Z)"
    assert saved["num_test_examples"] == 355
    assert 0 < saved["test_nll_nats"] < 64 * np.log(2)  # better than coin flips
    assert saved["importance_weighted_nll"] <= saved["test_nll_nats"]
    assert {"recon_error_layer_0", "recon_error_layer_1"} <= set(saved)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    stages = {m["step"]: m["train/stage"] for m in lines if "train/stage" in m}
    stage_0 = config.model_config.stage_steps[0]
    assert stages == {step: float(step > stage_0) for step in stages}
    assert set(stages.values()) == {0.0, 1.0}
    assert any("eval/nll_bound" in m for m in lines)


def test_staged_run_writes_the_bottom_layer_filters(staged_run):
    from tests.models.energy.test_common import assert_filters_png_shows

    _, workdir, _, _, final, _ = staged_run
    weights = final["params"]["layer_0"]["W"]  # (64, 12)
    assert_filters_png_shows(os.path.join(workdir, "filters.png"), weights, (8, 8))
