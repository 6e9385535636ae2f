"""The findings' judges and reports (experiments/findings.py) on hand-made numbers."""

import json

import numpy as np
import pytest

from experiments import findings
from genjax.workbench import sweep


def _burda_rows(vae_nll, iwae_nll, vae_units, iwae_units, stderr=1.0):
    """Rows as `sweep.collect` orders them: labels, status, then the eval.json numbers."""
    return [
        {"model": "VAE, k = 1", "seed": 0, "status": "finished", "test_nll_nats": vae_nll,
         "test_nll_stderr": stderr, "test_elbo": -110.0, "active_units": vae_units},
        {"model": "IWAE, k = 50", "seed": 0, "status": "finished", "test_nll_nats": iwae_nll,
         "test_nll_stderr": stderr, "test_elbo": -112.0, "active_units": iwae_units},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "vae_nll, iwae_nll, vae_units, iwae_units, verdict",
    [
        (110.0, 103.0, 37, 50, "held"),  # 7 nats = 4.9 combined SE, more units
        (110.0, 108.0, 37, 50, "partly held"),  # 2 nats = 1.4 SE: not enough
        (110.0, 103.0, 50, 50, "partly held"),  # no more active units
        (103.0, 110.0, 50, 37, "did not hold"),
    ],
)
def test_burda_judge(vae_nll, iwae_nll, vae_units, iwae_units, verdict):
    rows = _burda_rows(vae_nll, iwae_nll, vae_units, iwae_units)
    assert findings._judge_burda(rows, {})[0] == verdict


def _rbm_rows(nlls, stderr=1.0):
    return [
        {"negative_phase": phase, "test_nll_nats": nll, "test_nll_stderr": stderr, "seed": 0,
         "status": "finished"}
        for phase, nll in zip(findings._RBM_PHASES, nlls, strict=True)
    ]  # fmt: skip


def test_rbm_judge_needs_every_longer_chain_two_standard_errors_better():
    verdict, text = findings._judge_rbm(_rbm_rows([172.0, 113.0, 99.0, 103.0]), {})
    assert verdict == "held" and "CD-25 (99.00) < PCD (103.00) < CD-10 (113.00) < CD-1" in text
    assert findings._judge_rbm(_rbm_rows([172.0, 171.0, 99.0, 103.0]), {})[0] == "partly held"
    assert findings._judge_rbm(_rbm_rows([100.0, 101.0, 99.0, 100.5]), {})[0] == "did not hold"


def _helmholtz_rows(wake_sleep, rws, vimco):
    """Finished rows, one per seed, of each rule's test NLLs."""
    return [
        {"rule": rule, "seed": seed, "status": "finished", "test_nll_nats": nll}
        for rule, nlls in (("wake_sleep", wake_sleep), ("rws", rws), ("vimco", vimco))
        for seed, nll in enumerate(nlls)
    ]


def test_helmholtz_judge_needs_reweighted_wake_sleep_two_standard_errors_better():
    verdict, text = findings._judge_helmholtz(
        _helmholtz_rows([153, 154, 152], [138, 139, 138], [137] * 3), {}
    )
    assert verdict == "held" and "VIMCO is lower" in text
    partly = _helmholtz_rows([140, 141, 139], [139.5, 140.5, 139], [137] * 3)
    assert findings._judge_helmholtz(partly, {})[0] == "partly held"
    reversed_ = _helmholtz_rows([138, 139, 138], [153, 154, 152], [137] * 3)
    assert findings._judge_helmholtz(reversed_, {})[0] == "did not hold"
    assert findings._judge_helmholtz(_helmholtz_rows([138], [153], [137]), {})[0] == "undecided"


