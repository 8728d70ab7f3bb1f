"""Calibration observers: from observed tensors to a clipping range and a scale.

* ``minmax``: the observed range, s = max|x| / qmax (the study's definition);
* ``percentile``: clip at the p-th percentile of |x| (outliers saturate);
* ``mse``: the clipping scale minimising ||x - Q(x)||², searched over a grid of
  candidate ranges in one vectorised pass (Banner et al. 2019; Nagel et al. 2021 §3.4);
* ``quantile_mse``: RepQ-ViT's (Li et al., ICCV 2023): the range [q(1-p), q(p)] between
  quantiles of the values, p in {0.999, 0.9999, 0.99999}, with the least ||x - Q(x)||²; an
  asymmetric range is not widened to hold 0 (the zero point may fall outside the grid).

Observers keep exact running extrema and, for the percentile and MSE searches, a bounded
seeded random sample of the observed values per channel.
"""
from __future__ import annotations

from typing import Any

import torch

from .granularity import Granularity, PerChannel, PerTensor
from .qtypes import QType
from .quantizer import affine_scale, check_finite, symmetric_scale

OBSERVERS = ("minmax", "percentile", "mse", "quantile_mse")


class Observer:
    """Collects statistics of a tensor and returns (scale, zero_point) for its qtype.

    ``symmetric`` with a signed qtype: zero point 0, range ±max|x|. With an unsigned qtype
    the range is [0, max x] (negative values clamp to 0). ``symmetric=False`` fits an
    asymmetric range [min, max] with a zero point on an unsigned grid.
    """

    name = "minmax"

    def __init__(self, qtype: QType, granularity: Granularity = PerTensor(), symmetric: bool = True,
                 max_samples: int = 1 << 18, seed: int = 0) -> None:
        if not symmetric and qtype.signed:
            raise ValueError("an asymmetric observer needs an unsigned qtype (quint(bits))")
        self.qtype, self.granularity, self.symmetric = qtype, granularity, symmetric
        self.max_samples = max_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None
        self.samples: torch.Tensor | None = None  # C x n
        self.ndim: int | None = None
        self.n_observed = 0

    # -- collecting
    def _as_rows(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.granularity, PerChannel):
            return x.detach().movedim(self.granularity.axis % x.ndim, 0).reshape(x.shape[self.granularity.axis], -1)
        return x.detach().reshape(1, -1)

    def update(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        if self.ndim is None:
            self.ndim = x.ndim
        elif x.ndim != self.ndim:
            raise ValueError(f"observer saw a {x.ndim}-d tensor after {self.ndim}-d ones")
        if isinstance(self.granularity, PerChannel) and not -x.ndim <= self.granularity.axis < x.ndim:
            raise ValueError(f"per-channel axis {self.granularity.axis} is out of range for a {x.ndim}-d tensor")
        rows = self._as_rows(x.float())
        mn, mx = torch.aminmax(rows, dim=1)
        # NaN and Inf propagate into min/max: checking the extrema checks the whole tensor cheaply
        if not (torch.isfinite(mn).all() and torch.isfinite(mx).all()):
            check_finite(x, f"tensor observed for calibration (shape {tuple(x.shape)})")
        self.min_val = mn if self.min_val is None else torch.minimum(self.min_val, mn)
        self.max_val = mx if self.max_val is None else torch.maximum(self.max_val, mx)
        self.n_observed += 1
        if self.needs_samples:
            self._keep_sample(rows)

    needs_samples = False

    def _keep_sample(self, rows: torch.Tensor) -> None:
        cap = max(1, self.max_samples // rows.shape[0])
        if rows.shape[1] > cap:
            idx = torch.randperm(rows.shape[1], generator=self.generator)[:cap]
            rows = rows[:, idx]
        self.samples = rows.clone() if self.samples is None else torch.cat([self.samples, rows], dim=1)
        if self.samples.shape[1] > cap:
            idx = torch.randperm(self.samples.shape[1], generator=self.generator)[:cap]
            self.samples = self.samples[:, idx]

    # -- results
    def _shape(self) -> list[int]:
        assert self.ndim is not None and self.min_val is not None
        if isinstance(self.granularity, PerTensor):
            return [1] * self.ndim
        shape = [1] * self.ndim
        shape[self.granularity.axis % self.ndim] = self.min_val.numel()
        return shape

    def clipping_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: (lower, upper) clipping bounds."""
        assert self.min_val is not None and self.max_val is not None
        return self.min_val, self.max_val

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point), shaped to broadcast against the observed tensors."""
        if self.min_val is None:
            raise RuntimeError("the observer saw no data: calibrate with a non-empty calibration set")
        lo, hi = self.clipping_range()
        if self.symmetric:
            ref = torch.maximum(lo.abs(), hi.abs()) if self.qtype.signed else torch.clamp(hi, min=0)
            scale = symmetric_scale(ref, self.qtype)
            zero_point = torch.zeros_like(scale)
        else:
            scale, zero_point = affine_scale(lo, hi, self.qtype)
        shape = self._shape()
        return scale.reshape(shape), zero_point.reshape(shape)

    def describe(self) -> dict[str, Any]:
        return {"observer": self.name}


class MinMaxObserver(Observer):
    name = "minmax"


class PercentileObserver(Observer):
    """Clip at the ``percentile``-th percentile of the observed values."""

    name = "percentile"
    needs_samples = True

    def __init__(self, *args: Any, percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def clipping_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.samples is not None
        q = self.percentile / 100.0
        s = self.samples
        if self.symmetric and self.qtype.signed:
            hi = _quantile(s.abs(), q)
            return -hi, hi
        return _quantile(s, 1.0 - q), _quantile(s, q)

    def describe(self) -> dict[str, Any]:
        return {"observer": self.name, "percentile": self.percentile}


class MSEObserver(Observer):
    """The clipping range (a fraction of the observed one) minimising ||x - Q(x)||²."""

    name = "mse"
    needs_samples = True

    def __init__(self, *args: Any, n_candidates: int = 100, min_fraction: float = 0.05, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_candidates, self.min_fraction = n_candidates, min_fraction

    def clipping_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.samples is not None and self.min_val is not None and self.max_val is not None
        x = self.samples  # C x n
        fractions = torch.linspace(self.min_fraction, 1.0, self.n_candidates)
        lo_full, hi_full = self.min_val, self.max_val
        if self.symmetric and self.qtype.signed:
            hi_full = torch.maximum(lo_full.abs(), hi_full.abs())
            lo_full = -hi_full
        elif self.symmetric:
            lo_full = torch.zeros_like(lo_full)
        best_err = torch.full((x.shape[0],), float("inf"))
        best = torch.ones(x.shape[0])
        # candidates in chunks so that C x K x n stays within ~64 MB
        chunk = max(1, (1 << 24) // max(1, x.numel()))
        for start in range(0, len(fractions), chunk):
            f = fractions[start:start + chunk]  # K
            lo = lo_full[:, None] * f[None, :]
            hi = hi_full[:, None] * f[None, :]
            if self.symmetric:
                # hi is the clipped max|x| (signed grid) or the clipped max x (unsigned grid)
                scale = symmetric_scale(hi, self.qtype)
                zp = torch.zeros_like(scale)
            else:
                scale, zp = affine_scale(lo, hi, self.qtype)
            s, z = scale[:, :, None], zp[:, :, None]
            xq = (torch.clamp(torch.round(x[:, None, :] / s) + z, self.qtype.qmin, self.qtype.qmax) - z) * s
            err = (xq - x[:, None, :]).pow(2).mean(dim=2)  # C x K
            e, k = err.min(dim=1)
            better = e < best_err
            best_err = torch.where(better, e, best_err)
            best = torch.where(better, f[k], best)
        return lo_full * best, hi_full * best

    def describe(self) -> dict[str, Any]:
        return {"observer": self.name, "n_candidates": self.n_candidates}


class QuantileMSEObserver(Observer):
    """RepQ-ViT's range search: quantile pairs (1 - p, p), the one with the least MSE, per row."""

    name = "quantile_mse"
    needs_samples = True
    quantiles = (0.999, 0.9999, 0.99999)

    def _candidates(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per candidate p: (lower, upper, scale, zero point), one value per row."""
        assert self.samples is not None
        x, out = self.samples, []
        for p in self.quantiles:
            if self.symmetric:
                hi = _quantile(x.abs(), p) if self.qtype.signed else torch.clamp(_quantile(x, p), min=0)
                lo = -hi if self.qtype.signed else torch.zeros_like(hi)
                scale = symmetric_scale(hi, self.qtype)
                zp = torch.zeros_like(scale)
            else:
                lo, hi = _quantile(x, 1.0 - p), _quantile(x, p)
                scale = torch.clamp((hi - lo) / (self.qtype.qmax - self.qtype.qmin), min=1e-8)
                zp = torch.round(-lo / scale) + self.qtype.qmin
            out.append((lo, hi, scale, zp))
        return out

    def _best(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.samples is not None
        x = self.samples
        best = None
        for lo, hi, scale, zp in self._candidates():
            s, z = scale[:, None], zp[:, None]
            xq = (torch.clamp(torch.round(x / s) + z, self.qtype.qmin, self.qtype.qmax) - z) * s
            err = (xq - x).pow(2).mean(dim=1)
            if best is None:
                best = [lo, hi, scale, zp, err]
                continue
            better = err < best[4]  # strictly better: the first (smallest p) wins ties, as in RepQ-ViT
            best = [torch.where(better, a, b) for a, b in zip((lo, hi, scale, zp, err), best)]
        assert best is not None
        return best[0], best[1], best[2], best[3]

    def clipping_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi, _, _ = self._best()
        return lo, hi

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val is None:
            raise RuntimeError("the observer saw no data: calibrate with a non-empty calibration set")
        _, _, scale, zp = self._best()
        shape = self._shape()
        return scale.reshape(shape), zp.reshape(shape)

    def describe(self) -> dict[str, Any]:
        return {"observer": self.name, "quantiles": list(self.quantiles)}


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise quantile by sorting (torch.quantile refuses more than 16 M elements)."""
    n = x.shape[1]
    k = min(n - 1, max(0, int(round(q * (n - 1)))))
    return x.sort(dim=1).values[:, k]


def make_observer(name: str, qtype: QType, granularity: Granularity = PerTensor(), symmetric: bool = True,
                  **kwargs: Any) -> Observer:
    """An observer by name: ``minmax``, ``percentile`` or ``mse``."""
    cls = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver,
           "quantile_mse": QuantileMSEObserver}.get(name)
    if cls is None:
        raise ValueError(f"unknown observer {name!r}: choose one of {OBSERVERS}")
    if cls in (MinMaxObserver, QuantileMSEObserver):
        kwargs = {k: v for k, v in kwargs.items() if k in ("max_samples", "seed")}
    if cls is PercentileObserver:
        kwargs = {k: v for k, v in kwargs.items() if k in ("max_samples", "seed", "percentile")}
    if cls is MSEObserver:
        kwargs = {k: v for k, v in kwargs.items() if k in ("max_samples", "seed", "n_candidates", "min_fraction")}
    return cls(qtype, granularity, symmetric, **kwargs)
