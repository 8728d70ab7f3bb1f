"""The alternating search of ranking-aware PTQ (Liu et al., NeurIPS 2021) on objectives whose
optimum is known: coordinate ascent, the candidate grid, the coarse-to-fine pass."""
from __future__ import annotations

import pytest
import torch

from vitquant_core.ptq import RankingAwareConfig, alternating_search
from vitquant_core.ptq.ranking.search import SearchUnit


def test_candidate_grid_is_the_paper_grid_plus_the_start():
    rq = RankingAwareConfig()
    m = rq.multipliers()
    assert m[0] == 0.5 and m[-1] == pytest.approx(1.2)
    assert len(m) == 101 and bool((m == 1.0).any())  # 100 points in [0.5, 1.2], plus 1 (not a grid point)
    assert bool((m[1:] > m[:-1]).all())


def test_alternating_search_finds_a_separable_optimum_and_stops_early():
    target = (37, 12)

    def evaluate(k, idx):
        c = torch.arange(50, dtype=torch.float64)
        return -(c - target[k]) ** 2 - (idx[1 - k] - target[1 - k]) ** 2

    idx, rounds, calls = alternating_search(evaluate, [25, 25], [1, 0], max_rounds=20)
    assert idx == [37, 12]
    # b moves, a moves, b confirms (a was last searched with b at its final value): stop
    assert (rounds, calls) == (2, 3)


def test_alternating_search_is_monotone_and_ends_coordinate_wise_optimal():
    grid = torch.linspace(0, 1, 41, dtype=torch.float64)
    seen = []

    def f(a, b):  # coupled: the best a depends on b
        return -(a - b) ** 2 - 0.3 * (a + b - 1.4) ** 2

    def evaluate(k, idx):
        other = grid[idx[1 - k]]
        obj = f(grid, other) if k == 0 else f(other, grid)
        seen.append(float(obj[idx[k]]))
        return obj

    idx, rounds, _ = alternating_search(evaluate, [0, 40], [1, 0], max_rounds=20)
    assert all(b >= a for a, b in zip(seen, seen[1:]))  # never decreases
    assert rounds < 20
    assert int(torch.argmax(evaluate(0, idx))) == idx[0] and int(torch.argmax(evaluate(1, idx))) == idx[1]
    _, rounds, calls = alternating_search(evaluate, [0, 40], [1, 0], max_rounds=1)
    assert rounds == 1 and calls == 2


def test_coarse_to_fine_finds_the_optimum_of_a_unimodal_objective():
    assert RankingAwareConfig().coarse_step() == 1  # exhaustive by default
    rq = RankingAwareConfig(coarse_to_fine=True)
    assert rq.coarse_step() == 7
    evaluated = []

    class Probe(SearchUnit):
        def __init__(self):  # only what evaluate() uses
            self.rq, self.grid = rq, rq.multipliers().float()

        def _evaluate_at(self, k, idx, which):
            evaluated.extend(which.tolist())
            return -(self.grid[which].double() - 0.83) ** 2  # peak between grid points

    obj = Probe().evaluate(0, [50, 50])
    best = int(torch.argmax(obj))
    assert best == int(torch.argmin((rq.multipliers() - 0.83).abs()))  # the exhaustive answer
    assert len(evaluated) == len(set(evaluated)) < 35  # each candidate at most once, ~29 of 101