def _mode_rows(raw_by_gan, data="ring8", status="finished", quality=0.9):
    """Finished rows for one dataset: {gan: raw modes per seed}; the moving average's
    coverage is set one below the raw generator's (the judge must read the raw one); every
    raw generator's high-quality fraction is `quality`."""
    return [
        {"data": data, "gan": gan, "seed": seed, "status": status,
         "raw_modes_covered": modes, "modes_covered": max(modes - 1, 0),
         "raw_high_quality_fraction": quality}
        for gan, per_seed in raw_by_gan.items()
        for seed, modes in enumerate(per_seed)
    ]  # fmt: skip


def _all_gans(ns, pacgan, wgan10, wgan01, data="ring8", quality=0.9):
    return _mode_rows(
        {"non_saturating": ns, "pacgan4": pacgan, "wgan_gp_10": wgan10, "wgan_gp_0.1": wgan01},
        data,
        quality=quality,
    )


def test_mode_judge_needs_each_remedy_two_standard_errors_above_the_baseline():
    collapsed, covering = [2, 3, 2, 3, 2], [8, 8, 7, 8, 8]
    both = _all_gans(collapsed, covering, covering, covering) + _all_gans(
        [5, 6, 5, 6, 5], [24, 25, 25, 23, 25], [20, 22, 21, 20, 22], [25] * 5, "grid25_unit"
    )
    verdict, text = findings._judge_modes(both, {})
    assert verdict == "held"
    assert "ring8, non-saturating + PacGAN4: raw generator [8, 8, 7, 8, 8]" in text
    assert "moving average [7, 7, 6, 7, 7]" in text
    # One remedy on one dataset only 0.4 modes better: 0.4 < 2 SE (= 0.63) -> partly held.
    mixed = _all_gans(collapsed, covering, [2, 3, 3, 3, 3], covering) + _all_gans(
        [5, 6, 5, 6, 5], [24, 25, 25, 23, 25], [20, 22, 21, 20, 22], [25] * 5, "grid25_unit"
    )
    verdict, text = findings._judge_modes(mixed, {})
    assert verdict == "partly held" and "not more than the non-saturating GAN by 2 SE" in text
    same = _all_gans([8] * 5, [8] * 5, [6, 6, 4, 6, 6], [8] * 5) + _all_gans(
        [25] * 5, [25] * 5, [25] * 5, [24] * 5, "grid25_unit"
    )
    assert findings._judge_modes(same, {})[0] == "did not hold"


def test_mode_judge_is_undecided_without_two_seeds_a_side_and_says_when_nothing_covers():
    rows = (
        _all_gans([0], [0], [0], [0])
        + _mode_rows({"non_saturating": [0, 0]}, "grid25_unit")
        + _mode_rows({"pacgan4": [0, 0]}, "grid25_unit", status="unfinished")
    )
    verdict, text = findings._judge_modes(rows, {})
    assert verdict == "undecided"
    assert "no comparison (fewer than 2 seeds" in text
    assert "grid25_unit, WGAN-GP, lambda 10: no finished seed" in text
    assert "No generator, raw or averaged, covers a single mode" in text
    # Two seeds a side but no mode covered by either: a floor, not a verdict.
    zeros = _all_gans([0, 0], [0, 0], [0, 0], [0, 0])
    assert findings._judge_modes(zeros, {})[0] == "undecided"
    assert findings._judge_modes(_all_gans([0, 0], [3, 4], [0, 0], [0, 0]), {})[0] == (
        "partly held"
    )


