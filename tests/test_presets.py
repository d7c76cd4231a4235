"""Presets (spec cells-inference-api §6): values, classes and composition, against the spec tables."""

from __future__ import annotations

import jax
import pytest

from rpujax import presets, tile
from rpujax.configs import (
    BoundManagementType,
    ChoppedTransferCompound,
    ConstantStepDevice,
    DigitalRankUpdateRPUConfig,
    DynamicTransferCompound,
    ExpStepDevice,
    LinearStepDevice,
    MixedPrecisionCompound,
    NoiseManagementType,
    OneSidedUnitCell,
    PulseType,
    SingleRPUConfig,
    SoftBoundsReferenceDevice,
    TransferCompound,
    UnitCellRPUConfig,
    VectorUnitCell,
    VectorUnitCellUpdatePolicy,
)

# spec §6.1, every listed field
DEVICE_TABLE = {
    "ReRamESPresetDevice": (ExpStepDevice, dict(
        dw_min=0.00135, up_down=0.259359, w_max=1.0, w_min=-1.0, a=-0.5, b=-0.5, gamma_up=5.0, gamma_down=5.0,
        A_up=-1.18445, A_down=-0.081404, dw_min_dtod=0.2, up_down_dtod=0.05, w_max_dtod=0.3, w_min_dtod=0.3,
        dw_min_std=5.0, write_noise_std=75.0)),
    "ReRamSBPresetDevice": (SoftBoundsReferenceDevice, dict(
        dw_min=0.002, up_down=0.0, w_max=1.25, w_min=-0.75, mult_noise=False, dw_min_dtod=0.3, up_down_dtod=0.01,
        w_max_dtod=0.3 / 1.25, w_min_dtod=0.3 / 0.75, dw_min_std=3.75, write_noise_std=56,
        reference_mean=0.0, reference_std=0.0, subtract_symmetry_point=False)),
    "CapacitorPresetDevice": (LinearStepDevice, dict(
        dw_min=0.005, up_down=0.0, w_max=1.0, w_min=-1.0, mult_noise=False, gamma_up=0.05, gamma_down=0.05,
        dw_min_dtod=0.1, up_down_dtod=0.06, w_max_dtod=0.07, w_min_dtod=0.07, gamma_up_dtod=0.01,
        gamma_down_dtod=0.01, dw_min_std=0.3, write_noise_std=0.0, mean_bound_reference=True, lifetime=1e6,
        lifetime_dtod=0.3)),
    "EcRamPresetDevice": (LinearStepDevice, dict(
        dw_min=0.002, up_down=0.0, w_max=1.1724, w_min=-0.8276, mult_noise=True, gamma_up=0.1153,
        gamma_down=0.5085, dw_min_dtod=0.1, up_down_dtod=0.01, w_max_dtod=0.05, w_min_dtod=0.05,
        gamma_up_dtod=0.05, gamma_down_dtod=0.05, dw_min_std=0.3, write_noise_std=0.0, mean_bound_reference=True)),
    "EcRamMOPresetDevice": (LinearStepDevice, dict(
        dw_min=0.00028214, up_down=0.0, w_max=1.1714, w_min=-0.8286, mult_noise=True, gamma_up=0.4152,
        gamma_down=0.7342, dw_min_dtod=0.1, up_down_dtod=0.01, w_max_dtod=0.05, w_min_dtod=0.05,
        gamma_up_dtod=0.05, gamma_down_dtod=0.05, dw_min_std=2.0, write_noise_std=0.0, mean_bound_reference=True)),
    "IdealizedPresetDevice": (ConstantStepDevice, dict(
        dw_min=0.0002, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.0, up_down_dtod=0.0, w_max=1.0, w_min=-1.0,
        w_max_dtod=0.3, w_min_dtod=0.3)),
    "GokmenVlasovPresetDevice": (ConstantStepDevice, dict(
        dw_min=0.0016, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.0, up_down_dtod=0.01, w_max=1.0, w_min=-1.0,
        w_max_dtod=0.3, w_min_dtod=0.3)),
    "PCMPresetDevice": (ExpStepDevice, dict(
        dw_min=0.01, up_down=0.0, w_max=2.0, w_min=0.0, a=-1.0, b=0.0, gamma_up=2.5, gamma_down=2.5, A_up=-27.235,
        A_down=-2.235, dw_min_dtod=0.2, up_down_dtod=0.05, w_max_dtod=0.1, w_min_dtod=0.0, dw_min_std=0.6,
        dw_min_std_add=0.042, dw_min_std_slope=0.108, write_noise_std=0.0, reset=0.01, reset_dtod=0.02)),
    "ReRamArrayOMPresetDevice": (SoftBoundsReferenceDevice, dict(
        enforce_consistency=True, dw_min_dtod_log_normal=True, dw_min=0.0949, up_down=0.0, w_max=1.0, w_min=-1.0,
        mult_noise=False, dw_min_dtod=0.7829, up_down_dtod=0.01, w_max_dtod=0.3499, w_min_dtod=0.5695,
        dw_min_std=0.4158, write_noise_std=1.4113, corrupt_devices_range=0.01, corrupt_devices_prob=0.0,
        subtract_symmetry_point=True, reference_std=0.05)),
    "ReRamArrayHfO2PresetDevice": (SoftBoundsReferenceDevice, dict(
        enforce_consistency=True, dw_min_dtod_log_normal=True, dw_min=0.4622, up_down=0.0, w_max=1.0, w_min=-1.0,
        mult_noise=False, dw_min_dtod=0.7125, up_down_dtod=0.01, w_max_dtod=0.4295, w_min_dtod=0.599,
        dw_min_std=0.2174, write_noise_std=0.5841, corrupt_devices_range=0.01, corrupt_devices_prob=0.0,
        subtract_symmetry_point=True, reference_std=0.05)),
}


