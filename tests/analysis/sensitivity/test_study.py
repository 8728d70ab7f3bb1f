"""Notebook 05's study on a micro ViT and a micro CNN: every measure through the row store and read
back, the quantizer each model gets, and the tables and answer on constructed scores."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from vitquant_core.analysis.sensitivity import sensitivity_sweep
from vitquant_core.analysis.sensitivity.report import (
    agreement,
    answer,
    claims,
    heatmap,
    mlp_vs_attention,
    op_group,
    ranking,
)
from vitquant_core.analysis.sensitivity.study import (
    check_study_parameters,
    measure_model,
    method_for,
    study_parameters,
    width_model,
)
from vitquant_core.rowstore import RowStore

OK = dict(widths=["W4A4"], quantizer="repq+adalog", protocol="paper", n_fisher_images=8, n_trace_images=8,
          trace_samples=2, n_boot=10)


def test_study_parameters_resolve_none_by_profile():
    p = study_parameters("full", n_eval=None, widths=None, n_calib=32)
    assert p == {"n_eval": 1000, "widths": ["W4A4", "W6A6"], "n_calib": 32}
    assert study_parameters("quick", trace_samples=None) == {"trace_samples": 4}
    with pytest.raises(ValueError, match="profile"):
        study_parameters("fast", n_eval=None)
    with pytest.raises(TypeError, match="unknown parameters"):
        study_parameters("quick", n_evals=None)


@pytest.mark.parametrize("bad, match", [
    ({"widths": "W4A4"}, "non-empty list"), ({"widths": ["W4"]}, "float"), ({"widths": ["W4A4", "W4A4"]}, "repeats"),
    ({"quantizer": "ptq4vit"}, "quantizer"), ({"protocol": "fancy"}, "protocol"), ({"n_boot": 0}, "n_boot"),
    ({"trace_samples": 1}, "trace_samples"), ({"n_fisher_images": 2.5}, "n_fisher_images")],
    ids=["widths-str", "widths-float", "widths-dup", "quantizer", "protocol", "n_boot", "samples", "fisher"])
def test_check_study_parameters_names_the_bad_one(bad, match):
    check_study_parameters(**OK)
    with pytest.raises((TypeError, ValueError), match=match):
        check_study_parameters(**{**OK, **bad})


def test_repq_on_vits_min_max_elsewhere(vit, cnn, data16):
    assert method_for(vit, "repq+adalog") == "repq+adalog"
    assert method_for(cnn, "repq+adalog") == "min-max"  # no LayerNorm → Linear pairs to reparameterize
    assert method_for(vit, "min-max") == "min-max"
    calib, x, _ = data16
    twin, cfg = width_model(vit, calib, "repq+adalog", "paper", "W4A4")
    with torch.no_grad():  # the reparameterized twin computes the same function
        assert torch.allclose(twin(x), vit(x), atol=1e-4)
    assert not torch.equal(twin.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert cfg.spec_for("blocks.0.attn.softmax").a_quantizer == "adalog"
    assert cfg.spec_for("blocks.0.mlp.fc1").w_bits == 4
    same, cfg_mm = width_model(cnn, calib, "min-max", "paper", "W6A6")
    assert same is cnn and cfg_mm.spec_for("layer1.0.conv1").a_bits == 6


@pytest.fixture(scope="module")
def measured(vit, data16, tmp_path_factory):
    calib, x, y = data16
    store = RowStore(tmp_path_factory.mktemp("rows"), {"model": "micro_vit"})
    st = measure_model(store, vit, calib, x, y, ["W4A4"], "repq+adalog", "paper", 8, 8, 2, batch_size=12)
    return store, st


def test_measure_model_scores_every_op_by_every_measure(measured, vit, data16):
    _, st = measured
    ops = st["ops"]
    assert len(ops) == 16 and set(ops.width) == {"W4A4"}  # 2 × (qkv, 3 matmul ops, proj, fc1, fc2) + embed, head
    assert (ops.kl >= 0).all() and ops.kl.max() > 1e-3
    matmuls = ops[ops.op.str.endswith(("matmul_qk", "softmax", "matmul_av"))]
    assert len(matmuls) == 6 and matmuls.hawq.isna().all() and matmuls.trace_per_param.isna().all()
    assert ops[~ops.op.isin(matmuls.op)].hawq.notna().all() and ops.fisher.notna().all()
    # the direct column is the sweep of the reparameterized twin, quantizing each op alone
    calib, x, y = data16
    twin, cfg = width_model(vit, calib, "repq+adalog", "paper", "W4A4")
    ref = sensitivity_sweep(twin, {"W4A4": cfg}, ["W4A4"], calib, x, y, batch_size=12, progress=False)
    assert dict(zip(ops.op, ops.kl)) == pytest.approx({r["op"]: r["kl"] for r in ref}, rel=1e-6, abs=1e-9)
    assert st["float_top1"] == pytest.approx(100.0 * float((vit(x).argmax(-1) == y).float().mean()))
    assert sorted(st["seconds"].measure) == ["direct", "fisher", "hawq", "hutchinson_trace", "left_float"]
    assert (st["seconds"].seconds > 0).all()


def test_a_rerun_reads_every_measure_back(measured, vit, data16):
    store, st = measured
    calib, x, y = data16
    files = sorted(p.name for p in store.root.iterdir())
    assert len(files) == 5  # trace, direct, left_float, fisher, hawq
    again = measure_model(store, vit, calib, x, y, ["W4A4"], "repq+adalog", "paper", 8, 8, 2, batch_size=12)
    assert sorted(p.name for p in store.root.iterdir()) == files
    pd.testing.assert_frame_equal(again["ops"], st["ops"])


def test_op_groups():
    assert [op_group(o) for o in ("blocks.8.mlp.fc2", "blocks.7.attn.proj", "blocks.0.attn.softmax", "patch_embed.proj",
                                  "head", "head_dist", "fc", "conv1", "layer2.0.downsample.0", "layer1.1.conv2")] == [
        "MLP", "attention projection", "attention matmul", "patch embedding", "classifier", "classifier", "classifier",
        "stem",
        "shortcut conv", "conv"]


def constructed_study(kl: dict[str, float], model: str = "deit", fisher_sign: float = 1.0) -> dict:
    """A study of given direct KLs; Fisher is the KL itself (times ``fisher_sign``), HAWQ its square root."""
    ops = pd.DataFrame({"op": list(kl), "block": [o.rsplit(".", 2)[0] for o in kl],
                        "layer": [".".join(o.split(".")[2:]) for o in kl], "width": "W4A4", "kl": list(kl.values()),
                        "top1_drop": [10 * v for v in kl.values()], "recovery_kl": [1.0] * len(kl),
                        "fisher": [fisher_sign * v for v in kl.values()], "hawq": [math.sqrt(v) for v in kl.values()],
                        "trace_per_param": [1.0] * len(kl)})
    seconds = pd.DataFrame([{"width": "W4A4", "measure": m, "seconds": s} for m, s in
                            (("direct", 100.0), ("left_float", 90.0), ("fisher", 5.0), ("hawq", 1.0))]
                           + [{"width": None, "measure": "hutchinson_trace", "seconds": 20.0}])
    return {"model": model, "method": "repq+adalog", "protocol": "paper", "kind": "vit", "ops": ops,
            "seconds": seconds, "n_eval": 100, "eval_seconds": 2.0}


# the earlier study's picture: fc2 of block 8 at 0.47, proj of block 7 at 0.1, MLP above attention
CLAIMED = {f"blocks.{b}.{layer}": (0.3 if layer.startswith("mlp") else 0.15) + 0.001 * b
           for b in range(12) for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
CLAIMED.update({"blocks.8.mlp.fc2": 0.47, "blocks.7.attn.proj": 0.1})


def test_tables_on_constructed_scores():
    st = constructed_study(CLAIMED)
    r = ranking(st, "W4A4")
    assert r.operation.iloc[0] == "blocks.8.mlp.fc2" and r.operation.iloc[-1] == "blocks.7.attn.proj"
    assert list(r.index) == list(range(1, 49)) and r["KL (nats/image)"].is_monotonic_decreasing
    h = heatmap(st, "W4A4")
    assert h.shape == (12, 4) and h.loc["blocks.8", "mlp.fc2"] == 0.47 and list(h.index[:2]) == ["blocks.0", "blocks.1"]
    a = agreement([st], n_boot=50).set_index("proxy")
    assert a.loc["Fisher output error (ModelOpt)", "spearman rho"] == pytest.approx(1.0)
    assert a.loc["HAWQ Ω", "spearman rho"] == pytest.approx(1.0)  # a monotone transform ranks alike
    assert a.loc["HAWQ Ω", "proxy (s)"] == 21.0 and a.loc["Fisher output error (ModelOpt)", "proxy (s)"] == 5.0
    assert set(a.index) == {"Fisher output error (ModelOpt)", "HAWQ Ω"}  # constant scorings have no ρ
    assert (a["direct sweep (s)"] == 100.0).all()
    m = mlp_vs_attention([st], n_boot=50)
    assert m.verdict.iloc[0] == "MLP above" and m["ratio MLP / attention"].iloc[0] > 1.9
    table, c = claims([st], n_boot=50)
    assert c["checks"] == {"most": True, "least": True, "spread": True, "mlp_above_attention": True}
    assert c["spread"] == pytest.approx(4.7) and (table.holds == "yes").all()


def test_answer_glues_measured_strings_and_na_elsewhere():
    st = constructed_study(CLAIMED, fisher_sign=-1.0)
    agree = agreement([st], n_boot=50)
    table, c = claims([st], n_boot=50)
    g = answer([st], ["W4A4"], agree, c, mlp_vs_attention([st], n_boot=50))
    assert g["m1_most"] == "blocks.8.mlp.fc2" and g["m1_most_kl"] == "0.4700" and g["m1_n_ops"] == "48"
    assert g["m1_mlp_verdict"] == "more sensitive than" and g["claims_held"] == "4 of 4"
    assert g["best_proxy"] == "HAWQ Ω" and g["best_rho"] == "1.00" and g["worst_rho"] == "-1.00"
    assert g["m1_sweep_s"] == "100" and g["m1_sweep_evals"] == "50" and g["claim_spread"] == "4.7"
    assert g["m2_name"] == "n/a" and all(isinstance(v, str) for v in g.values())
    tiny = constructed_study({**CLAIMED, "blocks.7.attn.proj": 3.14e-5})
    assert answer([tiny], ["W4A4"], agree, c, mlp_vs_attention([tiny], n_boot=50))["m1_least_kl"] == "3.1e-05"
