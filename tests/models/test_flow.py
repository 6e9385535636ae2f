"""The flow family: normalised densities on toy2d, the data-space accounting of eval.json,
data-dependent initialisation through the trainer, config errors, and each config end to end."""

import importlib
import json
import os

import jax
import numpy as np
import pytest

from genjax.data import toy2d
from genjax.models.flow import FlowModel
from genjax.train import ConfigError, Experiment, train_and_evaluate

INVERTIBLE_CONFIGS = ["realnvp", "glow", "nice", "nsf", "maf"]


def _toy_model(name: str):
    config = importlib.import_module(f"configs.{name}").get_config("toy,tiny")
    experiment = Experiment(config)
    return experiment, experiment.init_state()


def _perturbed(params, seed=0, scale=0.1):
    """Params moved off their (often identity) initialisation."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: leaf + scale * rng.normal(size=leaf.shape), params)


@pytest.mark.parametrize(
    "name", [*INVERTIBLE_CONFIGS, pytest.param("ffjord", marks=pytest.mark.slow)]
)
def test_toy_density_integrates_to_one_on_a_grid(name):
    """exp(log p) summed over a fine 2-D grid covering the mass is 1 (Riemann sum)."""
    experiment, state = _toy_model(name)
    state = state.replace(params=_perturbed(state.params))
    axis = np.linspace(-12.0, 12.0, 481)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2).astype(np.float32)
    log_p = np.asarray(jax.jit(experiment.model.log_density)(state, grid), np.float64)
    cell = (axis[1] - axis[0]) ** 2
    np.testing.assert_allclose(np.exp(log_p).sum() * cell, 1.0, atol=0.01)


@pytest.mark.slow
def test_dequantized_images_report_discrete_space_bits_per_dim(tmp_path):
    config = importlib.import_module("configs.realnvp").get_config("tiny")
    results = train_and_evaluate(config, str(tmp_path / "run"))
    num_dims, num_levels = 64, 17  # digits8x8
    nll = results["test_nll_nats"]
    assert results["test_bits_per_dim_unit_cube"] == pytest.approx(nll / (num_dims * np.log(2)))
    expected = (nll + num_dims * np.log(num_levels)) / (num_dims * np.log(2))
    assert results["test_bits_per_dim"] == pytest.approx(expected, rel=1e-6)
    assert "17-level discrete space" in results["nll_space"]
    # The logit preprocessing's log-det is inside the NLL: it is not the logit-space density.
    assert results["nll_estimator"] == "exact"


@pytest.mark.slow
def test_glow_actnorm_is_initialised_on_real_training_data():
    config = importlib.import_module("configs.glow").get_config("tiny")
    experiment = Experiment(config)
    assert experiment.model.init_batch_size == config.model_config.init_examples
    state = experiment.init_state()
    x = experiment.dataset.init_batch(config.model_config.init_examples)
    z, _ = experiment.model.flow.apply(
        state.params, x, method=lambda flow, data: flow.bijector(data, inverse=True)
    )
    # The first ActNorm standardises the data side per channel; after the whole flow the
    # latent is centred and of unit scale, unlike the mostly blank [-1, 1] pixels.
    assert float(np.mean(np.asarray(x))) < -0.3
    assert abs(float(np.mean(np.asarray(z)))) < 0.2
    assert 0.5 < float(np.std(np.asarray(z))) < 1.5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model_config.architecture": "planar"}, r"planar and radial flows have no inverse"),
        ({"model_config.architecture": "nade"}, r"config.model_config.architecture='nade'"),
        ({"model_config.num_layers": 0}, r"num_layers=0 must be a positive integer"),
        (
            {"model_config.coupling_scale": "exp"},
            r"config.model_config.coupling_scale='exp'.*\('tanh', 'sigmoid'\)",
        ),
        (
            {"model_config.coupling": "nice"},
            r"config.model_config.coupling='nice'.*\('affine', 'additive'\)",
        ),
        (
            {"model_config.prior": "learned"},
            r"config.model_config.prior='learned' with .*architecture='realnvp'",
        ),
        ({"model_config.max_log_scale": 0.0}, r"max_log_scale=0.0 must be a positive number"),
        ({"model_config.tail_bound": -1.0}, r"tail_bound=-1.0 must be a positive number"),
        ({"model_config.num_bins": 1}, r"num_bins=1 must be an integer >= 2"),
        ({"model_config.ode_rtol": 0.0}, r"ode_rtol=0.0 must be a positive number"),
        ({"model_config.ode_atol": -1.0}, r"ode_atol=-1.0 must be a positive number"),
        (
            {"model_config.trace_estimator": "skilling"},
            r"trace_estimator='skilling'.*\('exact', 'gaussian', 'rademacher'\)",
        ),
        (
            {"model_config.spline_form": "flat"},
            r"spline_form='flat'.*\('coupling', 'autoregressive'\)",
        ),
        ({"preprocess.dequantize": False}, r"needs config.preprocess.dequantize=True"),
        (
            {
                "preprocess.binarize": "dynamic",
                "preprocess.logit_alpha": 0.0,
                "preprocess.dequantize": False,
            },
            r"config.model='flow' models continuous densities.*is binarized",
        ),
    ],
)
def test_bad_configs_are_refused_before_any_write(tmp_path, overrides, message):
    config = importlib.import_module("configs.realnvp").get_config("tiny")
    for field, value in overrides.items():
        section, _, name = field.rpartition(".")
        config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["glow", "nice", "nsf", "ffjord", "maf"])  # realnvp: below
def test_toy_config_trains_and_reports_the_entropy_gap(tmp_path, name):
    config = importlib.import_module(f"configs.{name}").get_config("toy,tiny")
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f) == results
    entropy, _ = toy2d.entropy("8gaussians")
    assert results["entropy_nats"] == pytest.approx(entropy)
    assert results["entropy_gap_nats"] == pytest.approx(results["test_nll_nats"] - entropy)
    assert results["entropy_gap_nats"] > -0.05  # no model beats the true density
    assert os.path.exists(os.path.join(workdir, "density.png"))


def test_flow_family_is_registered_under_flow():
    from genjax import models

    assert models.get("flow") is FlowModel


@pytest.mark.slow
def test_forward_only_flows_are_fitted_by_the_reverse_kl(tmp_path):
    config = importlib.import_module("configs.planar").get_config("tiny")
    results = train_and_evaluate(config, str(tmp_path / "run"))
    assert results["reverse_kl_nats"] > 0  # KL(q || p*) of a flow that is not p*
    assert "test_nll_nats" not in results  # planar flows cannot score data
    assert not os.path.exists(tmp_path / "run" / "density.png")


def test_reverse_kl_needs_a_known_density(tmp_path):
    config = importlib.import_module("configs.planar").get_config("tiny")
    config.dataset = "toy2d/moons"  # sampled, but no closed-form density
    with pytest.raises(ConfigError, match=r"objective='reverse_kl' needs a known target density"):
        train_and_evaluate(config, str(tmp_path / "run"))


def test_model_config_fields_reach_the_bijectors():
    """max_log_scale reaches every MAF layer; coupling and coupling_scale every coupling; the
    Glow config's defaults are the paper's (sigmoid scale, learned priors, no logit)."""
    import flax.linen as nn

    from genjax.flows.autoregressive import MAF
    from genjax.flows.coupling import AffineCoupling
    from genjax.flows.glow import SplitPrior, TopPrior
    from genjax.models.flow import build_bijector

    def modules(bijector, kind):
        found, stack = [], [bijector]
        while stack:
            node = stack.pop()
            if isinstance(node, kind):
                found.append(node)
            for field, value in vars(node).items():
                children = value if isinstance(value, list | tuple) else [value]
                if field != "parent":
                    stack += [child for child in children if isinstance(child, nn.Module)]
        return found

    mc = importlib.import_module("configs.maf").get_config("tiny").model_config
    mc.max_log_scale = 1.5
    layers = modules(build_bijector(mc, (8, 8, 1)), MAF)
    assert len(layers) == mc.num_layers and {layer.max_log_scale for layer in layers} == {1.5}

    config = importlib.import_module("configs.glow").get_config("tiny")
    assert (config.model_config.coupling_scale, config.model_config.prior) == ("sigmoid", "learned")
    assert (config.preprocess.logit_alpha, config.preprocess.scale) == (0.0, "symmetric")
    mc = config.model_config
    mc.coupling = "additive"
    bijector = build_bijector(mc, (8, 8, 1))
    couplings = modules(bijector, AffineCoupling)
    assert couplings and {c.coupling for c in couplings} == {"additive"}
    assert len(modules(bijector, SplitPrior)) == mc.num_scales - 1
    assert len(modules(bijector, TopPrior)) == 1
    tanh = importlib.import_module("configs.glow").get_config("tiny,tanh").model_config
    assert {c.scale for c in modules(build_bijector(tanh, (8, 8, 1)), AffineCoupling)} == {"tanh"}


def test_nice_config_is_the_papers_mnist_model():
    """Four additive odd / even couplings with 5 x 1000 ReLU conditioners, a diagonal scaling
    layer, the logistic prior, [0, 1] data without a logit (Dinh et al. 2015, Sec. 5); a
    'logistic' prior reaches the flow's base for any invertible architecture."""
    from genjax.flows.coupling import AffineCoupling
    from genjax.flows.flow import StandardLogistic, StandardNormal
    from genjax.flows.nice import DiagonalScale

    config = importlib.import_module("configs.nice").get_config()
    assert (config.preprocess.logit_alpha, config.preprocess.scale) == (0.0, "unit")
    experiment = Experiment(config)
    flow = experiment.model.flow
    assert isinstance(flow.base, StandardLogistic)
    chain = flow.bijector.bijector.bijectors  # Invert(Chain([...])): f, data -> noise
    couplings, scale = chain[:-1], chain[-1]
    assert isinstance(scale, DiagonalScale) and len(couplings) == 4
    assert all(isinstance(c, AffineCoupling) for c in couplings)
    assert [(c.mask, c.parity, c.coupling) for c in couplings] == [
        ("alternate", parity, "additive") for parity in (False, True, False, True)
    ]
    assert {(c.hidden_features, c.num_hidden_layers) for c in couplings} == {(1000, 5)}

    realnvp = importlib.import_module("configs.realnvp").get_config("tiny")
    realnvp.model_config.prior = "logistic"
    assert isinstance(Experiment(realnvp).model.flow.base, StandardLogistic)
    gaussian = importlib.import_module("configs.nice").get_config("gaussian,tiny")
    assert isinstance(Experiment(gaussian).model.flow.base, StandardNormal)
    assert not isinstance(Experiment(gaussian).model.flow.base, StandardLogistic)


@pytest.mark.slow
def test_ffjord_image_run_reports_its_solver_and_evaluates_with_the_exact_trace(tmp_path):
    """Trained with Hutchinson's estimator on 64-dimensional digits, evaluated exactly."""
    config = importlib.import_module("configs.ffjord").get_config("image,tiny")
    assert config.model_config.trace_estimator == "rademacher"
    results = train_and_evaluate(config, str(tmp_path / "run"))
    assert results["nll_estimator"] == "exact"
    assert results["ode_steps_mean"] >= 1
    assert (results["ode_rtol"], results["ode_atol"]) == (1e-5, 1e-5)
    assert np.isfinite(results["test_bits_per_dim"])
    hutchinson = importlib.import_module("configs.ffjord").get_config("image,tiny")
    hutchinson.dataset = "mnist5k"  # 784 dimensions: above the exact-trace limit
    model = Experiment(hutchinson).model
    assert (model.estimator, model.eval_estimator) == ("rademacher", "rademacher")
