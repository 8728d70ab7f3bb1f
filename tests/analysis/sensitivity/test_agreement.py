"""Rank agreement on constructed rankings, and the earlier study's claims on constructed drops."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from vitquant_core.analysis.sensitivity import STUDY_CLAIMS, rank_agreement, study_claims

OPS = [f"op{i}" for i in range(8)]


def test_identical_and_reversed_rankings():
    direct = {op: float(i) for i, op in enumerate(OPS)}
    same = rank_agreement({op: 10 * v + 1 for op, v in direct.items()}, direct, n_boot=200)
    assert same["spearman_rho"] == pytest.approx(1.0) and same["ci95"] == pytest.approx((1.0, 1.0))
    rev = rank_agreement({op: -v for op, v in direct.items()}, direct, n_boot=200)
    assert rev["spearman_rho"] == pytest.approx(-1.0) and rev["ci95"] == pytest.approx((-1.0, -1.0))
    assert same["n"] == 8 and 0 < same["n_boot_used"] <= 200


def test_hand_computed_rho_and_seeded_bootstrap():
    direct = {op: float(i) for i, op in enumerate(OPS)}
    swapped = [1, 0, 3, 2, 5, 4, 7, 6]  # adjacent pairs swapped: every d = 1, Σd² = 8
    proxy = {**{op: float(swapped[i]) for i, op in enumerate(OPS)}, "extra": 9.0}  # compared: the 8 both score
    r = rank_agreement(proxy, direct, n_boot=300, seed=4)
    assert r["spearman_rho"] == pytest.approx(1 - 6 * 8 / (8 * 63))
    assert r["n"] == 8 and r["ci95"][0] <= r["spearman_rho"] <= r["ci95"][1]
    assert r == rank_agreement(proxy, direct, n_boot=300, seed=4)
    # the interval is the percentile bootstrap over operations, resampled with numpy's seeded generator
    a, b = np.array(swapped, dtype=float), np.arange(8.0)
    rng, boots = np.random.default_rng(4), []
    for _ in range(300):
        i = rng.integers(0, 8, 8)
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            boots.append(spearmanr(a[i], b[i]).statistic)
    assert r["ci95"] == pytest.approx(tuple(np.percentile(boots, [2.5, 97.5])))
    assert r["n_boot_used"] == len(boots)


def test_rank_agreement_refuses_bad_input():
    d = {op: float(i) for i, op in enumerate(OPS)}
    with pytest.raises(ValueError, match="at least 3"):
        rank_agreement({"op0": 1.0, "op1": 2.0}, d)
    with pytest.raises(ValueError, match="same value"):
        rank_agreement(dict.fromkeys(OPS, 1.0), d)
    with pytest.raises(ValueError, match="finite"):
        rank_agreement({**d, "op3": math.nan}, d)
    with pytest.raises(ValueError, match="not scored by both"):
        rank_agreement(d, d, ops=["op0", "op1", "nope"])
    with pytest.raises(ValueError, match="n_boot"):
        rank_agreement(d, d, n_boot=0)


def study_drops(flip: bool = False) -> dict[str, float]:
    """12 blocks: MLP Linears 3.0-4.0, attention 1.2-2.0; fc2 of block 8 at 4.7, proj of block 7 at 1.0."""
    drops = {}
    for b in range(12):
        for j, layer in enumerate(("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")):
            mlp = layer.startswith("mlp")
            drops[f"blocks.{b}.{layer}"] = (3.0 + 0.05 * b + 0.1 * j) if mlp else (1.2 + 0.05 * b + 0.1 * j)
    drops["blocks.8.mlp.fc2"], drops["blocks.7.attn.proj"] = 4.7, 1.0
    drops["head"] = 99.0  # not a per-block Linear: ignored
    return {op: (6.0 - v if flip and op != "head" else v) for op, v in drops.items()}


def test_study_claims_hold_on_constructed_drops():
    r = study_claims(study_drops(), n_boot=300)
    assert r["most"] == STUDY_CLAIMS["most"] and r["least"] == STUDY_CLAIMS["least"]
    assert r["spread"] == pytest.approx(4.7) and len(r["ranking"]) == 48
    assert r["n_mlp"] == r["n_attention"] == 24
    assert r["difference"] == pytest.approx(r["mlp_mean"] - r["attention_mean"]) and r["difference"] > 1.5
    assert r["difference_ci95"][0] > 0
    assert r["checks"] == {"most": True, "least": True, "spread": True, "mlp_above_attention": True}


def test_study_claims_fail_on_the_opposite_drops():
    r = study_claims(study_drops(flip=True), n_boot=300)
    assert r["most"] == "blocks.7.attn.proj" and r["least"] == "blocks.8.mlp.fc2"
    assert r["spread"] == pytest.approx(5.0 / 1.3)
    assert r["checks"] == {"most": False, "least": False, "spread": True, "mlp_above_attention": False}
    zero = study_claims({**study_drops(), "blocks.7.attn.proj": 0.0}, n_boot=50)
    assert zero["spread"] is None and zero["checks"]["spread"] is None


def test_study_claims_refuse_other_names():
    with pytest.raises(ValueError, match="per-block Linears"):
        study_claims({"layer1.0.conv1": 1.0, "fc": 2.0})