def test_mode_judge_leaves_a_dataset_no_gan_has_learned_unjudged():
    # PacGAN 4 SE above the baseline on both datasets, but on the ring every GAN's raw
    # samples are 5% high-quality (one GAN 9.9%): the ring is not judged, the grid is.
    ring = _all_gans([0, 0, 0, 0, 0], [2, 3, 2, 3, 2], [0] * 5, [0] * 5, quality=0.05)
    ring[-1]["raw_high_quality_fraction"] = 0.099  # WGAN-GP 0.1's seed 4: its mean is 6.0%
    grid = _all_gans([1, 2, 1, 2, 1], [6, 7, 6, 7, 6], [1, 2, 1, 2, 1], [1, 2, 1, 2, 1],
                     "grid25_unit", quality=0.3)  # fmt: skip
    verdict, text = findings._judge_modes(ring + grid, {})
    assert verdict == "partly held"
    assert "ring8, non-saturating + PacGAN4: raw generator [2, 3, 2, 3, 2]" in text
    assert "not judged (no GAN has learned this dataset yet)" in text
    assert "Not judged: ring8 (at most 6.0%)" in text
    assert "grid25_unit, non-saturating + PacGAN4: raw generator [6, 7, 6, 7, 6], moving" in text
    # The gate is on the best GAN's mean: one GAN at 10% makes the ring judged.
    for row in ring:
        if row["gan"] == "wgan_gp_0.1":
            row["raw_high_quality_fraction"] = 0.1
    verdict, text = findings._judge_modes(ring + grid, {})
    assert "Not judged" not in text
    assert (
        "ring8, non-saturating + PacGAN4: raw generator [2, 3, 2, 3, 2], moving average "
        "[1, 2, 1, 2, 1] (of 8; 5 seeds): more than" in text
    )
    # Nothing learned anywhere: undecided.
    flat = _all_gans([0] * 5, [2, 3, 2, 3, 2], [0] * 5, [0] * 5, quality=0.01) + _all_gans(
        [0] * 5, [2, 3, 2, 3, 2], [0] * 5, [0] * 5, "grid25_unit", quality=0.01
    )
    assert findings._judge_modes(flat, {})[0] == "undecided"


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 9')


def test_coverage_curve_reads_modes_and_training_seconds(tmp_path):
    """Seconds at update s sum (steps in each logged interval) / steps_per_sec up to s."""
    path = tmp_path / "metrics.jsonl"
    _write_jsonl(path, [
        {"step": 20, "train/d_loss": 1.0, "perf/steps_per_sec": 2.0},   # 10 s
        {"step": 40, "train/d_loss": 1.0, "perf/steps_per_sec": 4.0},   # + 5 s
        {"step": 40, "eval/modes_covered": 1, "eval/raw_modes_covered": 2,
         "eval/high_quality_fraction": 0.5, "eval/raw_high_quality_fraction": 0.25},
        {"step": 60, "train/d_loss": 1.0, "perf/steps_per_sec": 1.0},   # + 20 s
        {"step": 80, "train/d_loss": 1.0, "perf/steps_per_sec": 0.5},   # + 40 s
        {"step": 80, "eval/modes_covered": 3, "eval/raw_modes_covered": 5,
         "eval/high_quality_fraction": 0.75, "eval/raw_high_quality_fraction": 0.5},
        {"step": 100, "eval/modes_covered": 3},  # an evaluation without the raw fields
    ])  # fmt: skip
    curve = findings._coverage_curve(str(path))
    assert curve == {
        "updates": [40, 80], "seconds": [15.0, 75.0], "modes": [1, 3], "raw_modes": [2, 5],
        "quality": [0.5, 0.75], "raw_quality": [0.25, 0.5],
    }  # fmt: skip


def test_mean_band_is_mean_plus_minus_sample_std_over_seeds():
    curves = [{"m": [0, 2, 4]}, {"m": [2, 4, 8]}, {"m": [4, 6]}]  # the last seed is shorter
    mean, low, high = findings._mean_band(curves, "m")
    np.testing.assert_allclose(mean, [2, 4])
    np.testing.assert_allclose(low, [0, 2])  # std (ddof=1) of (0, 2, 4) is 2
    np.testing.assert_allclose(high, [4, 6])
    assert findings._mean_band(curves[:1], "m") == ([0, 2, 4], [0, 2, 4], [0, 2, 4])


