"""NADE: the neural autoregressive distribution estimator (Larochelle & Murray 2011).

For an ordering o (o_k is the dimension generated k-th) and binary x of D dimensions,

    a_k = c + sum_{j<k} W[:, o_j] x_{o_j}                    (H,)   W shared by all k
    h_k = sigmoid(a_k)
    p(x_{o_k} = 1 | x_{o_<k}) = sigmoid(b_{o_k} + V[o_k] . h_k)

with W (H, D), V (D, H), b (D,), c (H,). Because a_{k+1} = a_k + W[:, o_k] x_{o_k}, every
conditional comes out of one exclusive cumulative sum over k: O(DH) per example, the
complexity Larochelle & Murray point out (against O(D^2 H) for recomputing each a_k).
`conditional_logits` computes it for a whole batch in one of three ways, equal up to the order
of the float32 additions:

  'blocked'  blocks of K = 8 positions: inside a block the exclusive sums are one product of a
             strictly lower-triangular (K, K) matrix with the block's W columns weighted by x;
             a `lax.scan` over the D/K blocks carries a_k (B, H) across them and computes each
             block's sigmoids and readouts, checkpointed so the gradient recomputes them.
  'scan'     a `lax.scan` over the D positions carrying a_k (B, H), one position a step.
  'cumsum'   `jnp.cumsum` over the positions, (B, D, H) in memory at once.

All three are O(DH) in principle, but `jnp.cumsum` lowers to a reduce-window with a D-long
window, which XLA on CPU runs in O(D^2 H), and the 784-step scan pays a loop step per pixel and
stores (D, B, H) residuals for its gradient. For 784 x 500 and a training step of 100 examples
on 2 shared CPU cores, the scan (unrolled by 4) took ~0.45 s and cumsum ~2.7 s. The blocked
train step ran at a median 2.5-4.6x the scan's steps/s (three runs of 5-6 rounds, the steps
timed in turns in one process on a heavily shared CPU), with an ordering per example 2.6x;
K = 8 was at least as fast as 4, 16 and 32, and recomputing the sigmoids beat storing them
(1.7x less CPU time). Its floor is the B*D*H = 39.2M sigmoids and readout products a step
computes, which no blocking removes (MADE's step has about B*(H + D) nonlinearities): on a
quiet 2-core CPU one fused pass of them alone (nothing stored) took 34.7 ms, the blocked
forward pass 41 ms and forward plus gradient 121 ms, against 6.2 ms for MADE's whole train
step (8.1 against 162 steps/s in `experiments.benchmark`). Being within 3x of MADE would
need the whole step in 18.6 ms, half of what the forward sigmoids alone take here
(`python -m experiments.nade_floor` times all four in turns).
`pass_method='auto'` picks 'blocked' on CPU and 'cumsum' on accelerators (not measured there).
`sample` walks the recursion one position at a time, drawing each x_{o_k}.

Order-agnostic training (Uria, Murray & Larochelle 2014, "A Deep and Tractable Density
Estimator"): with `order_agnostic`, each example draws a fresh uniformly random ordering every
step and the loss is its exact -log p(x | o), an unbiased estimate of E_o[-log p(x | o)]. (Uria
et al. also sample a split position per example and train only the conditionals after it, which
a deep NADE needs; the one-hidden-layer NADE gets all D conditionals in one pass, so here every
position is trained.) `mask_input` adds their mask trick: a second matrix U (H, D) whose
column U[:, o_j] is added to a_k for every observed j < k (the hidden units see *which* inputs
are observed, not only their values, so an observed 0 differs from a missing input).
Evaluation averages `num_eval_orderings` orderings as a mixture, log (1/K) sum_k p(x | o_k)
(the ensemble of Uria et al. 2014); ordering 0 is always the natural order.

Parameters are a plain dict {"W", "V", "b", "c"} (+ "U"); every function here is pure.

Mixed precision (`config.compute_dtype='bfloat16'`): the train step casts W, V and U to
bfloat16 (`precision.cast_matrices`). The readouts V[d] . h_k are bfloat16 products; the
pre-activations a_k, a running sum over up to D positions, stay float32 (each added term is a
bfloat16 weight times a bit, exact in float32; the 'blocked' pass's products take bfloat16
operands and sum in float32), and so do the logits and log p(x | o).
Evaluation and sampling use the float32 parameters.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax import objectives
from genjax.evaluate.likelihood import ensemble_outputs, summarize_ensemble
from genjax.models import checks
from genjax.models.base import GradientModel
from genjax.nn import precision

_HIGHEST = jax.lax.Precision.HIGHEST


def init_params(key: jax.Array, num_inputs: int, num_hidden: int, mask_input: bool) -> dict:
    """W, U ~ N(0, 1/D), V ~ N(0, 1/H), zero biases: W (H, D), V (D, H), b (D,), c (H,)."""
    w_key, v_key, u_key = jax.random.split(key, 3)
    params = {
        "W": jax.random.normal(w_key, (num_hidden, num_inputs)) / np.sqrt(num_inputs),
        "V": jax.random.normal(v_key, (num_inputs, num_hidden)) / np.sqrt(num_hidden),
        "b": jnp.zeros((num_inputs,)),
        "c": jnp.zeros((num_hidden,)),
    }
    if mask_input:
        params["U"] = jax.random.normal(u_key, (num_hidden, num_inputs)) / np.sqrt(num_inputs)
    return params


PASS_METHODS = ("auto", "blocked", "cumsum", "scan")
BLOCK_SIZE = 8  # positions per block of the 'blocked' pass (measured best of 4, 8, 16, 32 on CPU)


def _ordered(values: jax.Array, order: jax.Array) -> jax.Array:
    """values (B, D) permuted per row by order (D,) or (B, D): out[b, k] = values[b, o_k]."""
    return jnp.take_along_axis(values, jnp.broadcast_to(order, values.shape), axis=1)


def _input_contribution(params: dict, x_ordered: jax.Array, dims: jax.Array) -> jax.Array:
    """W[:, d] x_d (+ U[:, d]): what observing x_d adds to the later hidden pre-activations.

    Broadcasts: x (B, D) with dims (D,) or (B, D) -> (B, D, H); x (B,) with dims () or (B,)
    -> (B, H).
    """
    contribution = x_ordered[..., None] * jnp.take(params["W"].T, dims, axis=0)
    if "U" in params:
        contribution = contribution + jnp.take(params["U"].T, dims, axis=0)
    return contribution


def _readout(params: dict, hidden: jax.Array, dims: jax.Array) -> jax.Array:
    """Logit of p(x_d = 1 | x_<d) = b_d + V[d] . h: hidden (..., H), dims (...) -> (...).

    V[d] . h is a product in V's dtype (the compute dtype); b_d is added in float32.
    """
    weights = jnp.take(params["V"], dims, axis=0)  # (..., H)
    return jnp.take(params["b"], dims) + jnp.einsum(
        "...h,...h->...", weights, hidden.astype(weights.dtype)
    )


def hidden_preactivations(params: dict, x_ordered: jax.Array, order: jax.Array) -> jax.Array:
    """a_k = c + sum_{j<k} (W[:, o_j] x_{o_j} + U[:, o_j]) for every position k at once.

    One exclusive `jnp.cumsum` over the positions (Larochelle & Murray 2011, section 3).

    Args:
      x_ordered: (B, D), x in generation order.
      order: (D,) one ordering, or (B, D) one per example.

    Returns:
      (B, D, H).
    """
    contributions = _input_contribution(params, x_ordered, order)  # (B, D, H)
    before = jnp.cumsum(contributions[:, :-1], axis=1)  # sums over j < k, for k = 1..D-1
    before = jnp.concatenate([jnp.zeros_like(contributions[:, :1]), before], axis=1)
    return params["c"] + before


def _ordered_logits_cumsum(params: dict, x_ordered: jax.Array, order: jax.Array) -> jax.Array:
    hidden = jax.nn.sigmoid(hidden_preactivations(params, x_ordered, order))  # (B, D, H)
    return _readout(params, hidden, order)  # (B, D)


def _ordered_logits_scan(params: dict, x_ordered: jax.Array, order: jax.Array) -> jax.Array:
    """The same recursion a_{k+1} = a_k + W[:, o_k] x_{o_k}, as a `lax.scan` over positions."""

    def step(preactivation, inputs):  # (B, H)
        dims, x_k = inputs  # () or (B,), (B,)
        logit = _readout(params, jax.nn.sigmoid(preactivation), dims)  # (B,)
        return preactivation + _input_contribution(params, x_k, dims), logit

    start = jnp.broadcast_to(params["c"], (x_ordered.shape[0], params["c"].size))
    inputs = (jnp.moveaxis(order, -1, 0), x_ordered.T)  # (D,) or (D, B), (D, B)
    _, logits = jax.lax.scan(step, start, inputs, unroll=4)  # unroll: ~1.5x faster on CPU
    return logits.T  # (B, D)


def _blocked(values: jax.Array, block_size: int) -> jax.Array:
    """(..., D) -> (num_blocks, ..., K): zero-padded at the end to a multiple of K, blocks first."""
    padding = -values.shape[-1] % block_size
    values = jnp.pad(values, [(0, 0)] * (values.ndim - 1) + [(0, padding)])
    values = values.reshape(*values.shape[:-1], -1, block_size)  # (..., num_blocks, K)
    return jnp.moveaxis(values, -2, 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _low_precision_sum(spec: str, inputs: jax.Array, weights: jax.Array) -> jax.Array:
    """einsum(spec) of `inputs` cast to the weights' dtype and `weights`, summed in float32."""
    inputs = inputs.astype(weights.dtype)
    return jnp.einsum(spec, inputs, weights, preferred_element_type=jnp.float32)


