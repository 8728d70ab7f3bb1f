"""Quantized building blocks: activation and weight quantizers, Linear, Conv2d, attention.

Each quantized module wraps a copy of the float module's parameters. Weights are
quantized once (their fake-quantized copy is cached, so evaluation pays no weight
cost); input activations are quantized on every call with the scale found in
calibration.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..quant.granularity import PerChannel, PerTensor, check_activation_granularity
from ..quant.observers import Observer, make_observer
from ..quant.qtypes import QType
from ..quant.quantizer import QTensor, fake_quantize, quantize_codes
from .config import LayerSpec


class ActQuantizer(nn.Module):
    """Quantizes an activation tensor with a calibrated scale.

    Modes: ``"observe"`` (collect statistics, pass through), ``"quantize"`` (fake-quantize),
    ``"off"`` (pass through). Signedness ``auto`` picks the unsigned grid when calibration
    saw no negative value (post-ReLU inputs, softmax outputs), which gains one bit.
    """

    def __init__(self, bits: int, signedness: str = "auto", observer: str = "minmax",
                 granularity=PerTensor(), percentile: float = 99.99, seed: int = 0) -> None:
        super().__init__()
        check_activation_granularity(granularity)
        self.bits, self.signedness, self.observer_name = bits, signedness, observer
        self.granularity, self.percentile, self.seed = granularity, percentile, seed
        self.mode = "observe"
        self.qtype: QType | None = None
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.resolved: str | None = None
        # one observer whatever the grid: "auto" picks signed or unsigned from the observed
        # minimum at finalize, using the same statistics
        grid = "signed" if signedness == "auto" else signedness
        self.observer: Observer | None = make_observer(
            observer, QType(bits, signed=grid == "signed"), granularity, symmetric=grid != "asymmetric",
            percentile=percentile, seed=seed,
            # the MSE search costs candidates x samples: 64k samples estimate the error well
            max_samples=(1 << 16) if observer == "mse" else (1 << 18))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quantize":
            return fake_quantize(x, self.scale, self.zero_point, self.qtype)  # type: ignore[arg-type]
        if self.mode == "observe":
            if self.observer is None:
                raise RuntimeError("this quantizer was already calibrated; make a new quantized model")
            check_activation_granularity(self.granularity, x.ndim)  # a negative axis may be the batch
            self.observer.update(x)
        return x

    def finalize(self) -> None:
        """Fix the grid and scale from what was observed, and switch to quantizing."""
        obs = self.observer
        if obs is None or obs.min_val is None:
            raise RuntimeError("an activation quantizer saw no calibration data: pass a non-empty "
                               "calibration set (at least one batch) to quantize()")
        key = self.signedness
        if key == "auto":
            key = "unsigned" if bool((obs.min_val >= 0).all()) else "signed"
            obs.qtype = QType(self.bits, signed=key == "signed")
        scale, zp = obs.compute()
        self.qtype = obs.qtype
        if isinstance(self.granularity, PerTensor):  # a 0-d scale broadcasts against any input
            scale, zp = scale.reshape(()), zp.reshape(())
        self.scale, self.zero_point = scale, zp
        self.resolved = key
        self.observer = None
        self.mode = "quantize"

    def set_scale(self, scale: torch.Tensor | float, qtype: QType | None = None,
                  zero_point: torch.Tensor | float | None = None) -> None:
        """Set the scale (and zero point) directly: search-based PTQ methods do this."""
        self.scale = torch.as_tensor(scale, dtype=torch.float32)
        self.zero_point = (torch.zeros_like(self.scale) if zero_point is None
                           else torch.as_tensor(zero_point, dtype=torch.float32))
        if qtype is not None:
            self.qtype = qtype
        self.mode = "quantize"

    def extra_repr(self) -> str:
        q = self.qtype.name if self.qtype else f"{self.bits}-bit {self.signedness}"
        return f"{q}, {self.observer_name}, mode={self.mode}"


class WeightQuantizer:
    """Quantizes a weight tensor once; keeps the integer form and the fake-quantized copy.

    ``signedness="signed"``: symmetric, zero point 0 (the default); ``"asymmetric"``: an
    unsigned grid with a zero point per channel (RepQ-ViT's weights).
    """

    def __init__(self, weight: torch.Tensor, bits: int, granularity=PerChannel(0),
                 observer: str = "minmax", percentile: float = 99.99, signedness: str = "signed") -> None:
        self.qtype = QType(bits, signed=signedness == "signed")
        self.granularity = granularity
        self.observer_name, self.percentile = observer, percentile
        self.symmetric = signedness == "signed"
        self.calibrate(weight)

    def calibrate(self, weight: torch.Tensor) -> None:
        """Choose the scale (and zero point) for ``weight``: at construction, and again after a
        transformation changed the weight (RepQ-ViT's reparameterization)."""
        obs = make_observer(self.observer_name, self.qtype, self.granularity, symmetric=self.symmetric,
                            percentile=self.percentile, max_samples=max(weight.numel(), 1))
        obs.update(weight.detach().float())
        self.scale, self.zero_point = obs.compute()

    def qtensor(self, weight: torch.Tensor) -> QTensor:
        codes = quantize_codes(weight.detach().float(), self.scale, self.zero_point, self.qtype)
        return QTensor(codes.to(self.qtype.storage_dtype), self.scale, self.zero_point, self.qtype,
                       self.granularity)

    def fake(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.scale, self.zero_point, self.qtype)


def make_act_quantizer(spec: LayerSpec, signedness: str | None = None, role: str = "input") -> nn.Module | None:
    """The activation quantizer ``spec`` names (None when its activations stay in float).

    ``role`` is "input" (of a Linear / Conv2d or a matmul operand) or "softmax" (the attention
    probabilities): it picks the twin-uniform quantizer's form (GELU-style for inputs).
    """
    if spec.a_bits is None:
        return None
    kind = spec.a_quantizer
    if kind == "uniform":
        return ActQuantizer(spec.a_bits, signedness or spec.a_signedness, spec.a_observer,
                            spec.a_granularity if role == "input" else PerTensor(), spec.percentile)
    from .nonuniform import LogActQuantizer, TwinUniformActQuantizer

    if kind == "twin_uniform":
        return TwinUniformActQuantizer(spec.a_bits, "softmax" if role == "softmax" else "gelu")
    return LogActQuantizer(spec.a_bits, {"log_sqrt2": "sqrt2", "log2": "2", "adalog": "adaptive"}[kind])


class _QuantWeighted(nn.Module):
    """Shared logic of QuantLinear and QuantConv2d."""

    spec: LayerSpec
    weight: nn.Parameter

    def _setup(self, spec: LayerSpec, name: str) -> None:
        self.spec, self.qname = spec, name
        self.w_quantizer: WeightQuantizer | None = None
        if spec.w_bits is not None:
            self.w_quantizer = WeightQuantizer(self.weight, spec.w_bits, spec.w_granularity,
                                               spec.w_observer, spec.percentile, spec.w_signedness)
        self.input_quantizer = make_act_quantizer(spec)
        self.refresh_weight()

    def refresh_weight(self) -> None:
        """Recompute the cached quantized weight (after the weight or its scale changed)."""
        with torch.no_grad():
            w = self.weight if self.w_quantizer is None else self.w_quantizer.fake(self.weight)
        self.register_buffer("weight_q", w.detach().clone(), persistent=False)

    def set_weight_scale(self, scale: torch.Tensor) -> None:
        assert self.w_quantizer is not None, f"{self.qname}: weights are kept in float"
        self.w_quantizer.scale = scale.reshape(self.w_quantizer.scale.shape).float()
        self.refresh_weight()

    def recalibrate_weight(self) -> None:
        """Choose the weight scale again for the current weight (after a reparameterization)."""
        if self.w_quantizer is not None:
            self.w_quantizer.calibrate(self.weight)
        self.refresh_weight()

    def quantized_weight(self) -> QTensor | None:
        return None if self.w_quantizer is None else self.w_quantizer.qtensor(self.weight)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)


class QuantLinear(_QuantWeighted):
    def __init__(self, linear: nn.Linear, spec: LayerSpec, name: str = "") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self._setup(spec, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.weight_q, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.spec.label()}"


class QuantConv2d(_QuantWeighted):
    def __init__(self, conv: nn.Conv2d, spec: LayerSpec, name: str = "") -> None:
        super().__init__()
        self.conv = conv  # keeps stride, padding, groups...; its weight is not used
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self._setup(spec, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv._conv_forward(self.quantize_input(x), self.weight_q, self.bias)

    def extra_repr(self) -> str:
        c = self.conv
        return f"{c.in_channels}, {c.out_channels}, k={c.kernel_size}, s={c.stride}, {self.spec.label()}"


class QuantAttention(nn.Module):
    """timm multi-head self-attention with explicit, quantizable matmuls.

    Quantizers (each configured by its pseudo-operation's LayerSpec, None = float):
    ``q_quantizer``/``k_quantizer`` (``<name>.matmul_qk``), ``attn_quantizer`` on the
    softmax output (``<name>.softmax``, unsigned grid) and ``v_quantizer``
    (``<name>.matmul_av``).
    """

    def __init__(self, attn: nn.Module, specs: dict[str, LayerSpec], name: str = "") -> None:
        super().__init__()
        if getattr(attn, "gate", None) is not None:
            raise NotImplementedError("gated timm attention is not supported yet")
        self.qname = name
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.scale = attn.scale
        self.qkv, self.proj = attn.qkv, attn.proj
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.attn_drop, self.proj_drop = attn.attn_drop, attn.proj_drop
        self.norm = getattr(attn, "norm", nn.Identity())
        self.specs = specs

        self.q_quantizer = make_act_quantizer(specs["matmul_qk"], role="operand")
        self.k_quantizer = make_act_quantizer(specs["matmul_qk"], role="operand")
        self.attn_quantizer = make_act_quantizer(specs["softmax"], "unsigned", role="softmax")
        self.v_quantizer = make_act_quantizer(specs["matmul_av"], role="operand")
        self.capture: dict[str, torch.Tensor] | None = None  # set to {} to record attention maps

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        B, N, _c = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        if self.capture is not None:  # the float operands, for search-based PTQ and analyses
            self.capture.update(q=q.detach(), k=k.detach(), v=v.detach())
        if self.q_quantizer is not None:
            q, k = self.q_quantizer(q), self.k_quantizer(k)
        scores = q @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = (scores + attn_mask if attn_mask.dtype != torch.bool
                      else scores.masked_fill(~attn_mask, float("-inf")))
        attn = scores.softmax(dim=-1)
        if self.capture is not None:
            self.capture["scores"] = scores.detach()
        if self.attn_quantizer is not None:
            attn = self.attn_quantizer(attn)
        attn = self.attn_drop(attn)
        if self.v_quantizer is not None:
            v = self.v_quantizer(v)
        out = (attn @ v).transpose(1, 2).reshape(B, N, self.attn_dim)
        out = self.norm(out)
        return self.proj_drop(self.proj(out))