@pytest.mark.parametrize("name", list(DEVICE_TABLE))
def test_device_preset_values(name: str) -> None:
    base, values = DEVICE_TABLE[name]
    dev = getattr(presets, name)()
    assert isinstance(dev, base)
    for field, value in values.items():
        assert getattr(dev, field) == pytest.approx(value), field
    # unlisted fields keep the base defaults (spec §6.1)
    assert dev.reset_std == 0.01 and dev.corrupt_devices_prob == 0.0
    assert getattr(presets, name)(dw_min=0.5).dw_min == 0.5  # still overridable


def test_io_and_update_presets() -> None:
    io = presets.PresetIOParameters()
    assert (io.inp_res, io.out_res, io.out_bound, io.out_noise) == pytest.approx((1 / 126, 1 / 510, 20.0, 0.1))
    assert io.bound_management is BoundManagementType.ITERATIVE and io.noise_management is NoiseManagementType.ABS_MAX
    std = presets.StandardIOParameters()
    assert (std.inp_res, std.out_res, std.out_bound, std.out_noise) == pytest.approx((1 / 254, 1 / 254, 10.0, 0.04))
    up = presets.PresetUpdateParameters()
    assert (up.desired_bl, up.update_bl_management, up.update_management) == (31, True, True)
    assert up.pulse_type is PulseType.STOCHASTIC_COMPRESSED


STEMS = ("ReRamES", "ReRamSB", "Capacitor", "EcRam", "EcRamMO", "Idealized")


def _device_class(stem):
    return getattr(presets, f"{stem}PresetDevice")


def _tio_ok(io):
    return (io.noise_management is NoiseManagementType.NONE and io.bound_management is BoundManagementType.NONE
            and io.out_noise == 0.1 and io.out_bound == 20.0)