def _low_precision_sum_forward(spec, inputs, weights):
    return _low_precision_sum(spec, inputs, weights), (inputs, weights)


def _low_precision_sum_backward(spec, residuals, cotangent):
    """The gradient's products in the weights' dtype too (cotangent cast, as `_readout`'s is)."""
    inputs, weights = residuals
    _, pullback = jax.vjp(
        lambda a, w: jnp.einsum(spec, a, w), inputs.astype(weights.dtype), weights
    )
    d_inputs, d_weights = pullback(cotangent.astype(weights.dtype))
    return d_inputs.astype(inputs.dtype), d_weights


_low_precision_sum.defvjp(_low_precision_sum_forward, _low_precision_sum_backward)


def _float32_sum(spec: str, inputs: jax.Array, weights: jax.Array) -> jax.Array:
    """einsum(spec, inputs, weights) as float32 sums: a pre-activation's running sum.

    float32 weights: the plain product at `Precision.HIGHEST` (a GPU would otherwise round the
    operands to TF32). bfloat16 weights (mixed precision): a bfloat16 product (the inputs,
    bits and 0/1 masks, are exact in it) accumulated and returned in float32, with a gradient
    whose products are bfloat16 too, like every weight product of the train step.
    """
    if weights.dtype == jnp.float32:
        return jnp.einsum(spec, inputs, weights, precision=_HIGHEST)
    return _low_precision_sum(spec, inputs, weights)


