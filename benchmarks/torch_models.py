"""Plain-PyTorch (eager, float32, CPU) references of three genjax train steps, for throughput.

The benchmark compares genjax's compiled train step with what a PyTorch user would write for the
same model: `nn.Module`s, autograd and `torch.optim`, no `torch.compile`. Each model reproduces
its genjax config's training step (architecture, initialisation scheme, loss and its gradient
estimator, optimizer and hyperparameters, the per-step metrics genjax computes):

  vae          configs/vae.py (default): Burda et al. (2016) VAE, 784-200-200-50 tanh, k = 1,
               sampled-KL ELBO (genjax.models.vae.VAE with estimator 'reparam').
  rbm          configs/rbm.py (default, CD-1): Bernoulli RBM 784 x 500
               (genjax.models.energy.rbm_family.RBM, genjax.models.energy.rbm).
  realnvp_toy  configs/realnvp.py:toy: RealNVP of 8 'half'-mask affine couplings on
               toy2d/8gaussians (genjax.models.flow.FlowModel, genjax.flows.coupling).

The configs' learning-rate schedules (exponential decay for the VAE, cosine decay for the RBM
and the flow) are left out: they change the step size, not the cost of a step.

Timing: with 2 threads on a machine shared with other work, OpenMP's default busy-waiting
made these steps up to 100 times slower than with 1 thread; set OMP_WAIT_POLICY=PASSIVE (before
torch is imported) or use one thread there.

Install (this directory is not part of the genjax package, and torch is not a genjax
dependency): `pip install -r benchmarks/requirements.txt`, the CPU build of PyTorch.

`tests/benchmarks/test_torch_models.py` checks each model against genjax on the same parameters
and noise (loaded with `load_genjax_params`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import GENJAX_CONFIGS

MODELS = tuple(GENJAX_CONFIGS)  # the genjax config each mirrors: GENJAX_CONFIGS


# Adam settings and global-norm gradient clipping (None: none) of each genjax config
# (configs/common.py, configs/vae.py, configs/realnvp.py and genjax.train.config.base_config).
OPTIMIZER_SETTINGS = {
    "vae": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-4, grad_clip_norm=None),
    "rbm": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, grad_clip_norm=None),
    "realnvp_toy": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, grad_clip_norm=100.0),
}

NUM_PIXELS = 28 * 28  # mnist5k, flattened
# The fraction of pixels set in the fixed binary batch (about that of binarized MNIST).
PIXEL_DENSITY = 0.13
_LOG_2PI = math.log(2.0 * math.pi)
# Flax's lecun_normal draws from a standard normal truncated to [-2, 2], rescaled by this
# (its standard deviation) so that the draw has unit variance.
_TRUNCATED_NORMAL_STD = 0.87962566103423978

Metrics = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- helpers


def flax_dense(in_features: int, out_features: int, zero: bool = False) -> nn.Linear:
    """A Linear initialised as Flax's `nn.Dense`: lecun_normal kernel (a truncated normal of
    variance 1 / in_features), zero bias; or all zeros with `zero` (a zero-initialised layer)."""
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        if zero:
            linear.weight.zero_()
        else:
            std = math.sqrt(1.0 / in_features) / _TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(linear.weight, std=std, a=-2.0 * std, b=2.0 * std)
        linear.bias.zero_()
    return linear


def tanh_mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """genjax.models.vae.MLP: Dense layers of `sizes` (in, hidden..., out), tanh between them,
    a linear output."""
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if index:
            layers.append(nn.Tanh())
        layers.append(flax_dense(size_in, size_out))
    return nn.Sequential(*layers)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_var)) summed over the last axis: (..., U) -> (...), the formula
    of genjax.objectives.gaussian_log_prob."""
    squared_error = torch.square(x - mean)
    return -0.5 * torch.sum(_LOG_2PI + log_var + squared_error * torch.exp(-log_var), dim=-1)


def linears(module: nn.Module) -> list[nn.Linear]:
    """The Linear layers of `module` in definition order."""
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


# ----------------------------------------------------------------------------- models