def test_rpu_config_presets_structure() -> None:
    for stem in (*STEMS, "GokmenVlasov"):
        cfg = getattr(presets, f"{stem}Preset")()
        assert isinstance(cfg, SingleRPUConfig) and type(cfg.device) is _device_class(stem)
        assert cfg.forward == presets.PresetIOParameters() and cfg.update == presets.PresetUpdateParameters()
        mp = getattr(presets, f"MixedPrecision{stem}Preset")()
        assert isinstance(mp, DigitalRankUpdateRPUConfig) and isinstance(mp.device, MixedPrecisionCompound)
        assert type(mp.device.device) is _device_class(stem) and mp.device == MixedPrecisionCompound(
            device=_device_class(stem)())
    pcm = presets.PCMPreset()
    assert isinstance(pcm, UnitCellRPUConfig) and isinstance(pcm.device, OneSidedUnitCell)
    assert (pcm.device.refresh_every, pcm.device.units_in_mbatch) == (1, True)
    assert type(presets.MixedPrecisionPCMPreset().device.device) is presets.PCMPresetUnitCell
    for stem in STEMS:
        sb = stem == "ReRamSB"
        for n in (2, 4):
            cell = getattr(presets, f"{stem}{n}Preset")().device
            assert isinstance(cell, VectorUnitCell) and len(cell.unit_cell_devices) == n
            assert cell.update_policy is VectorUnitCellUpdatePolicy.SINGLE_RANDOM
        tt = getattr(presets, f"TikiTaka{stem}Preset")()
        assert type(tt.device) is TransferCompound and _tio_ok(tt.device.transfer_forward)
        assert tt.device.transfer_update == presets.PresetUpdateParameters() and tt.device.units_in_mbatch
        assert (tt.device.gamma, tt.device.fast_lr, tt.device.transfer_lr) == (0.0, 1.0, 1.0)
        for prefix, cls in (("TTv2", ChoppedTransferCompound), ("ChoppedTTv2", ChoppedTransferCompound),
                            ("AGAD", DynamicTransferCompound)):
            cfg = getattr(presets, f"{prefix}{stem}Preset")()
            assert type(cfg.device) is cls and _tio_ok(cfg.device.transfer_forward)
            assert cfg.device.transfer_update.desired_bl == 1 and not cfg.device.transfer_update.update_management
            assert cfg.device.auto_scale and not cfg.device.units_in_mbatch
            devs = cfg.device.unit_cell_devices
            assert len(devs) == 2 and all(type(d) is _device_class(stem) for d in devs)
            assert all(getattr(d, "subtract_symmetry_point", False) for d in devs) == sb
    # spot checks of the per-device numbers (spec §6.3)
    assert presets.TTv2EcRamPreset().update.desired_bl == 100
    assert presets.TTv2EcRamPreset().device.auto_granularity == 500
    assert presets.TTv2ReRamESPreset().device.in_chop_prob == 0.0
    assert presets.ChoppedTTv2EcRamPreset().device.fast_lr == 1.0
    assert presets.ChoppedTTv2IdealizedPreset().device.in_chop_prob == 0.001
    agad = presets.AGADEcRamPreset()
    assert (agad.device.fast_lr, agad.device.auto_granularity, agad.device.tail_weightening,
            agad.device.in_chop_prob, agad.update.desired_bl) == (0.1, 750, 50.0, 0.005, 31)
    assert presets.AGADIdealizedPreset().update.desired_bl == 100


def test_presets_build_tiles() -> None:
    """Every compound family of the presets builds a tile (device stacks and bookkeeping)."""
    for name in ("PCMPreset", "ReRamSB2Preset", "TikiTakaEcRamPreset", "ChoppedTTv2CapacitorPreset",
                 "AGADReRamESPreset", "MixedPrecisionPCMPreset"):
        cfg = getattr(presets, name)()
        assert hash(cfg) == hash(getattr(presets, name)())
        state = tile.init(jax.random.key(0), 3, 4, cfg)
        assert state.weights.shape == (3, 4)


def test_build_config() -> None:
    from rpujax.configs import SoftBoundsDevice

    cfg = presets.build_config("sgd", SoftBoundsDevice, n_devices=3, construction_seed=4)
    assert isinstance(cfg.device, VectorUnitCell) and len(cfg.device.unit_cell_devices) == 3
    assert cfg.device.construction_seed == 4
    tt = presets.build_config("TT", SoftBoundsDevice(dw_min=0.01))
    assert type(tt.device) is TransferCompound and tt.device.unit_cell_devices[0].dw_min == 0.01
    assert tt.device.transfer_forward.noise_management is NoiseManagementType.NONE
    ttv2 = presets.build_config("ttv2", SoftBoundsDevice)
    assert ttv2.device.in_chop_prob == 0.0 and ttv2.update.desired_bl == 5 and not ttv2.device.auto_scale
    agad = presets.build_config("agad", SoftBoundsDevice)
    assert type(agad.device) is DynamicTransferCompound and agad.device.transfer_update.update_management
    assert isinstance(presets.build_config("mp", SoftBoundsDevice).device, MixedPrecisionCompound)
    with pytest.raises(ValueError, match="algorithm"):
        presets.build_config("adam", SoftBoundsDevice)
