"""The run-level SNR driver (genjax/workbench/snr.py): the family's estimator rules apply
before any checkpoint is read."""

import pytest

from configs import vae as vae_configs
from genjax.objectives import BiasedEstimatorWarning
from genjax.train import config as config_lib
from genjax.workbench import snr


def _saved_vae_run(workdir, objective="iwae"):
    """A tiny VAE's config.json in ``workdir``, no checkpoint: `measure_run` must decide on
    the estimators before it restores anything."""
    config = vae_configs.get_config("tiny")
    config.model_config.objective = objective
    config_lib.save_config(config, str(workdir))
    return str(workdir)


def test_measure_run_refuses_an_estimator_of_another_bound_before_measuring(tmp_path):
    """With objective='elbo', 'dreg' (an IWAE-bound estimator) once measured the IWAE bound's
    gradient under the ELBO's name; the family's rules now refuse it before the checkpoint is
    read (the run here has none, so measuring would fail with FileNotFoundError instead)."""
    workdir = _saved_vae_run(tmp_path)
    with pytest.raises(ValueError, match=r"estimator='dreg'.*IWAE bound.*objective='elbo'"):
        snr.measure_run(workdir, ["reparam", "dreg"], [1, 4], 8, 2, objective="elbo")
    with pytest.raises(ValueError, match=r"estimator='magic'; allowed"):
        snr.measure_run(workdir, ["magic"], [1], 8, 2)


def test_measure_run_warns_that_stl_is_biased_for_the_iwae_bound(tmp_path):
    workdir = _saved_vae_run(tmp_path)
    with pytest.warns(BiasedEstimatorWarning, match=r"estimator='stl'.*num_samples=4"):
        with pytest.raises(FileNotFoundError):  # checked first, then the missing checkpoint
            snr.measure_run(workdir, ["reparam", "stl"], [1, 4], 8, 2, objective="iwae")
