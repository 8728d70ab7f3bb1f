"""Per-layer weight and activation ranges: what a quantizer's clipping range must cover."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def weight_ranges(model: nn.Module) -> list[dict[str, Any]]:
    """Per layer: max|w|, and how unequal the output channels' ranges are.

    ``channel_spread`` = largest / median per-channel max|w|: a per-tensor scale is set by
    the largest channel, so a large spread leaves the small channels few levels.
    """
    rows = []
    for name, m in quantizable_layers(model):
        w = m.weight.detach().float()
        per_ch = w.abs().reshape(w.shape[0], -1).amax(dim=1)
        rows.append({"layer": name, "type": type(m).__name__, "n_weights": w.numel(),
                     "absmax": per_ch.max().item(), "channel_absmax_median": per_ch.median().item(),
                     "channel_spread": (per_ch.max() / per_ch.median().clamp_min(1e-12)).item(),
                     "std": w.std().item()})
    return rows


@torch.inference_mode()
def activation_ranges(model: nn.Module, batches: Iterable[torch.Tensor],
                      percentile: float = 99.99) -> list[dict[str, Any]]:
    """Per layer input: min, max, and the ``percentile``-th percentile of |x| (on a sample)."""
    stats: dict[str, dict[str, Any]] = {}
    g = torch.Generator().manual_seed(0)

    def hook(name: str):
        def fn(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float()
            s = stats.setdefault(name, {"min": float("inf"), "max": float("-inf"), "sample": []})
            s["min"] = min(s["min"], x.min().item())
            s["max"] = max(s["max"], x.max().item())
            flat = x.reshape(-1)
            s["sample"].append(flat[torch.randint(0, flat.numel(), (min(flat.numel(), 1 << 16),), generator=g)])
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in quantizable_layers(model)]
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, _ in quantizable_layers(model):
        if name not in stats:
            continue
        s = stats[name]
        a = torch.cat(s["sample"]).abs()
        p = torch.quantile(a[:1 << 24], percentile / 100).item()
        absmax = max(abs(s["min"]), abs(s["max"]))
        rows.append({"layer": name, "min": s["min"], "max": s["max"], "absmax": absmax,
                     f"p{percentile:g}": p, "outlier_ratio": absmax / max(p, 1e-12),
                     "non_negative": s["min"] >= 0})
    return rows
