"""The rpu-config presets train: a linear regression with each preset's own IO and update settings.

The problem of tests/test_cells_learning.py — a fixed 8×16 teacher ``W*`` with entries
U(−0.3, 0.3), inputs ``x ~ N(0, 0.5²)``, batch 8, tile lr 0.1, 500 steps, weights starting at 0 —
but *as a user runs a preset*: ``d = forward(x) − W* x`` through the preset's noisy forward IO
(``PresetIOParameters``: output noise 0.1, 7-bit inputs, 9-bit outputs), the preset's pulsed update
(``PresetUpdateParameters``: BL 31 with update and BL management) and ``post_update_step`` after
every step (refresh, transfers). Test MSE on 256 fixed inputs must fall by at least ``FACTOR``.

How the factors were chosen. aihwkit publishes no numbers for these presets (its own preset test,
``tests/test_presets.py``, only instantiates a tile), so they come from this implementation,
which follows aihwkit's update rules line by line (spec cells-inference-api §3, §6). We measured
the MSE reduction ``r`` over keys 0, 1, 2 (listed per preset) and require
``1 + (min r − 1)/3``: a third of the smallest measured gain over "no learning" (``r = 1``).
That fails on a qualitative break — an update with the wrong sign increases the MSE (``r < 1``), a
transfer that never fires or an update that never reaches the devices leaves ``r ≈ 1`` — but not
on seed noise. How far each preset gets is physics: devices with many states (Idealized,
EcRam, Capacitor) reach the floor set by the output noise of the forward pass; the ReRam fits
(a few dozen states, large cycle-to-cycle noise) gain a factor of 1.4–4.

Two presets are noise-limited on this problem and are tested for their physics instead
(:func:`test_noise_limited_presets`):

* ``ReRamESPreset``: ``write_noise_std = 75`` (×``dw_min`` = 0.101 in weight units) is redrawn
  on every pulse of an element, so the weights the forward pass sees carry N(0, 0.101²) noise:
  a floor of ``0.101²·E[x²]·16 = 0.041`` on the test MSE, a third of the initial 0.12; measured
  reductions 1.01–1.11. Without cycle-to-cycle and write noise the same preset learns (9.2–14.8×).
* ``PCMPreset`` (and ``MixedPrecisionPCMPreset``): the one-sided PCM pair (spec §6.1, aihwkit
  ``PCMPresetDevice``) has an up step of ``dw_min·(1 + 27.235·e^{−2.5·g})`` — 0.28 at ``g = 0``,
  about the size of the teacher's weights — and per-pulse noise ``0.6·(|Δg| + 0.042 +
  0.108·|g|)``, larger than the mean step for ``g ≳ 0.3``. A weight cannot settle closer than
  a few tenths to its target, and the regression at ±0.3 gets worse, not better (measured r =
  0.04–0.1 also with perfect IO, with refresh off and at lr 0.01). aihwkit's ExpStep update
  (``rpu_expstep_device.cpp``, ``update_once_complex_noise``) is the same computation, so this is
  the preset's behaviour, not a defect here. The test checks the mechanism on a teacher at the
  device's scale (U(−1, 1)) without cycle-to-cycle noise, where ``PCMPreset`` learns.
  ``MixedPrecisionPCMPreset`` does not learn even then (measured r = 0.70–0.98): each transferred
  pulse removes ``ε = 0.032`` (the device granularity, aihwkit's choice) from the digital
  accumulator but moves a device near ``g = 0`` by up to 9ε, so the transfers overshoot.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import pytest

from rpujax import presets, tile

STEPS, BATCH, LR = 500, 8, 0.1

# Reductions measured with keys 0, 1, 2 (module docstring); FACTOR = 1 + (min − 1)/3.
MEASURED = {
    "ReRamSBPreset": (1.61, 1.56, 1.40),
    "CapacitorPreset": (23.86, 19.67, 18.32),
    "EcRamPreset": (29.08, 31.74, 22.34),
    "EcRamMOPreset": (29.77, 44.93, 29.28),
    "IdealizedPreset": (39.24, 93.64, 72.97),
    "GokmenVlasovPreset": (20.02, 34.34, 23.75),
    "ReRamSB2Preset": (3.60, 4.17, 2.82),
    "EcRam4Preset": (104.78, 116.47, 97.48),
    "TikiTakaReRamSBPreset": (2.62, 2.71, 2.90),
    "TikiTakaEcRamPreset": (28.20, 29.93, 27.64),
    "TikiTakaIdealizedPreset": (6.89, 7.78, 6.01),
    "TTv2CapacitorPreset": (9.11, 8.74, 8.60),
    "TTv2ReRamESPreset": (2.81, 2.68, 1.93),
    "ChoppedTTv2ReRamSBPreset": (2.10, 2.66, 2.26),
    "ChoppedTTv2EcRamPreset": (338.97, 409.23, 352.52),
    "AGADReRamSBPreset": (1.94, 2.66, 2.29),
    "AGADEcRamPreset": (1.30, 1.31, 1.31),
    "MixedPrecisionIdealizedPreset": (43.01, 240.17, 189.04),
    "MixedPrecisionReRamSBPreset": (2.13, 2.50, 2.22),
    "MixedPrecisionEcRamMOPreset": (106.73, 108.74, 110.43),
}
FACTOR = {name: 1.0 + (min(r) - 1.0) / 3.0 for name, r in MEASURED.items()}


def _problem(scale: float):
    w_t = jax.random.uniform(jax.random.key(7), (8, 16), minval=-scale, maxval=scale)
    xs = 0.5 * jax.random.normal(jax.random.key(8), (STEPS, BATCH, 16))
    xt = 0.5 * jax.random.normal(jax.random.key(9), (256, 16))
    return w_t, xs, xt


def _train(cfg, seed: int = 0, scale: float = 0.3) -> tuple[float, float]:
    """(test MSE at W = 0, test MSE after training) for one preset."""
    w_t, xs, xt = _problem(scale)
    state = tile.init(jax.random.key(100 + seed), 8, 16, cfg)
    state = tile.set_weights(state, jnp.zeros((8, 16)), key=jax.random.key(5))

    def body(s, inp):
        x, k = inp
        k_fwd, k_upd, k_post = jax.random.split(k, 3)
        d = tile.forward(s, x, k_fwd) - x @ w_t.T
        s = tile.update(s, x, d, LR, k_upd)
        return tile.post_update_step(s, k_post), None

    run = jax.jit(lambda s, k: jax.lax.scan(body, s, (xs, jax.random.split(k, STEPS)))[0])
    out = run(state, jax.random.key(200 + seed))
    mse = lambda w: float(jnp.mean((xt @ w.T - xt @ w_t.T) ** 2))  # noqa: E731
    return mse(state.weights), mse(out.weights)


@pytest.mark.parametrize("name", list(MEASURED))
def test_preset_learns(name: str) -> None:
    before, after = _train(getattr(presets, name)())
    assert jnp.isfinite(after)
    assert before / after >= FACTOR[name], (name, before / after, FACTOR[name])


def _quiet(device):
    """The device without cycle-to-cycle and write noise (fields that exist on it)."""
    fields = ("dw_min_std", "write_noise_std", "dw_min_std_add", "dw_min_std_slope")
    return dataclasses.replace(device, **{f: 0.0 for f in fields if hasattr(device, f)})


def _quiet_config(cfg):
    dev = cfg.device
    if hasattr(dev, "unit_cell_devices"):  # the PCM unit cell
        return dataclasses.replace(cfg, device=dataclasses.replace(
            dev, unit_cell_devices=tuple(_quiet(d) for d in dev.unit_cell_devices)))
    return dataclasses.replace(cfg, device=_quiet(dev))


def test_noise_limited_presets() -> None:
    """ReRamES sits at its write-noise floor and learns without noise (module docstring)."""
    before, after = _train(presets.ReRamESPreset())
    write_noise = presets.ReRamESPresetDevice().write_noise_std * presets.ReRamESPresetDevice().dw_min
    floor = write_noise**2 * 0.5**2 * 16
    # no worse than it started (an update with the wrong sign increases the MSE), and not below
    # half the write-noise floor (which would mean the write noise was not applied)
    assert 0.5 * floor <= after <= 1.3 * before, (before, after, floor)
    b_q, a_q = _train(_quiet_config(presets.ReRamESPreset()))
    assert b_q / a_q >= 1.0 + (9.23 - 1.0) / 3.0, b_q / a_q


def test_pcm_preset_learns_without_cycle_to_cycle_noise() -> None:
    """The PCM pair follows a teacher at its own scale once the pulse noise is off.

    Measured r = 1.86, 1.56, 1.23 (keys 0, 1, 2); an update with the wrong sign increases the MSE
    (r < 1)."""
    before, after = _train(_quiet_config(presets.PCMPreset()), scale=1.0)
    assert before / after >= 1.0 + (1.23 - 1.0) / 3.0, before / after
