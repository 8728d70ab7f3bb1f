"""How well a quantized ViT keeps the order of its attention scores, block by block."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..nn.config import FLOAT, QuantConfig
from ..nn.modules import QuantAttention
from ..nn.quantize import quantize
from ..ptq.ranking.metrics import kendall_tau, ranking_loss


@torch.inference_mode()
def attention_scores(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pre-softmax attention scores (q/√d)·kᵀ of every attention block, for inputs ``x``.

    A float model is first given explicit (float) attention blocks so that its scores can
    be read; a quantized model's are read as they are.
    """
    if not any(isinstance(m, QuantAttention) for m in model.modules()):
        model = quantize(model, QuantConfig(FLOAT), None, progress=False)
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantAttention)]
    if not blocks:
        raise ValueError("the model has no timm attention block: attention scores need a ViT")
    for _, m in blocks:
        m.capture = {}
    try:
        model(x)
        return {n: m.capture["scores"].float() for n, m in blocks}
    finally:
        for _, m in blocks:
            m.capture = None


def attention_order(fp_model: nn.Module, q_model: nn.Module, x: torch.Tensor, theta: float = 0.2,
                    max_pairs: int | None = 2048, seed: int = 0) -> list[dict[str, Any]]:
    """Per attention block: Kendall's τ between float and quantized scores (1 = order kept),
    and the ranking loss of Liu et al. (2021), averaged over images, heads and query rows."""
    fp, q = attention_scores(fp_model, x), attention_scores(q_model, x)
    rows = []
    for name in fp:
        g = torch.Generator().manual_seed(seed)
        rows.append({"layer": name,
                     "kendall_tau": kendall_tau(fp[name], q[name], max_pairs=max_pairs, generator=g).item(),
                     "ranking_loss": ranking_loss(fp[name], q[name], theta=theta, max_pairs=max_pairs,
                                                  generator=torch.Generator().manual_seed(seed)).item()})
    return rows
