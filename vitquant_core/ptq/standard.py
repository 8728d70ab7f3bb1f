"""Standard post-training quantization: uniform configs, calibrated by min-max, percentile or MSE.

This is the earlier study's scheme (symmetric uniform quantization at 8/6/4 bits, per-tensor
or per-channel weights) made explicit: which tensors are quantized, with which observer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch.nn as nn

from ..nn.config import QuantConfig
from ..nn.quantize import quantize
from ..quant.granularity import PerChannel, PerTensor


@dataclass(frozen=True)
class GridPoint:
    """One standard-PTQ setting: what the results row will say, and its config."""

    method: str
    w_bits: int | None
    a_bits: int | None
    granularity: str  # of the weights: "per_tensor" or "per_channel"
    a_observer: str
    config: QuantConfig

    @property
    def label(self) -> str:
        w = f"W{self.w_bits}" if self.w_bits else "W32"
        a = f"A{self.a_bits}" if self.a_bits else ""
        return f"{w}{a} {self.granularity} {self.a_observer if self.a_bits else ''}".strip()


def standard_config(w_bits: int | None, a_bits: int | None, granularity: str = "per_channel",
                    a_observer: str = "minmax", **kwargs: Any) -> QuantConfig:
    if granularity not in ("per_tensor", "per_channel"):
        raise ValueError(f"granularity must be 'per_tensor' or 'per_channel', got {granularity!r}")
    g = PerChannel(0) if granularity == "per_channel" else PerTensor()
    return QuantConfig.uniform(w_bits, a_bits, w_granularity=g, a_observer=a_observer, **kwargs)


def standard_grid(bits: Iterable[int] = (8, 6, 4), observers: Iterable[str] = ("minmax", "percentile", "mse"),
                  granularities: Iterable[str] = ("per_tensor", "per_channel"), **kwargs: Any) -> list[GridPoint]:
    """The grid of notebook 02: weights-only and W/A at each bit width and granularity
    (min-max activations), plus every activation observer with per-channel weights."""
    bits, observers, granularities = list(bits), list(observers), list(granularities)
    grid: list[GridPoint] = []
    for b in bits:
        for g in granularities:
            grid.append(GridPoint("ptq_weights_only", b, None, g, "none", standard_config(b, None, g, **kwargs)))
    for b in bits:
        for g in granularities:
            grid.append(GridPoint("ptq", b, b, g, "minmax", standard_config(b, b, g, "minmax", **kwargs)))
        for obs in observers:
            if obs == "minmax":
                continue
            grid.append(GridPoint("ptq", b, b, "per_channel", obs, standard_config(b, b, "per_channel", obs, **kwargs)))
    return grid


def run_grid(model: nn.Module, grid: Iterable[GridPoint], calib: list[Any],
             evaluate: Callable[[nn.Module, str], Any]) -> Iterator[tuple[GridPoint, nn.Module, Any, float]]:
    """Quantize and evaluate each grid point; yields (point, qmodel, eval result, calib seconds)."""
    for point in grid:
        t0 = time.perf_counter()
        qmodel = quantize(model, point.config, calib if point.a_bits else None, progress=False)
        calib_s = time.perf_counter() - t0
        yield point, qmodel, evaluate(qmodel, point.label), calib_s
