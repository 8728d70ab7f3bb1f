"""Notebook 05 end to end on a tiny setting: every measure of every operation of the shipped
DeiT-Tiny (RepQ-ViT with an adaptive-log softmax) and ResNet-18 (min-max) at W4A4, the proxies'
agreement, MLP against attention and the earlier study's claims, written to the results file."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TINY = {"profile": "quick", "n_eval": 10, "n_calib": 8, "seed": 0, "widths": ["W4A4"], "n_fisher_images": 4,
        "n_trace_images": 4, "trace_samples": 2, "n_boot": 20}


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    pm.execute_notebook(str(NOTEBOOKS / "05_sensitivity.ipynb"), str(results / "out.ipynb"), kernel_name="python3",
                        cwd=str(NOTEBOOKS), parameters={**TINY, "results_dir": str(results)}, progress_bar=False)
    return json.loads((results / "05_sensitivity.json").read_text())


def test_05_scores_every_operation_of_both_models(doc):
    assert doc["notebook"] == "05_sensitivity" and doc["provenance"]["model"] == "deit_tiny_cifar"
    assert set(doc["provenance_by_model"]) == {"deit_tiny_cifar", "resnet18_cifar"}
    fp = [r for r in doc["rows"] if r["method"] == "fp32"]
    assert [r["model"] for r in fp] == ["deit_tiny_cifar", "resnet18_cifar"] and min(r["top1"] for r in fp) > 30.0
    vit = [r for r in doc["rows"] if r["model"] == "deit_tiny_cifar" and r["method"] != "fp32"]
    cnn = [r for r in doc["rows"] if r["model"] == "resnet18_cifar" and r["method"] != "fp32"]
    assert len(vit) == 12 * 7 + 3 and {r["method"] for r in vit} == {"repq+adalog"}  # + patch embed, both heads
    assert len(cnn) == 21 and {r["method"] for r in cnn} == {"min-max"}  # 20 convs (3 shortcuts) + fc
    for r in vit + cnn:
        assert r["w_bits"] == r["a_bits"] == 4 and r["protocol"] == "paper" and r["n_eval"] == 10
        assert r["kl"] >= 0 and 0.0 <= r["top1"] <= 100.0 and r["fisher"] is not None
        assert r["top1_drop"] == pytest.approx(r["float_top1"] - r["top1"])
    assert max(r["kl"] for r in vit) > 1e-3 and max(r["kl"] for r in cnn) > 1e-3  # 4 bits leave a mark
    matmuls = [r for r in vit if r["group"] == "attention matmul"]
    assert len(matmuls) == 36 and all(r["hawq"] is None for r in matmuls)  # no weights, no HAWQ score
    assert all(r["hawq"] is not None for r in vit + cnn if r["group"] != "attention matmul")


def test_05_writes_the_proxies_the_claims_and_the_sweep_time(doc):
    agree = doc["agreement"]
    assert {(a["model"], a["proxy"]) for a in agree} >= {("deit_tiny_cifar", "Fisher output error (ModelOpt)"),
                                                          ("deit_tiny_cifar", "HAWQ Ω")}
    for a in agree:
        assert -1.0 <= a["95 % low"] <= a["spearman rho"] <= a["95 % high"] <= 1.0 or a["operations"] < 10
        assert a["proxy (s)"] > 0 and a["direct sweep (s)"] > 0
    (mva,) = doc["mlp_vs_attention"]  # the ViT only
    assert mva["model"] == "deit_tiny_cifar" and mva["95 % low"] <= mva["difference"] <= mva["95 % high"]
    claims = doc["claims"]
    assert claims["model"] == "deit_tiny_cifar" and set(claims["checks"]) == {"most", "least", "spread",
                                                                              "mlp_above_attention"}
    assert claims["most"].startswith("blocks.") and claims["n_mlp"] == claims["n_attention"] == 24
    measures = {(s["model"], s["measure"]) for s in doc["seconds"]}
    assert ("deit_tiny_cifar", "direct") in measures and ("resnet18_cifar", "hutchinson_trace") in measures
    assert all(s["seconds"] > 0 for s in doc["seconds"]) and doc["eval_seconds"]["deit_tiny_cifar"] > 0
