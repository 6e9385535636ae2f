"""Autoencoders: the DAE chain's transition against its definition, walkback, the stacked
stages, the sparsity penalty in the loss, and bad input refused by name."""

import itertools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import autoencoder as autoencoder_configs
from genjax.data.pipeline import DataSpec
from genjax.models import autoencoder
from genjax.objectives import autoencoding
from genjax.train import ConfigError, train_and_evaluate, validate

BINARY_3 = DataSpec("test", (3,), 10, 10, None, 2, True, (0.0, 1.0))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _model(spec=BINARY_3, **fields):
    config = autoencoder_configs.get_config("tiny")
    config.model_config.update({"hidden_sizes": (4,), "walkback_steps": 1, **fields})
    validate(config)
    model = autoencoder.Autoencoder(config, spec)
    params, _ = model.init(jax.random.key(0), jnp.zeros((1, *spec.example_shape)))
    params = jax.tree.map(lambda w: 3.0 * w + 0.5, params)  # decisive, non-trivial outputs
    return model, params


def _numpy_mean(params, x):
    """The one-layer network in NumPy: sigmoid(sigmoid(x W1 + b1) W2 + b2)."""
    w1, b1 = (np.asarray(params["encoder_0"]["params"][k], np.float64) for k in ("kernel", "bias"))
    w2, b2 = (np.asarray(params["decoder_0"]["params"][k], np.float64) for k in ("kernel", "bias"))
    return _sigmoid(_sigmoid(x @ w1 + b1) @ w2 + b2)


def _exact_transition(params, level):
    """T[x, x'] of the DAE chain on {0, 1}^3 with salt-and-pepper corruption, enumerated:
    sum over x_tilde of C(x_tilde | x) prod_i Bernoulli(x'_i; mean_i(x_tilde))."""
    states = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    keep = np.where(states[:, None, :] == states[None, :, :], 1 - level + level / 2, level / 2)
    corruption = keep.prod(axis=2)  # (x, x_tilde)
    mean = _numpy_mean(params, states)  # (x_tilde, 3)
    draw = np.prod(
        np.where(states[None, :, :] == 1.0, mean[:, None, :], 1 - mean[:, None, :]), axis=2
    )  # (x_tilde, x')
    return states, corruption @ draw


def test_the_dae_chain_transition_is_corrupt_then_draw_from_the_reconstruction():
    level = 0.3
    model, params = _model(corruption="salt_and_pepper", corruption_level=level)
    states, exact = _exact_transition(params, level)
    np.testing.assert_allclose(exact.sum(axis=1), 1.0, rtol=1e-12)
    num_chains = 4000
    x = jnp.asarray(np.repeat(states, num_chains, axis=0), jnp.float32)
    keys = jax.random.split(jax.random.key(1), len(x))
    next_x, _ = jax.jit(model.chain_step)(params, keys, x)
    codes = np.asarray(next_x).astype(int) @ np.array([4, 2, 1])
    empirical = (
        np.stack(
            [
                np.bincount(codes[s * num_chains : (s + 1) * num_chains], minlength=8)
                for s in range(8)
            ]
        )
        / num_chains
    )
    tolerance = 4.5 * np.sqrt(exact * (1 - exact) / num_chains) + 1e-3
    assert np.all(np.abs(empirical - exact) <= tolerance), np.abs(empirical - exact).max()