def _ordered_logits_blocked(
    params: dict, x_ordered: jax.Array, order: jax.Array, block_size: int = BLOCK_SIZE
) -> jax.Array:
    """The recursion in blocks of K positions: a matrix product inside a block, a scan across.

    For the positions k = iK + r of block i, a_k = a_{iK} + sum_{s<r} W[:, o_{iK+s}] x_{o_{iK+s}}
    (+ U[:, o_{iK+s}]): a product of the strictly lower-triangular (K, K) matrix, weighted by
    the block's inputs, with the block's K columns of W. A `lax.scan` over the ceil(D/K)
    blocks carries a_{iK} (B, H) and computes each block's hidden units and logits, so the
    working set is one block, (B, K, H), never (B, D, H). The body is `jax.checkpoint`ed: the
    gradient recomputes a block's sigmoids rather than storing all B*D*H of them (on CPU,
    stacking them through the scan cost more than computing them again). D is padded with
    zeros to a multiple of K at the end; padded positions come after every real one, so they
    touch only their own (discarded) logits. The sums run in float32 (`_float32_sum`); they
    are the scan's sums in another order.

    Args:
      x_ordered: (B, D), x in generation order.
      order: (D,) one ordering, or (B, D) one per example.

    Returns:
      (B, D) logits in generation order.
    """
    batch, num_inputs = x_ordered.shape
    strictly_lower = jnp.tril(jnp.ones((block_size, block_size), x_ordered.dtype), -1)  # (K, K)
    columns = {name: params[name].T for name in ("W", "U") if name in params}  # (D, H) each

    def block(preactivation, inputs):  # (B, H): a at the block's first position
        dims, x_block = inputs  # (K,) or (B, K); (B, K)
        weights = jnp.take(columns["W"], dims, axis=0)  # (K, H) or (B, K, H)
        per_example = "b" if weights.ndim == 3 else ""
        earlier_inputs = strictly_lower * x_block[:, None, :]  # (B, K, K): [b, r, s] = x_s, s < r
        within = _float32_sum(f"brs,{per_example}sh->brh", earlier_inputs, weights)  # (B, K, H)
        total = _float32_sum(f"bs,{per_example}sh->bh", x_block, weights)  # (B, H)
        if "U" in columns:
            observed = jnp.take(columns["U"], dims, axis=0)  # (K, H) or (B, K, H)
            within = within + _float32_sum("rs,...sh->...rh", strictly_lower, observed)
            total = total + observed.sum(axis=-2, dtype=jnp.float32)
        hidden = jax.nn.sigmoid(preactivation[:, None, :] + within)  # (B, K, H)
        return preactivation + total, _readout(params, hidden, dims)  # (B, H), (B, K)

    start = jnp.broadcast_to(params["c"], (batch, params["c"].size))
    inputs = (_blocked(order, block_size), _blocked(x_ordered, block_size))
    _, logits = jax.lax.scan(jax.checkpoint(block, prevent_cse=False), start, inputs)
    logits = jnp.moveaxis(logits, 0, 1).reshape(batch, -1)  # (B, num_blocks * K)
    return logits[:, :num_inputs]


