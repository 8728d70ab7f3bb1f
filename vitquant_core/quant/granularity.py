"""Granularity of a scale: one per tensor, or one per slice along an axis."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


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

    def to_json(self) -> dict[str, Any]:
        return {"kind": "per_channel", "axis": self.axis}

    def __str__(self) -> str:
        return "per_channel" if self.axis == 0 else f"per_channel(axis={self.axis})"


Granularity = Union[PerTensor, PerChannel]


def granularity_from_json(obj: Any) -> Granularity:
    if isinstance(obj, str):
        obj = {"kind": obj}
    if not isinstance(obj, dict) or obj.get("kind") not in ("per_tensor", "per_channel"):
        raise ValueError(f"granularity must be {{'kind': 'per_tensor'}} or "
                         f"{{'kind': 'per_channel', 'axis': N}}, got {obj!r}")
    if obj["kind"] == "per_tensor":
        return PerTensor()
    return PerChannel(int(obj.get("axis", 0)))


def reduce_dims(ndim: int, granularity: Granularity) -> tuple[int, ...]:
    """The dimensions a statistic is reduced over for ``granularity``."""
    if isinstance(granularity, PerTensor):
        return tuple(range(ndim))
    axis = granularity.axis % ndim if ndim else 0
    if not -ndim <= granularity.axis < max(ndim, 1):
        raise ValueError(f"per-channel axis {granularity.axis} is out of range for a {ndim}-d tensor")
    return tuple(d for d in range(ndim) if d != axis)
