"""Paper findings reproduced on offline data, each written up as a generated Markdown report.

  python -m experiments.findings --finding=burda2016          # one finding
  python -m experiments.findings --finding=all --parallel=2   # all five
  python -m experiments.findings --finding=all --dry_run      # print the runs' commands

A finding is a set of `experiments.train` runs (genjax.workbench.sweep: run under
--workdir/<finding>/<run>, resumable, finished runs skipped), an optional measurement on the
trained runs, and a judge that states from the numbers whether the paper's claim held. The
report (claim, verdict, numbers, settings, the commands) goes to --out/<finding>.md
(default experiments/results/), with its figures beside it.

  burda2016          IWAE k = 50 vs VAE k = 1: test log-likelihood and active units.
  rainforth2018      encoder-gradient SNR against K under the IWAE bound, with and without
                     DReG (Tucker et al. 2019).
  salakhutdinov2008  RBMs: CD-1 vs CD-10, CD-25 and PCD by AIS test log-likelihood.
  mode_collapse      non-saturating GAN vs PacGAN and WGAN-GP (lambda 10, 0.1): modes of the
                     narrow ring and of the unit-scale 5x5 grid covered, 5 seeds.
  bornschein2015     Helmholtz machines: reweighted wake-sleep vs wake-sleep by IWAE-5000
                     test log-likelihood, with VIMCO alongside, 3 seeds.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags, logging

from genjax.core.util import write_json_atomic, write_text_atomic
from genjax.data import toy2d
from genjax.evaluate import gradient_snr, plots
from genjax.workbench import snr, sweep

_FINDING = flags.DEFINE_string("finding", None, "A finding's name, or 'all'.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/findings", "Root of the findings' runs.")
_OUT = flags.DEFINE_string("out", "experiments/results", "Where the reports are written.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Training runs at once.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the runs' commands and exit.")
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only",
    False,
    "Launch nothing: write the report from the finished runs (findings that allow a partial "
    "report; the others need every run finished).",
)
flags.mark_flag_as_required("finding")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One paper's claim, the runs that test it and the rule that judges it.

    Attributes:
      name: the report's file stem and the runs' directory under --workdir.
      title: the report's heading.
      claim: the claim, as the paper makes it.
      settings: what is held fixed, in words (data, budget, evaluation).
      runs: the training runs.
      metrics: the eval.json numbers tabulated (mean ± std over seeds).
      judge: (rows, measured) -> (verdict, explanation); verdict 'held', 'partly held' or
        'did not hold' ('undecided' where a partial report has too few finished runs).
      measure: optional (root, runs, out_dir) -> (dict of measured results, Markdown) run on
        the finished runs, before judging.
      runs_of: the finding whose run directory (and runs) this one measures; '' for its own.
      partial: whether a report may be written from the runs that finished (the unfinished
        ones named in it); otherwise every run must have finished.
    """

    name: str
    title: str
    claim: str
    settings: str
    runs: tuple[sweep.RunSpec, ...]
    metrics: tuple[str, ...]
    judge: Callable[[list[dict], dict], tuple[str, str]]
    measure: Callable[[str, Sequence[sweep.RunSpec], str], tuple[dict, str]] | None = None
    runs_of: str = ""
    partial: bool = False


def _run(name: str, config: str, overrides: dict, labels: dict) -> sweep.RunSpec:
    return sweep.RunSpec(
        name=name,
        config=config,
        overrides=tuple(overrides.items()),
        labels=tuple(labels.items()),
    )


def _row(rows: Sequence[dict], **labels) -> dict:
    """The one row whose labels match."""
    (match,) = [r for r in rows if all(r.get(k) == v for k, v in labels.items())]
    return match


def _finished(rows: Sequence[dict]) -> None:
    unfinished = [r for r in rows if r["status"] != "finished"]
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} runs have not finished: {unfinished}")


# ---------------------------------------------------------------------------------------------
# 1. Burda, Grosse & Salakhutdinov 2016.

_BURDA_STEPS = 10_000


def _judge_burda(rows, measured):
    del measured
    vae, iwae = _row(rows, model="VAE, k = 1"), _row(rows, model="IWAE, k = 50")
    gap = vae["test_nll_nats"] - iwae["test_nll_nats"]
    error = math.hypot(vae["test_nll_stderr"], iwae["test_nll_stderr"])
    better = gap > 2 * error
    more_active = iwae["active_units"] > vae["active_units"]
    verdict = {2: "held", 1: "partly held", 0: "did not hold"}[better + more_active]
    text = (
        f"IWAE k = 50 scores {-iwae['test_nll_nats']:.2f} nats of test log-likelihood against "
        f"the VAE's {-vae['test_nll_nats']:.2f}, a gap of {gap:.2f} nats "
        f"({gap / error:.1f} times the combined standard error over test digits, "
        f"{error:.2f}; the rule asks for more than 2). It keeps {iwae['active_units']} of 50 "
        f"latent units active against the VAE's {vae['active_units']}. As in the paper, the "
        f"IWAE's ELBO ({iwae['test_elbo']:.2f}) is below the VAE's ({vae['test_elbo']:.2f}): "
        "it trades the ELBO for the tighter bound it optimises."
    )
    return verdict, text


