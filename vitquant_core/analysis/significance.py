"""Is one model's top-1 really different from another's on the same images?

Two quantized models evaluated on the same test images differ only on the images that one
gets right and the other wrong (the discordant pairs). McNemar's exact test asks whether
those split evenly, as they would if the two models were equally accurate; it is the
standard test for paired classifiers (Dietterich, 1998). The 95 % interval is the Wald
interval of the paired difference of proportions.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from scipy.stats import binomtest


def paired_comparison(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict[str, Any]:
    """Compare model B against model A on the same images, from per-image correctness.

    ``correct_a`` / ``correct_b``: boolean tensors, one entry per image, in the same order.
    Returns the top-1 of each and their difference B − A (points), the images only A and only B
    get right, McNemar's exact two-sided p-value (1.0 when there is no discordant image) and
    the 95 % interval of the difference (points).
    """
    a, b = torch.as_tensor(correct_a), torch.as_tensor(correct_b)
    if a.dtype != torch.bool or b.dtype != torch.bool:
        raise TypeError("correct_a and correct_b must be boolean tensors (prediction == label)")
    if a.shape != b.shape or a.dim() != 1 or a.numel() == 0:
        raise ValueError(f"correct_a and correct_b must be non-empty 1-D tensors of the same length, "
                         f"got shapes {tuple(a.shape)} and {tuple(b.shape)}: evaluate both on the same images")
    n = a.numel()
    only_a = int((a & ~b).sum())
    only_b = int((b & ~a).sum())
    discordant = only_a + only_b
    p_value = binomtest(only_b, discordant, 0.5).pvalue if discordant else 1.0
    diff = (only_b - only_a) / n
    half = 1.96 * math.sqrt(max(discordant / n - diff * diff, 0.0) / n)
    return {"n": n, "top1_a": 100.0 * int(a.sum()) / n, "top1_b": 100.0 * int(b.sum()) / n,
            "difference": 100.0 * diff, "only_a": only_a, "only_b": only_b, "p_value": float(p_value),
            "ci95": (100.0 * (diff - half), 100.0 * (diff + half))}
