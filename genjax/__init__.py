"""genjax: deep generative models in JAX/Flax on one training system.

Subpackages: `objectives` (bounds, likelihoods), `models` (families, registry), `data`
(offline TFDS builders, catalog passthrough, preprocessing, batching), `train` (loop,
checkpoints), `evaluate` (likelihood estimators, plots).
"""

__version__ = "0.1.0"
