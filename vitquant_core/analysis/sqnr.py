"""Where a quantized ViT's error comes from: the SQNR of each activation quantizer, by kind.

SQNR = 10·log10(‖x‖² / ‖x − Q(x)‖²) in dB, measured at each activation quantizer's input
on a few images (higher is better; each bit of a uniform grid is worth about 6 dB). The
quantizers are grouped by the kind of activation they see, the distinctions RepQ-ViT and
PTQ4ViT draw: post-LayerNorm (the inputs of ``qkv`` and ``fc1``), post-softmax (the attention
probabilities), post-GELU (the input of ``fc2``) and other (the image, ``proj`` and head
inputs, q, k and v).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

ACTIVATION_KINDS = ("post-LN", "post-softmax", "post-GELU", "other")


def activation_kind(name: str) -> str:
    """The kind of activation the quantizer named ``name`` (a module path) sees."""
    if name.endswith("attn_quantizer"):
        return "post-softmax"
    if name.endswith(("attn.qkv.input_quantizer", "mlp.fc1.input_quantizer")):
        return "post-LN"
    if name.endswith("mlp.fc2.input_quantizer"):
        return "post-GELU"
    return "other"


def activation_sqnr(qmodel: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """One row per activation quantizer of ``qmodel``: name, kind, quantizer, SQNR (dB) on ``x``."""
    from ..nn.quantize import act_quantizers

    sums: dict[str, list[float]] = {}
    hooks = []
    quantizers = act_quantizers(qmodel)
    for name, q in quantizers:
        def hook(_m: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
            ref = args[0].detach().double()
            s = sums.setdefault(name, [0.0, 0.0])
            s[0] += float(ref.pow(2).sum())
            s[1] += float((ref - out.detach().double()).pow(2).sum())
        hooks.append(q.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            qmodel(x)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for name, q in quantizers:
        signal, noise = sums.get(name, (0.0, 0.0))
        sqnr = 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None  # None: no error at all
        rows.append({"name": name, "kind": activation_kind(name),
                     "quantizer": getattr(q, "kind", None) or "uniform", "sqnr_db": sqnr})
    return rows


def sqnr_by_kind(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean SQNR (dB) over the quantizers of each kind (None for a kind with none measured)."""
    out: dict[str, float | None] = {}
    for kind in ACTIVATION_KINDS:
        vals = [r["sqnr_db"] for r in rows if r["kind"] == kind and r["sqnr_db"] is not None]
        out[kind] = round(sum(vals) / len(vals), 2) if vals else None
    return out
