"""Optimizers as `optax.chain`s of small transforms, built from the config."""

from __future__ import annotations

import optax

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop")
SCHEDULES = ("constant", "cosine", "exponential")


def make_schedule(config, learning_rate: float | None = None) -> optax.Schedule:
    """`config.learning_rate` (or `learning_rate`) under `config.lr_schedule`, after
    `config.warmup_steps`.

    `exponential` decays by `config.lr_decay_rate` every `config.num_steps` / 7 steps, so the
    final rate is `learning_rate * decay_rate**7` (Burda et al. 2016 decay 10**(-i/7)).
    """
    base = config.learning_rate if learning_rate is None else learning_rate
    if config.lr_schedule == "constant":
        schedule = optax.constant_schedule(base)
    elif config.lr_schedule == "cosine":
        schedule = optax.cosine_decay_schedule(base, max(1, config.num_steps))
    elif config.lr_schedule == "exponential":
        schedule = optax.exponential_decay(
            base, transition_steps=max(1, config.num_steps // 7), decay_rate=config.lr_decay_rate
        )
    else:
        raise ValueError(f"config.lr_schedule={config.lr_schedule!r}; allowed: {SCHEDULES}")
    if config.warmup_steps:
        warmup = optax.linear_schedule(0.0, base, config.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [config.warmup_steps])
    return schedule


def make_optimizer(
    config, learning_rate: float | None = None, weight_decay_mask=None
) -> optax.GradientTransformation:
    """Gradient clipping (if `config.grad_clip_norm`) then the chosen optimizer, at
    `config.learning_rate` unless `learning_rate` is given (a GAN's discriminator).

    'rmsprop' is PyTorch's `torch.optim.RMSprop`: v <- decay v + (1 - decay) g^2 from v = 0,
    update = -rate g / (sqrt(v) + eps), with decay `config.rmsprop_decay` and eps
    `config.adam_eps` (1e-8, PyTorch's default too); no momentum, no centring.

    `config.weight_decay` is decoupled weight decay for 'adamw' (Loshchilov & Hutter 2019)
    and an L2 penalty's gradient, weight_decay * params, added before the others (the
    "weight-cost" of RBM training, Hinton 2010). `weight_decay_mask` (an optax mask: a pytree
    of bools like the parameters, or a function of the parameters returning one) limits the
    decay to the parameters it marks True; None decays every parameter.
    """
    schedule = make_schedule(config, learning_rate)
    if config.optimizer == "adam":
        optimizer = optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
    elif config.optimizer == "adamw":
        optimizer = optax.adamw(
            schedule,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            mask=weight_decay_mask,
        )
    elif config.optimizer == "sgd":
        optimizer = optax.sgd(schedule)
    elif config.optimizer == "momentum":
        optimizer = optax.sgd(schedule, momentum=config.momentum)
    elif config.optimizer == "rmsprop":  # WGAN's optimizer (Arjovsky et al. 2017, Algorithm 1)
        # PyTorch's RMSprop, which their code used: g / (sqrt(v) + eps). optax's default puts
        # eps inside the root, sqrt(v + eps), a floor of 1e-4 that shrinks the updates of a
        # weight-clipped critic (gradients ~1e-6) 100- to 1000-fold.
        optimizer = optax.rmsprop(
            schedule, decay=config.rmsprop_decay, eps=config.adam_eps, eps_in_sqrt=False
        )
    else:
        raise ValueError(f"config.optimizer={config.optimizer!r}; allowed: {OPTIMIZERS}")
    transforms = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
    if config.weight_decay and config.optimizer != "adamw":
        transforms.append(optax.add_decayed_weights(config.weight_decay, weight_decay_mask))
    return optax.chain(*transforms, optimizer)
