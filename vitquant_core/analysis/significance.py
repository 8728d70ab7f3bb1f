"""Is one model's top-1 really different from another's on the same images?

Two quantized models evaluated on the same test images differ only on the images that one
gets right and the other wrong (the discordant pairs). McNemar's exact test asks whether
those split evenly, as they would if the two models were equally accurate; it is the
standard test for paired classifiers (Dietterich, 1998). The 95 % interval is the Wald
interval of the paired difference of proportions.

:func:`compare_to_reference` tests several models against one (each ablation variant against
standard PTQ, say) from plain per-image correctness; :func:`vs_reference` rounds one such
comparison into the small dict a results row carries.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
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


def _as_correctness(values: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.dtype != torch.bool:
        raise TypeError(f"correct[{name!r}] must be boolean (prediction == label, one entry per image), "
                        f"got dtype {t.dtype}")
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"correct[{name!r}] must be a non-empty 1-D array, got shape {tuple(t.shape)}")
    return t


def compare_to_reference(correct: Mapping[str, np.ndarray | torch.Tensor], reference: str) -> list[dict[str, Any]]:
    """McNemar's test of every model in ``correct`` against ``reference``, on the same images.

    ``correct``: per model name, its per-image correctness (a boolean array or tensor, one
    entry per image, the same images in the same order for every model). Returns one dict per
    key other than ``reference``, in the mapping's order: ``name``, then what
    :func:`paired_comparison` returns with the reference as A and that model as B (``difference``
    = model − reference in points, ``ci95``, ``only_a``: images only the reference gets right,
    ``only_b``: only the model, ``p_value``, ``n``, ``top1_a``, ``top1_b``).
    """
    if not isinstance(correct, Mapping):
        raise TypeError(f"correct must be a mapping from model name to per-image correctness, "
                        f"got {type(correct).__name__}")
    if reference not in correct:
        raise ValueError(f"reference {reference!r} is not a key of correct ({list(correct)}): "
                         f"name the model the others are compared with")
    ref = _as_correctness(correct[reference], reference)
    out = []
    for name, values in correct.items():
        if name == reference:
            continue
        other = _as_correctness(values, name)
        if other.shape != ref.shape:
            raise ValueError(f"correct[{name!r}] has {other.numel()} images and correct[{reference!r}] "
                             f"{ref.numel()}: evaluate every model on the same images")
        out.append({"name": name, **paired_comparison(ref, other)})
    return out


def vs_reference(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """The rounded summary of one comparison that a results row carries (e.g. as ``vs_standard``):
    ``difference`` (points, 3 decimals), ``ci95`` (a list, 3 decimals), ``mcnemar_p`` (5 decimals)."""
    return {"difference": round(comparison["difference"], 3),
            "ci95": [round(v, 3) for v in comparison["ci95"]], "mcnemar_p": round(comparison["p_value"], 5)}