class VAE(nn.Module):
    """genjax.models.vae.VAE with configs/vae.py: one Gaussian stochastic layer, Bernoulli
    decoder.

    q(z | x) = N(mean(x), exp(log_var(x))), the encoder 784-200-200-(2 x 50) with tanh, its
    output split into (mean, log_var); p(z) = N(0, I); p(x | z) = Bernoulli(logits(z)), the
    decoder 50-200-200-784 with tanh. Trained on -ELBO with one reparameterised sample,
    z = mean + exp(log_var / 2) * eps, and the KL term sampled (analytic_kl=False): the
    gradient flows through z and through log q's parameters (genjax's 'reparam' estimator).
    """

    def __init__(self, hidden_sizes=(200, 200), latent_size: int = 50):
        super().__init__()
        self.latent_size = latent_size
        self.encoder = tanh_mlp((NUM_PIXELS, *hidden_sizes, 2 * latent_size))
        self.decoder = tanh_mlp((latent_size, *reversed(hidden_sizes), NUM_PIXELS))

    def log_weights(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """log p(x | z) + log p(z) - log q(z | x) at z = mean + std * eps: x (B, 784) binary,
        eps (B, U) standard normal -> (B,)."""
        mean, log_var = self.encoder(x).chunk(2, dim=-1)  # (B, U) each
        z = mean + torch.exp(0.5 * log_var) * eps
        log_q = gaussian_log_prob(z, mean, log_var)
        log_prior = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
        logits = self.decoder(z)  # (B, 784)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)
        return log_px + log_prior - log_q

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """-mean ELBO of the batch x (B, 784) with fresh noise, and no further metrics (genjax's
        train/bound and train/elbo are both minus the loss here)."""
        eps = torch.randn(x.shape[0], self.latent_size, dtype=x.dtype)
        return -self.log_weights(x, eps).mean(), {}


class RBM(nn.Module):
    """genjax.models.energy.rbm_family.RBM with configs/rbm.py: Bernoulli-Bernoulli, CD-1.

    E(v, h) = -b_v.v - b_h.h - v^T W h with W (V, H) ~ N(0, 0.01^2), zero biases. The loss is
    genjax's surrogate mean F(v_data) - mean F(v_model), F the free energy, v_model one block
    Gibbs sweep from the data with sampled hiddens and sampled binary visibles, and no gradient
    through v_model: its gradient is the CD-1 update with the mean-field p(h | v) in both
    phases (Hinton 2002, eq. 5).
    """

    def __init__(
        self, num_visible: int = NUM_PIXELS, num_hidden: int = 500, weight_scale: float = 0.01
    ):
        super().__init__()
        self.W = nn.Parameter(weight_scale * torch.randn(num_visible, num_hidden))
        self.b_v = nn.Parameter(torch.zeros(num_visible))
        self.b_h = nn.Parameter(torch.zeros(num_hidden))

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | v): (B, V) -> (B, H)."""
        return torch.sigmoid(self.b_h + v @ self.W)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """p(v = 1 | h): (B, H) -> (B, V)."""
        return torch.sigmoid(self.b_v + h @ self.W.T)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -b_v.v - sum_j softplus(b_h + v W)_j: (B, V) -> (B,)."""
        return -(v @ self.b_v) - F.softplus(self.b_h + v @ self.W).sum(dim=-1)

    @torch.no_grad()
    def gibbs_step(self, v: torch.Tensor) -> torch.Tensor:
        """One block Gibbs sweep v -> h ~ p(h | v) -> v' ~ p(v | h), binary (B, V)."""
        return torch.bernoulli(self.visible_probs(torch.bernoulli(self.hidden_probs(v))))

    def contrastive_divergence_loss(
        self, v_data: torch.Tensor, v_model: torch.Tensor
    ) -> torch.Tensor:
        """mean F(v_data) - mean F(v_model), v_model held constant (genjax.models.energy.rbm.
        contrastive_divergence_loss)."""
        return self.free_energy(v_data).mean() - self.free_energy(v_model.detach()).mean()

    def loss(self, v: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """The CD-1 surrogate of the batch v (B, V), and genjax's progress-bar metric: the
        squared error of the mean-field reconstruction, summed over pixels."""
        loss = self.contrastive_divergence_loss(v, self.gibbs_step(v))
        with torch.no_grad():
            reconstruction = self.visible_probs(self.hidden_probs(v))
            recon_error = torch.square(v - reconstruction).sum(dim=-1).mean()
        return loss, {"recon_error": recon_error}


class AffineCoupling(nn.Module):
    """genjax.flows.coupling.AffineCoupling(mask='half', scale='tanh') in the data -> noise
    direction (the one `Flow.log_prob` runs): x_a = the first D // 2 features (the others with
    `parity`), raw, t = MLP(x_a), s = scale_factor * tanh(raw), y_b = x_b * exp(s) + t.

    The MLP has `num_hidden_layers` ReLU layers and a zero-initialised output, so a new
    coupling is the identity; `scale_factor` (per transformed feature) starts at 1.
    """

    def __init__(self, num_dims: int, parity: bool, hidden_features: int, num_hidden_layers: int):
        super().__init__()
        self.parity = parity
        num_kept = num_dims - num_dims // 2 if parity else num_dims // 2
        num_transformed = num_dims - num_kept
        layers: list[nn.Module] = []
        width = num_kept
        for _ in range(num_hidden_layers):
            layers += [flax_dense(width, hidden_features), nn.ReLU()]
            width = hidden_features
        layers.append(flax_dense(width, 2 * num_transformed, zero=True))
        self.conditioner = nn.Sequential(*layers)
        self.scale_factor = nn.Parameter(torch.ones(num_transformed))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D) -> (y (B, D), log |det dy/dx| (B,))."""
        first, second = x.tensor_split([x.shape[-1] // 2], dim=-1)
        kept, transformed = (second, first) if self.parity else (first, second)
        raw, shift = self.conditioner(kept).chunk(2, dim=-1)
        log_scale = self.scale_factor * torch.tanh(raw)
        transformed = transformed * torch.exp(log_scale) + shift
        halves = (transformed, kept) if self.parity else (kept, transformed)
        return torch.cat(halves, dim=-1), log_scale.sum(dim=-1)


class RealNVP(nn.Module):
    """genjax.models.flow.FlowModel with configs/realnvp.py:toy: `coupling.realnvp_flat` (8
    'half' couplings of alternating parity, conditioners 64 wide with 2 hidden layers, no
    batch norm or ActNorm) on a standard-normal base; trained on -mean log p(x)."""

    def __init__(
        self,
        num_dims: int = 2,
        num_couplings: int = 8,
        hidden_features: int = 64,
        num_hidden_layers: int = 2,
    ):
        super().__init__()
        self.couplings = nn.ModuleList(
            AffineCoupling(num_dims, index % 2 == 1, hidden_features, num_hidden_layers)
            for index in range(num_couplings)
        )

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x): x (B, D) -> (B,), the couplings in order from data to noise."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype)
        for coupling in self.couplings:
            x, coupling_log_det = coupling(x)
            log_det = log_det + coupling_log_det
        log_base = -0.5 * torch.sum(torch.square(x), dim=-1) - 0.5 * x.shape[-1] * _LOG_2PI
        return log_base + log_det

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """-mean log p(x) of the batch x (B, D), and no further metrics (genjax's bits/dim is
        the loss rescaled)."""
        return -self.log_prob(x).mean(), {}


# ----------------------------------------------------------------------------- genjax params


def _genjax_pairs(
    name: str, module: nn.Module, params: Mapping
) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(torch parameter, the genjax array in its layout) for every parameter of `module`."""
    pairs: list[tuple[torch.Tensor, np.ndarray]] = []

    def add_dense(linear: nn.Linear, dense: Mapping) -> None:
        # Flax kernels are (in, out), torch Linear weights (out, in).
        pairs.append((linear.weight, np.asarray(dense["kernel"]).T))
        pairs.append((linear.bias, np.asarray(dense["bias"])))

    if name == "vae":
        tree = params["params"]
        for group, module_part in (
            (tree["data_encoder"]["MLP_0"], module.encoder),
            (tree["data_decoder"], module.decoder),
        ):
            for index, linear in enumerate(linears(module_part)):
                add_dense(linear, group[f"Dense_{index}"])
    elif name == "rbm":
        pairs += [
            (getattr(module, field), np.asarray(params[field])) for field in ("W", "b_v", "b_h")
        ]
    elif name == "realnvp_toy":
        couplings = params["params"]["bijector"]["bijector"]
        for index, coupling in enumerate(module.couplings):
            tree = couplings[f"bijectors_{index}"]
            for layer, linear in enumerate(linears(coupling.conditioner)):
                add_dense(linear, tree["MLPConditioner_0"][f"Dense_{layer}"])
            pairs.append((coupling.scale_factor, np.asarray(tree["scale_factor"])))
    else:
        raise ValueError(f"unknown model {name!r}; allowed: {MODELS}")
    return pairs


