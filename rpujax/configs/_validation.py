"""Validation helpers shared by every config dataclass.

Configs validate on construction and raise ``ValueError`` naming the class, the field, the value
and the allowed range, so a typo in a long rpu config points at itself.
"""

from __future__ import annotations

import enum
import math
from typing import Any


def _where(obj: Any, name: str) -> str:
    return f"{type(obj).__name__}.{name}"


def check_finite(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected a finite number")


def check_non_negative(obj: Any, name: str) -> None:
    """A number >= 0 (noise levels, standard deviations, rates)."""
    check_finite(obj, name)
    value = getattr(obj, name)
    if value < 0:
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected a number >= 0")


def check_positive(obj: Any, name: str) -> None:
    check_finite(obj, name)
    value = getattr(obj, name)
    if value <= 0:
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected a number > 0")


def check_range(obj: Any, name: str, lo: float, hi: float) -> None:
    check_finite(obj, name)
    value = getattr(obj, name)
    if not lo <= value <= hi:
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected a number in [{lo}, {hi}]")


def check_int(obj: Any, name: str, minimum: int | None = None) -> None:
    value = getattr(obj, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected an int")
    if minimum is not None and value < minimum:
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected an int >= {minimum}")


def check_bool(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, bool):
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected True or False")


def coerce_enum(obj: Any, name: str, enum_cls: type[enum.Enum]) -> None:
    """Accept an enum member or its name (case-insensitive) and store the member.

    Frozen dataclasses are updated with ``object.__setattr__`` from ``__post_init__``.
    """
    value = getattr(obj, name)
    if isinstance(value, enum_cls):
        return
    if isinstance(value, str):
        key = value.upper()
        if key in enum_cls.__members__:
            object.__setattr__(obj, name, enum_cls[key])
            return
    allowed = ", ".join(enum_cls.__members__)
    raise ValueError(f"{_where(obj, name)} = {value!r}: expected one of {enum_cls.__name__}.{{{allowed}}}")


def check_instance(obj: Any, name: str, cls: type | tuple[type, ...]) -> None:
    value = getattr(obj, name)
    if not isinstance(value, cls):
        names = cls.__name__ if isinstance(cls, type) else " or ".join(c.__name__ for c in cls)
        raise ValueError(f"{_where(obj, name)} = {value!r}: expected an instance of {names}")


def resolution(res: float) -> float:
    """aihwkit's resolution convention: < 0 -> 0 (off), > 1 -> 1/res (number of steps), else a bin width.

    The result is a fraction of the full range; callers multiply by ``2 * bound``.
    """
    if res < 0:
        return 0.0
    if res > 1:
        return 1.0 / res
    return float(res)
