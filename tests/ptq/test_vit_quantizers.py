"""Notebook 04's study: every method builds under both protocols; the targets and the answer from rows."""
from types import SimpleNamespace

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vitquant_core.nn.nonuniform import LogActQuantizer, TwinUniformActQuantizer
from vitquant_core.ptq.vit_quantizers import (
    METHODS,
    check_study_parameters,
    done_when,
    methods_for,
    plan,
    study_parameters,
)
from vitquant_core.ptq.vit_quantizers_report import accuracy_table, answer, sqnr_table
from vitquant_core.rowstore import Record


@pytest.fixture(scope="module")
def exp():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2).eval()
    g = torch.Generator().manual_seed(1)
    return SimpleNamespace(model=vit, calib=[torch.randn(8, 3, 16, 16, generator=g)], seed=0)


SEARCH = dict(n_candidates=6, max_rounds=2, ptq4vit_metric="mse", n_search_images=4, search_rounds=1,
              ptq4vit_candidates=4)


@pytest.mark.parametrize("protocol", ["paper", "default"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_builds(exp, protocol, method):
    spec, build, applied = plan(exp, protocol, "W4A4", method, SEARCH)
    assert applied and isinstance(spec, dict)
    q = build()
    with torch.no_grad():
        out = q(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    attn_q = q.blocks[0].attn.attn_quantizer
    if protocol == "default":
        assert attn_q is None  # the softmax output stays float
    elif method in ("repq-vit", "repq+ranking"):
        assert isinstance(attn_q, LogActQuantizer) and attn_q.kind == "log_sqrt2"
    elif method == "repq+adalog":
        assert attn_q.kind == "adalog"
    elif method == "ptq4vit":
        assert isinstance(attn_q, TwinUniformActQuantizer)
    ops = {o["name"]: o for o in q.vitquant_report.ops}
    assert ("head" in ops) == (protocol == "paper")


def test_identical_configurations_measured_once():
    assert "repq+adalog" not in methods_for("default", list(METHODS))
    assert methods_for("paper", list(METHODS)) == list(METHODS)


def test_not_run_leaves_out_a_method_by_protocol_or_setting():
    not_run = {"repq+ranking": ["default", "W8A8"]}
    assert "repq+ranking" in methods_for("paper", list(METHODS), "W4A4", not_run)
    assert "repq+ranking" not in methods_for("paper", list(METHODS), "W8A8", not_run)
    assert "repq+ranking" not in methods_for("default", list(METHODS), "W4A4", not_run)
    assert len(methods_for("paper", list(METHODS), "W8A8", not_run)) == len(METHODS) - 1


def test_parameters_checked():
    check_study_parameters(["W4A4"], ["min-max"], ["paper"], 4)
    with pytest.raises(ValueError, match="unknown"):
        check_study_parameters(["W4A4"], ["min-max", "gptq"], ["paper"], 4)
    with pytest.raises(ValueError, match="keeps weights or activations in float"):
        check_study_parameters(["W4"], ["min-max"], ["paper"], 4)
    with pytest.raises(TypeError, match="non-empty list"):
        check_study_parameters("W4A4", ["min-max"], ["paper"], 4)
    with pytest.raises(ValueError, match="unknown"):
        check_study_parameters(["W4A4"], ["min-max"], ["papers"], 4)
    with pytest.raises(ValueError, match="n_sqnr_images"):
        check_study_parameters(["W4A4"], ["min-max"], ["paper"], 0)
    check_study_parameters(["W4A4"], ["min-max"], ["paper"], 4, {"repq+ranking": ["default", "W4A4"]})
    with pytest.raises(ValueError, match="not_run: unknown method"):
        check_study_parameters(["W4A4"], ["min-max"], ["paper"], 4, {"gptq": ["default"]})
    with pytest.raises(ValueError, match="unknown"):
        check_study_parameters(["W4A4"], ["min-max"], ["paper"], 4, {"repq+ranking": ["W2A2"]})
    with pytest.raises(TypeError, match="must be a dict"):
        check_study_parameters(["W4A4"], ["min-max"], ["paper"], 4, ["repq+ranking"])
    assert study_parameters("full", n_calib=None, ptq4vit_candidates=7) == {"n_calib": 64, "ptq4vit_candidates": 7}


def _rec(top1, sqnr=None):
    return Record("k", {"top1": top1, "calib_seconds": 1.0, "sqnr_by_kind": sqnr}, [0])


def test_targets_and_answer_from_rows():
    records = {("paper", "W4A4", "min-max"): _rec(60.0), ("paper", "W4A4", "repq-vit"): _rec(74.0),
               ("paper", "W4A4", "repq+ranking"): _rec(75.0), ("paper", "W6A6", "repq-vit"): _rec(77.5),
               ("paper", "W6A6", "min-max"): _rec(76.0), ("default", "W4A4", "min-max"): _rec(70.0)}
    t = done_when(records, 78.0)
    assert t["W4A4"] == {"best": "repq+ranking", "loss_best": 3.0, "loss_min_max": 18.0, "at most half": True}
    assert t["W6A6"]["best"] == "repq-vit" and t["W6A6"]["within 1 point"]
    vs = [{"protocol": "paper", "setting": "W4A4", "method": "repq+ranking", "difference (points)": 1.0,
           "95 % interval": [0.2, 1.8], "McNemar p": 0.01}]
    g = answer(records, 78.0, vs, ["W6A6", "W4A4"])
    assert g["best_w4"] == "repq+ranking" and g["loss_ratio"] == "0.17" and g["half_verdict"] == "at most half"
    assert g["combo_w4_verdict"].startswith("better") and g["combo_w4_ci"] == "[+0.20, +1.80]"
    assert g["low_setting"] == "W4A4" and g["default_minmax_w4_top1"] == "70.00"
    assert g["ptq4vit_w4_top1"] == "n/a"  # not measured: said so, never a made-up number
    table = accuracy_table(records, "paper", ["W6A6", "W4A4"], ["min-max", "repq-vit", "repq+ranking"])
    assert table.loc["repq+ranking", "W4A4"] == 75.0 and table.columns.tolist() == ["W6A6", "W4A4"]
    assert table.loc["repq+ranking", "W6A6"] == "not run"  # a gap says so, never NaN


def test_sqnr_table():
    records = {("paper", "W4A4", "min-max"): _rec(60.0, {"post-LN": 10.0, "post-softmax": 3.0, "post-GELU": None,
                                                          "other": 15.0})}
    t = sqnr_table(records, "paper", "W4A4")
    assert set(t.activation) == {"post-LN", "post-softmax", "other"} and len(sqnr_table(records, "paper", "W8A8")) == 0
