"""The gradient SNR of a trained run's estimators (Rainforth et al. 2018), read from its
workdir: the run-level driver of `genjax.evaluate.gradient_snr`, used by `experiments.snr` and
the `rainforth2018` finding.

    rows, step = snr.measure_run("runs/iwae", ["reparam", "dreg"], [1, 10, 100], 1000, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from genjax.evaluate.gradient_snr import estimator_snr_rows, prefix_groups
from genjax.train import Experiment, load_config, restore_state


def measure_run(
    workdir: str,
    estimators: Sequence[str],
    num_samples: Sequence[int],
    num_draws: int,
    batch_size: int,
    objective: str = "iwae",
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[dict], int]:
    """`estimator_snr_rows` of a trained VAE-family run, at its latest checkpoint.

    The fixed batch is the first `batch_size` training examples (evaluation preprocessing),
    the gradient that of `-objective` ('iwae' or 'elbo') with K samples, and the groups the
    family's encoder and decoder (`VAE.parameter_groups`). Every (estimator, K) pair is checked
    by the family's own rules (`VAE.check_estimator`, those of config validation) before the
    checkpoint is restored: a pair the configuration would refuse is refused (e.g. 'dreg' or
    'vimco' with objective='elbo', whose gradient is the IWAE bound's), and 'stl' with the
    IWAE bound and K > 1 warns that it is biased (`BiasedEstimatorWarning`).

    Returns:
      (rows, the checkpoint's step).

    Raises:
      ValueError: a run of another family, an unknown or refused estimator, K < 1 or fewer
        than 2 draws.
    """
    config = load_config(workdir)
    if config.model != "vae":
        raise ValueError(
            f"--workdir={workdir!r} holds config.model={config.model!r}; the estimators are "
            "those of latent-variable models (config.model='vae')."
        )
    if min(num_samples) < 1 or num_draws < 2 or batch_size < 1:
        raise ValueError(
            f"num_samples={list(num_samples)} must all be >= 1, num_draws={num_draws} >= 2 "
            f"and batch_size={batch_size} >= 1."
        )
    config.model_config.objective = objective
    experiment = Experiment(config)
    model = experiment.model
    for estimator in estimators:
        for k in num_samples:
            try:
                model.check_estimator(estimator, k)
            except ValueError as error:
                raise ValueError(
                    f"{error} (objective={objective!r} is config.model_config.objective here)"
                ) from None
    state = jax.device_get(restore_state(experiment, workdir))
    first = next(experiment.dataset.eval_batches("train", batch_size))
    batch = {"x": first["x"], "log_det": first["log_det"]}

    def loss_fn(params, key, estimator, k):
        keys = jax.random.split(key, batch_size)
        loss, _ = model.estimator_loss(
            params, state.extras, batch, keys, estimator=estimator, num_samples=k
        )
        return loss

    rows = estimator_snr_rows(
        loss_fn,
        state.params,
        estimators,
        num_samples,
        jax.random.key(seed),
        num_draws,
        prefix_groups(model.parameter_groups()),
        batch_size=batch_size,
        progress=progress,
    )
    return rows, int(state.step)
