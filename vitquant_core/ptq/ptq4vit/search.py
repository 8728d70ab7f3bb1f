"""PTQ4ViT's scale search for one operation O = f(A, B) (Yuan et al., ECCV 2022, §4.2–4.3).

The objective is E[w ⊙ (O − Ô)²] over the search images, with w = (∂L/∂O)² (the "hessian"
metric; see :mod:`.capture` for which gradient) or w = 1 ("mse"). B (the weight, k, v) and A
(the input, q, the softmax probabilities) are searched alternately, B first, for a number of
rounds; each step keeps the other operand's current quantization fixed and tries:

* uniform scales: multipliers linspace(α, β, n) of the max-based scale (quantize()'s min-max
  calibration) — per output channel for per-channel weights, where the objective separates
  by output channel, so each channel keeps its own best multiplier; per tensor otherwise;
* twin-uniform softmax: the split 2^-0 … 2^-19; twin-uniform GELU: Δ_pos = Δ_neg·2^m.

Every step also evaluates the current choice and keeps it on ties, so the objective never
increases. Zero points and grids (signed / unsigned) stay those of the initial calibration.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.modules import ActQuantizer, QuantAttention, QuantConv2d, QuantLinear
from ...nn.nonuniform import TwinUniformActQuantizer
from ...quant import nonuniform as NU
from ...quant.quantizer import fake_quantize


@dataclass
class SearchSettings:
    alpha: float = 0.01
    beta: float = 1.2
    n_candidates: int = 100
    rounds: int = 3

    def multipliers(self) -> list[float]:
        grid = torch.linspace(self.alpha, self.beta, self.n_candidates).tolist()
        return sorted(set(grid) | {1.0})  # the max-based scale itself is always a candidate


@dataclass
class Operand:
    """One input of the operation and how it may be quantized."""

    label: str
    x: torch.Tensor
    fq: Callable[[torch.Tensor, Any], torch.Tensor]
    candidates: list[Any]
    current: Any
    apply: Callable[[Any], None]
    describe: Callable[[Any], Any]
    per_channel: bool = False  # candidates are scale tensors, chosen output channel by output channel

    def quantized(self) -> torch.Tensor:
        return self.fq(self.x, self.current)


def _error(o: torch.Tensor, o_hat: torch.Tensor, w: torch.Tensor | None, channel_dim: int | None) -> torch.Tensor:
    d = (o - o_hat).pow_(2)
    if w is not None:
        d.mul_(w)
    if channel_dim is None:
        return d.mean()
    return d.transpose(0, channel_dim).reshape(d.shape[channel_dim], -1).mean(1)


def alternate(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: Operand, b: Operand,
              target: torch.Tensor, w: torch.Tensor | None, rounds: int, channel_dim: int) -> tuple[float, float]:
    """Alternate the search of ``b`` then ``a`` for ``rounds`` rounds; (objective before, after)."""
    qa, qb = a.quantized(), b.quantized()
    before = float(_error(target, op(qa, qb), w, None))
    for _ in range(rounds):
        changed = False
        for which, operand in (("b", b), ("a", a)):
            if not operand.candidates:
                continue
            other = qa if which == "b" else qb

            def run(t: torch.Tensor) -> torch.Tensor:
                return op(other, t) if which == "b" else op(t, other)  # noqa: B023 - used at once
            options = [operand.current] + list(operand.candidates)
            if operand.per_channel:
                errs = torch.stack([_error(target, run(operand.fq(operand.x, c)), w, channel_dim) for c in options])
                best = errs.argmin(0)  # ties keep the current scale (row 0)
                stacked = torch.stack([c.reshape(-1) for c in options])
                operand.current = stacked[best, torch.arange(stacked.shape[1])].reshape(operand.current.shape)
                changed |= bool((best != 0).any())
            else:
                errs = torch.stack([_error(target, run(operand.fq(operand.x, c)), w, None) for c in options])
                k = int(errs.argmin())
                operand.current = options[k]
                changed |= k != 0
            if which == "b":
                qb = operand.quantized()
            else:
                qa = operand.quantized()
        if not changed:
            break
    return before, float(_error(target, op(qa, qb), w, None))


# -- operands --------------------------------------------------------------------------------------

def _uniform_operand(label: str, x: torch.Tensor, q: ActQuantizer, mults: list[float]) -> Operand:
    s0, zp, qtype = q.scale.clone(), q.zero_point.clone(), q.qtype

    def apply(s: torch.Tensor) -> None:
        q.set_scale(s, qtype, zp)
    return Operand(label, x, lambda t, s: fake_quantize(t, s, zp, qtype), [s0 * m for m in mults], s0.clone(),
                   apply, lambda s: {"multiplier": round(float(s / s0), 6), "scale": float(s)})


def _twin_operand(label: str, x: torch.Tensor, q: TwinUniformActQuantizer) -> Operand:
    bits = q.bits
    if q.form == "softmax":
        def fq(t: torch.Tensor, p: dict[str, float]) -> torch.Tensor:
            return NU.twin_softmax_fake_quantize(t, p["split"], bits)

        def describe(p: dict[str, float]) -> dict[str, Any]:
            return {"split": p["split"], "split_log2": int(round(math.log2(p["split"])))}
    else:
        def fq(t: torch.Tensor, p: dict[str, float]) -> torch.Tensor:
            return NU.twin_gelu_fake_quantize(t, p["d_neg"], p["d_pos"], bits)

        def describe(p: dict[str, float]) -> dict[str, Any]:
            return {"d_neg": p["d_neg"], "d_pos": p["d_pos"], "m": int(round(math.log2(p["d_pos"] / p["d_neg"])))}
    return Operand(label, x, fq, q.candidates(x), dict(q.params), lambda p: q.set_params(**p), describe)


def act_operand(label: str, x: torch.Tensor, q: nn.Module | None, mults: list[float]) -> Operand | None:
    """The search space of activation quantizer ``q`` (None: kept in float, or a grid not searched)."""
    if isinstance(q, ActQuantizer):
        return _uniform_operand(label, x, q, mults)
    if isinstance(q, TwinUniformActQuantizer):
        return _twin_operand(label, x, q)
    return None  # float, or a log grid: keeps its calibration


def _weight_operand(module: QuantLinear | QuantConv2d, mults: list[float]) -> Operand | None:
    wq = module.w_quantizer
    if wq is None:
        return None
    s0, zp, qtype = wq.scale.clone(), wq.zero_point, wq.qtype
    per_channel = s0.numel() == module.weight.shape[0] and s0.numel() > 1

    def describe(s: torch.Tensor) -> dict[str, Any]:
        m = (s / s0).reshape(-1)
        return {"multipliers": [round(float(v), 4) for v in m], "mean_multiplier": round(float(m.mean()), 6)}
    return Operand("weight", module.weight.detach(), lambda t, s: fake_quantize(t, s, zp, qtype),
                   [s0 * m for m in mults], s0.clone(), module.set_weight_scale, describe, per_channel)


# -- one operation ----------------------------------------------------------------------------------

def _finish(name: str, kind: str, operands: list[Operand | None], before: float, after: float,
            metric: str) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name, "kind": kind, "metric": metric,
                            "objective_before": before, "objective_after": after}
    for o in operands:
        if o is not None:
            o.apply(o.current)
            info[o.label] = o.describe(o.current)
    return info


def search_weighted(name: str, module: QuantLinear | QuantConv2d, x: torch.Tensor, w: torch.Tensor | None,
                    s: SearchSettings, metric: str) -> dict[str, Any]:
    """Linear or Conv2d: the weight per output channel, then the input (uniform or twin GELU)."""
    mults = s.multipliers()
    if isinstance(module, QuantLinear):
        def op(xa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
            return F.linear(xa, wb, module.bias)
        channel_dim = -1
    else:
        def op(xa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
            return module.conv._conv_forward(xa, wb, module.bias)
        channel_dim = 1
    weight = _weight_operand(module, mults)
    inp = act_operand("input", x, module.input_quantizer, mults)
    target = op(x, module.weight)
    a = inp if inp is not None else _Fixed(x)
    b = weight if weight is not None else _Fixed(module.weight.detach())
    before, after = alternate(op, a, b, target, w, s.rounds, channel_dim % target.ndim)
    return _finish(name, "linear" if isinstance(module, QuantLinear) else "conv", [weight, inp], before, after, metric)


def search_matmul(name: str, attn: QuantAttention, kind: str, x_a: torch.Tensor, x_b: torch.Tensor,
                  w: torch.Tensor | None, s: SearchSettings, metric: str) -> dict[str, Any]:
    """q·kᵀ (k searched first, then q) or attn·v (v first, then the softmax probabilities)."""
    mults = s.multipliers()
    if kind == "matmul_qk":
        def op(qa: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
            return qa @ kb.transpose(-2, -1)
        a = act_operand("q", x_a, attn.q_quantizer, mults)
        b = act_operand("k", x_b, attn.k_quantizer, mults)
    else:
        def op(pa: torch.Tensor, vb: torch.Tensor) -> torch.Tensor:
            return pa @ vb
        a = act_operand("attn", x_a, attn.attn_quantizer, mults)
        b = act_operand("v", x_b, attn.v_quantizer, mults)
    target = op(x_a, x_b)
    before, after = alternate(op, a if a is not None else _Fixed(x_a), b if b is not None else _Fixed(x_b),
                              target, w, s.rounds, 0)
    return _finish(name, kind, [b, a], before, after, metric)


def _Fixed(x: torch.Tensor) -> Operand:  # noqa: N802 - reads as a constructor
    """An operand kept in float (nothing to search)."""
    return Operand("float", x, lambda t, _c: t, [], None, lambda _c: None, lambda _c: None)