def resolve_pass_method(method: str) -> str:
    """'auto' -> 'blocked' on CPU (measured fastest there), else 'cumsum' (unmeasured off CPU)."""
    if method not in PASS_METHODS:
        raise ValueError(f"pass method {method!r}; allowed: {PASS_METHODS}")
    if method == "auto":
        return "blocked" if jax.default_backend() == "cpu" else "cumsum"
    return method


_ORDERED_LOGITS = {
    "blocked": _ordered_logits_blocked,
    "cumsum": _ordered_logits_cumsum,
    "scan": _ordered_logits_scan,
}


def conditional_logits(
    params: dict, x: jax.Array, order: jax.Array, method: str = "cumsum"
) -> jax.Array:
    """Logits of p(x_d = 1 | x_<d) for every d, in the natural layout: (B, D) -> (B, D).

    Args:
      params: {"W" (H, D), "V" (D, H), "b" (D,), "c" (H,), optional "U" (H, D)}.
      x: (B, D) binary.
      order: (D,) one ordering for the batch, or (B, D) one per example.
      method: 'cumsum' (all positions at once, `hidden_preactivations`), 'scan' (the same
        O(DH) recursion one position at a time), 'blocked' (K positions at a time, a scan
        over blocks; fastest on CPU) or 'auto' (`resolve_pass_method`). Same values to float
        rounding: only the order of the additions differs.

    Entry [b, d] depends only on x[b, o_j] for the positions j before d's.
    """
    chex.assert_rank(x, 2)
    order = jnp.asarray(order)
    x_ordered = _ordered(x, order)
    logits_ordered = _ORDERED_LOGITS[resolve_pass_method(method)](params, x_ordered, order)
    inverse = jnp.argsort(jnp.broadcast_to(order, x.shape), axis=-1)
    return jnp.take_along_axis(logits_ordered, inverse, axis=1)


def log_prob(params: dict, x: jax.Array, order: jax.Array, method: str = "cumsum") -> jax.Array:
    """Exact log p(x | ordering): x (B, D) binary, order (D,) or (B, D) -> (B,)."""
    logits = conditional_logits(params, x, order, method)
    return objectives.bernoulli_log_prob(x, logits, event_ndims=1)


def sample(params: dict, key: jax.Array, num: int, order: jax.Array) -> jax.Array:
    """Ancestral samples in one `fori_loop` over the D positions, O(DH) each: (num, D).

    Walks the recursion of `_ordered_logits_scan`, drawing x_{o_k} instead of reading it.
    """
    num_inputs = params["W"].shape[1]
    order = jnp.asarray(order)
    chex.assert_shape(order, (num_inputs,))

    def step(position, carry):
        x, preactivation = carry  # (num, D), (num, H)
        dim = order[position]
        logit = _readout(params, jax.nn.sigmoid(preactivation), dim)  # (num,)
        bits = jax.random.bernoulli(jax.random.fold_in(key, position), jax.nn.sigmoid(logit))
        bits = bits.astype(x.dtype)
        preactivation = preactivation + _input_contribution(params, bits, dim)
        return x.at[:, dim].set(bits), preactivation

    start = (jnp.zeros((num, num_inputs)), jnp.broadcast_to(params["c"], (num, params["c"].size)))
    x, _ = jax.lax.fori_loop(0, num_inputs, step, start)
    return x