def load_genjax_params(name: str, torch_module: nn.Module, params: Mapping) -> None:
    """Copies genjax parameters (the `params` of `model.init`, or any pytree of that structure,
    such as their gradients) into `torch_module`, a `build_model(name)`.

    Raises:
      ValueError: when a genjax array's shape differs from its torch parameter's, or when the
        genjax parameters do not cover every torch parameter.
    """
    pairs = _genjax_pairs(name, torch_module, params)
    if len(pairs) != len(list(torch_module.parameters())):
        raise ValueError(f"the genjax params of {name!r} do not cover the torch module")
    with torch.no_grad():
        for parameter, value in pairs:
            if tuple(value.shape) != tuple(parameter.shape):
                raise ValueError(
                    f"{name}: a genjax array of shape {value.shape} for a torch parameter of "
                    f"shape {tuple(parameter.shape)}"
                )
            parameter.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))


# ----------------------------------------------------------------------------- train steps


class TrainStep:
    """One training update of `model` on a fixed batch, as genjax's `GradientModel.train_step`:
    the loss and its gradient, the gradient's global norm (clipped to `grad_clip_norm` if
    set), the Adam update. The metrics of the last call stay in `metrics` as tensors."""

    def __init__(self, model: nn.Module, batch: torch.Tensor, settings: Mapping):
        self.model = model
        self.parameters = list(model.parameters())
        self.batch = batch
        self.grad_clip_norm = settings["grad_clip_norm"]
        self.optimizer = torch.optim.Adam(
            self.parameters, lr=settings["lr"], betas=settings["betas"], eps=settings["eps"]
        )
        self.metrics: Metrics = {}

    def __call__(self) -> None:
        """Runs one update; returns None (read `metrics` to see the loss)."""
        self.optimizer.zero_grad()
        loss, metrics = self.model.loss(self.batch)
        loss.backward()
        if self.grad_clip_norm is None:
            grad_norm = nn.utils.get_total_norm([p.grad for p in self.parameters])
        else:
            grad_norm = nn.utils.clip_grad_norm_(self.parameters, self.grad_clip_norm)
        self.optimizer.step()
        self.metrics = {"loss": loss.detach(), "grad_norm": grad_norm, **metrics}


