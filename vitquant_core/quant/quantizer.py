"""Uniform quantization: scales, integer codes, dequantization and fake quantization.

Symmetric (signed) quantization as the earlier study specifies it:

    q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1),   s = max|x| / (2^(b-1) - 1)

Unsigned (non-negative tensors: post-softmax, post-ReLU) uses the grid 0 .. 2^b - 1 with
s = max(x) / (2^b - 1); asymmetric quantization adds an integer zero point z:
q = clamp(round(x / s) + z, 0, 2^b - 1). Rounding is round-half-to-even (``torch.round``).

Fake quantization computes ``(q - z) * s`` with exactly the operations that
:meth:`QTensor.dequantize` uses on the integer codes, so the two agree bit for bit. Its
gradient is the clipped straight-through estimator (Bengio et al., 2013): the identity
inside the clipping range, zero outside.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .granularity import Granularity, PerChannel, PerTensor, reduce_dims
from .qtypes import QType


def check_finite(x: torch.Tensor, what: str = "tensor") -> None:
    """Raise a clear error for NaN or Inf, which would silently poison every scale."""
    if not torch.isfinite(x).all():
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{what} holds {n_nan} NaN and {n_inf} Inf values: quantization needs "
                         "finite inputs; check the model and data before quantizing")


def _safe_scale(scale: torch.Tensor) -> torch.Tensor:
    # an all-zero tensor (or channel) has max|x| = 0: any scale maps it to code 0 exactly
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def symmetric_scale(absmax: torch.Tensor, qtype: QType) -> torch.Tensor:
    """``s = max|x| / qmax``: 2^(b-1) - 1 for signed grids, 2^b - 1 for unsigned ones."""
    return _safe_scale(absmax.float() / qtype.qmax)


def affine_scale(xmin: torch.Tensor, xmax: torch.Tensor, qtype: QType) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point mapping ``[xmin, xmax]`` (widened to hold 0) onto the grid."""
    xmin = torch.clamp(xmin.float(), max=0.0)
    xmax = torch.clamp(xmax.float(), min=0.0)
    scale = _safe_scale((xmax - xmin) / (qtype.qmax - qtype.qmin))
    zero_point = torch.clamp(qtype.qmin - torch.round(xmin / scale), qtype.qmin, qtype.qmax)
    return scale, zero_point


def tensor_absmax(x: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    dims = reduce_dims(x.ndim, granularity)
    return x.detach().abs().amax(dim=dims, keepdim=True) if dims else x.detach().abs()


def tensor_minmax(x: torch.Tensor, granularity: Granularity) -> tuple[torch.Tensor, torch.Tensor]:
    dims = reduce_dims(x.ndim, granularity)
    if not dims:
        return x.detach().clone(), x.detach().clone()
    return x.detach().amin(dim=dims, keepdim=True), x.detach().amax(dim=dims, keepdim=True)


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float,
                   qtype: QType) -> torch.Tensor:
    """Integer codes as float values: ``clamp(round(x / s) + z, qmin, qmax)``."""
    return torch.clamp(torch.round(x / scale) + zero_point, qtype.qmin, qtype.qmax)


class _FakeQuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):  # type: ignore[override]
        codes = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
        ctx.save_for_backward(x, scale, zero_point if torch.is_tensor(zero_point) else torch.tensor(zero_point))
        ctx.qmin, ctx.qmax = qmin, qmax
        return (codes - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, scale, zero_point = ctx.saved_tensors
        lo = (ctx.qmin - zero_point) * scale
        hi = (ctx.qmax - zero_point) * scale
        inside = (x >= lo) & (x <= hi)
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float,
                  qtype: QType) -> torch.Tensor:
    """Quantize then dequantize, with a clipped straight-through gradient."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _FakeQuantizeSTE.apply(x, scale, zero_point, qtype.qmin, qtype.qmax)
    # inference: the same operations in place on one buffer (evaluation speed)
    codes = torch.div(x, scale)
    codes.round_()
    if torch.is_tensor(zero_point) or zero_point != 0:
        codes.add_(zero_point)
    codes.clamp_(qtype.qmin, qtype.qmax)
    if torch.is_tensor(zero_point) or zero_point != 0:
        codes.sub_(zero_point)
    return codes.mul_(scale)


@dataclass
class QTensor:
    """Integer codes with their scale and zero point: the integer form of a tensor."""

    int_repr: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qtype: QType
    granularity: Granularity

    def dequantize(self) -> torch.Tensor:
        # the same operations as fake_quantize, on the same float values, so bit-identical
        return (self.int_repr.to(torch.float32) - self.zero_point) * self.scale

    @property
    def shape(self) -> torch.Size:
        return self.int_repr.shape


def quantize_tensor(x: torch.Tensor, qtype: QType, granularity: Granularity = PerTensor(),
                    symmetric: bool = True, scale: torch.Tensor | None = None) -> QTensor:
    """Quantize ``x`` to integer codes with a min-max (or given) scale.

    ``symmetric=True`` with a signed ``qtype`` is the study's scheme; with an unsigned
    ``qtype`` it maps [0, max] onto 0 .. 2^b - 1. ``symmetric=False`` adds a zero point.
    """
    check_finite(x, "input")
    if isinstance(granularity, PerChannel) and x.ndim == 0:
        raise ValueError("per-channel quantization needs a tensor with at least one dimension")
    if scale is not None:
        zero_point = torch.zeros_like(scale)
    elif symmetric:
        ref = tensor_absmax(x, granularity) if qtype.signed else torch.clamp(tensor_minmax(x, granularity)[1], min=0)
        scale = symmetric_scale(ref, qtype)
        zero_point = torch.zeros_like(scale)
    else:
        if qtype.signed:
            raise ValueError("asymmetric quantization uses an unsigned grid: pass quint(bits)")
        scale, zero_point = affine_scale(*tensor_minmax(x, granularity), qtype)
    codes = quantize_codes(x.float(), scale, zero_point, qtype)
    return QTensor(codes.to(qtype.storage_dtype), scale, zero_point, qtype, granularity)
