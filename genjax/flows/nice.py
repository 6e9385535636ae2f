"""NICE: additive coupling layers and a diagonal scaling layer (Dinh, Krueger & Bengio 2015).

In the paper's data -> noise direction f (Sec. 3-5): four additive coupling layers, each
y_b = x_b + m(x_a) over NICE's odd / even partition of the flattened input (alternating which
half is kept), `m` a ReLU MLP (five hidden layers of 1,000 units on MNIST), then the scaling
layer h -> exp(S) * h with a learned diagonal S, the only part that changes volume:
log |det df/dx| = sum_d S_d. The prior is the standard logistic (`genjax.flows.flow.
StandardLogistic`, Sec. 3.4) or a standard normal.

As everywhere in `genjax.flows`, the returned bijector maps noise -> data (sampling), so
`nice_flat` puts the paper's f inside an `Invert`: `Flow.log_prob` computes exactly f.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genjax.flows.bijector import Bijector, Chain, Invert
from genjax.flows.coupling import AffineCoupling


class DiagonalScale(Bijector):
    """NICE's scaling layer: y = x * exp(S), S a learned array of the event's shape,
    initialised to zero (the identity); log |det dy/dx| = sum(S) for every example, and
    -sum(S) for the inverse x = y * exp(-S). `context` is ignored."""

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        del context
        log_scale = self.param("log_scale", nn.initializers.zeros_init(), x.shape[1:])
        log_det = jnp.broadcast_to(jnp.sum(log_scale), x.shape[:1]).astype(x.dtype)
        if inverse:
            return x * jnp.exp(-log_scale), -log_det
        return x * jnp.exp(log_scale), log_det


def nice_flat(
    num_couplings: int = 4,
    hidden_features: int = 1000,
    num_hidden_layers: int = 5,
    coupling: str = "additive",
    scale: str = "tanh",
    dtype: Any = None,
) -> Bijector:
    """NICE for (B, ...) events of any shape (images are flattened by the couplings' 'alternate'
    mask), returned noise -> data and shape preserving.

    Density direction (the paper's f): `num_couplings` couplings of alternating parity over
    the odd / even partition, each conditioned by an MLP of `num_hidden_layers` x
    `hidden_features` ReLU units, then `DiagonalScale`. `coupling='additive'` is NICE's
    (volume preserving); 'affine' swaps in RealNVP's coupling (with `scale`) for ablations.
    `dtype` is the conditioners' compute dtype; the couplings' arithmetic stays float32.
    """
    if num_couplings < 1 or hidden_features < 1 or num_hidden_layers < 1:
        raise ValueError(
            "nice_flat needs num_couplings, hidden_features and num_hidden_layers >= 1; got "
            f"{num_couplings}, {hidden_features}, {num_hidden_layers}"
        )
    couplings = [
        AffineCoupling(
            mask="alternate",
            parity=index % 2 == 1,
            coupling=coupling,
            scale=scale,
            hidden_features=hidden_features,
            num_hidden_layers=num_hidden_layers,
            dtype=dtype,
        )
        for index in range(num_couplings)
    ]
    return Invert(Chain([*couplings, DiagonalScale()]))