def build_model(name: str) -> nn.Module:
    """The torch model `name` (one of MODELS) at the sizes of its genjax config, freshly
    initialised from torch's global generator."""
    if name == "vae":
        return VAE()
    if name == "rbm":
        return RBM()
    if name == "realnvp_toy":
        return RealNVP()
    raise ValueError(f"unknown model {name!r}; allowed: {MODELS}")


def make_batch(name: str, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """The fixed training batch: binary pixels (batch_size, 784) drawn as Bernoulli(0.13) for
    'vae' and 'rbm', standard normal points (batch_size, 2) for 'realnvp_toy'."""
    if name == "realnvp_toy":
        return torch.randn(batch_size, 2, generator=generator)
    probs = torch.full((batch_size, NUM_PIXELS), PIXEL_DENSITY)
    return torch.bernoulli(probs, generator=generator)


def make_step(name: str, batch_size: int, seed: int = 0) -> tuple[Callable[[], None], int]:
    """The train step of model `name` on a fixed batch held in memory.

    Args:
      name: one of MODELS.
      batch_size: examples per step.
      seed: seeds the initialisation, the batch and torch's global generator (the step's
        noise).

    Returns:
      (step, examples_per_step): step() runs one full update (forward, backward, optimizer)
      and returns None, so that timing it waits on nothing else; examples_per_step is
      batch_size.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {MODELS}")
    torch.manual_seed(seed)
    model = build_model(name)
    batch = make_batch(name, batch_size, torch.Generator().manual_seed(seed))
    return TrainStep(model, batch, OPTIMIZER_SETTINGS[name]), batch_size


def describe(name: str) -> str:
    """A one-line description of model `name`'s architecture and training step."""
    descriptions = {
        "vae": "VAE 784-200-200-50 tanh MLPs, Gaussian q, Bernoulli p(x|z), ELBO k=1 with "
        "sampled KL, Adam 1e-3 eps 1e-4",
        "rbm": "Bernoulli RBM 784x500, CD-1 (sampled Gibbs sweep, mean-field free-energy "
        "gradient), Adam 1e-3",
        "realnvp_toy": "RealNVP on 2-D data, 8 half-mask tanh-scaled affine couplings, ReLU MLP "
        "conditioners 64x2, max likelihood, Adam 1e-3, grad clip 100",
    }
    if name not in descriptions:
        raise ValueError(f"unknown model {name!r}; allowed: {MODELS}")
    return descriptions[name]


def time_steps(step: Callable[[], object], num_steps: int) -> float:
    """Seconds for `num_steps` calls of `step` (PyTorch eager on CPU is synchronous: when a
    call returns, its work is done)."""
    start = time.perf_counter()
    for _ in range(num_steps):
        step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Prints one model's steps/s as JSON, timed as genjax's benchmark times its own steps
    (`genjax.workbench.benchmark.timed_blocks`: a warm-up step, then blocks of at least
    --min_block_seconds; the median and spread over blocks). `experiments.benchmark` runs this
    in a process of its own, so neither framework's thread pool competes with the other's."""
    from genjax.workbench.benchmark import summarize_rates, timed_blocks

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min_block_seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    step, examples_per_step = make_step(args.model, args.batch_size)
    steps_per_block, rates = timed_blocks(
        step, args.repeats, args.min_block_seconds, sync=lambda out: None
    )
    rates = summarize_rates(rates)
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps_per_block": steps_per_block,
        "steps_per_sec": rates,
        "examples_per_sec": rates["median"] * examples_per_step,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