BURDA2016 = Finding(
    name="burda2016",
    title="IWAE k = 50 beats the VAE k = 1 (Burda, Grosse & Salakhutdinov 2016)",
    claim=(
        "Burda et al. 2016 (table 1): with the same architecture and optimizer, the IWAE "
        "trained with k = 50 importance samples reaches a higher test log-likelihood than the "
        "VAE (k = 1) and has more active latent units."
    ),
    settings=(
        f"mnist5k (4,000 training digits, dynamic binarization), 784-200-200-50 tanh, batch "
        f"100, Adam (lr 1e-3 decayed by 10^(-i/7) over 7 stages, eps 1e-4), {_BURDA_STEPS:,} "
        "steps, seed 0; only k and the objective differ. Test log p(x) by IWAE-5000 on the "
        "1,000 test digits (± standard error over digits); a unit is active when "
        "Cov_x(E_q[z_u | x]) > 0.01."
    ),
    runs=(
        _run(
            "objective=elbo,k=1,seed=0",
            "configs/vae.py",
            {"num_steps": _BURDA_STEPS},
            {"model": "VAE, k = 1", "seed": 0},
        ),
        _run(
            "objective=iwae,k=50,seed=0",
            "configs/iwae.py",
            {"num_steps": _BURDA_STEPS},
            {"model": "IWAE, k = 50", "seed": 0},
        ),
    ),
    metrics=("test_nll_nats", "test_nll_stderr", "test_elbo", "active_units"),
    judge=_judge_burda,
)

# ---------------------------------------------------------------------------------------------
# 2. Rainforth et al. 2018; Tucker et al. 2019.

_SNR_KS = (1, 3, 10, 30, 100, 300, 1000)
_SNR_DRAWS = 1000
_SNR_ESTIMATORS = ("reparam", "dreg")


def _measure_snr(root, runs, out_dir):
    """Encoder and decoder SNR per estimator and K at each run's final parameters.

    Each run's measurement is kept in <run>/snr/snr.json (the format of experiments.snr) and
    reused while its settings (the estimators, K, draws, batch, objective, seed, step) hold.
    """
    measured, tables = {}, []
    settings = {
        "estimators": list(_SNR_ESTIMATORS),
        "num_samples": list(_SNR_KS),
        "num_draws": _SNR_DRAWS,
        "batch_size": 1,
        "objective": "iwae",
        "seed": 0,
    }
    for spec in runs:
        label = dict(spec.labels)["model"]
        workdir = os.path.join(root, spec.name)
        cache = os.path.join(workdir, "snr", "snr.json")
        saved = json.load(open(cache)) if os.path.exists(cache) else {}
        step = saved.get("settings", {}).get("step")
        if saved.get("settings") == {**settings, "step": step} and step is not None:
            rows = saved["rows"]
        else:
            rows, step = snr.measure_run(
                workdir,
                settings["estimators"],
                settings["num_samples"],
                num_draws=settings["num_draws"],
                batch_size=settings["batch_size"],
                objective=settings["objective"],
                seed=settings["seed"],
            )
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            write_json_atomic(cache, {"settings": {**settings, "step": step}, "rows": rows})
        measured[label] = rows
        stem = f"rainforth2018_{spec.name.split(',')[0].replace('=', '_')}"
        gradient_snr.save_snr_plot(
            rows,
            os.path.join(out_dir, f"{stem}.png"),
            title=f"SNR at the {label}, step {step}",
        )
        tables.append(
            f"SNR at the {label}'s parameters (step {step}; element-averaged |E g| / std g, "
            f"{_SNR_DRAWS} draws per cell; figure `{stem}.png`, where the two decoder lines "
            "coincide: DReG changes only the encoder's gradient):\n\n"
            + gradient_snr.snr_markdown(rows)
        )
    return measured, "\n".join(tables)


def _snr(rows, estimator, group, k):
    return _row(rows, estimator=estimator, group=group, num_importance_samples=k)["snr"]


def _judge_snr(rows, measured):
    """Rainforth's half: the reparam encoder SNR is lower at the largest K than at the
    smallest (and the decoder's higher), at every model; Tucker's half: DReG's is not lower."""
    del rows
    lowest, highest = min(_SNR_KS), max(_SNR_KS)
    falls, removed, models = [], [], []
    for label, snr_rows in measured.items():

        def change(estimator, group, start=lowest, rows=snr_rows):
            return _snr(rows, estimator, group, highest) / _snr(rows, estimator, group, start)

        advantage = [
            _snr(snr_rows, "dreg", "encoder", k) / _snr(snr_rows, "reparam", "encoder", k)
            for k in _SNR_KS
        ]
        falls.append(change("reparam", "encoder") < 1)
        removed.append(change("dreg", "encoder") >= 1)
        models.append(
            f"- At the {label}: the reparam encoder SNR changes by a factor "
            f"{change('reparam', 'encoder'):.2f} from K = {lowest} to {highest} "
            f"({change('reparam', 'encoder', 10):.2f} from K = 10), the decoder SNR by "
            f"{change('reparam', 'decoder'):.2f}; DReG's encoder SNR by "
            f"{change('dreg', 'encoder'):.2f} ({change('dreg', 'encoder', 10):.2f} from K = "
            f"10), and it is {min(advantage):.1f} to {max(advantage):.1f} times the reparam "
            "SNR at every K."
        )
    verdict = (
        "held" if all(falls) and all(removed) else "partly held" if all(falls) else ("did not hold")
    )
    rainforth = (
        "Rainforth et al.'s half held: the IWAE gradient's encoder SNR falls as K grows and "
        "the decoder's rises, at both models."
        if all(falls)
        else "Rainforth et al.'s half did not hold at every model (see the factors)."
    )
    tucker = (
        "Tucker et al.'s half held: DReG's encoder SNR does not fall."
        if all(removed)
        else "Tucker et al.'s half held only in part: DReG keeps the encoder SNR higher at "
        f"every K, but it still falls between K = {lowest} and {highest} where the factor "
        "below is under 1. Tucker et al. derive DReG's growth for large K; with the weight "
        f"spread of these models K = {highest} may not be large enough (not tested further)."
    )
    return verdict, f"{rainforth} {tucker}\n\n" + "\n".join(models)


