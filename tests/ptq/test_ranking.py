"""Ranking-aware PTQ (Liu et al., NeurIPS 2021): the metrics against slow loop references, the
alternating search on cases whose optimum is known, bias correction, and end-to-end runs on
a micro timm ViT (W8A8, W4A4) against standard min-max PTQ.

Everything runs on tiny tensors, single-threaded (the CI machine is shared).
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from vitquant_core import QuantConfig, quantize
from vitquant_core.ptq import (RankingAwareConfig, RankingAwareReport, alternating_search, correct_bias,
                               kendall_tau, pair_indices, pearson_similarity, ranking_aware_quantize, ranking_loss,
                               refine_linear)
from vitquant_core.ptq.ranking import _ranking_sums


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def micro_vit(seed: int = 0) -> nn.Module:
    """A timm VisionTransformer small enough for unit tests: 16 patches + class token, dim 32."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                             num_classes=10).eval()


def sqnr(y: torch.Tensor, y_q: torch.Tensor) -> float:
    return float(10 * torch.log10(y.pow(2).sum() / (y - y_q).pow(2).sum()))


# ----------------------------------------------------------------------------- slow references
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


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs", [
    dict(alpha=0.0), dict(alpha=1.3, beta=1.2), dict(n_candidates=1), dict(n_candidates=10.0),
    dict(max_rounds=0), dict(gamma=-0.1), dict(theta=-1.0), dict(similarity=1), dict(max_pairs=0),
    dict(inputs="fp"), dict(reference="net"), dict(alpha=float("nan")), dict(seed=1.5), dict(chunk_bytes=0),
    dict(max_rows=0), dict(coarse_to_fine=1), dict(incremental=None),
])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises((ValueError, TypeError)):
        RankingAwareConfig(**kwargs)


def test_candidate_grid_is_the_paper_grid_plus_the_start():
    rq = RankingAwareConfig()
    m = rq.multipliers()
    assert m[0] == 0.5 and m[-1] == pytest.approx(1.2)
    assert len(m) == 101 and bool((m == 1.0).any())  # 100 points in [0.5, 1.2], plus 1 (not a grid point)
    assert bool((m[1:] > m[:-1]).all())


# ----------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("theta", [0.2, 0.5])
def test_ranking_loss_matches_loop_reference(theta):
    a, a_q = score_maps()
    total, mean = slow_ranking_loss(a, a_q, theta)
    assert float(ranking_loss(a, a_q, theta)) == pytest.approx(mean, rel=1e-5)
    assert float(ranking_loss(a, a_q, theta, reduction="sum")) == pytest.approx(total, rel=1e-5)
    # the batched kernel the search uses: several candidates at once, rows in many small blocks
    f, n = a.reshape(-1, 7), 7
    cands = torch.stack([a_q, a, -a]).reshape(3, -1, n)
    sums = _ranking_sums(f, cands, theta, None, budget=1)
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


# ----------------------------------------------------------------------------- the search
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


def exact_grid_case():
    """W = Δ_W·k and X = Δ_X·k with integer codes |k| ≤ 6 at 4 bits (qmax 7): the max-based scales
    are 6Δ/7 and the exact ones Δ = (7/6)·max-based, a grid point of linspace(0.5, 1.2, 22)."""
    g = torch.Generator().manual_seed(0)
    k_w = torch.randint(-6, 7, (8, 16), generator=g).float()
    k_w[:, 0] = 6.0  # every output channel reaches code 6: per-channel max-based scales are 6Δ_W/7
    k_x = torch.randint(-6, 7, (4, 5, 16), generator=g).float()
    k_x[0, 0, 0] = -6.0
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.copy_(0.05 * k_w)
        # a seeded bias: nn.Linear's own draws from the global RNG, whose state depends on test order
        lin.bias.copy_(0.1 * torch.randn(8, generator=g))
    return lin, 0.1 * k_x


