"""Ranking-aware PTQ of one operation (Liu et al., NeurIPS 2021, §3.2–3.4).

:func:`refine_linear`, :func:`refine_matmul_qk` and :func:`refine_matmul_av` turn one
calibrated quantized operation (a :class:`QuantLinear`, or one of a :class:`QuantAttention`'s
two matmuls) and its calibration inputs into a :class:`~.search.SearchUnit`, search its
operand scales from the max-based ones, write the chosen scales back and, for a linear
layer, fold the expected output error into its bias (:mod:`..bias_correction`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...nn.modules import ActQuantizer, QuantAttention, QuantLinear
from ...quant.observers import make_observer
from ...quant.quantizer import symmetric_scale, tensor_absmax
from ..bias_correction import correct_bias
from .config import RankingAwareConfig
from .search import Operand, SearchUnit

__all__ = ["refine_linear", "refine_matmul_av", "refine_matmul_qk"]


def _weight_operand(module: QuantLinear) -> Operand:
    w = module.weight.detach().float()
    wq = module.w_quantizer
    if wq is None:
        return Operand("weight", w)
    # the paper's starting point: the max-based scale, whatever observer the config named
    base = symmetric_scale(tensor_absmax(w, wq.granularity), wq.qtype).reshape(wq.scale.shape)
    return Operand("weight", w, base, 0.0, wq.qtype, module.set_weight_scale)


def _act_operand(role: str, q: ActQuantizer | None, x: torch.Tensor) -> Operand:
    x = x.float()
    if q is not None and not isinstance(q, ActQuantizer) and q.mode == "quantize":
        # a non-uniform grid (log, twin-uniform) keeps its own parameters: the search sees the
        # operand as that grid quantizes it
        with torch.no_grad():
            return Operand(role, q(x).float())
    if q is None or q.mode != "quantize" or q.qtype is None:
        return Operand(role, x)
    # max-based scale on the inputs this layer actually sees, on the grid calibration chose
    obs = make_observer("minmax", q.qtype, q.granularity, symmetric=q.resolved != "asymmetric")
    obs.update(x.detach())
    base, zp = obs.compute()
    shape = q.scale.shape

    def apply(scale: torch.Tensor) -> None:
        zero_point = zp.reshape(shape).to(q.scale.device)
        q.set_scale(scale.reshape(shape).to(q.scale.device), q.qtype)
        # set_scale zeroes the zero point; an asymmetric grid keeps its own: scaling the whole
        # range [min, max] by the multiplier leaves round(min / Δ) unchanged
        q.zero_point = zero_point.float()

    return Operand(role, x, base, zp, q.qtype, apply)


def _linear_combine(bias: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def combine(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        # xq [ca, B, *, in], wq [cb, out, in], one of ca/cb is 1 → [c, B, *, out] in one batched matmul
        ca, lead, n_in = xq.shape[0], xq.shape[1:-1], xq.shape[-1]
        out = torch.matmul(xq.reshape(ca, -1, n_in), wq.transpose(-1, -2))
        if bias is not None:
            out.add_(bias)  # in place: out is a fresh product
        return out.reshape(out.shape[0], *lead, out.shape[-1])
    return combine


def _qkv_scores_fn(attn: QuantAttention) -> Callable[[torch.Tensor], torch.Tensor]:
    """Attention scores from a batch of qkv outputs [c, B, N, 3·dim], as QuantAttention computes them."""
    heads, hd = attn.num_heads, attn.head_dim

    def scores(out: torch.Tensor) -> torch.Tensor:
        c, b, n = out.shape[:3]
        qkv = out.reshape(c, b, n, 3, heads, hd)
        q = attn.q_norm(qkv[:, :, :, 0].transpose(2, 3)) * attn.scale
        k = attn.k_norm(qkv[:, :, :, 1].transpose(2, 3))
        return q @ k.transpose(-2, -1)
    return scores


def _finish(name: str, kind: str, unit: SearchUnit | None, module: QuantLinear | None, x: torch.Tensor | None,
            rq: RankingAwareConfig, objective: str | None, target: torch.Tensor | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name, "kind": kind, "objective": objective, "searched": unit is not None}
    if x is not None:
        info["n_samples"] = x.shape[0]
    if unit is not None:
        info["n_samples"] = unit.n_samples
        info.update(unit.search())
    if rq.bias_correction and module is not None and x is not None:
        created = module.bias is None
        shift = correct_bias(module, x, target)
        info["bias_correction"] = {"mean_abs_shift": float(shift.abs().mean()),
                                   "max_abs_shift": float(shift.abs().max()), "created_bias": created}
    return info


def _objective_name(similarity: bool, ranking: bool) -> str | None:
    return {(True, True): "similarity-ranking", (True, False): "similarity",
            (False, True): "ranking", (False, False): None}[(similarity, ranking)]


def refine_linear(module: QuantLinear, x: torch.Tensor, rq: RankingAwareConfig = RankingAwareConfig(),
                  attention: QuantAttention | None = None, generator: torch.Generator | None = None,
                  name: str = "", target: torch.Tensor | None = None) -> dict[str, Any]:
    """Refine one calibrated QuantLinear in place on its calibration inputs ``x`` ``[B, *, in]``.

    Searches Δ_W and Δ_X (similarity objective; minus γ·ranking loss of the attention scores
    when ``attention`` is the QuantAttention whose ``qkv`` this layer is), then folds the
    expected output error into the bias. ``target``: the float output to match (default: the
    float layer on ``x``). Returns what was chosen (a row of the report).
    """
    x = x.to(module.weight.device).float()
    name = name or module.qname
    rank = rq.ranking and attention is not None
    unit = None
    if rq.similarity or rank:
        a = _act_operand("input", module.input_quantizer, x)
        b = _weight_operand(module)
        if a.searchable or b.searchable:
            bias = None if module.bias is None else module.bias.detach().float()
            unit = SearchUnit(a, b, _linear_combine(bias), rq, rq.similarity,
                              _qkv_scores_fn(attention) if rank else None, generator, target)  # type: ignore[arg-type]
    return _finish(name, "linear", unit, module, x, rq,
                   _objective_name(rq.similarity, rank) if unit is not None else None, target)


def refine_matmul_qk(attn: QuantAttention, q: torch.Tensor, k: torch.Tensor,
                     rq: RankingAwareConfig = RankingAwareConfig(), generator: torch.Generator | None = None,
                     name: str = "", target: torch.Tensor | None = None) -> dict[str, Any]:
    """Refine the operand scales of q·kᵀ (q already multiplied by 1/√d) on ``q``, ``k`` ``[B, H, N, d]``.

    Objective: similarity of the score map − γ·ranking loss (each switchable); k plays the
    weight's part (searched first), q the input's. ``target``: the float score map to match
    (default: q·kᵀ in float).
    """
    name = name or f"{attn.qname}.matmul_qk"
    unit = None
    if rq.searches:
        a = _act_operand("q", attn.q_quantizer, q)
        b = _act_operand("k", attn.k_quantizer, k)
        if a.searchable or b.searchable:
            unit = SearchUnit(a, b, lambda x, y: x @ y.transpose(-2, -1), rq, rq.similarity,
                              (lambda s: s) if rq.ranking else None, generator, target)
    return _finish(name, "matmul_qk", unit, None, None, rq,
                   _objective_name(rq.similarity, rq.ranking) if unit is not None else None)


def refine_matmul_av(attn: QuantAttention, probs: torch.Tensor, v: torch.Tensor,
                     rq: RankingAwareConfig = RankingAwareConfig(), name: str = "",
                     target: torch.Tensor | None = None) -> dict[str, Any]:
    """Refine the operand scales of attn·v on the softmax output ``probs`` ``[B, H, N, N]`` and
    ``v`` ``[B, H, N, d]``: a linear operation, similarity objective (v plays the weight's part)."""
    name = name or f"{attn.qname}.matmul_av"
    unit = None
    if rq.similarity:
        a = _act_operand("attn", attn.attn_quantizer, probs)
        b = _act_operand("v", attn.v_quantizer, v)
        if a.searchable or b.searchable:
            unit = SearchUnit(a, b, lambda x, y: x @ y, rq, True, target=target)
    return _finish(name, "matmul_av", unit, None, None, rq, "similarity" if unit is not None else None)

