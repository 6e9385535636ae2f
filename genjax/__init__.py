"""genjax: deep generative models in JAX/Flax on one training system.

Subpackages, one floor each, bottom to top (a folder imports only from those before it;
tests/test_layering.py checks): `core` (train state, optimizers, data-parallel steps, small
shared helpers), `nn` (layers shared by families and flows), `data` (offline TFDS builders,
catalog passthrough, preprocessing, batching), `objectives` (bounds, likelihoods, estimators),
`flows` (bijectors), `evaluate` (likelihood estimators, sample quality, plots), `models`
(families, registry), `train` (the runner: loop, config, checkpoints, logs, multi-host,
preemption) and `workbench` (sweeps, leaderboard, benchmark, SNR study, Hopfield experiment).
"""

__version__ = "0.1.0"
