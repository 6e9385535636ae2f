"""The findings' judges and reports (experiments/findings.py) on hand-made numbers."""

import pytest

from experiments import findings
from genjax.train import sweep


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


def test_mode_judge_compares_mean_modes_over_seeds():
    def rows(ns, wgan):
        return [
            {"gan": loss, "seed": seed, "modes_covered": modes, "high_quality_fraction": 0.5}
            for loss, per_seed in (("non_saturating", ns), ("wgan_gp", wgan))
            for seed, modes in zip(findings._GAN_SEEDS, per_seed, strict=True)
        ]

    assert findings._judge_modes(rows([2, 3, 8], [8, 8, 7]), {})[0] == "held"
    verdict, text = findings._judge_modes(rows([8, 8, 8], [6, 6, 4]), {})
    assert verdict == "did not hold" and "[6, 6, 4]" in text


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
    """The trainer's own checks accept every run of every finding (nothing is trained)."""
    for finding in findings.FINDINGS.values():
        for spec in finding.runs:
            config = sweep.load_config_file(spec.config)
            sweep.validate_runs(config, [spec], str(tmp_path / finding.name))