@pytest.mark.parametrize("w_bits, a_bits, role", [(4, None, "weight"), (None, 4, "input")])
def test_search_finds_the_scale_that_quantizes_exactly(w_bits, a_bits, role):
    """One operand quantized: only Δ = (7/6)·max-based gives Ô = X·Wᵀ (Pearson 1), and the
    search must return exactly that grid point."""
    lin, x = exact_grid_case()
    qlin = quantize(nn.Sequential(lin), QuantConfig.uniform(w_bits, a_bits, keep_float=()), [x],
                    progress=False)[0]
    info = refine_linear(qlin, x, RankingAwareConfig(n_candidates=22, bias_correction=False))
    assert info["searched"] and info["objective"] == "similarity" and list(info["multipliers"]) == [role]
    assert info["multipliers"][role] == pytest.approx(7 / 6, rel=1e-6)
    assert info["similarity_before"] < 0.999 and info["similarity_after"] > 1 - 1e-6
    assert info["rounds"] == 1  # a single operand needs no second round
    with torch.no_grad():  # the chosen scale is written back into the quantized layer
        torch.testing.assert_close(qlin(x), lin(x), rtol=1e-4, atol=1e-5)


def test_joint_search_ends_coordinate_wise_optimal():
    """Both operands: the alternating search is coordinate ascent, so it ends where neither
    scale alone can improve the objective, never below its start. (Here that is not the joint
    optimum (7/6, 7/6), which coordinate ascent can miss: the paper's algorithm, kept as is.)"""
    lin, x = exact_grid_case()
    qlin = quantize(nn.Sequential(lin), QuantConfig.uniform(4, 4, keep_float=()), [x], progress=False)[0]
    rq = RankingAwareConfig(n_candidates=22, bias_correction=False)
    info = refine_linear(copy.deepcopy(qlin), x, rq)
    assert info["objective_after"] > info["objective_before"]
    base_w = lin.weight.detach().abs().amax(dim=1, keepdim=True) / 7  # max-based, per channel
    base_x = x.abs().max() / 7
    chosen = {"weight": info["multipliers"]["weight"], "input": info["multipliers"]["input"]}
    for role in ("weight", "input"):  # brute force along each coordinate, the other fixed
        for m in rq.multipliers().tolist():
            mult = dict(chosen, **{role: m})
            trial = copy.deepcopy(qlin)
            trial.set_weight_scale(base_w * mult["weight"])
            trial.input_quantizer.set_scale(base_x * mult["input"])
            with torch.no_grad():
                assert float(pearson_similarity(lin(x), trial(x))) <= info["objective_after"] + 1e-6, (role, m)


def test_search_keeps_asymmetric_zero_points_and_per_tensor_weights():
    """Scaling an asymmetric range [min, max] by a multiplier leaves its zero point unchanged:
    the search moves the scale only, and writes it back without resetting the zero point."""
    from vitquant_core import PerTensor

    torch.manual_seed(0)
    lin = nn.Linear(12, 6)
    x = torch.rand(4, 7, 12) * 3 - 0.5  # mostly positive: a zero point well above 0
    cfg = QuantConfig.uniform(4, 4, w_granularity=PerTensor(), a_signedness="asymmetric", keep_float=())
    qlin = quantize(nn.Sequential(lin), cfg, [x], progress=False)[0]
    zp = qlin.input_quantizer.zero_point.clone()
    assert float(zp) > 0 and qlin.w_quantizer.scale.numel() == 1
    info = refine_linear(qlin, x, RankingAwareConfig(n_candidates=30, bias_correction=False))
    assert info["objective_after"] >= info["objective_before"]
    assert torch.equal(qlin.input_quantizer.zero_point, zp)
    assert isinstance(info["scales"]["weight"], float) and isinstance(info["scales"]["input"], float)
    with torch.no_grad():
        assert float(pearson_similarity(lin(x), qlin(x))) == pytest.approx(info["similarity_after"], abs=1e-6)


# ----------------------------------------------------------------------------- bias correction
def test_bias_correction_removes_a_known_constant_error():
    torch.manual_seed(0)
    lin = nn.Linear(12, 6, bias=False)
    x = torch.randn(12).expand(4, 5, 12).clone()  # every token identical: the error is a per-channel constant
    qlin = quantize(nn.Sequential(lin), QuantConfig.uniform(4, 4, keep_float=()), [x], progress=False)[0]
    with torch.no_grad():
        err = qlin(x) - lin(x)
    assert float(err.abs().max()) > 1e-3
    shift = correct_bias(qlin, x)
    assert qlin.bias is not None  # created: the layer had none
    torch.testing.assert_close(shift, err[0, 0])
    with torch.no_grad():
        torch.testing.assert_close(qlin(x), lin(x), rtol=0, atol=1e-5)
    assert lin.bias is None  # the float layer is untouched