def eval_orderings(seed: int, num_inputs: int, num_orderings: int) -> np.ndarray:
    """(K, D) evaluation orderings: the natural order, then K - 1 drawn from [seed, k]."""
    orders = [np.arange(num_inputs)]
    orders += [
        np.random.default_rng([seed, k]).permutation(num_inputs) for k in range(1, num_orderings)
    ]
    return np.stack(orders).astype(np.int32)


class NADE(GradientModel):
    """The NADE family for binary data (`config.model = 'nade'`).

    model_config fields:
      num_hidden: H (Larochelle & Murray used 500).
      order_agnostic: train on a fresh random ordering per example and step.
      mask_input: add Uria et al.'s observed-input mask to the hidden pre-activations.
      num_eval_orderings: K; the evaluation is the K-ordering ensemble (K > 1 needs
        order_agnostic, since a fixed-order NADE is trained on the natural order only).
      pass_method: 'auto' | 'blocked' | 'cumsum' | 'scan', how the D conditionals are
        computed (same values; see `conditional_logits`).
    """

    name = "nade"
    main_metric = "train/loss"
    evaluation_fields = ("num_eval_orderings",)
    compute_dtypes = ("float32", "bfloat16")

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_positive_ints(mc, ("num_hidden", "num_eval_orderings"))
        checks.check_bools(mc, ("order_agnostic", "mask_input"))
        checks.check_choice(mc, "pass_method", PASS_METHODS)
        if mc.num_eval_orderings > 1 and not mc.order_agnostic:
            raise ValueError(
                f"config.model_config.num_eval_orderings={mc.num_eval_orderings} needs "
                "config.model_config.order_agnostic=True (a fixed-order NADE is trained on the "
                "natural order only); allowed: 1, or set order_agnostic."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        checks.require_binary(spec, "config.model='nade' (Bernoulli conditionals)")
        mc = config.model_config
        self.num_inputs = spec.num_dims
        self.orders = eval_orderings(config.seed, self.num_inputs, mc.num_eval_orderings)
        self.pass_method = resolve_pass_method(mc.pass_method)

    def _flat(self, x: jax.Array) -> jax.Array:
        return x.reshape((x.shape[0], self.num_inputs))

    def init(self, key, example_x):
        del example_x
        mc = self.config.model_config
        return init_params(key, self.num_inputs, mc.num_hidden, mc.mask_input), {}

    def training_orders(self, keys: jax.Array) -> jax.Array:
        """(B, D) a random ordering per example (order-agnostic), else the natural (D,)."""
        if not self.config.model_config.order_agnostic:
            return jnp.arange(self.num_inputs)
        return jax.vmap(lambda key: jax.random.permutation(key, self.num_inputs))(keys)

    def train_log_density(self, params, x, keys):
        """log p(x) (B,) in the training orderings."""
        params = precision.cast_matrices(params, self.config.compute_dtype)
        return log_prob(params, self._flat(x), self.training_orders(keys), self.pass_method)

    def loss(self, params, extras, batch, keys):
        log_p = self.train_log_density(params, batch["x"], keys) + batch["log_det"]  # (B,)
        nll = -log_p.mean()
        return nll, ({"train/bits_per_dim": objectives.bits_per_dim(nll, self.num_inputs)}, extras)

    def member_log_probs(self, params, x: jax.Array) -> jax.Array:
        """log p(x | o_k) for the K evaluation orderings, (K, B), one ordering at a time."""
        x = self._flat(x)
        return jax.lax.map(
            lambda order: log_prob(params, x, order, self.pass_method), jnp.asarray(self.orders)
        )

    def eval_step(self, state, batch, keys, final):
        del keys, final  # exact: the monitor and the final evaluation agree
        members = self.member_log_probs(state.params, batch["x"])  # (K, B)
        return ensemble_outputs(members, batch["log_det"])

    def summarize(self, outputs, final, constants):
        del constants
        num_orderings = self.config.model_config.num_eval_orderings
        return summarize_ensemble(outputs, final, self.num_inputs, num_orderings, "ordering")

    def sample(self, state, key, num):
        """Ancestral samples in the natural order, (num, *example_shape)."""
        x = sample(state.params, key, num, jnp.asarray(self.orders[0]))
        return x.reshape((num, *self.spec.example_shape))
