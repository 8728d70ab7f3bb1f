"""Seeded, class-balanced subsets (calibration, evaluation).

The folders are sorted by class, so "the first N images" would be a few classes only.
"""
from __future__ import annotations

import torch

from .splits import ImageSplit


def balanced_indices(labels: torch.Tensor, n: int, seed: int,
                     exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` indices drawn class-balanced (as equal per class as ``n`` allows), seeded.

    ``n = 0`` means every index. The result is sorted by a seeded shuffle, not by class,
    so any prefix of it is itself close to balanced.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0 (0 = all), got {n}")
    pool = torch.arange(len(labels))
    if exclude is not None and len(exclude):
        exclude = torch.as_tensor(exclude)
        if exclude.min() < 0 or exclude.max() >= len(labels):
            raise ValueError(f"exclude holds indices outside 0..{len(labels) - 1} "
                             f"(min {int(exclude.min())}, max {int(exclude.max())})")
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[exclude] = False
        pool = pool[keep]
    if n == 0 or n >= len(pool):
        if n > len(pool):
            raise ValueError(f"asked for {n} images but only {len(pool)} are available")
        chosen = pool
    else:
        g = torch.Generator().manual_seed(seed)
        classes = labels[pool].unique()
        per_class = [pool[labels[pool] == c] for c in classes]
        per_class = [p[torch.randperm(len(p), generator=g)] for p in per_class]
        base, extra = divmod(n, len(classes))
        order = torch.randperm(len(classes), generator=g)
        counts = {int(c): base + (1 if rank < extra else 0) for rank, c in enumerate(order)}
        parts = [p[:counts[i]] for i, p in enumerate(per_class)]
        if sum(len(p) for p in parts) < n:
            small = min(range(len(classes)), key=lambda i: len(per_class[i]))
            raise ValueError(f"cannot draw {n} class-balanced images from {len(classes)} classes: class "
                             f"{int(classes[small])} has only {len(per_class[small])}; ask for at most "
                             f"{len(classes) * len(per_class[small])} or for all of them (n = 0)")
        chosen = torch.cat(parts)
    g = torch.Generator().manual_seed(seed + 1)
    return chosen[torch.randperm(len(chosen), generator=g)]


def calibration_batches(split: ImageSplit, n_calib: int, seed: int = 0,
                        batch_size: int = 64) -> list[torch.Tensor]:
    """A seeded, class-balanced calibration set as a list of input batches (no labels)."""
    if n_calib < 1:
        raise ValueError(f"n_calib must be >= 1 to calibrate, got {n_calib}")
    if n_calib > len(split):
        raise ValueError(f"n_calib={n_calib} is more than the {len(split)} images of {split.dataset} "
                         f"{split.split!r}: ask for at most {len(split)}")
    idx = balanced_indices(split.labels, n_calib, seed)
    return [x for x, _ in split.loader(idx, batch_size=batch_size)]
