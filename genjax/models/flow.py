"""Normalizing flows as a model family (`config.model = 'flow'`).

A `genjax.flows.Flow`: a standard-normal base (or NICE's standard logistic, `prior='logistic'`)
pushed through a bijector built from `model_config.architecture`:

  realnvp  affine couplings (checkerboard and channel masks, squeeze, multi-scale factor-out)
           for images; alternating half masks for flat data (Dinh et al. 2017).
  glow     ActNorm, invertible 1x1 convolution (`lu` for the LU form) and affine or additive
           coupling per step, multi-scale, with standard or learned priors (Kingma & Dhariwal
           2018); on flat data the same steps on vectors.
  nice     additive couplings over the odd / even partition of the flattened input with deep
           MLP conditioners, then a learned diagonal scaling (Dinh, Krueger & Bengio 2015); with
           `prior='logistic'`, its paper's prior.
  nsf      neural spline flows: monotone rational-quadratic splines with linear tails, in
           coupling (even / odd partition) or autoregressive (MADE) form (Durkan et al. 2019).
  ffjord   a continuous normalizing flow: an ODE solved by diffrax, its log-det the integrated
           trace of the dynamics' Jacobian, exact or Hutchinson-estimated (Grathwohl et al. 2019).
  maf      MADE-conditioned affine autoregressive layers with reversals between them
           (Papamakarios et al. 2017); the density pass is one network call per layer,
           sampling is sequential.
  planar, radial  Rezende & Mohamed (2015). They have no inverse, so no density of data; they
           are fitted to a known toy2d density by the reverse KL (`objective='reverse_kl'`).

Objectives:
  max_likelihood  -mean log p(x) over the batch, with the log-det of the preprocessing steps
                  (`batch['log_det']`) added, so the likelihood is that of the [0, 1] data.
  reverse_kl      E_q[log q(x) - log p*(x)] with x ~ q (the flow), p* the toy2d density; it is
                  KL(q || p*) >= 0, estimated from `batch_size` samples per step.

Evaluation (`eval.json`): the exact test NLL (`nll_estimator: 'exact'`), its space
(`nll_space`, added by the trainer: for dequantized images `test_bits_per_dim` is in the
discrete 256-level space of published tables), and on toy2d densities the true entropy and the
gap `entropy_gap_nats` = NLL - H[p] >= 0 (up to sampling error), the floor no model can beat.
The reverse-KL flows report `reverse_kl_nats` instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax import objectives
from genjax.data import toy2d
from genjax.evaluate.likelihood import summarize_exact_likelihood
from genjax.flows import autoregressive, coupling, ffjord, glow, nice, planar, spline
from genjax.flows.bijector import Bijector
from genjax.flows.coupling import COUPLINGS, SCALES
from genjax.flows.flow import BASES, Flow
from genjax.models import checks
from genjax.models.base import GradientModel

ARCHITECTURES = ("realnvp", "glow", "nice", "nsf", "ffjord", "maf", "planar", "radial")
FORWARD_ONLY = ("planar", "radial")
INVERTIBLE = tuple(name for name in ARCHITECTURES if name not in FORWARD_ONLY)
OBJECTIVES = ("max_likelihood", "reverse_kl")
# 'standard' and 'logistic' are the base distributions of `genjax.flows.flow.BASES`; 'learned'
# is Glow's learned split and top priors (on a standard-normal base).
PRIORS = (*BASES, "learned")
# FFJORD evaluates with the exact trace up to this many dimensions (one Jacobian-vector product
# per dimension), and with its training estimator above.
EXACT_TRACE_MAX_DIMS = 64


class FlowModel(GradientModel):
    """Normalizing flows (`config.model = 'flow'`); see the module docstring.

    model_config fields:
      architecture: one of ARCHITECTURES.
      objective: 'max_likelihood' | 'reverse_kl' (planar and radial need 'reverse_kl').
      num_layers: couplings (flat realnvp, nice), steps per scale (glow), MAF layers, or
        planar / radial layers.
      num_scales: scales of the multi-scale image architectures (realnvp, glow).
      hidden_features: width of the conditioner networks (channels for images).
      num_hidden_layers: hidden layers of each conditioner.
      lu: Glow's LU-decomposed 1x1 convolution (else plain slogdet).
      init_examples: training examples for the data-dependent ActNorm initialisation (glow).
      coupling: 'affine' | 'additive' (NICE's shift-only coupling, log-det 0): realnvp, glow,
        nice.
      coupling_scale: 'tanh' (RealNVP's) | 'sigmoid' (Glow's; it can only contract in the
        density direction): the scale of the affine couplings of realnvp and glow.
      prior: 'standard' (N(0, I) for every latent) | 'logistic' (independent standard
        logistics, NICE's prior) | 'learned' (Glow's split priors given the kept half, and a
        learned top prior; glow only).
      max_log_scale: MAF's soft clamp, |log-scale| < max_log_scale per layer (maf only).
      spline_form: 'coupling' | 'autoregressive' (nsf only).
      num_bins: K, the spline's bins (nsf only).
      tail_bound: B, the splines act on [-B, B] and are the identity outside (nsf only).
      trace_estimator: 'exact' | 'gaussian' | 'rademacher' (ffjord only): the trace in
        training; evaluation uses the exact trace for events of at most EXACT_TRACE_MAX_DIMS
        dimensions and this estimator above.
      ode_gradient: 'discretize' (backpropagate through the solver) | 'adjoint' (ffjord only).
      ode_rtol, ode_atol: the adaptive solver's tolerances, > 0 (ffjord only).
      ode_time: T, the ODE's integration time, > 0 (ffjord only).
      ode_max_steps: the most solver steps per solve (ffjord only).

    With config.compute_dtype='bfloat16' the conditioner networks compute in bfloat16; the
    bijectors' arithmetic, their log-dets and the log-likelihood stay float32.
    """

    name = "flow"
    main_metric = "train/loss"
    # The spline and ODE fields came with those flows: no run saved before them used either.
    added_field_defaults = {
        "spline_form": "coupling",
        "num_bins": 8,
        "tail_bound": 3.0,
        **ffjord.CONFIG_DEFAULTS,
    }
    compute_dtypes = ("float32", "bfloat16")

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choices(
            mc,
            {
                "architecture": ARCHITECTURES,
                "objective": OBJECTIVES,
                "coupling": COUPLINGS,
                "coupling_scale": SCALES,
                "prior": PRIORS,
                "spline_form": spline.FORMS,
                "trace_estimator": ffjord.TRACE_ESTIMATORS,
                "ode_gradient": ffjord.GRADIENTS,
            },
        )
        for field in ("max_log_scale", "tail_bound", "ode_rtol", "ode_atol", "ode_time"):
            _check_positive_number(mc, field)
        checks.check_positive_ints(mc, ("ode_max_steps",))
        if isinstance(mc.num_bins, bool) or not isinstance(mc.num_bins, int) or mc.num_bins < 2:
            raise ValueError(
                f"config.model_config.num_bins={mc.num_bins!r} must be an integer >= 2."
            )
        if mc.prior == "learned" and mc.architecture != "glow":
            raise ValueError(
                f"config.model_config.prior={mc.prior!r} with config.model_config.architecture="
                f"{mc.architecture!r}: the learned priors are Glow's; allowed: {tuple(BASES)} "
                "(or architecture='glow')."
            )
        checks.check_positive_ints(
            mc,
            ("num_layers", "num_scales", "hidden_features", "num_hidden_layers", "init_examples"),
        )
        checks.check_bools(mc, ("lu",))
        forward_only = mc.architecture in FORWARD_ONLY
        if forward_only != (mc.objective == "reverse_kl"):
            raise ValueError(
                f"config.model_config.architecture={mc.architecture!r} with "
                f"config.model_config.objective={mc.objective!r}: planar and radial flows have "
                "no inverse, so they are fitted by objective='reverse_kl' to a known density; "
                f"the invertible architectures {INVERTIBLE} use objective='max_likelihood'."
            )
        if config.compute_dtype != "float32" and forward_only:
            raise ValueError(
                f"config.compute_dtype={config.compute_dtype!r} with config.model_config."
                f"architecture={mc.architecture!r}: planar and radial flows have no networks to "
                f"compute in it; use compute_dtype='float32' (or one of {INVERTIBLE})."
            )
        if mc.objective == "reverse_kl" and toy2d.density_name(config.dataset) is None:
            raise ValueError(
                f"config.model_config.objective='reverse_kl' needs a known target density: "
                f"config.dataset={config.dataset!r}; allowed: "
                f"{tuple('toy2d/' + name for name in toy2d.DENSITY_NAMES)}"
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        mc = config.model_config
        if mc.objective == "max_likelihood" and spec.binarized:
            raise ValueError(
                f"config.model='flow' models continuous densities; config.dataset={spec.name!r} "
                "is binarized: set config.preprocess.binarize='none' and "
                "config.preprocess.dequantize=True."
            )
        if spec.num_levels is not None and not config.preprocess.dequantize:
            raise ValueError(
                f"config.model='flow' on discrete data ({spec.name!r}, {spec.num_levels} levels) "
                "needs config.preprocess.dequantize=True: a density on unjittered discrete "
                "values is unbounded."
            )
        self.toy_name = toy2d.density_name(spec.name)
        dtype = jnp.dtype(config.compute_dtype)
        base = "logistic" if mc.prior == "logistic" else "standard"
        self.flow = Flow(build_bijector(mc, spec.example_shape, dtype), spec.example_shape, base)
        # The flow that evaluates: FFJORD's exact trace where it is affordable.
        self.estimator = mc.trace_estimator if mc.architecture == "ffjord" else "exact"
        if self.estimator != "exact" and spec.num_dims <= EXACT_TRACE_MAX_DIMS:
            exact = build_bijector(mc, spec.example_shape, dtype, trace_estimator="exact")
            self.eval_flow, self.eval_estimator = Flow(exact, spec.example_shape, base), "exact"
        else:
            self.eval_flow, self.eval_estimator = self.flow, self.estimator
        self.init_batch_size = mc.init_examples if mc.architecture == "glow" else 0

    def init(self, key, example_x):
        if self.config.model_config.architecture in FORWARD_ONLY:  # no inverse to trace
            init_key, sample_key = jax.random.split(key)
            return self.flow.init(init_key, sample_key, 2, method=Flow.sample_and_log_prob), {}
        # Flow.__call__ is log_prob: data enters through the inverse direction, which is the
        # side ActNorm's data-dependent initialisation standardises.
        return self.flow.init({"params": key, "hutchinson": key}, jnp.asarray(example_x)), {}

    def _log_prob(self, params, x, key, flow=None, **apply_fields):
        """log p(x) (B,) under `flow` (the training flow by default); `key` seeds FFJORD's
        Hutchinson probes (one draw per example) and is unused by the other flows."""
        flow = self.flow if flow is None else flow
        return flow.apply(params, x, method=Flow.log_prob, rngs={"hutchinson": key}, **apply_fields)

    def train_log_density(self, params, x, keys):
        """log p(x) (B,) of a batch in model space (None for a forward-only flow)."""
        if self.config.model_config.architecture in FORWARD_ONLY:
            return None
        return self._log_prob(params, x, keys[0])

    def _reverse_kl_terms(self, params, key, num):
        """log q(x) - log p*(x) for `num` draws x ~ q: (num,)."""
        x, log_q = self.flow.apply(params, key, num, method=Flow.sample_and_log_prob)
        return log_q - toy2d.log_prob(self.toy_name, x)

    def loss(self, params, extras, batch, keys):
        if self.config.model_config.objective == "reverse_kl":
            kl = self._reverse_kl_terms(params, keys[0], batch["x"].shape[0]).mean()
            return kl, ({"train/reverse_kl": kl}, extras)
        log_p = self._log_prob(params, batch["x"], keys[0]) + batch["log_det"]  # (B,)
        nll = -log_p.mean()
        return nll, (
            {"train/bits_per_dim": objectives.bits_per_dim(nll, self.spec.num_dims)},
            extras,
        )

    def eval_step(self, state, batch, keys, final):
        del final  # exact: one evaluation serves monitoring and eval.json
        if self.config.model_config.objective == "reverse_kl":
            # One draw from q per test example: the KL estimate uses as many samples.
            terms = jax.vmap(lambda key: self._reverse_kl_terms(state.params, key, 1)[0])(keys)
            return {"reverse_kl": terms}
        if self.config.model_config.architecture != "ffjord":
            log_p = self._log_prob(state.params, batch["x"], keys[0])
            return {"log_likelihood": log_p + batch["log_det"]}
        log_p, sown = self._log_prob(
            state.params, batch["x"], keys[0], self.eval_flow, mutable=["intermediates"]
        )
        steps = sum(jax.tree.leaves(sown["intermediates"]))  # one solve per FFJORD layer
        return {
            "log_likelihood": log_p + batch["log_det"],
            "ode_steps": jnp.full(log_p.shape, steps, jnp.float32),
        }

    def summarize(self, outputs, final, constants):
        del constants
        if "reverse_kl" in outputs:
            terms = np.asarray(outputs["reverse_kl"], np.float64)
            stderr = float(np.std(terms, ddof=1) / np.sqrt(len(terms)))
            return {"reverse_kl_nats": float(np.mean(terms)), "reverse_kl_stderr": stderr}
        results = summarize_exact_likelihood(
            outputs["log_likelihood"], self.spec.num_dims, self.toy_name, final
        )
        if "ode_steps" in outputs:
            mc = self.config.model_config
            results["ode_steps_mean"] = float(np.mean(outputs["ode_steps"]))
            results["ode_rtol"], results["ode_atol"] = mc.ode_rtol, mc.ode_atol
            if self.eval_estimator != "exact":
                results["nll_estimator"] = (
                    f"hutchinson_{self.eval_estimator}: one probe per example, an unbiased "
                    "estimate of log p(x), not an exact density"
                )
        return results

    def sample(self, state, key, num):
        noise_key, probe_key = jax.random.split(key)
        return self.flow.apply(
            state.params, noise_key, num, method=Flow.sample, rngs={"hutchinson": probe_key}
        )

    def log_density(self, state, x):
        """log p(x) under the evaluation flow (FFJORD's Hutchinson probes, where it has any,
        from a fixed key)."""
        if self.config.model_config.architecture in FORWARD_ONLY:
            return None
        return self._log_prob(state.params, x, jax.random.key(0), self.eval_flow)


def _check_positive_number(mc, field: str) -> None:
    """`config.model_config.<field>` is a number > 0."""
    value = mc[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"config.model_config.{field}={value!r} must be a positive number.")


def build_bijector(
    mc, event_shape: tuple[int, ...], dtype=None, trace_estimator: str | None = None
) -> Bijector:
    """The bijector of `mc.architecture` for events of `event_shape`, noise -> data: the
    multi-scale image flows for (H, W, C) images, their flat forms for vectors; `dtype` is the
    conditioner networks' compute dtype (planar and radial flows have none);
    `trace_estimator` overrides `mc.trace_estimator` (ffjord)."""
    image = len(event_shape) == 3
    num_dims = int(np.prod(event_shape))
    hidden = dict(num_hidden_layers=mc.num_hidden_layers, dtype=dtype)
    couplings = dict(scale=mc.coupling_scale, coupling=mc.coupling)
    if mc.architecture == "realnvp":
        if image:
            return coupling.realnvp_image(
                mc.num_scales,
                mc.num_layers,
                hidden_channels=mc.hidden_features,
                **hidden,
                **couplings,
            )
        return coupling.realnvp_flat(
            num_dims, mc.num_layers, mc.hidden_features, **hidden, **couplings
        )
    if mc.architecture == "glow":
        glow_prior = "learned" if mc.prior == "learned" else "standard"  # on the flow's base
        glow_fields = dict(lu=mc.lu, prior=glow_prior, **hidden, **couplings)
        if image:
            return glow.glow_image(mc.num_scales, mc.num_layers, mc.hidden_features, **glow_fields)
        return glow.glow_flat(num_dims, mc.num_layers, mc.hidden_features, **glow_fields)
    if mc.architecture == "nice":
        return nice.nice_flat(
            mc.num_layers,
            mc.hidden_features,
            coupling=mc.coupling,
            scale=mc.coupling_scale,
            **hidden,
        )
    if mc.architecture == "nsf":
        return spline.nsf_flow(
            num_dims,
            mc.num_layers,
            mc.spline_form,
            mc.hidden_features,
            num_bins=mc.num_bins,
            tail_bound=mc.tail_bound,
            **hidden,
        )
    if mc.architecture == "ffjord":
        return ffjord.FFJORD(
            mc.hidden_features,
            mc.num_hidden_layers,
            time=mc.ode_time,
            trace_estimator=trace_estimator or mc.trace_estimator,
            gradient=mc.ode_gradient,
            rtol=mc.ode_rtol,
            atol=mc.ode_atol,
            max_steps=mc.ode_max_steps,
            dtype=dtype,
        )
    if mc.architecture == "maf":
        hidden_sizes = (mc.hidden_features,) * mc.num_hidden_layers
        return autoregressive.maf_flow(
            num_dims,
            mc.num_layers,
            hidden_sizes,
            max_log_scale=mc.max_log_scale,
            dtype=dtype,
        )
    if mc.architecture == "planar":
        return planar.planar_flow(mc.num_layers)
    return planar.radial_flow(mc.num_layers)
