"""The hyper-parameters of ranking-aware PTQ (Liu et al., NeurIPS 2021), checked where they enter.

A module of its own because the search (:mod:`.search`), the per-layer refinement
(:mod:`.refine`) and the model-level driver (:mod:`.driver`) all read it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

INPUT_SOURCES = ("quantized", "float")
REFERENCES = ("layer", "model")

__all__ = ["INPUT_SOURCES", "REFERENCES", "RankingAwareConfig"]


@dataclass(frozen=True)
class RankingAwareConfig:
    """Hyper-parameters of ranking-aware PTQ (defaults: the paper's values; the ranking loss on
    at most 4,096 sampled score rows, ``max_rows=None`` for all of them).

    ``alpha``/``beta``/``n_candidates``: the candidate scales are ``n_candidates`` points
    linearly spaced in [alpha·Δ, beta·Δ] around the max-based scale Δ (plus Δ itself).
    ``max_rounds``: rounds of the alternating Δ_W / Δ_X search (stops early when neither
    changes). ``gamma``/``theta``: weight of the ranking loss and margin of its hinge.
    ``similarity``/``ranking``/``bias_correction``: the three parts, for the ablation; all
    off gives standard min-max PTQ. ``max_pairs``: use a seeded random subset of at most this
    many key pairs per query row in the ranking loss (None: all N(N−1)/2 pairs). ``inputs``:
    where each layer's calibration inputs come from ("quantized": the partially quantized
    model, "float": the float model). ``reference``: the float output a layer is compared
    with ("model": the float model's output of that layer, "layer": the float layer on the
    same inputs); see :mod:`vitquant_core.ptq.ranking`. ``chunk_bytes``: memory budget of one batched
    candidate evaluation (candidates are chunked to stay under it). ``incremental``: capture
    each layer's inputs from stored activations at its block's boundary, advanced block by
    block (the same values as a forward pass from the network input, in linear rather than
    quadratic time in depth); False re-runs the model from its input for every layer.
    ``max_rows``: use a seeded random subset of at most this many score rows (image, head,
    query) in the ranking loss (None: every row); the loss is a mean over rows, so a subset
    estimates it without bias at a cost proportional to the rows kept. ``coarse_to_fine``:
    evaluate every k-th grid candidate (k ≈ √(C/2)), then every candidate within k of the
    best of them, instead of all C (about 3.5x fewer evaluations at C = 100; exact when the
    objective is unimodal along the grid, which the paper's exhaustive search does not assume;
    off by default, see :mod:`vitquant_core.ptq.ranking`).
    """

    alpha: float = 0.5
    beta: float = 1.2
    n_candidates: int = 100
    max_rounds: int = 20
    gamma: float = 0.1
    theta: float = 0.2
    similarity: bool = True
    ranking: bool = True
    bias_correction: bool = True
    max_pairs: int | None = None
    seed: int = 0
    inputs: str = "quantized"
    reference: str = "model"
    chunk_bytes: int = 256 << 20
    incremental: bool = True
    max_rows: int | None = 4096
    coarse_to_fine: bool = False

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for name in ("alpha", "beta", "gamma", "theta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
        if not 0 < self.alpha < self.beta:
            raise ValueError(f"need 0 < alpha < beta, got alpha={self.alpha}, beta={self.beta}")
        if self.gamma < 0 or self.theta < 0:
            raise ValueError(f"gamma and theta must be >= 0, got gamma={self.gamma}, theta={self.theta}")
        if not is_int(self.n_candidates) or self.n_candidates < 2:
            raise ValueError(f"n_candidates must be an int >= 2, got {self.n_candidates!r}")
        if not is_int(self.max_rounds) or self.max_rounds < 1:
            raise ValueError(f"max_rounds must be an int >= 1, got {self.max_rounds!r}")
        for name in ("similarity", "ranking", "bias_correction", "incremental", "coarse_to_fine"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.max_pairs is not None and (not is_int(self.max_pairs) or self.max_pairs < 1):
            raise ValueError(f"max_pairs must be None or an int >= 1, got {self.max_pairs!r}")
        if self.max_rows is not None and (not is_int(self.max_rows) or self.max_rows < 1):
            raise ValueError(f"max_rows must be None or an int >= 1, got {self.max_rows!r}")
        if not is_int(self.seed):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if self.inputs not in INPUT_SOURCES:
            raise ValueError(f"inputs must be one of {INPUT_SOURCES}, got {self.inputs!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if not is_int(self.chunk_bytes) or self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive int, got {self.chunk_bytes!r}")

    @property
    def searches(self) -> bool:
        return self.similarity or self.ranking

    def coarse_step(self) -> int:
        """Spacing of the coarse pass of the coarse-to-fine search (1: exhaustive)."""
        if not self.coarse_to_fine:
            return 1
        # n/k coarse points + 2(k − 1) fine ones is smallest at k = √(n/2)
        return max(2, round(math.sqrt(len(self.multipliers()) / 2)))

    def multipliers(self) -> torch.Tensor:
        """The candidate multipliers of the max-based scale: the C-point grid plus 1 (float64)."""
        grid = torch.linspace(self.alpha, self.beta, self.n_candidates, dtype=torch.float64)
        return torch.unique(torch.cat([grid, torch.ones(1, dtype=torch.float64)]))  # sorted