RAINFORTH2018 = Finding(
    name="rainforth2018",
    title="Tighter bounds starve the encoder's gradient; DReG restores it "
    "(Rainforth et al. 2018; Tucker et al. 2019)",
    claim=(
        "Rainforth et al. 2018: under the IWAE bound the signal-to-noise ratio of the "
        "inference network's gradient falls as the number of importance samples K grows "
        "(as O(1/sqrt(K)) asymptotically), while the generative network's rises. Tucker et "
        "al. 2019: the doubly reparameterized estimator (DReG) of the same gradient removes "
        "that fall."
    ),
    settings=(
        "The trained models of burda2016 (VAE k = 1 and IWAE k = 50, 10,000 steps on mnist5k; "
        "the same run directories: whichever finding runs first trains them). At each "
        f"model's final parameters the gradient of the IWAE bound on one training digit is drawn "
        f"{_SNR_DRAWS} times for K in {_SNR_KS}, with the pathwise IWAE estimator ('reparam') "
        "and with DReG; the SNR |E g| / std g of each parameter is averaged over the "
        "encoder's and the decoder's parameters (`genjax.evaluate.gradient_snr`, the "
        "quantity of Rainforth et al., fig. 1). The finding holds if the reparam encoder SNR "
        f"is lower at K = {max(_SNR_KS)} than at K = {min(_SNR_KS)} and DReG's is not."
    ),
    runs=BURDA2016.runs,
    metrics=("test_nll_nats", "test_nll_stderr"),
    judge=_judge_snr,
    measure=_measure_snr,
    runs_of="burda2016",
)

# ---------------------------------------------------------------------------------------------
# 3. Salakhutdinov & Murray 2008.

_RBM_PHASES = ("cd1", "cd10", "cd25", "pcd")
_RBM_NAMES = {"cd1": "CD-1", "cd10": "CD-10", "cd25": "CD-25", "pcd": "PCD"}


def _judge_rbm(rows, measured):
    del measured
    cd1 = _row(rows, negative_phase="cd1")
    lines, better = [], []
    for phase in _RBM_PHASES[1:]:
        other = _row(rows, negative_phase=phase)
        gap = cd1["test_nll_nats"] - other["test_nll_nats"]
        error = math.hypot(cd1["test_nll_stderr"], other["test_nll_stderr"])
        better.append(gap > 2 * error)
        lines.append(
            f"{_RBM_NAMES[phase]} is {gap:.2f} nats better than CD-1 ({gap / error:.1f} SE)"
        )
    verdict = "held" if all(better) else ("partly held" if any(better) else "did not hold")
    order = sorted(rows, key=lambda r: r["test_nll_nats"])
    text = (
        "; ".join(lines)
        + ". Ranked by test NLL: "
        + " < ".join(f"{_RBM_NAMES[r['negative_phase']]} ({r['test_nll_nats']:.2f})" for r in order)
        + ". The rule: each longer chain beats CD-1 by more than 2 combined standard errors "
        "over test digits (AIS's own error on log Z is in the table and is smaller)."
    )
    return verdict, text


SALAKHUTDINOV2008 = Finding(
    name="salakhutdinov2008",
    title="Longer CD chains and PCD give RBMs a better likelihood (Salakhutdinov & Murray 2008)",
    claim=(
        "Salakhutdinov & Murray 2008 (table 2): RBMs trained with longer contrastive-divergence "
        "chains have a higher AIS-estimated test log-likelihood than CD-1 (Tieleman 2008: "
        "likewise persistent CD)."
    ),
    settings=(
        "Bernoulli RBM with 500 hidden units on mnist5k (dynamic binarization), 10,000 updates "
        "of 100 digits, Adam (lr 1e-3, cosine decay), seed 0; only the negative phase differs "
        "(CD-1, CD-10, CD-25, PCD with one Gibbs sweep). Test NLL on the 1,000 test digits "
        "with log Z by AIS (100 chains, 14,500 betas from the base-rate RBM)."
    ),
    runs=tuple(
        _run(
            f"negative_phase={phase},seed=0",
            f"configs/rbm.py:{phase}",
            {},
            {"negative_phase": phase, "seed": 0},
        )
        for phase in _RBM_PHASES
    ),
    metrics=("test_nll_nats", "test_nll_stderr", "log_z", "log_z_stderr"),
    judge=_judge_rbm,
)

# ---------------------------------------------------------------------------------------------
# 4. Mode collapse.

_GAN_SEEDS = (0, 1, 2, 3, 4)
_GAN_DATASETS = ("ring8", "grid25_unit")
# label -> the configs/gan.py variants (loss first, then toy512's matched optimizer).
_GAN_VARIANTS = {
    "non_saturating": "non_saturating,toy512",
    "pacgan4": "non_saturating,toy512,pack4",
    "wgan_gp_10": "wgan_gp,toy512",
    "wgan_gp_0.1": "wgan_gp,toy512,lambda01",
}
_GAN_NAMES = {
    "non_saturating": "non-saturating",
    "pacgan4": "non-saturating + PacGAN4",
    "wgan_gp_10": "WGAN-GP, lambda 10",
    "wgan_gp_0.1": "WGAN-GP, lambda 0.1",
}
_GAN_STEPS = 1000
_GAN_EVAL_EVERY = 100
_GAN_BATCH = 256
_GAN_SAMPLES = 2500


def _mode_collapse_runs() -> tuple[sweep.RunSpec, ...]:
    """Seed by seed (so the first seeds finish first), each dataset, each GAN."""
    overrides = {
        "num_steps": _GAN_STEPS,
        "batch_size": _GAN_BATCH,
        "eval_every": _GAN_EVAL_EVERY,
        "log_every": _GAN_EVAL_EVERY // 2,
        "checkpoint_every": _GAN_STEPS,
        "sample_quality_samples": _GAN_SAMPLES,
    }
    return tuple(
        _run(
            f"data={data},gan={gan},seed={seed}",
            f"configs/gan.py:{variants},{data}",
            {"seed": seed, **overrides},
            {"data": data, "gan": gan, "seed": seed},
        )
        for seed in _GAN_SEEDS
        for data in _GAN_DATASETS
        for gan, variants in _GAN_VARIANTS.items()
    )


