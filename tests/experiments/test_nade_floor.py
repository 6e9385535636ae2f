"""experiments.nade_floor's timed pass does NADE's B*D*H sigmoids and readouts, no fewer."""

import jax
import numpy as np

from experiments import nade_floor


def test_sigmoid_readout_pass_sums_every_positions_readout():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 5)).astype(np.float32)  # (B, H)
    columns = rng.normal(size=(7, 5)).astype(np.float32)  # (D, H)
    readouts = rng.normal(size=(7, 5)).astype(np.float32)  # (D, H)
    hidden = 1 / (1 + np.exp(-(start[:, None, :].astype(np.float64) + columns)))  # (B, D, H)
    expected = np.einsum("bdh,dh->b", hidden, readouts)
    got = jax.jit(nade_floor.sigmoid_readout_pass)(start, columns, readouts)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
