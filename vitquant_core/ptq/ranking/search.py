"""The alternating search over candidate scales of ranking-aware PTQ (Liu et al., NeurIPS 2021, §3.2).

For a bilinear operation out = combine(Q(a), Q(b)) (a linear layer X·Wᵀ, or an attention
matmul) the scales of the two operands are searched one at a time (:func:`alternating_search`:
Δ_W with Δ_X fixed, then Δ_X with Δ_W fixed, at most ``max_rounds`` rounds). Each operand's
candidates are the multipliers of its max-based scale that
:meth:`~.config.RankingAwareConfig.multipliers` lists; all of them are scored in batched
evaluations (:class:`SearchUnit`), exhaustively as in the paper or, with ``coarse_to_fine``,
every k-th one and then the neighbourhood of the best of those. The objective is the mean
Pearson similarity minus γ times the mean ranking loss of the attention scores
(:mod:`.metrics`), each switchable.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...quant.qtypes import QType
from ...quant.quantizer import fake_quantize
from .config import RankingAwareConfig
from .metrics import count_pairs, pairs_or_none, pearson_per_candidate, ranking_sums

__all__ = ["Operand", "SearchUnit", "alternating_search"]


def alternating_search(evaluate: Callable[[int, list[int]], torch.Tensor], start: Sequence[int],
                       order: Sequence[int], max_rounds: int) -> tuple[list[int], int, int]:
    """Coordinate ascent over grid indices, one operand at a time.

    ``evaluate(k, idx)`` returns the objective of every grid candidate for operand ``k`` with
    the other operands at ``idx`` (one batched call). Operands are visited in ``order`` (the
    weight-like one first), at most ``max_rounds`` times each. An operand moves only on a
    strict improvement over its current candidate, so the objective never decreases and ties
    keep the incumbent. The search stops as soon as every operand was last evaluated with the
    others at their current values, i.e. when a full round would change nothing.
    Returns (indices, rounds started, number of evaluate calls).
    """
    idx = list(start)
    fresh: set[int] = set()
    rounds = calls = 0
    for _ in range(max_rounds):
        if len(fresh) == len(order):
            break
        rounds += 1
        for k in order:
            if len(fresh) == len(order):
                break
            obj = evaluate(k, idx)
            calls += 1
            best = int(torch.argmax(obj))
            if bool(obj[best] > obj[idx[k]]):
                idx[k] = best
                fresh = {k}  # the others were evaluated against the old value
            else:
                fresh.add(k)
    return idx, rounds, calls


class Operand:
    """One quantized (or float) operand of a bilinear operation, with its cached float value."""

    def __init__(self, role: str, x: torch.Tensor, base: torch.Tensor | None = None,
                 zero_point: torch.Tensor | float = 0.0, qtype: QType | None = None,
                 apply: Callable[[torch.Tensor], None] | None = None) -> None:
        self.role, self.x, self.qtype, self.apply = role, x, qtype, apply
        self.searchable = qtype is not None and base is not None
        if self.searchable:
            nd = x.ndim
            base = base.to(x.device, torch.float32)
            self.base = base.reshape([1] * (nd - base.ndim) + list(base.shape))
            zp = torch.as_tensor(zero_point, dtype=torch.float32, device=x.device)
            self.zero_point = zp.reshape([1] * (nd - zp.ndim) + list(zp.shape))

    def quantized(self, mults: torch.Tensor) -> torch.Tensor:
        """Fake-quantized copies for each multiplier: ``[c, *x.shape]`` (``[1, ...]`` if float)."""
        if not self.searchable:
            return self.x.unsqueeze(0)
        return fake_quantize(self.x.unsqueeze(0), self.scales(mults), self.zero_point.unsqueeze(0), self.qtype)

    def scales(self, mults: torch.Tensor) -> torch.Tensor:
        # the same arithmetic in the search and when the chosen scale is written back
        return mults.view((-1,) + (1,) * self.x.ndim) * self.base.unsqueeze(0)


class SearchUnit:
    """A bilinear operation out = combine(Q(a), Q(b)), its float reference and its objective."""

    def __init__(self, a: Operand, b: Operand, combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 rq: RankingAwareConfig, use_similarity: bool,
                 scores_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 generator: torch.Generator | None = None, target: torch.Tensor | None = None) -> None:
        self.a, self.b, self.combine, self.rq = a, b, combine, rq
        self.use_similarity = use_similarity
        self.use_ranking = scores_fn is not None
        self.scores_fn = scores_fn
        device = a.x.device
        self.grid = rq.multipliers().to(device, torch.float32)
        self.start = int((rq.multipliers() == 1.0).nonzero()[0])
        with torch.no_grad():  # the float reference, cached once per layer
            fp = combine(a.x.unsqueeze(0), b.x.unsqueeze(0))[0] if target is None else target.float()
        self.fp_out = fp
        self.n_samples = fp.shape[0]
        flat = fp.reshape(self.n_samples, -1)
        self.ref_centered = flat - flat.mean(dim=-1, keepdim=True)
        self.ref_norm = self.ref_centered.norm(dim=-1)
        self.score_numel = 0
        if scores_fn is not None:
            with torch.no_grad():
                scores = scores_fn(fp.unsqueeze(0))[0]
            n = scores.shape[-1]
            self.fp_rows = scores.reshape(-1, n)
            self.score_numel = scores.numel()
            self.pairs = pairs_or_none(n, rq.max_pairs, generator, device)
            self.n_pairs = count_pairs(n, self.pairs)
            # the ranking term's cost is proportional to its rows: optionally a seeded subset,
            # drawn once per layer so that every candidate is scored on the same rows
            self.rows: torch.Tensor | None = None
            if rq.max_rows is not None and rq.max_rows < self.fp_rows.shape[0]:
                keep = torch.randperm(self.fp_rows.shape[0], generator=generator)[:rq.max_rows]
                self.rows = keep.sort().values.to(device)
                self.fp_rows = self.fp_rows[self.rows]

    # -- objective
    def _score(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarity, ranking loss) of each candidate output in ``out`` [c, B, ...] (float64)."""
        c = out.shape[0]
        sim = (pearson_per_candidate(self.ref_centered, self.ref_norm, out.reshape(c, self.n_samples, -1))
               if self.use_similarity else torch.zeros(c, dtype=torch.float64, device=out.device))
        rank = torch.zeros(c, dtype=torch.float64, device=out.device)
        if self.use_ranking:
            scores = self.scores_fn(out)  # type: ignore[misc]
            rows = scores.reshape(c, -1, scores.shape[-1])
            if self.rows is not None:
                rows = rows[:, self.rows]
            rank = ranking_sums(self.fp_rows, rows, self.rq.theta, self.pairs, self.rq.chunk_bytes)
            rank = rank / max(1, rows.shape[1] * self.n_pairs)
        return sim, rank

    def _objective(self, sim: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        return sim - self.rq.gamma * rank

    def _chunk(self, op: Operand) -> int:
        # one candidate costs its quantized operand, ~4 copies of the output (product,
        # centred copy, temporaries) and the score map of the ranking term
        per = 4 * (op.x.numel() + 4 * self.fp_out.numel() + 2 * self.score_numel)
        return max(1, self.rq.chunk_bytes // max(1, per))

    def _evaluate_at(self, k: int, idx: list[int], which: torch.Tensor) -> torch.Tensor:
        """Objective of the grid candidates ``which`` for operand k, the other fixed at idx."""
        ops = (self.a, self.b)
        op, other = ops[k], ops[1 - k]
        with torch.no_grad():
            other_q = other.quantized(self.grid[idx[1 - k]:idx[1 - k] + 1])
            objs = []
            step = self._chunk(op)
            mults = self.grid[which.to(self.grid.device)]
            for s in range(0, len(mults), step):
                op_q = op.quantized(mults[s:s + step])
                out = self.combine(op_q, other_q) if k == 0 else self.combine(other_q, op_q)
                objs.append(self._objective(*self._score(out)))
        return torch.cat(objs)

    def evaluate(self, k: int, idx: list[int]) -> torch.Tensor:
        """Objective of every grid candidate for operand k (0: a, 1: b), the other fixed at idx.

        Coarse-to-fine: only the coarse points, the incumbent and the neighbourhood of the best
        coarse point are evaluated; the others get −inf (never chosen by the argmax).
        """
        n, step = len(self.grid), self.rq.coarse_step()
        if step == 1:
            return self._evaluate_at(k, idx, torch.arange(n))
        obj = torch.full((n,), -math.inf, dtype=torch.float64)
        coarse = torch.unique(torch.cat([torch.arange(0, n, step), torch.tensor([n - 1, idx[k]])]))
        obj[coarse] = self._evaluate_at(k, idx, coarse).cpu()
        best = int(torch.argmax(obj))
        fine = torch.arange(max(0, best - step + 1), min(n, best + step))
        fine = fine[torch.isinf(obj[fine])]
        if fine.numel():
            obj[fine] = self._evaluate_at(k, idx, fine).cpu()
        return obj

    def score_at(self, idx: list[int]) -> dict[str, float | None]:
        """The objective and its parts with operand a at grid index idx[0], b at idx[1]."""
        with torch.no_grad():
            aq = self.a.quantized(self.grid[idx[0]:idx[0] + 1])
            bq = self.b.quantized(self.grid[idx[1]:idx[1] + 1])
            sim, rank = self._score(self.combine(aq, bq))
        return {"objective": float(self._objective(sim, rank)[0]),
                "similarity": float(sim[0]) if self.use_similarity else None,
                "ranking": float(rank[0]) if self.use_ranking else None}

    # -- the search
    def search(self) -> dict[str, Any]:
        """Run the alternating search from the max-based scales, write the chosen scales back
        into the quantizers, and return what was chosen (a row of the report)."""
        t0 = time.perf_counter()
        order = [k for k in (1, 0) if (self.a, self.b)[k].searchable]  # Δ_W first, then Δ_X
        start = [self.start, self.start]
        before = self.score_at(start)
        idx, rounds, calls = alternating_search(self.evaluate, start, order, self.rq.max_rounds)
        after = self.score_at(idx)
        info: dict[str, Any] = {"objective_before": before["objective"], "objective_after": after["objective"],
                                "similarity_before": before["similarity"], "similarity_after": after["similarity"],
                                "ranking_before": before["ranking"], "ranking_after": after["ranking"],
                                "rounds": rounds, "n_evaluations": calls, "n_candidates": len(self.grid),
                                "multipliers": {}, "scales": {}}
        for k in order:
            op = (self.a, self.b)[k]
            scale = op.scales(self.grid[idx[k]:idx[k] + 1])[0]
            op.apply(scale)  # type: ignore[misc]
            info["multipliers"][op.role] = float(self.grid[idx[k]])
            squeezed = scale.detach().flatten().cpu()
            info["scales"][op.role] = float(squeezed[0]) if squeezed.numel() == 1 else squeezed.tolist()
        info["search_seconds"] = time.perf_counter() - t0
        return info

