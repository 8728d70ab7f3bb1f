"""Granularity of a scale: one per tensor, or one per slice along an axis."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "per_tensor"}

    def __str__(self) -> str:
        return "per_tensor"


@dataclass(frozen=True)
class PerChannel:
    """One scale per index along ``axis`` (0 = output channels of a weight)."""

    axis: int = 0

    def __post_init__(self) -> None:
        # bool is an int in Python, but PerChannel(True) is always a slip
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise TypeError(f"PerChannel axis must be an integer, got {self.axis!r}: use PerChannel(0) for "
                            "a weight's output channels, PerChannel(-1) for an activation's features")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "per_channel", "axis": self.axis}

    def __str__(self) -> str:
        return "per_channel" if self.axis == 0 else f"per_channel(axis={self.axis})"


Granularity = PerTensor | PerChannel


def granularity_from_json(obj: Any) -> Granularity:
    if isinstance(obj, str):
        obj = {"kind": obj}
    if not isinstance(obj, dict) or obj.get("kind") not in ("per_tensor", "per_channel"):
        raise ValueError(f"granularity must be {{'kind': 'per_tensor'}} or "
                         f"{{'kind': 'per_channel', 'axis': N}}, got {obj!r}")
    if obj["kind"] == "per_tensor":
        return PerTensor()
    axis = obj.get("axis", 0)
    try:
        # "-1" from a hand-written file is fine; 1.5 or "x" is not
        if isinstance(axis, bool) or float(axis) != int(axis):
            raise ValueError
        axis = int(axis)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"granularity {obj!r}: the per-channel axis must be an integer "
                         "(0: a weight's output channels, -1: an activation's features)") from None
    return PerChannel(axis)


def check_activation_granularity(granularity: Granularity, ndim: int | None = None) -> None:
    """Refuse a per-channel activation scale on the batch axis (axis 0).

    One scale per sample cannot carry from the calibration batches to other batches (and
    fails when their sizes differ). ``ndim``, when known, resolves a negative axis.
    """
    if not isinstance(granularity, PerChannel):
        return
    axis = granularity.axis % ndim if ndim else granularity.axis
    if axis == 0:
        raise ValueError(
            f"activation granularity {granularity!r} is per sample: axis 0 of an activation is the batch "
            "axis, so its scales would not carry from calibration to other batches; use PerTensor(), "
            "PerChannel(-1) (one scale per feature of a Linear input) or PerChannel(1) (per conv channel)")


def reduce_dims(ndim: int, granularity: Granularity) -> tuple[int, ...]:
    """The dimensions a statistic is reduced over for ``granularity``."""
    if isinstance(granularity, PerTensor):
        return tuple(range(ndim))
    axis = granularity.axis % ndim if ndim else 0
    if not -ndim <= granularity.axis < max(ndim, 1):
        raise ValueError(f"per-channel axis {granularity.axis} is out of range for a {ndim}-d tensor")
    return tuple(d for d in range(ndim) if d != axis)
