"""Standard post-training quantization: uniform configs, calibrated by min-max, percentile or MSE.

This is the earlier study's scheme (symmetric uniform quantization at 8/6/4 bits, per-tensor
or per-channel weights) made explicit: which tensors are quantized, with which observer.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..nn.config import QuantConfig
from ..nn.quantize import quantize
from ..quant.granularity import PerChannel, PerTensor
from ..quant.observers import OBSERVERS

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..rowstore import Record


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
    if not bits or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 16 for b in bits):
        raise ValueError(f"parameter bits must be a non-empty list of integers from 2 to 16, got {bits!r}")
    unknown = [o for o in observers if o not in OBSERVERS]
    if unknown:
        raise ValueError(f"parameter observers: unknown {unknown}; choose from {list(OBSERVERS)}")
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


def run_grid(exp: Experiment, grid: Iterable[GridPoint]) -> Iterator[tuple[GridPoint, Record]]:
    """Quantize and evaluate each grid point through the experiment's row store (a point
    measured before is read back); yields (point, record)."""
    for point in grid:
        calib = exp.calib if point.a_bits else None
        spec = {"study": "standard_ptq", "method": point.method, "a_observer": point.a_observer,
                "config": point.config.to_json()}
        record = exp.measure(spec, lambda p=point, c=calib: quantize(exp.model, p.config, c, progress=False),
                             point.method, point.w_bits, point.a_bits, point.granularity,
                             a_observer=point.a_observer)
        yield point, record


# The earlier study's ResNet-18 / CIFAR-10 top-1 (%), which did not say whether activations
# were quantized (shared/PRIOR_STUDY.md).
EARLIER_STUDY_RESNET18 = {32: 95.18, 8: 95.23, 6: 95.13, 4: 93.13}


def compare_with_earlier_study(rows: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The earlier study's figures beside this run's per-channel min-max rows, bit width by bit width:
    weights only, and weights and activations (32 bits: the float model)."""
    def top1(bits: int, weights_only: bool) -> float | None:
        for r in rows:
            fp = bits == 32 and r["method"] == "fp32"
            quantized = (r["w_bits"] == bits and r["granularity"] == "per_channel"
                         and r["a_bits"] == (32 if weights_only else bits)
                         and r.get("a_observer") in ("none", "minmax"))
            if fp or (bits != 32 and r["method"] != "fp32" and quantized):
                return round(r["top1"], 2)
        return None
    measured = {r["w_bits"] for r in rows}
    return [{"bits": b, "earlier study (ResNet-18)": claim, f"{model}, weights only": top1(b, True),
             f"{model}, weights + activations": top1(b, False)}
            for b, claim in EARLIER_STUDY_RESNET18.items() if b in measured]