def test_walkback_scores_every_chain_steps_reconstruction_against_the_clean_example():
    level = 0.4
    model, params = _model(corruption="masking", corruption_level=level, walkback_steps=3)
    x = jnp.asarray(np.random.default_rng(0).integers(2, size=(5, 3)), jnp.float32)
    keys = jax.random.split(jax.random.key(2), 5)
    loss, metrics = jax.jit(model.end_to_end_loss)(params, x, keys)
    # the same chain by hand: step t corrupts x_t with the example's fold_in(key, t) keys
    state, nlls = np.asarray(x, np.float64), []
    for step in range(3):
        pairs = [jax.random.split(jax.random.fold_in(k, step)) for k in keys]
        corrupted = np.stack(
            [
                np.asarray(
                    autoencoding.corrupt(p[0], jnp.asarray(s, jnp.float32), "masking", level)
                )
                for p, s in zip(pairs, state, strict=True)
            ]
        )
        mean = _numpy_mean(params, corrupted)
        x64 = np.asarray(x, np.float64)
        nlls.append(-np.mean(np.sum(x64 * np.log(mean) + (1 - x64) * np.log(1 - mean), axis=1)))
        state = np.stack(
            [np.asarray(jax.random.bernoulli(p[1], m)) for p, m in zip(pairs, mean, strict=True)]
        ).astype(np.float64)
    assert float(metrics["train/reconstruction_nll"]) == pytest.approx(np.mean(nlls), rel=1e-5)
    assert float(loss) == pytest.approx(np.mean(nlls), rel=1e-5)


def test_the_kl_sparsity_penalty_enters_the_loss_with_its_weight():
    model, params = _model(corruption="none", sparsity_weight=0.7, sparsity_target=0.1)
    x = jnp.asarray(np.random.default_rng(1).integers(2, size=(6, 3)), jnp.float32)
    keys = jax.random.split(jax.random.key(0), 6)
    loss, metrics = jax.jit(model.end_to_end_loss)(params, x, keys)
    codes = _sigmoid(
        np.asarray(x, np.float64) @ np.asarray(params["encoder_0"]["params"]["kernel"])
        + np.asarray(params["encoder_0"]["params"]["bias"])
    )
    rho_hat = codes.mean(axis=0)
    kl = np.sum(0.1 * np.log(0.1 / rho_hat) + 0.9 * np.log(0.9 / (1 - rho_hat)))
    assert float(metrics["train/kl_sparsity"]) == pytest.approx(kl, rel=1e-4)
    assert float(loss - metrics["train/reconstruction_nll"]) == pytest.approx(0.7 * kl, rel=1e-4)


def test_stacked_stages_train_one_layer_each_on_the_clean_codes_below_then_all():
    config = autoencoder_configs.get_config("stacked,tiny")
    stages = autoencoder.Autoencoder.stages_for(config)
    assert [stage.name for stage in stages] == ["layer_0", "layer_1", "fine_tune"]
    assert stages[1].trained == ("encoder_1", "decoder_1")
    assert set(stages[2].trained) == {"encoder_0", "decoder_0", "encoder_1", "decoder_1"}
    spec = DataSpec("test", (4, 4, 1), 10, 10, None, 2, True, (0.0, 1.0))
    model = autoencoder.Autoencoder(config, spec)
    params, _ = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    x = jnp.asarray(np.random.default_rng(2).integers(2, size=(4, 4, 4, 1)), jnp.float32)
    keys = jax.random.split(jax.random.key(1), 4)
    grads = jax.jit(jax.grad(lambda p: model.layer_loss(p, 1, x, keys)[0]))(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["encoder_0"]))
    assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads["encoder_1"]))
    config.model_config.stage_steps = (5, 5, 5)
    with pytest.raises(ConfigError, match=r"stage_steps=\(5, 5, 5\) sums to 15"):
        validate(config)


