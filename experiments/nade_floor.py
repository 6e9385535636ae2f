"""What bounds NADE's train step from below on this machine, against MADE's whole step.

  python -m experiments.nade_floor                      # B = 100, D = 784, H = 500

Times, in turns in one process (median of --rounds rounds of --steps calls each):

  sigmoids + readouts   one fused pass of NADE's B*D*H hidden sigmoids and readout products
                        V[d] . h_d, a scan over the D positions that stores nothing: the work
                        every exact NADE forward pass does, however its sums are blocked
  nade forward          `nade.log_prob` with the 'blocked' pass (the CPU default)
  nade forward + grad   its gradient, what the train step computes
  made train step       the gradient of MADE's loss at the same B, D, H (one mask)

and prints each in ms with its ratio to MADE's step. Issue 19 asked for NADE within 3x of
MADE's steps/s: that needs the whole NADE step in 3x MADE's, which the first line alone
exceeds on a 2-core CPU (README, "Benchmark"). Writes nothing.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import made as made_configs
from genjax.data.pipeline import DataSpec
from genjax.models.autoregressive import made, nade

_BATCH = flags.DEFINE_integer("batch_size", 100, "B, examples per step.")
_INPUTS = flags.DEFINE_integer("num_inputs", 784, "D, binary inputs.")
_HIDDEN = flags.DEFINE_integer("num_hidden", 500, "H, hidden units of NADE and of MADE's layer.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds (each times every function in turn).")
_STEPS = flags.DEFINE_integer("steps", 5, "Calls per function per round.")


def sigmoid_readout_pass(start: jax.Array, columns: jax.Array, readouts: jax.Array) -> jax.Array:
    """sum_d V[d] . sigmoid(start + W[:, d]) for each example: (B,).

    B*D*H sigmoids and products, one position at a time, nothing kept: start (B, H), columns
    (D, H) (W transposed), readouts (D, H) (V).
    """

    def position(total, inputs):
        column, readout = inputs
        return total + jnp.sum(jax.nn.sigmoid(start + column) * readout, axis=-1), None

    total, _ = jax.lax.scan(position, jnp.zeros(start.shape[0]), (columns, readouts))
    return total


def _made_step(batch: int, num_inputs: int, num_hidden: int, x: jax.Array):
    """MADE's loss gradient, jitted, as `configs/made.py` builds it (one hidden layer of H)."""
    config = made_configs.get_config()
    config.model_config.hidden_sizes = (num_hidden,)
    config.batch_size = batch
    spec = DataSpec("floor", (num_inputs,), batch, batch, None, 2, True, (0.0, 1.0))
    model = made.MADE(config, spec)
    params, extras = model.init(jax.random.key(0), x[:1])
    batch_dict = {"x": x, "log_det": jnp.zeros(batch)}
    keys = jax.random.split(jax.random.key(1), batch)
    grad = jax.jit(jax.grad(lambda p: model.loss(p, extras, batch_dict, keys)[0]))
    return lambda: grad(params)


def main(argv):
    del argv
    batch, num_inputs, num_hidden = _BATCH.value, _INPUTS.value, _HIDDEN.value
    params = nade.init_params(jax.random.key(0), num_inputs, num_hidden, mask_input=False)
    x = (jax.random.uniform(jax.random.key(1), (batch, num_inputs)) < 0.3).astype(jnp.float32)
    order = jnp.arange(num_inputs)
    start = jax.random.normal(jax.random.key(2), (batch, num_hidden))
    log_prob = lambda p: nade.log_prob(p, x, order, "blocked").sum()  # noqa: E731
    floor = jax.jit(sigmoid_readout_pass)
    forward, gradient = jax.jit(log_prob), jax.jit(jax.grad(log_prob))
    functions = {
        "sigmoids + readouts": lambda: floor(start, params["W"].T, params["V"]),
        "nade forward": lambda: forward(params),
        "nade forward + grad": lambda: gradient(params),
        "made train step": _made_step(batch, num_inputs, num_hidden, x),
    }
    for function in functions.values():
        jax.block_until_ready(function())  # compile
    times = {name: [] for name in functions}
    for _ in range(_ROUNDS.value):
        for name, function in functions.items():
            began = time.perf_counter()
            for _ in range(_STEPS.value):
                jax.block_until_ready(function())
            times[name].append((time.perf_counter() - began) / _STEPS.value * 1e3)
    made_ms = float(np.median(times["made train step"]))
    print(f"B = {batch}, D = {num_inputs}, H = {num_hidden}; {jax.devices()[0].platform}")
    for name, values in times.items():
        median = float(np.median(values))
        print(
            f"{name:>22}: {median:8.1f} ms (min {min(values):.1f}, max {max(values):.1f}), "
            f"{median / made_ms:5.1f}x MADE's step"
        )
    print(f"within 3x of MADE: a whole NADE step in {3 * made_ms:.1f} ms")


if __name__ == "__main__":
    app.run(main)