def _eval_curve(metrics_path: str, fields: dict[str, str]) -> dict[str, list[float]]:
    """Metrics of a run at each monitoring evaluation, against updates and training seconds.

    Training seconds at update s: the sum over the logged intervals up to s of (steps in the
    interval) / perf/steps_per_sec, the trainer's clock of train steps only (compilation in
    the first interval; evaluations, samples and checkpoints excluded), as
    `leaderboard.training_seconds` sums it for the whole run. `fields` maps each returned key
    to its metrics.jsonl name; returns {"updates", "seconds", *fields}, one entry per update
    at which every field was logged, in update order.
    """
    records = []
    with open(metrics_path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short
                continue
    rates = sorted(
        (r["step"], r["perf/steps_per_sec"]) for r in records if "perf/steps_per_sec" in r
    )
    evals = sorted(
        (r["step"], *(r[name] for name in fields.values()))
        for r in records
        if all(name in r for name in fields.values())
    )
    curve = {"updates": [], "seconds": [], **{key: [] for key in fields}}
    for step, *values in evals:
        seconds, previous = 0.0, 0
        for logged_step, rate in rates:
            if logged_step > step:
                break
            seconds, previous = seconds + (logged_step - previous) / rate, logged_step
        curve["updates"].append(step)
        curve["seconds"].append(seconds)
        for key, value in zip(fields, values, strict=True):
            curve[key].append(value)
    return curve


def _coverage_curve(metrics_path: str) -> dict[str, list[float]]:
    """Modes covered by the moving average and the raw generator at each monitoring
    evaluation of a run (`_eval_curve`): {"updates", "seconds", "modes", "raw_modes",
    "quality", "raw_quality"} (the last two the high-quality fractions)."""
    return _eval_curve(
        metrics_path,
        {
            "modes": "eval/modes_covered",
            "raw_modes": "eval/raw_modes_covered",
            "quality": "eval/high_quality_fraction",
            "raw_quality": "eval/raw_high_quality_fraction",
        },
    )


def _mean_band(curves: Sequence[dict], key: str) -> tuple[list, list, list]:
    """Mean and mean -+ one standard deviation (ddof=1; 0 for one seed) over seeds of
    `key`, on the evaluations every seed has."""
    length = min(len(c[key]) for c in curves)
    values = np.array([c[key][:length] for c in curves], dtype=np.float64)  # (seeds, n)
    mean = values.mean(axis=0)
    spread = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(length)
    return mean.tolist(), (mean - spread).tolist(), (mean + spread).tolist()


def _band_series(seed_curves: Sequence[dict], key: str, name: str) -> tuple[dict, dict]:
    """{name: (x, mean, low, high)} of `key` and of the raw generator's `raw_<key>` (name +
    ' (raw)'), against updates and against mean training seconds."""
    length = min(len(c["updates"]) for c in seed_curves)
    updates = seed_curves[0]["updates"][:length]
    seconds = _mean_band(seed_curves, "seconds")[0]
    by_updates, by_seconds = {}, {}
    for field, suffix in ((key, ""), (f"raw_{key}", " (raw)")):
        mean, low, high = _mean_band(seed_curves, field)
        by_updates[name + suffix] = (updates, mean, low, high)
        by_seconds[name + suffix] = (seconds, mean, low, high)
    return by_updates, by_seconds


def _measure_modes(root, runs, out_dir):
    """Coverage curves of the finished runs, mean +- std over seeds per dataset and GAN,
    plotted against generator updates and training seconds: modes covered
    (`mode_collapse_<data>.png`) and the high-quality fraction
    (`mode_collapse_<data>_quality.png`)."""
    curves: dict[tuple[str, str], list[dict]] = {}
    for spec in runs:
        labels = dict(spec.labels)
        if sweep.run_status(root, spec) != "finished":
            continue
        curve = _coverage_curve(os.path.join(root, spec.name, "metrics.jsonl"))
        curves.setdefault((labels["data"], labels["gan"]), []).append(curve)
    measured, lines = {}, []
    for data in _GAN_DATASETS:
        num_modes = len(toy2d.mode_centers(data))
        figures = {
            "modes": (f"modes covered (of {num_modes})", (-0.2, num_modes + 0.2), ""),
            "quality": ("high-quality fraction", (-0.02, 1.02), "_quality"),
        }
        series = {key: ({}, {}) for key in figures}
        for gan in _GAN_VARIANTS:
            seed_curves = curves.get((data, gan))
            if not seed_curves:
                continue
            for key in figures:
                by_updates, by_seconds = _band_series(seed_curves, key, _GAN_NAMES[gan])
                series[key][0].update(by_updates)
                series[key][1].update(by_seconds)
            result = {
                "seeds": len(seed_curves),
                "updates": series["modes"][0][_GAN_NAMES[gan]][0],
                "seconds": series["modes"][1][_GAN_NAMES[gan]][0],
            }
            for key in ("modes", "raw_modes", "quality", "raw_quality"):
                result[key] = _mean_band(seed_curves, key)[0]
            measured[f"{data}/{gan}"] = result
            lines.append(
                f"| {data} | {_GAN_NAMES[gan]} | {len(seed_curves)} | "
                + ", ".join(f"{m:.1f}" for m in result["raw_modes"])
                + " | "
                + ", ".join(f"{m:.1f}" for m in result["modes"])
                + " | "
                + ", ".join(f"{q:.3f}" for q in result["raw_quality"])
                + f" | {result['seconds'][-1]:.0f} |"
            )
        for key, (ylabel, ylim, suffix) in figures.items():
            by_updates, by_seconds = series[key]
            if not by_updates:
                continue
            plots.save_band_panels(
                [
                    {"xlabel": "generator updates", "ylabel": ylabel, "series": by_updates},
                    {"xlabel": "training seconds", "ylabel": ylabel, "series": by_seconds},
                ],
                os.path.join(out_dir, f"mode_collapse_{data}{suffix}.png"),
                title=f"toy2d/{data}: mean over seeds +- one std; solid EMA, dashed raw",
                ylim=ylim,
            )
    evaluated = sorted({u for m in measured.values() for u in m["updates"]})
    markdown = (
        "During training, means over the finished seeds at generator updates "
        f"{', '.join(map(str, evaluated))} (figures `mode_collapse_<data>.png` for the modes "
        "and `mode_collapse_<data>_quality.png` for the high-quality fraction, each also "
        "against training seconds, with a band of one standard deviation over seeds):\n\n"
        "| data | GAN | seeds | modes, raw generator | modes, moving average | "
        "high-quality fraction, raw | training s (mean) |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )
    return measured, markdown


def _modes_per_seed(rows, data, gan, field):
    return [
        r[field]
        for r in rows
        if r["data"] == data and r["gan"] == gan and r["status"] == "finished"
    ]


def _beats(remedy: list, baseline: list) -> bool | None:
    """Whether `remedy`'s mean exceeds `baseline`'s by more than 2 combined standard errors
    (ddof=1); None when either has fewer than 2 seeds (no standard error) or neither covers
    any mode at all (a floor: the budget is too small for the comparison to say anything)."""
    if len(remedy) < 2 or len(baseline) < 2 or max(remedy + baseline) == 0:
        return None
    error = math.hypot(
        np.std(remedy, ddof=1) / math.sqrt(len(remedy)),
        np.std(baseline, ddof=1) / math.sqrt(len(baseline)),
    )
    gap = np.mean(remedy) - np.mean(baseline)
    return bool(gap > 2 * error) if error > 0 else bool(gap > 0)


# Below this mean fraction of high-quality raw samples for every GAN on a dataset, no generator
# has learned the modes' scale yet, and missing modes say nothing about collapse.
_MIN_TRAINED_QUALITY = 0.1


def _judge_modes(rows, measured):
    """Per dataset and remedy: does it cover more modes of the raw generator than the
    non-saturating GAN, by more than 2 combined standard errors over seeds? 'held' when
    every remedy does on every dataset, 'partly held' when some do, 'did not hold' when none
    does, and 'undecided' when no comparison can be made (`_beats`). A dataset is not judged
    when no GAN's raw samples are on average at least `_MIN_TRAINED_QUALITY` high-quality
    (collapse is few modes of good samples; these runs have not learned the data)."""
    del measured
    outcomes, lines, covered, untrained = [], [], [], []
    for data in _GAN_DATASETS:
        num_modes = len(toy2d.mode_centers(data))
        baseline = _modes_per_seed(rows, data, "non_saturating", "raw_modes_covered")
        qualities = [
            np.mean(values)
            for gan in _GAN_VARIANTS
            if (values := _modes_per_seed(rows, data, gan, "raw_high_quality_fraction"))
        ]
        trained = bool(qualities) and max(qualities) >= _MIN_TRAINED_QUALITY
        if qualities and not trained:
            untrained.append(f"{data} (at most {max(qualities):.1%})")
        for gan in _GAN_VARIANTS:
            raw = _modes_per_seed(rows, data, gan, "raw_modes_covered")
            ema = _modes_per_seed(rows, data, gan, "modes_covered")
            if not raw:
                lines.append(f"- {data}, {_GAN_NAMES[gan]}: no finished seed.")
                continue
            covered += raw + ema
            line = (
                f"- {data}, {_GAN_NAMES[gan]}: raw generator {raw}, moving average {ema} "
                f"(of {num_modes}; {len(raw)} seeds)"
            )
            if gan != "non_saturating" and not trained:
                outcomes.append(None)
                line += ": not judged (no GAN has learned this dataset yet)."
            elif gan != "non_saturating":
                beats = _beats(raw, baseline)
                outcomes.append(beats)
                line += {
                    True: ": more than the non-saturating GAN (> 2 SE).",
                    False: ": not more than the non-saturating GAN by 2 SE.",
                    None: ": no comparison (fewer than 2 seeds a side, or no mode covered "
                    "by either).",
                }[beats]
            lines.append(line)
    decided = [o for o in outcomes if o is not None]
    if not decided:
        verdict = "undecided"
    elif all(decided) and len(decided) == len(outcomes):
        verdict = "held"
    elif any(decided):
        verdict = "partly held"
    else:
        verdict = "did not hold"
    summary = {
        "undecided": "No remedy can be compared with the non-saturating GAN: none has 2 "
        "finished seeds beside 2 of it on a dataset with a mode covered by either and a GAN "
        "that has learned the data, so nothing is judged.",
        "held": "Every remedy covers more modes than the non-saturating GAN on both datasets.",
        "partly held": "Some remedies cover more modes than the non-saturating GAN, not all "
        "on both datasets.",
        "did not hold": "No remedy covers more modes than the non-saturating GAN by 2 "
        "standard errors.",
    }[verdict]
    if covered and max(covered) == 0:
        summary += (
            " No generator, raw or averaged, covers a single mode at the end of its run: "
            "at this budget the test cannot show collapse or its remedies."
        )
    if untrained and verdict == "undecided":
        summary = "No remedy is compared with the non-saturating GAN."
    if untrained:
        summary += (
            f" Not judged: {', '.join(untrained)}, where no GAN's raw samples are on average "
            f"{_MIN_TRAINED_QUALITY:.0%} high-quality (the mean fraction of the best GAN in "
            "brackets). Collapse is good samples of few modes; these generators have not yet "
            "learned where the modes are, so their coverage measures early training, not "
            "collapse."
        )
    return verdict, summary + " Final coverage per seed:\n\n" + "\n".join(lines)


MODE_COLLAPSE = Finding(
    name="mode_collapse",
    title="PacGAN and WGAN-GP against mode collapse on the narrow ring and the grid",
    claim=(
        "Metz et al. 2017 (unrolled GANs, fig. 1), Srivastava et al. 2017 (VEEGAN, table 1) "
        "and Lin et al. 2018 (PacGAN, the 2-D ring and grid experiments): on a ring of 8 "
        "Gaussians of radius 2 and std 0.02 and on the 5x5 grid of std 0.05, a GAN trained "
        "with the standard loss covers only some of the modes, and packing the "
        "discriminator's inputs (PacGAN) recovers (nearly) all of them. For WGAN-GP there is "
        "no such table: Gulrajani et al. 2017 show critics on the 8 and 25 Gaussians (fig. 1) "
        "and their toy code trains on them for 100,000 generator updates; that the "
        "Wasserstein loss avoids collapse is Arjovsky et al.'s argument (2017, sec. 4), not "
        "a count. Tested here: at the same number of generator updates, PacGAN and WGAN-GP "
        "(lambda 10 and 0.1) cover more modes than the non-saturating GAN."
    ),
    settings=(
        "Data: `toy2d/ring8` (8 Gaussians on a circle of radius 2, std 0.02) and "
        "`toy2d/grid25_unit` (VEEGAN's 5x5 grid {-4, ..., 4}^2 with std 0.05, divided by "
        "2 sqrt 2 as WGAN-GP's toy code does: centres 0.71 apart, std 0.0177, unit variance "
        "per coordinate). Networks as WGAN-GP's toy code (`configs/gan.py:toy512`): "
        "generator and discriminator MLPs of 3 hidden layers of 512 units, z ~ N(0, I_2), "
        "LeakyReLU(0.2) in the discriminator (the toy code uses ReLU), Flax's default "
        "initialisation; the same Adam (lr 1e-4, betas (0.5, 0.9)) for both networks and "
        f"every loss. Batch {_GAN_BATCH}, {_GAN_STEPS} generator updates for every GAN "
        "(matched generator updates): the non-saturating GAN and PacGAN4 (Lin et al.'s "
        "packing degree 4, the same discriminator with 4 x 2 inputs) take one discriminator "
        "update per generator update, WGAN-GP 5 critic updates with lambda 10 (Gulrajani "
        "et al., Algorithm 1) or 0.1 (their toy code). Seeds 0-4. Scoring "
        f"(`genjax.evaluate.sample_quality.mode_coverage`) of {_GAN_SAMPLES:,} samples, from "
        "the raw generator (as in the papers) and from the moving average of its weights "
        f"(decay 0.999 after warm-up), every {_GAN_EVAL_EVERY} updates: a sample is "
        "high-quality within 3 standard deviations of its nearest centre (VEEGAN), and a "
        "mode is covered when at least 20% of N / M of ALL N samples are high-quality "
        "samples of it (N = 2,500: 63 samples for the 8 modes, 20 for the 25, PacGAN's "
        "rule), not a share of the high-quality samples only. The verdict compares the raw "
        "generators' final coverage: a remedy wins on a dataset when its mean over seeds "
        "exceeds the non-saturating GAN's by more than 2 combined standard errors, on a "
        "dataset where some GAN's raw samples are on average at least "
        f"{_MIN_TRAINED_QUALITY:.0%} high-quality (else no GAN has learned the data and the "
        "dataset is not judged).\n\n"
        f"**Budget.** {_GAN_STEPS:,} generator updates are 1% of the 100,000 of WGAN-GP's "
        "toy code and far below the tens of thousands of Metz et al. and PacGAN: the 40 runs "
        "took 61 minutes on a 2-core CPU, two runs at a time (on a quiet machine a "
        "non-saturating update of these networks takes about 27 ms, a WGAN-GP update with "
        "its 5 critic updates about 145 ms; the training seconds of the plots are those of "
        "runs sharing the 2 cores in pairs). The comparison is of the first "
        f"{_GAN_STEPS:,} updates only; nothing here says where the runs would end."
    ),
    runs=_mode_collapse_runs(),
    metrics=("raw_modes_covered", "modes_covered", "raw_high_quality_fraction"),
    judge=_judge_modes,
    measure=_measure_modes,
    partial=True,
)

# ---------------------------------------------------------------------------------------------
# 5. Bornschein & Bengio 2015.

_HELMHOLTZ_STEPS = 3_000
_HELMHOLTZ_EVAL_EVERY = 1_000
_HELMHOLTZ_SEEDS = (0, 1, 2)
# label -> (configs/helmholtz.py variant, report name).
_HELMHOLTZ_RULES = {
    "wake_sleep": ("wake_sleep", "wake-sleep"),
    "rws": ("", "reweighted wake-sleep (K = 5)"),
    "vimco": ("vimco", "VIMCO (K = 5)"),
}
_HELMHOLTZ_MONITOR = "eval/nll_iwae100"


def _helmholtz_runs() -> tuple[sweep.RunSpec, ...]:
    """Seed by seed (so the first seeds finish first), each rule."""
    overrides = {
        "num_steps": _HELMHOLTZ_STEPS,
        "eval_every": _HELMHOLTZ_EVAL_EVERY,
        "checkpoint_every": _HELMHOLTZ_STEPS,
        "sample_every": 0,
    }
    return tuple(
        _run(
            f"rule={rule},seed={seed}",
            f"configs/helmholtz.py:{variant}" if variant else "configs/helmholtz.py",
            {"seed": seed, **overrides},
            {"rule": rule, "seed": seed},
        )
        for seed in _HELMHOLTZ_SEEDS
        for rule, (variant, _) in _HELMHOLTZ_RULES.items()
    )


def _measure_helmholtz(root, runs, out_dir):
    """The monitoring test NLL (IWAE-100 on the 1,000 test digits) during training, mean
    +- one std over the finished seeds of each rule, against updates and training seconds
    (`bornschein2015.png`), and as a table."""
    curves: dict[str, list[dict]] = {}
    for spec in runs:
        if sweep.run_status(root, spec) != "finished":
            continue
        rule = dict(spec.labels)["rule"]
        metrics_path = os.path.join(root, spec.name, "metrics.jsonl")
        curves.setdefault(rule, []).append(_eval_curve(metrics_path, {"nll": _HELMHOLTZ_MONITOR}))
    by_updates, by_seconds, measured, lines = {}, {}, {}, []
    for rule, (_, name) in _HELMHOLTZ_RULES.items():
        seed_curves = curves.get(rule)
        if not seed_curves:
            continue
        length = min(len(c["updates"]) for c in seed_curves)
        updates = seed_curves[0]["updates"][:length]
        seconds = _mean_band(seed_curves, "seconds")[0]
        mean, low, high = _mean_band(seed_curves, "nll")
        by_updates[name], by_seconds[name] = (updates, mean, low, high), (seconds, mean, low, high)
        measured[rule] = {"seeds": len(seed_curves), "updates": updates, "nll": mean}
        lines.append(
            f"| {name} | {len(seed_curves)} | "
            + ", ".join(f"{value:.1f}" for value in mean)
            + f" | {seconds[-1]:.0f} |"
        )
    if not measured:
        return measured, ""
    plots.save_band_panels(
        [
            {"xlabel": "updates", "ylabel": "test NLL, IWAE-100 (nats)", "series": by_updates},
            {
                "xlabel": "training seconds",
                "ylabel": "test NLL, IWAE-100 (nats)",
                "series": by_seconds,
            },
        ],
        os.path.join(out_dir, "bornschein2015.png"),
        title="mnist5k, 784-200-200 SBN: mean over seeds +- one std",
    )
    evaluated = sorted({u for m in measured.values() for u in m["updates"]})
    markdown = (
        "During training, the monitoring estimate (IWAE-100 on the 1,000 test digits, a "
        "looser bound than the final IWAE-5000), mean over the finished seeds at updates "
        f"{', '.join(map(str, evaluated))} (figure `bornschein2015.png`, also against "
        "training seconds, with a band of one standard deviation over seeds):\n\n"
        "| rule | seeds | test NLL (IWAE-100) during training | training s (mean) |\n"
        "|---|---|---|---|\n" + "\n".join(lines) + "\n"
    )
    return measured, markdown


def _seed_summary(rows, rule) -> tuple[list[float], float, float]:
    """(final test NLLs per finished seed, their mean, the standard error of the mean over
    seeds (ddof=1; nan for one seed))."""
    values = [r["test_nll_nats"] for r in rows if r["rule"] == rule and r["status"] == "finished"]
    if not values:
        return values, math.nan, math.nan
    error = np.std(values, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return values, float(np.mean(values)), float(error)


def _gap(rows, better: str, worse: str) -> tuple[float, float]:
    """(`worse`'s mean test NLL minus `better`'s, their combined standard error over seeds;
    nan with fewer than 2 seeds a side)."""
    _, better_mean, better_error = _seed_summary(rows, better)
    _, worse_mean, worse_error = _seed_summary(rows, worse)
    return worse_mean - better_mean, math.hypot(better_error, worse_error)


def _gap_text(gap: float, error: float) -> str:
    direction = "lower" if gap > 0 else "higher"
    return f"{direction} by {abs(gap):.2f} nats ({abs(gap) / error:.1f} combined standard errors)"


def _judge_helmholtz(rows, measured):
    """Held: reweighted wake-sleep's mean test NLL over seeds is below wake-sleep's by more
    than 2 combined standard errors over seeds; partly held: below, but by less; did not
    hold: not below; undecided: fewer than 2 finished seeds a side. VIMCO is compared with
    both and reported, not judged (the paper predates it)."""
    del measured
    summaries = {rule: _seed_summary(rows, rule) for rule in _HELMHOLTZ_RULES}
    means = ", ".join(
        f"{name} {summaries[rule][1]:.2f} ± {summaries[rule][2]:.2f}"
        for rule, (_, name) in _HELMHOLTZ_RULES.items()
    )
    per_seed = "; ".join(
        f"{name}: {', '.join(f'{v:.2f}' for v in summaries[rule][0])}"
        for rule, (_, name) in _HELMHOLTZ_RULES.items()
    )
    text = (
        f"Test NLL, mean ± standard error over seeds (IWAE-5000, nats): {means}. Per seed: "
        f"{per_seed}."
    )
    gap, error = _gap(rows, "rws", "wake_sleep")
    if math.isnan(error):
        return "undecided", f"{text} Fewer than 2 finished seeds a side: nothing is judged."
    verdict = "held" if gap > 2 * error else "partly held" if gap > 0 else "did not hold"
    text += (
        f" Reweighted wake-sleep is {_gap_text(gap, error)} than wake-sleep; the rule asks for "
        "lower by more than 2."
    )
    vimco = [(other, *_gap(rows, "vimco", other)) for other in ("rws", "wake_sleep")]
    if all(not math.isnan(error) for _, _, error in vimco):
        text += (
            " VIMCO is "
            + " and ".join(
                f"{_gap_text(gap, error)} than {_HELMHOLTZ_RULES[other][1]}"
                for other, gap, error in vimco
            )
            + "."
        )
    return verdict, text


BORNSCHEIN2015 = Finding(
    name="bornschein2015",
    title="Reweighted wake-sleep beats wake-sleep; VIMCO alongside (Bornschein & Bengio 2015)",
    claim=(
        "Bornschein & Bengio 2015 (table 1, fig. 2): a sigmoid belief network with a "
        "recognition network of the same shape reaches a higher test log-likelihood when "
        "trained by reweighted wake-sleep with K = 5 importance samples (the wake-phase p "
        "update weighted by w~_k, both the wake- and the sleep-phase q updates) than by plain "
        "wake-sleep (Hinton et al. 1995). Alongside, the same network trained on the IWAE-5 "
        "bound with VIMCO's leave-one-out gradient for q (Mnih & Rezende 2016)."
    ),
    settings=(
        "mnist5k (4,000 training digits, dynamic binarization), SBN 784-200-200 with a "
        "factorised Bernoulli prior on the top layer and a recognition network 784-200-200 "
        "of sigmoid layers (`configs/helmholtz.py`), batch 100, Adam (lr 1e-3, cosine decay "
        f"over the run), {_HELMHOLTZ_STEPS:,} updates for every rule (equal updates, not "
        "equal compute: a K = 5 update takes about twice a wake-sleep update's time, the "
        "table's train_seconds), seeds "
        f"{', '.join(map(str, _HELMHOLTZ_SEEDS))}. Only the rule differs: wake-sleep (one "
        "sample of q, sleep-phase q update on one dream per example), reweighted wake-sleep "
        "(K = 5, q_update='both'), VIMCO (K = 5). Test log p(x) by the IWAE-5000 estimate "
        "with q as the proposal on the 1,000 test digits (the VAE/IWAE rows' protocol). The "
        "verdict compares the means over seeds by their standard error over seeds; "
        "test_nll_stderr is one run's error over the test digits, which every run shares, so "
        "it does not enter a comparison of rules on the same digits.\n\n"
        f"**Budget.** {_HELMHOLTZ_STEPS:,} updates ({_HELMHOLTZ_STEPS // 40} epochs of "
        "mnist5k) per run, chosen so that the 9 runs, one at a time, and their final "
        "evaluations fit in about 45 minutes of a 2-core CPU shared with other jobs "
        "(measured beforehand under that load: wake-sleep about 70 updates/s, reweighted "
        "wake-sleep and VIMCO about 25; the IWAE-5000 evaluation of the 1,000 test digits "
        "about 3 minutes per run, the larger part of the budget; these 9 runs took 36 minutes "
        "from the first launch to the report). Bornschein & Bengio train "
        "to convergence on the full 60,000 digits; these runs are far from it, so the numbers "
        "are of early training, not the paper's table."
    ),
    runs=_helmholtz_runs(),
    metrics=("test_nll_nats", "test_nll_stderr", "test_elbo", "train_seconds"),
    judge=_judge_helmholtz,
    measure=_measure_helmholtz,
)

FINDINGS = {
    f.name: f for f in (BURDA2016, RAINFORTH2018, SALAKHUTDINOV2008, MODE_COLLAPSE, BORNSCHEIN2015)
}


# ---------------------------------------------------------------------------------------------
# Running and reporting.


def _provenance() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import jax

    device = jax.devices()[0]
    return (
        f"{datetime.date.today().isoformat()}, genjax commit {commit}, jax {jax.__version__} "
        f"on {device.platform} ({device.device_kind}), {os.cpu_count()} CPU cores, "
        f"{platform.system()}"
    )


def render_report(finding, root, rows, measured_markdown, verdict, explanation) -> str:
    """The Markdown report of one finding."""
    commands = "\n".join(sweep.shell_command(sweep.run_command(s, root)) for s in finding.runs)
    commands = commands.replace(sys.executable, "python")
    return f"""# {finding.title}

Generated by `python -m experiments.findings --finding={finding.name}` ({_provenance()}).

**Claim.** {finding.claim}

**Verdict: {verdict}.** {explanation}

## Numbers

{sweep.markdown_table(rows, root, list(finding.metrics))}
{measured_markdown}
## Settings

{finding.settings}

The runs (each an ordinary `experiments.train` run; the findings command launches those not
finished and skips the rest):

```bash
{commands}
```
"""


def run_finding(
    finding: Finding,
    workdir: str,
    out_dir: str,
    parallel: int,
    dry_run: bool,
    report_only: bool = False,
):
    root = os.path.join(workdir, finding.runs_of or finding.name)
    for spec in finding.runs:
        sweep.validate_runs(sweep.load_config_file(spec.config), [spec], root)
    sweep.write_manifest(root, finding.runs, {"finding": finding.runs_of or finding.name})
    print("\n".join(sweep.command_lines(finding.runs, root)), flush=True)
    if dry_run:
        return None
    if not report_only:
        sweep.execute(finding.runs, root, parallel=parallel)
    rows = sweep.collect(finding.runs, root)
    if not finding.partial:
        _finished(rows)
    os.makedirs(out_dir, exist_ok=True)
    measured, measured_markdown = {}, ""
    if finding.measure is not None:
        measured, measured_markdown = finding.measure(root, finding.runs, out_dir)
        write_json_atomic(os.path.join(root, "measured.json"), measured)
    verdict, explanation = finding.judge(rows, measured)
    report = render_report(finding, root, rows, measured_markdown, verdict, explanation)
    path = os.path.join(out_dir, f"{finding.name}.md")
    write_text_atomic(path, report)
    print(report)
    print(f"wrote {path}")
    return verdict


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    names = list(FINDINGS) if _FINDING.value == "all" else [_FINDING.value]
    unknown = [name for name in names if name not in FINDINGS]
    if unknown:
        sys.exit(f"error: --finding={_FINDING.value!r}; allowed: {list(FINDINGS)} or 'all'")
    for name in names:
        try:
            run_finding(
                FINDINGS[name],
                _WORKDIR.value,
                _OUT.value,
                _PARALLEL.value,
                _DRY_RUN.value,
                _REPORT_ONLY.value,
            )
        except (sweep.SweepError, RuntimeError) as error:
            sys.exit(f"error: {name}: {error}")


if __name__ == "__main__":
    app.run(main)
