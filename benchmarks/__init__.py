"""PyTorch reference implementations for the throughput benchmark (not part of genjax)."""

# The PyTorch references of `torch_models` and the genjax config (a `--config=` argument) each
# mirrors; importable without PyTorch, for `experiments.benchmark`.
GENJAX_CONFIGS = {
    "vae": "configs/vae.py",
    "rbm": "configs/rbm.py",
    "realnvp_toy": "configs/realnvp.py:toy",
}
