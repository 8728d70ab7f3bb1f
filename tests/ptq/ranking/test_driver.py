"""Ranking-aware PTQ of a whole model (Liu et al., NeurIPS 2021): its configuration, and end-to-end
runs on a micro timm ViT (W8A8, W4A4) against standard min-max PTQ."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn as nn

from vitquant_core import QuantConfig, quantize
from vitquant_core.ptq import RankingAwareConfig, RankingAwareReport, ranking_aware_quantize


def sqnr(y: torch.Tensor, y_q: torch.Tensor) -> float:
    return float(10 * torch.log10(y.pow(2).sum() / (y - y_q).pow(2).sum()))


# ----------------------------------------------------------------------------- configuration
BAD_CONFIGS = [
    (dict(alpha=0.0), ValueError, r"need 0 < alpha < beta, got alpha=0.0"),
    (dict(alpha=1.3, beta=1.2), ValueError, r"need 0 < alpha < beta, got alpha=1.3, beta=1.2"),
    (dict(n_candidates=1), ValueError, r"n_candidates must be an int >= 2, got 1"),
    (dict(n_candidates=10.0), ValueError, r"n_candidates must be an int >= 2, got 10.0"),
    (dict(max_rounds=0), ValueError, r"max_rounds must be an int >= 1, got 0"),
    (dict(gamma=-0.1), ValueError, r"gamma and theta must be >= 0, got gamma=-0.1"),
    (dict(theta=-1.0), ValueError, r"gamma and theta must be >= 0, got gamma=0.1, theta=-1.0"),
    (dict(similarity=1), TypeError, r"similarity must be a bool, got 1"),
    (dict(max_pairs=0), ValueError, r"max_pairs must be None or an int >= 1, got 0"),
    (dict(inputs="fp"), ValueError, r"inputs must be one of \('quantized', 'float'\), got 'fp'"),
    (dict(reference="net"), ValueError, r"reference must be one of \('layer', 'model'\), got 'net'"),
    (dict(alpha=float("nan")), TypeError, r"alpha must be a finite number, got nan"),
    (dict(seed=1.5), TypeError, r"seed must be an int, got 1.5"),
    (dict(chunk_bytes=0), ValueError, r"chunk_bytes must be a positive int, got 0"),
    (dict(max_rows=0), ValueError, r"max_rows must be None or an int >= 1, got 0"),
    (dict(coarse_to_fine=1), TypeError, r"coarse_to_fine must be a bool, got 1"),
    (dict(incremental=None), TypeError, r"incremental must be a bool, got None"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_CONFIGS,
                         ids=[", ".join(f"{k}={v!r}" for k, v in kw.items()) for kw, _, _ in BAD_CONFIGS])
def test_config_rejects_bad_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        RankingAwareConfig(**kwargs)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def runs(micro_vit):
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


def test_incremental_capture_changes_nothing_end_to_end(runs):
    model, calib = runs["model"], runs["calib"]
    rq = dict(n_candidates=10, max_rounds=3)
    a = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib, RankingAwareConfig(**rq), progress=False)
    b = ranking_aware_quantize(model, QuantConfig.uniform(4, 4), calib,
                               RankingAwareConfig(incremental=False, **rq), progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_row_subset_covering_every_row_is_the_exact_search(micro_vit):
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


def test_sampled_rows_and_coarse_search_are_deterministic_for_a_fixed_seed(micro_vit):
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