def test_bias_correction_zeroes_the_mean_error_and_is_switchable():
    torch.manual_seed(1)
    lin = nn.Linear(10, 7)
    x = torch.randn(6, 9, 10) + 0.5
    base = quantize(nn.Sequential(lin), QuantConfig.uniform(4, 4, keep_float=()), [x], progress=False)[0]
    for rq, corrected in [(RankingAwareConfig(similarity=False, ranking=False), True),
                          (RankingAwareConfig(similarity=False, ranking=False, bias_correction=False), False)]:
        qlin = copy.deepcopy(base)
        info = refine_linear(qlin, x, rq)
        assert not info["searched"] and ("bias_correction" in info) == corrected
        with torch.no_grad():
            mean_err = (qlin(x) - lin(x)).reshape(-1, 7).mean(0)
        assert (float(mean_err.abs().max()) < 1e-5) == corrected
    # against an explicit target (the float model's output): the mean error to it vanishes
    qlin = copy.deepcopy(base)
    target = lin(x).detach() + 0.25
    correct_bias(qlin, x, target)
    with torch.no_grad():
        assert float((qlin(x) - target).reshape(-1, 7).mean(0).abs().max()) < 1e-5


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def runs():
    model = micro_vit(0)
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    calib = [x[:8], x[8:]]  # two batches
    out = {"model": model, "state": state, "x": x, "calib": calib}
    for bits in (8, 4):
        cfg = QuantConfig.uniform(bits, bits)
        out[bits] = (quantize(model, cfg, calib, progress=False),
                     ranking_aware_quantize(model, cfg, calib, RankingAwareConfig(), progress=False))
    return out


@pytest.mark.parametrize("bits", [8, 4])
def test_output_sqnr_not_worse_than_minmax_ptq(runs, bits):
    model, x = runs["model"], runs["x"]
    q_minmax, q_ranking = runs[bits]
    with torch.no_grad():
        y = model(x)
        s_minmax, s_ranking = sqnr(y, q_minmax(x)), sqnr(y, q_ranking(x))
    assert s_ranking >= s_minmax, (s_minmax, s_ranking)
    if bits == 4:  # where min-max scales are poor, the search is a clear gain
        assert s_ranking >= s_minmax + 1.0


def test_report_says_what_was_chosen(runs):
    q = runs[4][1]
    report = q.vitquant_report
    assert isinstance(report, RankingAwareReport) and report.calib_seconds > 0
    names = [row["name"] for row in report.layers]
    assert names[:6] == ["blocks.0.attn.qkv", "blocks.0.attn.matmul_qk", "blocks.0.attn.matmul_av",
                         "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]  # forward order
    assert len(names) == 12
    by_name = {row["name"]: row for row in report.layers}
    assert by_name["blocks.0.attn.qkv"]["objective"] == "similarity-ranking"
    assert by_name["blocks.0.attn.matmul_qk"]["objective"] == "similarity-ranking"
    assert by_name["blocks.0.attn.matmul_av"]["objective"] == "similarity"
    assert by_name["blocks.0.mlp.fc1"]["objective"] == "similarity"
    for row in report.layers:
        assert row["searched"] and 1 <= row["rounds"] <= 20
        assert row["objective_after"] >= row["objective_before"]
        assert set(row["multipliers"]) == set(row["scales"])
        assert all(0.5 <= m <= 1.2 for m in row["multipliers"].values())
        assert ("bias_correction" in row) == (row["kind"] == "linear")
    fc1 = q.get_submodule("blocks.0.mlp.fc1")
    assert by_name["blocks.0.mlp.fc1"]["scales"]["weight"] == pytest.approx(fc1.w_quantizer.scale.flatten().tolist())
    assert by_name["blocks.0.mlp.fc1"]["scales"]["input"] == pytest.approx(float(fc1.input_quantizer.scale))
    rows = {r["name"]: r for r in report.ops}
    assert rows["blocks.0.attn.matmul_qk"]["ranking_aware"]["rounds"] == by_name["blocks.0.attn.matmul_qk"]["rounds"]
    d = json.loads(json.dumps(report.to_json()))
    assert d["method"] == "ranking_aware_ptq" and d["method_config"]["gamma"] == 0.1 and len(d["layers"]) == 12
    assert report.summary()["calib_seconds"] == report.calib_seconds


def test_float_model_is_not_mutated(runs):
    model = runs["model"]
    state = model.state_dict()
    assert state.keys() == runs["state"].keys()
    assert all(torch.equal(state[k], runs["state"][k]) for k in state)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(isinstance(p, nn.Parameter) and p.requires_grad is False for p in model.parameters())
    assert type(model.blocks[0].attn).__name__ == "Attention"  # not swapped for QuantAttention
    q = runs[4][1]
    assert q.get_submodule("blocks.0.attn.qkv").weight.data_ptr() != model.blocks[0].attn.qkv.weight.data_ptr()


def test_all_parts_off_is_standard_ptq(runs):
    model, x, calib = runs["model"], runs["x"], runs["calib"]
    off = RankingAwareConfig(similarity=False, ranking=False, bias_correction=False)
    q = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib, off, progress=False)
    with torch.no_grad():
        assert torch.equal(q(x), runs[4][0](x))
    assert not q.vitquant_report.layers


