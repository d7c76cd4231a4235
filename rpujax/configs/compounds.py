"""Unit cells and compound devices (aihwkit ``configs/compounds.py``), and their rpu configs.

Field names, order and Python defaults follow aihwkit 1.2.0; the behaviour is spec
cells-inference-api §3 and lives in :mod:`rpujax.cells`. Every class is a frozen, hashable
dataclass validated on construction.

Conventions that differ from aihwkit (same physics):

- List fields (``unit_cell_devices``, ``gamma_vec``, ``transfer_every_vec``, ``transfer_lr_vec``)
  are stored as tuples so that configs stay hashable; lists are accepted and converted.
- aihwkit checks the number of devices only when the tile is built. Here a non-empty
  ``unit_cell_devices`` is checked on construction; an empty one is accepted (aihwkit's defaults
  are empty, spec §7 item 22) and :func:`rpujax.tile.init` raises for it.
- ``ReferenceUnitCell`` normalises its devices on construction as aihwkit's ``as_bindings`` does
  (one device is duplicated, more than two are truncated to two).
- ``DifferenceUnitCell`` emits its ``DeprecationWarning`` (aihwkit's never fires because of a
  ``__post__init__`` typo, spec §7 item 21; not reproduced).
- ``ChoppedTransferCompound`` / ``DynamicTransferCompound`` reject ``n_reads_per_transfer != 1``,
  ``random_selection=True`` and ``with_reset_prob > 0`` on construction (aihwkit's CUDA tile
  rejects them, its CPU tile aborts on the first, ignores the third and honours the second).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import warnings
from typing import Any

from rpujax.configs import _validation as v
from rpujax.configs.devices import PulsedDevice
from rpujax.configs.io import IOParameters
from rpujax.configs.mapping import MappingParameter
from rpujax.configs.pre_post import PrePostProcessingParameter
from rpujax.configs.update import UpdateParameters

__all__ = [
    "BufferedTransferCompound",
    "ChoppedTransferCompound",
    "DifferenceUnitCell",
    "DigitalRankUpdateCell",
    "DigitalRankUpdateRPUConfig",
    "DynamicTransferCompound",
    "MixedPrecisionCompound",
    "OneSidedUnitCell",
    "ReferenceUnitCell",
    "TransferCompound",
    "UnitCell",
    "UnitCellRPUConfig",
    "VectorUnitCell",
    "VectorUnitCellUpdatePolicy",
]


class VectorUnitCellUpdatePolicy(enum.Enum):
    """Which sub-device of a vector unit cell receives an update (spec §3.1)."""

    ALL = "All"
    """Every sub-device receives the same pulse coincidences."""

    SINGLE_FIXED = "SingleFixed"
    """Only the device at the hidden update index (``set_hidden_update_index``)."""

    SINGLE_SEQUENTIAL = "SingleSequential"
    """The index advances by one (mod n) before each update cycle."""

    SINGLE_RANDOM = "SingleRandom"
    """A uniformly random device per update cycle."""


def _check_float_tuple(obj: Any, name: str) -> None:
    """Convert a sequence of finite numbers to a tuple of floats (in place, frozen-safe)."""
    value = getattr(obj, name)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{type(obj).__name__}.{name} = {value!r}: expected a sequence of numbers")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ValueError(f"{type(obj).__name__}.{name} = {value!r}: expected finite numbers, got {item!r}")
        out.append(float(item))
    object.__setattr__(obj, name, tuple(out))


def _check_devices(obj: Any, name: str = "unit_cell_devices") -> None:
    value = getattr(obj, name)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{type(obj).__name__}.{name} = {value!r}: expected a sequence of PulsedDevice configs")
    devices = tuple(value)
    for dev in devices:
        if not isinstance(dev, PulsedDevice):
            raise ValueError(
                f"{type(obj).__name__}.{name} contains {dev!r}: expected PulsedDevice instances "
                "(ConstantStepDevice, SoftBoundsDevice, ...)"
            )
    object.__setattr__(obj, name, devices)


def _check_len(obj: Any, name: str, n: int) -> None:
    value = getattr(obj, name)
    if value and n and len(value) != n:
        raise ValueError(
            f"{type(obj).__name__}.{name} = {value!r}: expected {n} entries (one per device) or none"
        )


# ---------------------------------------------------------------------------------------------
# Unit cells
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitCell:
    """Base of the unit cells (aihwkit ``UnitCell``): several pulsed devices per cross-point.

    Attributes:
      unit_cell_devices: the pulsed device configs; each sub-device gets its own
        device-to-device draw.
      construction_seed: if not 0, the device-to-device draws of all sub-devices come from
        ``jax.random.key(construction_seed)`` (whatever the init key).
    """

    unit_cell_devices: tuple = ()
    construction_seed: int = 0

    def __post_init__(self) -> None:
        _check_devices(self)
        v.check_int(self, "construction_seed", minimum=0)

    def requires_diffusion(self) -> bool:
        """Whether any sub-device diffuses (``post_update_step`` then diffuses every sub-device)."""
        return any(dev.requires_diffusion() for dev in self.unit_cell_devices)

    def requires_decay(self) -> bool:
        """Whether any sub-device decays (``post_update_step`` then decays every sub-device)."""
        return any(dev.requires_decay() for dev in self.unit_cell_devices)


@dataclasses.dataclass(frozen=True)
class VectorUnitCell(UnitCell):
    """Several devices per cross-point, visible weight ``W = Σ_k γ_k W_k`` (spec §3.1).

    Attributes (beyond :class:`UnitCell`):
      update_policy: a :class:`VectorUnitCellUpdatePolicy` (or its name): ``ALL`` updates every
        device with the same coincidences; ``SINGLE_*`` update one device per update call.
      first_update_idx: device index the hidden update index is set to by ``set_weights``
        (for ``SINGLE_FIXED`` only at construction).
      gamma_vec: reduction weights ``γ_k`` (one per device); empty: ``1/n`` each.
    """

    update_policy: VectorUnitCellUpdatePolicy = VectorUnitCellUpdatePolicy.ALL
    first_update_idx: int = 0
    gamma_vec: tuple = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        v.coerce_enum(self, "update_policy", VectorUnitCellUpdatePolicy)
        v.check_int(self, "first_update_idx", minimum=0)
        n = len(self.unit_cell_devices)
        if n and self.first_update_idx >= n:
            raise ValueError(
                f"{type(self).__name__}.first_update_idx = {self.first_update_idx}: expected an int in [0, {n - 1}]"
            )
        _check_float_tuple(self, "gamma_vec")
        _check_len(self, "gamma_vec", n)


@dataclasses.dataclass(frozen=True)
class ReferenceUnitCell(UnitCell):
    """A device and a fixed reference device, visible ``W = W_0 − W_1`` (spec §3.2).

    Same simulation as :class:`VectorUnitCell` with ``SINGLE_FIXED`` and ``gamma_vec = (1, −1)``:
    only device 0 is updated; the reference (0 after construction) is programmed with
    ``set_hidden_update_index(1); set_weights(R); set_hidden_update_index(0)``. Exactly two
    devices: one is duplicated, more than two are truncated (as aihwkit does).

    Attributes: as :class:`VectorUnitCell`.
    """

    update_policy: VectorUnitCellUpdatePolicy = VectorUnitCellUpdatePolicy.SINGLE_FIXED
    first_update_idx: int = 0
    gamma_vec: tuple = (1.0, -1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        devices = self.unit_cell_devices
        if len(devices) == 1:
            object.__setattr__(self, "unit_cell_devices", (devices[0], devices[0]))
        elif len(devices) > 2:
            object.__setattr__(self, "unit_cell_devices", devices[:2])
        v.coerce_enum(self, "update_policy", VectorUnitCellUpdatePolicy)
        v.check_int(self, "first_update_idx", minimum=0)
        if self.unit_cell_devices and self.first_update_idx > 1:
            raise ValueError(f"ReferenceUnitCell.first_update_idx = {self.first_update_idx}: expected 0 or 1")
        _check_float_tuple(self, "gamma_vec")
        _check_len(self, "gamma_vec", len(self.unit_cell_devices))


@dataclasses.dataclass(frozen=True)
class OneSidedUnitCell(UnitCell):
    """Two devices that are only ever potentiated, visible ``W = W_1 − W_0`` (spec §3.3).

    Device 1 (``g+``) receives every coincidence that asks for an increase, device 0 (``g−``)
    every one that asks for a decrease, both as up pulses. As in aihwkit's C++, only the first
    entry of ``unit_cell_devices`` is used (a second one is ignored; spec §7 item 8): both devices
    are independent draws of it.

    Attributes (beyond :class:`UnitCell`):
      refresh_every: refresh period (0: never), in update calls if ``units_in_mbatch`` else in
        vectors (checked at the end of each update call).
      units_in_mbatch: period in units of the batch size.
      refresh_upper_thres, refresh_lower_thres: refresh criterion (relative to ``|w_max|``).
      refresh_forward: IO of the refresh reads.
      refresh_update: pulsed update of the refresh rewrite.
      copy_inverted: device 1's own sampled up/down steps are swapped and its bounds mirrored
        (``b_max ← −b_min``, ``b_min ← −b_max``), as aihwkit does (spec §7 item 8).
    """

    refresh_every: int = 0
    units_in_mbatch: bool = True
    refresh_upper_thres: float = 0.75
    refresh_lower_thres: float = 0.25
    refresh_forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    refresh_update: UpdateParameters = dataclasses.field(default_factory=UpdateParameters)
    copy_inverted: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.unit_cell_devices)
        if n > 2:
            raise ValueError(f"{type(self).__name__}.unit_cell_devices has {n} devices: expected 1 or 2")
        if n == 2 and type(self.unit_cell_devices[0]) is not type(self.unit_cell_devices[1]):
            raise ValueError(
                f"{type(self).__name__}.unit_cell_devices: both devices must be of the same class, got "
                f"{type(self.unit_cell_devices[0]).__name__} and {type(self.unit_cell_devices[1]).__name__}"
            )
        v.check_int(self, "refresh_every", minimum=0)
        v.check_bool(self, "units_in_mbatch")
        v.check_finite(self, "refresh_upper_thres")
        v.check_finite(self, "refresh_lower_thres")
        v.check_instance(self, "refresh_forward", IOParameters)
        v.check_instance(self, "refresh_update", UpdateParameters)
        v.check_bool(self, "copy_inverted")


@dataclasses.dataclass(frozen=True)
class DifferenceUnitCell(OneSidedUnitCell):
    """Deprecated alias of :class:`OneSidedUnitCell` (warns on construction)."""

    def __post_init__(self) -> None:
        warnings.warn(
            "DifferenceUnitCell is deprecated; use OneSidedUnitCell", DeprecationWarning, stacklevel=3
        )
        super().__post_init__()


# ---------------------------------------------------------------------------------------------
# Transfer compounds
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransferCompound(UnitCell):
    """Tiki-Taka (v1): gradient updates on a fast device, periodic transfers to slower ones (§3.4).

    ``unit_cell_devices = [fast, slow, …]``: only entries 0 and 1 are used; devices ``2 … n−1``
    are copies of entry 1 (as aihwkit). Visible ``W = Σ_k γ_k W_k``; with ``gamma = 0`` and
    ``γ_{n−1} = 1`` ("fully hidden") the visible weight is the last device.

    Attributes (beyond :class:`UnitCell`):
      gamma: default ``γ_k = gamma^(n−1−k)``.
      gamma_vec: explicit ``γ_k`` (the last must be non-zero); overrides ``gamma``.
      transfer_every: transfer period of device 0 (vectors, or batches with ``units_in_mbatch``);
        0 never.
      no_self_transfer: the last device's period is 0.
      transfer_every_vec: explicit periods per device (default geometric,
        ``te_{k+1} = te_k · out_size / n_reads_per_transfer``, spec §7 item 4).
      units_in_mbatch: periods are ``ceil(te · batch)`` vectors, else ``round(te)``.
      n_reads_per_transfer: consecutive columns (rows) read per transfer event.
      transfer_columns: read columns with forward passes; else rows with backward passes.
      with_reset_prob: probability to reset the read columns of the source after a read.
      random_selection: random first column per event instead of the next one.
      fast_lr: learning rate of the gradient update onto device 0 (``≤ 0``: the tile lr).
      transfer_lr: learning rate of the transfer writes.
      transfer_lr_vec: per source device transfer lr (default all ``transfer_lr``).
      scale_transfer_lr: transfer lr times the tile lr.
      scale_fast_lr: fast lr times the tile lr (default True here, False for the chopped
        compounds, spec §7 item 3).
      transfer_forward: IO of the transfer reads (noise and bound management are forced off).
      transfer_update: pulsed update of the transfer writes.
    """

    gamma: float = 0.0
    gamma_vec: tuple = ()
    transfer_every: float = 1.0
    no_self_transfer: bool = True
    transfer_every_vec: tuple = ()
    units_in_mbatch: bool = True
    n_reads_per_transfer: int = 1
    transfer_columns: bool = True
    with_reset_prob: float = 0.0
    random_selection: bool = False
    fast_lr: float = 1.0
    transfer_lr: float = 1.0
    transfer_lr_vec: tuple = ()
    scale_transfer_lr: bool = True
    scale_fast_lr: bool = True
    transfer_forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    transfer_update: UpdateParameters = dataclasses.field(default_factory=UpdateParameters)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.unit_cell_devices)
        if n == 1:
            raise ValueError(f"{type(self).__name__}.unit_cell_devices has 1 device: expected at least 2")
        v.check_finite(self, "gamma")
        for name in ("gamma_vec", "transfer_every_vec", "transfer_lr_vec"):
            _check_float_tuple(self, name)
            _check_len(self, name, n)
        if self.gamma_vec and self.gamma_vec[-1] == 0.0:
            raise ValueError(
                f"{type(self).__name__}.gamma_vec = {self.gamma_vec!r}: the last device must contribute "
                "to the weight (last entry non-zero)"
            )
        v.check_finite(self, "transfer_every")
        v.check_bool(self, "no_self_transfer")
        v.check_bool(self, "units_in_mbatch")
        v.check_int(self, "n_reads_per_transfer", minimum=1)
        v.check_bool(self, "transfer_columns")
        v.check_range(self, "with_reset_prob", 0.0, 1.0)
        if self.with_reset_prob > 0 and not self.transfer_columns:
            raise ValueError(
                f"{type(self).__name__}.with_reset_prob = {self.with_reset_prob!r}: reset is only "
                "available for column transfer (transfer_columns=True)"
            )
        v.check_bool(self, "random_selection")
        v.check_finite(self, "fast_lr")
        v.check_finite(self, "transfer_lr")
        v.check_bool(self, "scale_transfer_lr")
        v.check_bool(self, "scale_fast_lr")
        v.check_instance(self, "transfer_forward", IOParameters)
        v.check_instance(self, "transfer_update", UpdateParameters)


def _single_pulse_update() -> UpdateParameters:
    return UpdateParameters(desired_bl=1, update_bl_management=False, update_management=False)


@dataclasses.dataclass(frozen=True)
class BufferedTransferCompound(TransferCompound):
    """TTv2: transfer reads accumulate on a digital buffer that writes whole pulses (spec §3.5).

    Attributes (beyond :class:`TransferCompound`):
      thres_scale: buffer threshold in units of the target device's granularity.
      step: write lr in units of the target device's granularity.
      momentum: fraction kept on the buffer after a write.
      forget_buffer: after a write the buffer is ``momentum·H`` (else the written amount, times
        ``1 − momentum``, is subtracted).
      transfer_update: default one pulse per element (``desired_bl=1``, no management).
    """

    thres_scale: float = 1.0
    step: float = 1.0
    momentum: float = 0.1
    forget_buffer: bool = True
    transfer_update: UpdateParameters = dataclasses.field(default_factory=_single_pulse_update)

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_finite(self, "thres_scale")
        v.check_finite(self, "step")
        v.check_finite(self, "momentum")
        v.check_bool(self, "forget_buffer")


@dataclasses.dataclass(frozen=True)
class ChoppedTransferCompound(TransferCompound):
    """c-TTv2: chopped gradient updates on A, buffered transfer to C (spec §3.6).

    Exactly two devices. Input (per column) and output (per row) choppers flip the sign of the
    gradient written onto A; reads are de-chopped before they enter the buffer.

    Attributes (beyond :class:`TransferCompound`, whose ``units_in_mbatch`` defaults to False and
    ``scale_fast_lr`` to False here):
      in_chop_prob: input chopper switching probability (frequency if not ``in_chop_random``).
      in_chop_random: random switching; else regular with period ``max(ceil(1/in_chop_prob), 2)``
        full passes.
      out_chop_prob: output chopper flip probability, per row and full pass.
      buffer_granularity: buffer threshold scale (``≤ 0`` read as 1).
      auto_granularity: if > 0 the threshold is scaled by ``auto_granularity / (in_size·|te|)``.
      step: write lr in units of C's granularity.
      momentum: buffer momentum.
      forget_buffer: as in :class:`BufferedTransferCompound`.
      no_buffer: the buffer is cleared before each accumulation.
      auto_scale: scale the fast lr by running abs-max estimates of x and d.
      auto_momentum: momentum of those estimates.
      correct_gradient_magnitudes: divide the transfer lr by the fast lr (and rescale the
        threshold by ``dw_C / dw_A``).
    """

    in_chop_prob: float = 0.1
    in_chop_random: bool = True
    out_chop_prob: float = 0.0
    buffer_granularity: float = 1.0
    auto_granularity: float = 0.0
    step: float = 1.0
    momentum: float = 0.0
    forget_buffer: bool = True
    no_buffer: bool = False
    units_in_mbatch: bool = False
    auto_scale: bool = False
    auto_momentum: float = 0.99
    correct_gradient_magnitudes: bool = False
    transfer_columns: bool = True
    fast_lr: float = 1.0
    transfer_lr: float = 1.0
    scale_transfer_lr: bool = True
    scale_fast_lr: bool = False
    transfer_forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    transfer_update: UpdateParameters = dataclasses.field(default_factory=_single_pulse_update)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.unit_cell_devices)
        if n not in (0, 2):
            raise ValueError(f"{type(self).__name__}.unit_cell_devices has {n} devices: expected exactly 2")
        if self.n_reads_per_transfer != 1:
            raise ValueError(f"{type(self).__name__}.n_reads_per_transfer = {self.n_reads_per_transfer!r}: expected 1")
        if self.random_selection:
            raise ValueError(f"{type(self).__name__}.random_selection = True: expected False")
        if self.with_reset_prob != 0.0:
            raise ValueError(f"{type(self).__name__}.with_reset_prob = {self.with_reset_prob!r}: expected 0")
        v.check_range(self, "in_chop_prob", 0.0, 1.0)
        v.check_bool(self, "in_chop_random")
        v.check_range(self, "out_chop_prob", 0.0, 1.0)
        v.check_finite(self, "buffer_granularity")
        v.check_non_negative(self, "auto_granularity")
        v.check_finite(self, "step")
        v.check_finite(self, "momentum")
        v.check_bool(self, "forget_buffer")
        v.check_bool(self, "no_buffer")
        v.check_bool(self, "auto_scale")
        v.check_range(self, "auto_momentum", 0.0, 1.0)
        v.check_bool(self, "correct_gradient_magnitudes")


@dataclasses.dataclass(frozen=True)
class DynamicTransferCompound(ChoppedTransferCompound):
    """AGAD: the transfer signal is the read minus the mean of the previous chopper period (§3.7).

    Attributes (beyond :class:`ChoppedTransferCompound`; ``in_chop_random`` defaults to False):
      experimental_correct_accumulation: divide the buffer increment by
        ``min(sample index in the chopper period, 1/dw_A)``.
      buffer_cap: with ``forget_buffer=False``, clamp ``|H| ≤ buffer_cap·BL`` (0: off).
      tail_weightening: running-mean weight ``β = min(tail_weightening / n_s, 1)``.
    """

    in_chop_prob: float = 0.1
    in_chop_random: bool = False
    experimental_correct_accumulation: bool = False
    step: float = 1.0
    momentum: float = 0.0
    transfer_columns: bool = True
    buffer_granularity: float = 1.0
    buffer_cap: float = 0.0
    forget_buffer: bool = True
    fast_lr: float = 1.0
    transfer_lr: float = 1.0
    scale_transfer_lr: bool = True
    tail_weightening: float = 5.0
    transfer_forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    transfer_update: UpdateParameters = dataclasses.field(default_factory=_single_pulse_update)

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_bool(self, "experimental_correct_accumulation")
        v.check_non_negative(self, "buffer_cap")
        v.check_finite(self, "tail_weightening")


# ---------------------------------------------------------------------------------------------
# Digital rank update
# ---------------------------------------------------------------------------------------------


def _default_analog_device() -> VectorUnitCell:
    return VectorUnitCell()


@dataclasses.dataclass(frozen=True)
class DigitalRankUpdateCell:
    """Base of the devices whose rank update is computed digitally (aihwkit ``DigitalRankUpdateCell``).

    Attributes:
      device: the analog device used by forward/backward and written by transfers: a pulsed
        device or a ``VectorUnitCell`` / ``ReferenceUnitCell`` / ``OneSidedUnitCell``. The default
        (an empty ``VectorUnitCell``, as aihwkit) must be replaced (spec §7 item 22).
      construction_seed: if not 0, seeds the device-to-device draws of ``device``.
    """

    device: Any = dataclasses.field(default_factory=_default_analog_device)
    construction_seed: int = 0

    def __post_init__(self) -> None:
        v.check_instance(self, "device", (PulsedDevice, VectorUnitCell, ReferenceUnitCell, OneSidedUnitCell))
        v.check_int(self, "construction_seed", minimum=0)

    def requires_diffusion(self) -> bool:
        """Whether the analog device diffuses."""
        return self.device.requires_diffusion()

    def requires_decay(self) -> bool:
        """Whether the analog device decays."""
        return self.device.requires_decay()


@dataclasses.dataclass(frozen=True)
class MixedPrecisionCompound(DigitalRankUpdateCell):
    """Mixed precision: digital ``χ`` accumulates the rank update, whole pulses go to the device (§3.8).

    Attributes (beyond :class:`DigitalRankUpdateCell`):
      transfer_every: transfer period in update calls (0: never).
      n_rows_per_transfer: rows written per transfer (−1: all rows; 0: never).
      random_row: random first row (only when fewer than all rows are written).
      granularity: ``ε``, the weight of one transferred pulse (0: the device's granularity).
      transfer_lr: ``λ_tr``; a transfer moves ``W[k, :]`` by ``−ε·λ_tr·trunc(χ[k, :]/ε)``.
      n_x_bins, n_d_bins: quantisation bins of x / d per sample (0: off).
      stoc_round_x, stoc_round_d: stochastic rounding of that quantisation.
    """

    transfer_every: int = 1
    n_rows_per_transfer: int = -1
    random_row: bool = False
    granularity: float = 0.0
    transfer_lr: float = 1.0
    n_x_bins: int = 0
    n_d_bins: int = 0
    stoc_round_x: bool = True
    stoc_round_d: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_int(self, "transfer_every", minimum=0)
        v.check_int(self, "n_rows_per_transfer", minimum=-1)
        v.check_bool(self, "random_row")
        v.check_non_negative(self, "granularity")
        v.check_finite(self, "transfer_lr")
        for name in ("n_x_bins", "n_d_bins"):
            v.check_int(self, name, minimum=0)
            if getattr(self, name) == 1:
                raise ValueError(
                    f"{type(self).__name__}.{name} = 1: expected 0 (off) or >= 2 (one bin has no width "
                    "and turns every value into NaN)"
                )
        v.check_bool(self, "stoc_round_x")
        v.check_bool(self, "stoc_round_d")


# ---------------------------------------------------------------------------------------------
# rpu configs
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitCellRPUConfig:
    """A pulsed analog tile made of unit cells (aihwkit ``UnitCellRPUConfig``).

    Attributes:
      device: ``VectorUnitCell``, ``ReferenceUnitCell``, ``OneSidedUnitCell`` or a transfer
        compound (``TransferCompound``, ``BufferedTransferCompound``, ``ChoppedTransferCompound``,
        ``DynamicTransferCompound``). The default (an empty ``VectorUnitCell``) must be replaced.
      forward, backward: IO of the MVMs (on the visible weight).
      update: pulsed update parameters of the gradient update.
      mapping: how a layer maps onto tiles.
      pre_post: digital pre/post-processing (input range) of each tile.
    """

    device: UnitCell = dataclasses.field(default_factory=VectorUnitCell)
    forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    backward: IOParameters = dataclasses.field(default_factory=IOParameters)
    update: UpdateParameters = dataclasses.field(default_factory=UpdateParameters)
    mapping: MappingParameter = dataclasses.field(default_factory=MappingParameter)
    pre_post: PrePostProcessingParameter = dataclasses.field(default_factory=PrePostProcessingParameter)

    def __post_init__(self) -> None:
        v.check_instance(self, "device", UnitCell)
        v.check_instance(self, "forward", IOParameters)
        v.check_instance(self, "backward", IOParameters)
        v.check_instance(self, "update", UpdateParameters)
        v.check_instance(self, "mapping", MappingParameter)
        v.check_instance(self, "pre_post", PrePostProcessingParameter)


@dataclasses.dataclass(frozen=True)
class DigitalRankUpdateRPUConfig:
    """A tile whose rank update is computed digitally (aihwkit ``DigitalRankUpdateRPUConfig``).

    Attributes:
      device: a :class:`MixedPrecisionCompound`.
      forward, backward: IO of the MVMs (on the analog device weight).
      update: pulsed update parameters of the transfers (update management and update-BL
        management are forced on for them, as aihwkit does).
      mapping: how a layer maps onto tiles.
      pre_post: digital pre/post-processing (input range) of each tile.
    """

    device: DigitalRankUpdateCell = dataclasses.field(default_factory=MixedPrecisionCompound)
    forward: IOParameters = dataclasses.field(default_factory=IOParameters)
    backward: IOParameters = dataclasses.field(default_factory=IOParameters)
    update: UpdateParameters = dataclasses.field(default_factory=UpdateParameters)
    mapping: MappingParameter = dataclasses.field(default_factory=MappingParameter)
    pre_post: PrePostProcessingParameter = dataclasses.field(default_factory=PrePostProcessingParameter)

    def __post_init__(self) -> None:
        v.check_instance(self, "device", MixedPrecisionCompound)
        v.check_instance(self, "forward", IOParameters)
        v.check_instance(self, "backward", IOParameters)
        v.check_instance(self, "update", UpdateParameters)
        v.check_instance(self, "mapping", MappingParameter)
        v.check_instance(self, "pre_post", PrePostProcessingParameter)
