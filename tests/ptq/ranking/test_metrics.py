"""The measures of ranking-aware PTQ (Liu et al., NeurIPS 2021) against slow loop references,
numpy and scipy: the ranking loss and its batched kernel, Kendall's τ, the Pearson similarity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitquant_core.ptq import kendall_tau, pair_indices, pearson_similarity, ranking_loss
from vitquant_core.ptq.ranking.metrics import ranking_sums


def slow_ranking_loss(a, a_q, theta, pairs=None):
    """Σ and mean of max(θ − (â_i − â_j)·sign(a_i − a_j), 0) with explicit Python loops (float64)."""
    a = np.asarray(a, dtype=np.float64)
    a_q = np.asarray(a_q, dtype=np.float64)
    n = a.shape[-1]
    rows, rows_q = a.reshape(-1, n), a_q.reshape(-1, n)
    if pairs is None:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    total, count = 0.0, 0
    for r in range(rows.shape[0]):
        for i, j in pairs:
            p = (rows_q[r, i] - rows_q[r, j]) * np.sign(rows[r, i] - rows[r, j])
            total += max(theta - p, 0.0)
            count += 1
    return total, total / count


def slow_kendall_tau_a(a, a_q):
    n = a.shape[-1]
    rows, rows_q = a.reshape(-1, n).tolist(), a_q.reshape(-1, n).tolist()
    taus = []
    for x, y in zip(rows, rows_q):
        s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(n) for j in range(i + 1, n))
        taus.append(s / (n * (n - 1) / 2))
    return float(np.mean(taus))


def score_maps(seed=0, shape=(2, 3, 5, 7)):
    """A float score map with ties, and a coarsely quantized noisy copy (more ties, some swaps)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g)
    a[..., 1] = a[..., 0]  # ties in the float map: sign 0, Φ(p) = θ − 0
    a_q = torch.round((a + 0.3 * torch.randn(shape, generator=g)) * 2) / 2
    return a, a_q


@pytest.mark.parametrize("theta", [0.2, 0.5])
def test_ranking_loss_matches_loop_reference(theta):
    a, a_q = score_maps()
    total, mean = slow_ranking_loss(a, a_q, theta)
    assert float(ranking_loss(a, a_q, theta)) == pytest.approx(mean, rel=1e-5)
    assert float(ranking_loss(a, a_q, theta, reduction="sum")) == pytest.approx(total, rel=1e-5)
    # the batched kernel the search uses: several candidates at once, rows in many small blocks
    f, n = a.reshape(-1, 7), 7
    cands = torch.stack([a_q, a, -a]).reshape(3, -1, n)
    sums = ranking_sums(f, cands, theta, None, budget=1)
    for c in range(3):
        assert float(sums[c]) == pytest.approx(slow_ranking_loss(a, cands[c].reshape(a.shape), theta)[0], rel=1e-5)


def test_ranking_loss_on_a_seeded_subset_of_pairs():
    a, a_q = score_maps(1, (2, 2, 4, 9))
    i, j = pair_indices(9, 10, torch.Generator().manual_seed(3))
    assert i.numel() == 10 and bool((i < j).all())
    pairs = list(zip(i.tolist(), j.tolist()))
    got = ranking_loss(a, a_q, 0.2, max_pairs=10, generator=torch.Generator().manual_seed(3))
    assert float(got) == pytest.approx(slow_ranking_loss(a, a_q, 0.2, pairs)[1], rel=1e-5)
    again = ranking_loss(a, a_q, 0.2, max_pairs=10, generator=torch.Generator().manual_seed(3))
    assert float(again) == float(got)  # same seed, same pairs
    # asking for at least all pairs is the full loss
    assert float(ranking_loss(a, a_q, 0.2, max_pairs=36)) == pytest.approx(float(ranking_loss(a, a_q, 0.2)))


def test_ranking_loss_is_zero_only_when_the_order_is_kept_by_the_margin():
    a = torch.arange(6.0).repeat(2, 1)  # distinct scores, gaps of 1
    assert float(ranking_loss(a, a, theta=0.2)) == 0.0  # every pair kept with margin 1 > θ
    assert float(ranking_loss(a, 0.1 * a, theta=0.2)) > 0  # order kept, margin 0.1 < θ
    assert float(ranking_loss(a, -a, theta=0.2)) > float(ranking_loss(a, 0.1 * a, theta=0.2))  # order swapped


def test_kendall_tau_matches_scipy_and_a_loop():
    from scipy.stats import kendalltau

    a, a_q = score_maps(2, (2, 3, 4, 8))
    rows, rows_q = a.reshape(-1, 8).numpy(), a_q.reshape(-1, 8).numpy()
    ref_b = np.mean([kendalltau(x, y).statistic for x, y in zip(rows, rows_q)])  # tau-b, ties corrected
    assert float(kendall_tau(a, a_q)) == pytest.approx(ref_b, abs=1e-6)
    assert float(kendall_tau(a, a_q, variant="a")) == pytest.approx(slow_kendall_tau_a(a, a_q), abs=1e-6)
    assert float(kendall_tau(a, a)) == pytest.approx(1.0)
    assert float(kendall_tau(a[..., 2:], -a[..., 2:])) == pytest.approx(-1.0)
    assert float(kendall_tau(a, torch.zeros_like(a))) == 0.0  # order lost entirely: τ undefined → 0


def test_pearson_similarity_matches_numpy():
    g = torch.Generator().manual_seed(0)
    o = torch.randn(3, 5, 6, generator=g)
    o_q = 2 * o + 0.5 * torch.randn(3, 5, 6, generator=g) + 1.0
    ref = np.mean([np.corrcoef(o[b].flatten().numpy(), o_q[b].flatten().numpy())[0, 1] for b in range(3)])
    assert float(pearson_similarity(o, o_q)) == pytest.approx(ref, abs=1e-6)
    assert float(pearson_similarity(o, 3 * o - 2)) == pytest.approx(1.0, abs=1e-6)  # gain and offset invariant


def test_ranking_sums_on_every_pair_listed_equals_the_dense_form():
    a, a_q = score_maps(5, (2, 3, 6, 11))
    f, q = a.reshape(-1, 11), torch.stack([a_q, 0.5 * a_q, a]).reshape(3, -1, 11)
    pairs = torch.triu_indices(11, 11, offset=1)
    dense = ranking_sums(f, q, 0.2)
    listed = ranking_sums(f, q, 0.2, (pairs[0], pairs[1]), budget=64)
    torch.testing.assert_close(dense, listed, rtol=1e-6, atol=1e-6)


def test_pearson_counts_a_constant_output_as_uncorrelated():
    o = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(0))
    for k in (0.0, 0.37, -7.77, 123.4):
        assert float(pearson_similarity(o, torch.full_like(o, k))) == 0.0