@pytest.mark.parametrize(
    "variant, fields, message",
    [
        ("tiny", dict(corruption_level=1.5), r"corruption_level=1.5 must be in \[0, 1\]"),
        ("tiny", dict(corruption="blur"), r"corruption='blur'; allowed: \('none', 'masking'"),
        ("tiny", dict(architecture="gru"), r"architecture='gru'; allowed: \('mlp', 'conv'"),
        ("tiny", dict(activation="tanh", sparsity_weight=0.1), r"sparsity_weight=0.1 needs sig"),
        ("conv,tiny", dict(hidden_sizes=(8, 4)), r"hidden_sizes=\(8, 4\) must hold one code"),
        ("conv,tiny", dict(layerwise_pretraining=True), r"layerwise_pretraining=True stacks"),
        ("tiny", dict(walkback_steps=0), r"walkback_steps=0 must be a positive"),
    ],
)
def test_bad_fields_are_refused_by_name(variant, fields, message):
    config = autoencoder_configs.get_config(variant)
    config.model_config.update(fields)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_a_model_that_does_not_fit_the_data_is_refused_before_anything_is_written(tmp_path):
    bernoulli_on_intensities = autoencoder_configs.get_config("tiny")
    bernoulli_on_intensities.preprocess.binarize = "none"
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"likelihood='bernoulli'"):
        train_and_evaluate(bernoulli_on_intensities, str(workdir))
    assert not workdir.exists() or not any(workdir.iterdir())
    config = autoencoder_configs.get_config("conv,tiny")
    with pytest.raises(ValueError, match=r"height and width must be multiples of 4"):
        autoencoder.Autoencoder(config, DataSpec("t", (6, 6, 1), 1, 1, None, 2, True, (0, 1)))


def test_recurrent_lstms_start_with_the_configured_forget_bias():
    """Only the forget gates' biases are shifted, in the encoder's and the decoder's LSTM."""
    config = autoencoder_configs.get_config("recurrent,tiny")
    config.model_config.update({"forget_bias": 2.5, "hidden_sizes": (8,)})
    spec = DataSpec("t", (4, 3, 1), 10, 10, None, 2, True, (0.0, 1.0))
    model = autoencoder.Autoencoder(config, spec)
    params, _ = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4, 3, 1)))
    for part in ("encoder_0", "decoder_0"):
        cell = params[part]["params"]["OptimizedLSTMCell_0"]
        np.testing.assert_array_equal(cell["hf"]["bias"], np.full(8, 2.5))
        for gate in ("hi", "hg", "ho"):
            np.testing.assert_array_equal(cell[gate]["bias"], np.zeros(8))
    # Every other parameter is the one an unshifted model draws from the same key.
    config.model_config.forget_bias = 0.0
    plain, _ = autoencoder.Autoencoder(config, spec).init(
        jax.random.key(0), jnp.zeros((1, 4, 3, 1))
    )
    jax.tree.map(np.testing.assert_array_equal, autoencoder.shift_forget_biases(plain, 2.5), params)


def test_config_fields_are_the_documented_ones():
    documented = autoencoder.Autoencoder.__doc__
    for field in (*autoencoder_configs.autoencoder_model_config(), "stage_steps"):
        assert f"      {field}:" in documented, field
    assert isinstance(autoencoder_configs.autoencoder_model_config(), ml_collections.ConfigDict)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["tiny", "stacked,tiny", "conv,tiny", "recurrent,tiny"])
def test_tiny_configs_train_and_report_reconstruction_codes_and_probe(tmp_path, variant):
    results = train_and_evaluate(autoencoder_configs.get_config(variant), str(tmp_path))
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["test_reconstruction_nll_nats"] == pytest.approx(
        results["test_reconstruction_nll_nats"]
    )
    # 64 binary pixels: an untrained decoder's cross-entropy is about 64 log 2 = 44 nats
    assert 0 < saved["test_reconstruction_nll_nats"] < 64 * np.log(2) + 5
    assert 0.0 <= saved["code_active_fraction"] <= 1.0
    assert 0.1 < saved["probe_pixels_accuracy"] <= 1.0 and 0.1 < saved["probe_accuracy"] <= 1.0
    # The recurrent variant is a plain (uncorrupted) sequence autoencoder.
    assert ("test_denoising_nll_nats" in saved) == (variant != "recurrent,tiny")
    for figure in ("reconstructions.png", "chain.png"):
        assert (tmp_path / figure).exists()
    assert (tmp_path / "filters.png").exists() == (variant != "recurrent,tiny")
