"""Evaluation: top-1, top-5 and top-1 agreement with the float model."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm


@dataclass
class EvalResult:
    top1: float
    top5: float
    n: int
    seconds: float
    agreement: float | None = None  # % of images whose top-1 equals the reference model's
    predictions: torch.Tensor | None = None
    per_class_top1: list[float] | None = None

    def row(self) -> dict[str, Any]:
        """The scalar fields, for a results row."""
        d = asdict(self)
        d.pop("predictions")
        d.pop("per_class_top1")
        return d


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
             reference: EvalResult | torch.Tensor | None = None, desc: str = "eval",
             progress: bool = True, num_classes: int | None = None) -> EvalResult:
    """Accuracy of ``model`` over ``loader``; agreement with ``reference`` predictions if given.

    Raises if the model produces NaN or Inf logits, which would otherwise silently count as
    wrong (or right) predictions.
    """
    model.eval()
    preds, labels, top5_hits = [], [], 0
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    t0 = None
    for x, y in tqdm(loader, desc=desc, total=total, disable=not progress, leave=False):
        if t0 is None:  # one untimed warm-up call, so that first-call costs do not skew time ratios
            model(x[:1])
            t0 = time.perf_counter()
        logits = model(x)
        if isinstance(logits, tuple):  # distilled DeiT in train mode
            logits = logits[0]
        if not torch.isfinite(logits).all():
            raise FloatingPointError(f"{desc}: the model produced NaN/Inf logits; the quantized model "
                                     "is broken (check scales) or the input is not finite")
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        preds.append(top[:, 0])
        labels.append(y)
        top5_hits += (top == y[:, None]).any(dim=1).sum().item()
    if not preds or t0 is None:
        raise ValueError("the evaluation loader yielded no batch: evaluate on a non-empty subset")
    seconds = time.perf_counter() - t0
    p, y = torch.cat(preds), torch.cat(labels)
    n = len(y)
    result = EvalResult(top1=100.0 * (p == y).float().mean().item(), top5=100.0 * top5_hits / n, n=n,
                        seconds=seconds, predictions=p)
    ref = reference.predictions if isinstance(reference, EvalResult) else reference
    if ref is not None:
        if len(ref) != n:
            raise ValueError(f"reference has {len(ref)} predictions but this evaluation has {n}: "
                             "evaluate both models on the same subset")
        result.agreement = 100.0 * (p == ref).float().mean().item()
    c = num_classes or int(y.max().item()) + 1
    result.per_class_top1 = [100.0 * (p[y == i] == i).float().mean().item() if (y == i).any() else None
                             for i in range(c)]
    return result