def test_deterministic_for_a_fixed_seed(runs):
    model, calib = runs["model"], runs["calib"]
    rq = RankingAwareConfig(n_candidates=12, max_rounds=3, max_pairs=40, seed=7)  # 40 of 136 pairs, sampled
    a = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib, rq, progress=False)
    b = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib, rq, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    strip = [{k: v for k, v in row.items() if "seconds" not in k} for row in a.vitquant_report.layers]
    assert strip == [{k: v for k, v in row.items() if "seconds" not in k} for row in b.vitquant_report.layers]


@pytest.mark.parametrize("kwargs, searched", [
    (dict(similarity=False, ranking=True, bias_correction=False), {"qkv": "ranking", "matmul_qk": "ranking"}),
    (dict(similarity=True, ranking=False, bias_correction=False, reference="layer"),
     {"qkv": "similarity", "matmul_qk": "similarity", "matmul_av": "similarity", "proj": "similarity",
      "fc1": "similarity", "fc2": "similarity"}),
    (dict(inputs="float"), {"qkv": "similarity-ranking", "matmul_qk": "similarity-ranking",
                            "matmul_av": "similarity", "proj": "similarity", "fc1": "similarity",
                            "fc2": "similarity"}),
])
def test_ablation_switches(runs, kwargs, searched):
    model, x, calib = runs["model"], runs["x"], runs["calib"]
    rq = RankingAwareConfig(n_candidates=8, max_rounds=2, **kwargs)
    q = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib, rq, progress=False)
    for row in q.vitquant_report.layers:
        op = row["name"].rsplit(".", 1)[1]
        assert row["objective"] == searched.get(op), row["name"]
        assert ("bias_correction" in row) == (rq.bias_correction and row["kind"] == "linear")
    with torch.no_grad():
        assert math.isfinite(sqnr(model(x), q(x)))


# ----------------------------------------------------------------------------- speed paths
def test_incremental_capture_gives_the_inputs_of_a_full_forward_pass():
    """Block-boundary activations advanced block by block: every layer sees exactly the inputs a
    forward pass from the network input gives, on the float and on the quantized model."""
    from vitquant_core.ptq.ranking import _block_container, _capture, _discover, _Prefix

    model = micro_vit(3)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    batches = [x[:4], x[4:]]
    q = quantize(model, QuantConfig.uniform(4, 4), batches, progress=False)
    units = _discover(q, x[:1])
    assert _block_container(q, [n for n, _ in units]) == "blocks"
    prefix = _Prefix(q, "blocks", batches, torch.device("cpu"))
    for name, kind in units:
        old = _capture(q, name, kind, batches, torch.device("cpu"))
        new = _capture(q, name, kind, batches, torch.device("cpu"), prefix)
        assert len(old) == len(new)
        for a, b in zip(old, new):
            assert torch.equal(a, b), name
    assert prefix.block == 1  # advanced once, to the last block