def _snr_rows(reparam_encoder, dreg_encoder):
    """SNR rows over findings._SNR_KS from per-K encoder SNRs; decoder SNR rises as sqrt(K)."""
    rows = []
    for estimator, encoder in (("reparam", reparam_encoder), ("dreg", dreg_encoder)):
        for k, snr in zip(findings._SNR_KS, encoder, strict=True):
            rows.append({"estimator": estimator, "num_importance_samples": k,
                         "group": "encoder", "snr": snr})  # fmt: skip
            rows.append({"estimator": estimator, "num_importance_samples": k,
                         "group": "decoder", "snr": k**0.5})  # fmt: skip
    return rows


def test_snr_judge():
    ks = findings._SNR_KS
    falling = [1 / k**0.5 for k in ks]
    rising = [k**0.5 for k in ks]
    flat_after_ten = [0.35, 0.3, 0.26, 0.26, 0.27, 0.26, 0.26]
    verdict, text = findings._judge_snr([], {"model A": _snr_rows(falling, rising)})
    assert verdict == "held" and "factor 0.03" in text  # 1 / sqrt(1000)
    assert findings._judge_snr([], {"m": _snr_rows(falling, flat_after_ten)})[0] == "partly held"
    assert findings._judge_snr([], {"m": _snr_rows(rising, rising)})[0] == "did not hold"


def test_report_states_claim_verdict_numbers_and_commands(tmp_path):
    finding = findings.BURDA2016
    rows = _burda_rows(110.0, 103.0, 37, 50)
    verdict, explanation = finding.judge(rows, {})
    report = findings.render_report(finding, str(tmp_path), rows, "", verdict, explanation)
    assert report.startswith(f"# {finding.title}")
    assert "**Verdict: held.**" in report and finding.claim in report
    assert "| VAE, k = 1 | 1/1 | 110 ± n/a | 1 ± n/a | -110 ± n/a | 37 ± n/a |" in report
    assert report.count("-m experiments.train --config=configs/") == 2
    assert "--config.num_steps=10000" in report


def test_every_finding_run_is_a_valid_training_config(tmp_path):
    """The trainer's own checks accept every run of every finding (nothing is trained), and
    each run's overrides reach its config."""
    for finding in findings.FINDINGS.values():
        for spec in finding.runs:
            config = sweep.load_config_file(spec.config)
            sweep.validate_runs(config, [spec], str(tmp_path / finding.name))
            run_config = sweep.apply_overrides(config, spec.overrides)
            for field, value in spec.overrides:
                assert run_config[field] == value, (spec.name, field)


@pytest.mark.parametrize("label", list(findings._GAN_VARIANTS))
def test_mode_collapse_runs_share_networks_optimizer_and_budget(label):
    """Every GAN of the study: 3 x 512 MLPs, a 2-D latent, Adam 1e-4 with betas (0.5, 0.9)
    for both networks, the same number of generator updates; only loss, penalty and packing
    differ, as the label says."""
    specs = [s for s in findings.MODE_COLLAPSE.runs if dict(s.labels)["gan"] == label]
    assert sorted({dict(s.labels)["seed"] for s in specs}) == [0, 1, 2, 3, 4]
    for spec in specs:
        config = sweep.apply_overrides(sweep.load_config_file(spec.config), spec.overrides)
        mc = config.model_config
        assert (mc.hidden_size, mc.num_hidden_layers, mc.latent_size) == (512, 3, 2)
        assert (config.learning_rate, config.adam_b1, config.adam_b2) == (1e-4, 0.5, 0.9)
        assert mc.discriminator_learning_rate == 0.0  # the generator's rate for both
        assert config.num_steps == findings._GAN_STEPS
        assert config.dataset == f"toy2d/{dict(spec.labels)['data']}"
        expected = {
            "non_saturating": ("non_saturating", 1, 0.0, 1),
            "pacgan4": ("non_saturating", 1, 0.0, 4),
            "wgan_gp_10": ("wasserstein", 5, 10.0, 1),
            "wgan_gp_0.1": ("wasserstein", 5, 0.1, 1),
        }[label]
        assert (mc.loss, mc.critic_steps, mc.gradient_penalty, mc.pack) == expected
