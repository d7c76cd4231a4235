"""Delta-weight mode of the pure ``update`` (the functional meaning of aihwkit's shared weights)."""

import jax
import jax.numpy as jnp
import numpy as np

from rpujax import tile
from rpujax.configs import SingleRPUConfig, TransferCompound, UnitCellRPUConfig, ConstantStepDevice


def _inputs():
    x = jax.random.uniform(jax.random.key(1), (4, 16), minval=-1, maxval=1)
    d = jax.random.uniform(jax.random.key(2), (4, 8), minval=-1, maxval=1)
    return x, d


def _check(cfg):
    state = tile.init(jax.random.key(0), 8, 16, cfg)
    x, d = _inputs()
    key = jax.random.key(3)
    plain = tile.update(state, x, d, 0.1, key)
    in_delta = tile.update(tile.set_delta_weights(state), x, d, 0.1, key)
    # The tile is untouched (weights and every device array) ...
    np.testing.assert_array_equal(np.asarray(in_delta.weights), np.asarray(state.weights))
    for name, value in state.device.items():
        np.testing.assert_array_equal(np.asarray(in_delta.device[name]), np.asarray(value), err_msg=name)
    # ... and the buffer holds exactly the change the same update would have made.
    delta = np.asarray(tile.get_delta_weights(in_delta))
    np.testing.assert_array_equal(delta, np.asarray(plain.weights - state.weights))
    assert np.count_nonzero(delta) > 0
    # Leaving delta mode updates the weights again.
    back = tile.update(tile.reset_delta_weights(in_delta), x, d, 0.1, key)
    np.testing.assert_array_equal(np.asarray(back.weights), np.asarray(plain.weights))


def test_delta_mode_single_device() -> None:
    _check(SingleRPUConfig())


def test_delta_mode_compound_restores_hidden_devices() -> None:
    _check(UnitCellRPUConfig(device=TransferCompound(unit_cell_devices=(ConstantStepDevice(), ConstantStepDevice()))))


def test_delta_mode_under_jit() -> None:
    state = tile.set_delta_weights(tile.init(jax.random.key(0), 8, 16, SingleRPUConfig()))
    x, d = _inputs()
    eager = tile.update(state, x, d, 0.1, jax.random.key(3))
    jitted = jax.jit(tile.update)(state, x, d, jnp.float32(0.1), jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(tile.get_delta_weights(eager)), np.asarray(tile.get_delta_weights(jitted)))