def test_incremental_capture_changes_nothing_end_to_end(runs):
    model, calib = runs["model"], runs["calib"]
    rq = dict(n_candidates=10, max_rounds=3)
    a = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib, RankingAwareConfig(**rq), progress=False)
    b = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib,
                               RankingAwareConfig(incremental=False, **rq), progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ranking_sums_on_every_pair_listed_equals_the_dense_form():
    a, a_q = score_maps(5, (2, 3, 6, 11))
    f, q = a.reshape(-1, 11), torch.stack([a_q, 0.5 * a_q, a]).reshape(3, -1, 11)
    pairs = torch.triu_indices(11, 11, offset=1)
    dense = _ranking_sums(f, q, 0.2)
    listed = _ranking_sums(f, q, 0.2, (pairs[0], pairs[1]), budget=64)
    torch.testing.assert_close(dense, listed, rtol=1e-6, atol=1e-6)


def test_pearson_counts_a_constant_output_as_uncorrelated():
    o = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(0))
    for k in (0.0, 0.37, -7.77, 123.4):
        assert float(pearson_similarity(o, torch.full_like(o, k))) == 0.0


def test_coarse_to_fine_finds_the_optimum_of_a_unimodal_objective():
    from vitquant_core.ptq.ranking import _Operand, _Unit

    assert RankingAwareConfig().coarse_step() == 1  # exhaustive by default
    rq = RankingAwareConfig(coarse_to_fine=True)
    assert rq.coarse_step() == 7
    evaluated = []

    class Probe(_Unit):
        def __init__(self):  # only what evaluate() uses
            self.rq, self.grid = rq, rq.multipliers().float()

        def _evaluate_at(self, k, idx, which):
            evaluated.extend(which.tolist())
            return -(self.grid[which].double() - 0.83) ** 2  # peak between grid points

    obj = Probe().evaluate(0, [50, 50])
    best = int(torch.argmax(obj))
    assert best == int(torch.argmin((rq.multipliers() - 0.83).abs()))  # the exhaustive answer
    assert len(evaluated) == len(set(evaluated)) < 35  # each candidate at most once, ~29 of 101


def test_row_subset_covering_every_row_is_the_exact_search():
    model = micro_vit(2)
    xs = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cfg = QuantConfig.uniform(4, 4)
    rows = 4 * 2 * 17  # images x heads x queries: 136 score rows
    a = ranking_aware_quantize(model, cfg, [xs], RankingAwareConfig(n_candidates=10, max_rounds=2, max_rows=None,
                                                                   coarse_to_fine=False), progress=False)
    b = ranking_aware_quantize(model, cfg, [xs], RankingAwareConfig(n_candidates=10, max_rounds=2, max_rows=rows,
                                                                   coarse_to_fine=False), progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = ranking_aware_quantize(model, cfg, [xs], RankingAwareConfig(n_candidates=10, max_rounds=2, max_rows=40,
                                                                   coarse_to_fine=False), progress=False)
    qkv = {r["name"]: r for r in c.vitquant_report.layers}["blocks.0.attn.qkv"]
    assert qkv["searched"] and qkv["objective_after"] >= qkv["objective_before"]


def test_sampled_rows_and_coarse_search_are_deterministic_for_a_fixed_seed():
    model = micro_vit(1)
    xs = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    rq = RankingAwareConfig(n_candidates=30, max_rounds=3, max_rows=50, max_pairs=60, coarse_to_fine=True, seed=11)
    runs_ = [ranking_aware_quantize(model, QuantConfig.uniform(4, 4), [xs], rq, progress=False) for _ in range(2)]
    sa, sb = (r.state_dict() for r in runs_)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    la, lb = ([{k: v for k, v in row.items() if "seconds" not in k} for row in r.vitquant_report.layers]
              for r in runs_)
    assert la == lb
    assert all(row["n_evaluations"] >= 1 for row in la if row["searched"])
