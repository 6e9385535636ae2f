"""What the energy-model families share: config checks, log Z for evaluation, the NLL summary."""

from __future__ import annotations

import jax
import numpy as np

from genjax.evaluate import ais
from genjax.evaluate.likelihood import summarize_log_likelihood
from genjax.models import checks
from genjax.models.energy import rbm

# model_config fields of every energy family that only change evaluation.
EVALUATION_FIELDS = (
    "ais_chains",
    "ais_betas",
    "monitor_ais_chains",
    "monitor_ais_betas",
    "exact_max_units",
    "sample_gibbs_steps",
)


def check_shared_fields(mc) -> None:
    """The fields every energy family shares: initial weight scale, AIS and sampling."""
    if not mc.weight_scale > 0:
        raise ValueError(f"config.model_config.weight_scale={mc.weight_scale!r} must be > 0.")
    checks.check_positive_ints(
        mc,
        (
            "ais_chains",
            "ais_betas",
            "monitor_ais_chains",
            "monitor_ais_betas",
            "sample_gibbs_steps",
        ),
    )
    for field in ("ais_betas", "monitor_ais_betas"):
        if mc[field] < 3:
            raise ValueError(f"config.model_config.{field}={mc[field]} must be at least 3.")
    if not 0 <= mc.exact_max_units <= rbm.MAX_EXACT_UNITS:
        raise ValueError(
            f"config.model_config.exact_max_units={mc.exact_max_units!r} must be in "
            f"[0, {rbm.MAX_EXACT_UNITS}] (0 always uses AIS)."
        )


def enumerated_units(params: dict) -> int:
    """How many units `rbm.log_partition_exact` would enumerate for these parameters."""
    num_visible, num_hidden = params["W"].shape
    return num_hidden if rbm.is_gaussian(params) else min(num_visible, num_hidden)


def rbm_log_partition(
    params: dict, key, mc, final: bool, base_visible_bias=None, progress: bool = False
) -> dict:
    """log Z of an RBM for evaluation: exact when small enough, else AIS.

    Final evaluations use `ais_chains` x `ais_betas`; monitoring uses the cheap
    `monitor_ais_*` settings. Returns {'log_z', 'log_z_stderr', 'exact', 'ais_chains',
    'ais_betas'} (the AIS fields are 0 when exact).
    """
    if enumerated_units(params) <= mc.exact_max_units:
        log_z = jax.jit(rbm.log_partition_exact)(params)
        return {"log_z": log_z, "log_z_stderr": 0.0, "exact": True, "ais_chains": 0, "ais_betas": 0}
    chains = mc.ais_chains if final else mc.monitor_ais_chains
    num_betas = mc.ais_betas if final else mc.monitor_ais_betas
    result = rbm.ais_log_partition(
        params, key, chains, ais.default_betas(num_betas), base_visible_bias, progress=progress
    )
    return {
        "log_z": result.log_z,
        "log_z_stderr": result.stderr,
        "exact": False,
        "ais_chains": chains,
        "ais_betas": num_betas,
    }


def summarize_nll(
    log_likelihood: np.ndarray, num_dims: int, constants: dict, bound: str | None = None
) -> dict:
    """The `eval.json` NLL fields from per-example log p(v) and the log Z that went into it.

    `test_nll_stderr` is the spread over test examples; the log Z estimate's own standard
    error is `log_z_stderr` (it shifts every example alike). With `bound` set, the per-example
    values are lower bounds on log p(v) (DBN, DBM) and the estimator name says so.
    """
    estimator = "exact" if bool(constants["exact"]) else "ais"
    if bound:
        estimator = f"{bound} ({estimator} log Z)"
    summary = summarize_log_likelihood(log_likelihood, num_dims, estimator)
    summary.update(
        log_z=float(constants["log_z"]),
        log_z_stderr=float(constants["log_z_stderr"]),
        ais_chains=int(constants["ais_chains"]),
        ais_betas=int(constants["ais_betas"]),
    )
    return summary
