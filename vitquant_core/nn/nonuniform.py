"""Activation quantizers on non-uniform grids: log (log√2, log2, adaptive base) and twin-uniform.

They keep :class:`~.modules.ActQuantizer`'s life cycle (``observe`` during calibration, then
``quantize``) and are chosen per operation by ``LayerSpec.a_quantizer``. Calibration keeps
a seeded sample of the observed values and chooses the grid parameters by the error of the
quantized tensor itself (MSE); PTQ4ViT's search (:mod:`vitquant_core.ptq.ptq4vit`) may
overwrite them with :meth:`set_params`, using the error at the layer's output instead.
The grids themselves are in :mod:`vitquant_core.quant.nonuniform`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..quant import nonuniform as NU

# RepQ-ViT's candidates for Δ: quantiles of the calibration values (official code)
LOG_QUANTILES = (0.999, 0.9999, 0.99999)
# the adaptive base 2^(1/k): k = 1 is log2, k = 2 is log√2
ADAPTIVE_LOG_K = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
TWIN_SPLITS = tuple(2.0 ** -i for i in range(20))  # PTQ4ViT's candidates for the softmax split


class _SampledQuantizer(nn.Module):
    """Shared calibration life cycle: observe (keep a seeded sample and the maximum), then quantize."""

    kind = ""

    def __init__(self, bits: int, seed: int = 0, max_samples: int = 1 << 17) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")
        self.bits, self.mode = bits, "observe"
        self.max_samples = max_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.samples: torch.Tensor | None = None
        self.n_observed = 0
        self.params: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quantize":
            return self.fake_quantize(x)
        if self.mode == "observe":
            if self.params:
                raise RuntimeError("this quantizer was already calibrated; make a new quantized model")
            flat = x.detach().float().reshape(-1)
            if not torch.isfinite(flat).all():
                raise ValueError(f"tensor observed for calibration (shape {tuple(x.shape)}) holds NaN or Inf")
            if flat.numel() > self.max_samples:
                flat = flat[torch.randperm(flat.numel(), generator=self.generator)[:self.max_samples]]
            self.samples = flat if self.samples is None else torch.cat([self.samples, flat])
            if self.samples.numel() > self.max_samples:
                keep = torch.randperm(self.samples.numel(), generator=self.generator)[:self.max_samples]
                self.samples = self.samples[keep]
            self.n_observed += 1
        return x

    def finalize(self) -> None:
        if self.samples is None or self.samples.numel() == 0:
            raise RuntimeError("an activation quantizer saw no calibration data: pass a non-empty "
                               "calibration set (at least one batch) to quantize()")
        self.set_params(**self.search(self.samples))
        self.samples = None

    def set_params(self, **params: float) -> None:
        self.params = {k: float(v) for k, v in params.items()}
        self.mode = "quantize"

    def search(self, x: torch.Tensor) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"quantizer": self.kind, "bits": self.bits, **self.params}

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.bits}-bit, {self.params}, mode={self.mode}"


def _best(candidates: list[dict[str, float]], x: torch.Tensor, fq) -> dict[str, float]:
    errors = [float((fq(x, **c) - x).pow(2).mean()) for c in candidates]
    return candidates[min(range(len(errors)), key=errors.__getitem__)]


class LogActQuantizer(_SampledQuantizer):
    """Log quantizer of a non-negative tensor (post-softmax): base √2 (RepQ-ViT), 2, or adaptive.

    Δ is chosen among the quantiles :data:`LOG_QUANTILES` of the calibration values by MSE (as
    RepQ-ViT's code does); with ``base="adaptive"`` the base 2^(1/k) is searched jointly over
    :data:`ADAPTIVE_LOG_K` (an adaptive base after AdaLog, Wu et al. 2024; their progressive
    search and bias reparameterization are not reproduced).
    """

    kind = "log"

    def __init__(self, bits: int, base: str = "sqrt2", seed: int = 0) -> None:
        super().__init__(bits, seed)
        if base not in ("sqrt2", "2", "adaptive"):
            raise ValueError(f"log base must be 'sqrt2', '2' or 'adaptive', got {base!r}")
        self.base_name = base
        self.kind = {"sqrt2": "log_sqrt2", "2": "log2", "adaptive": "adalog"}[base]

    def _fq(self, x: torch.Tensor, delta: float, base: float) -> torch.Tensor:
        return NU.log_fake_quantize(x, delta, self.bits, base)

    def search(self, x: torch.Tensor) -> dict[str, float]:
        if bool((x < 0).any()):
            raise ValueError("a log quantizer needs non-negative inputs (post-softmax attention); "
                             "this operation saw negative values: use a_quantizer='uniform' there")
        # the sample holds at most 2^17 values, within torch.quantile's limit
        deltas = [float(torch.quantile(x, q)) for q in LOG_QUANTILES]
        deltas = [d if d > 0 else (float(x.max()) or 1.0) for d in deltas]
        ks = ADAPTIVE_LOG_K if self.base_name == "adaptive" else ((2.0,) if self.base_name == "sqrt2" else (1.0,))
        return _best([{"delta": d, "base": 2.0 ** (1.0 / k)} for k in ks for d in deltas], x, self._fq)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self._fq(x, self.params["delta"], self.params["base"])

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return NU.log_codes(x, self.params["delta"], self.bits, self.params["base"])

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return NU.log_dequantize(codes, self.params["delta"], self.bits, self.params["base"])


class TwinUniformActQuantizer(_SampledQuantizer):
    """PTQ4ViT's twin-uniform quantizer: ``form="softmax"`` (values in [0, 1]) or ``"gelu"``.

    Calibration picks, by MSE of the tensor, the softmax split among :data:`TWIN_SPLITS` or the
    GELU positive scale Δ_pos = Δ_neg · 2^m (Δ_neg fixed by GELU's minimum).
    """

    def __init__(self, bits: int, form: str = "softmax", seed: int = 0) -> None:
        super().__init__(bits, seed)
        if form not in ("softmax", "gelu"):
            raise ValueError(f"twin-uniform form must be 'softmax' or 'gelu', got {form!r}")
        self.form = form
        self.kind = f"twin_uniform_{form}"

    def candidates(self, x: torch.Tensor) -> list[dict[str, float]]:
        if self.form == "softmax":
            return [{"split": s} for s in TWIN_SPLITS]
        d_neg = NU.twin_gelu_scales(self.bits, 0)[0]
        top = max(float(x.max()), d_neg)
        m_max = math.ceil(math.log2(top / d_neg / (2 ** (self.bits - 1) - 1))) + 1 if top > d_neg else 1
        return [{"d_neg": d_neg, "d_pos": d_neg * 2.0 ** m} for m in range(0, max(m_max, 0) + 1)]

    def _fq(self, x: torch.Tensor, **p: float) -> torch.Tensor:
        if self.form == "softmax":
            return NU.twin_softmax_fake_quantize(x, p["split"], self.bits)
        return NU.twin_gelu_fake_quantize(x, p["d_neg"], p["d_pos"], self.bits)

    def search(self, x: torch.Tensor) -> dict[str, float]:
        return _best(self.candidates(x), x, self._fq)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self._fq(x, **self.params)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "softmax":
            return NU.twin_softmax_codes(x, self.params["split"], self.bits)
        return NU.twin_gelu_codes(x, self.params["d_neg"], self.params["d_pos"], self.bits)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        if self.form == "softmax":
            return NU.twin_softmax_dequantize(codes, self.params["split"], self.bits)
        return NU.twin_gelu_dequantize(codes, self.params["d_neg"], self.params["d_pos"])
