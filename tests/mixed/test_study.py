from types import SimpleNamespace

import pytest
import torch

from vitquant_core.cost import cost_table
from vitquant_core.mixed import Problem
from vitquant_core.mixed.report import answer, bits_grid, comparisons
from vitquant_core.mixed.study import (
    allocation_config,
    attention_ties,
    check_study_parameters,
    config_for,
    mixed_repq_quantize,
    problem_costs,
    study_parameters,
    uniform_costs,
)
from vitquant_core.ptq.repq import repq_quantize
from vitquant_core.rowstore import Record

CANDS = ["W4A4", "W8A8", "float"]
OK = dict(candidates=CANDS, references=["W4A4"], sweep=["W6A6"], methods={"m": "mse"}, protocols={"m": "paper"},
          measure="kl")


def test_parameters_resolve_and_refuse_what_cannot_run():
    assert study_parameters("full", n_calib=None, n_eval=7, n_sens=None) == {"n_calib": 64, "n_eval": 7,
                                                                              "n_sens": 1000}
    check_study_parameters(**OK)
    for bad, match in (({"references": ["W4A32"]}, "keeps a tensor in float"),
                       ({"methods": {"m": "ptq4vit"}}, "not known"), ({"candidates": "W4A4"}, "non-empty list"),
                       ({"measure": "hessian"}, "measure"), ({"candidates": ["W4A4", "W4A4"]}, "repeats")):
        with pytest.raises((TypeError, ValueError), match=match):
            check_study_parameters(**{**OK, **bad})


def test_costs_price_each_operation_as_its_uniform_config_does(tiny_vit):
    table = cost_table(tiny_vit, (3, 32, 32))
    rows = {r.name: r for r in table}
    ops = ["patch_embed.proj", "blocks.0.mlp.fc1", "blocks.0.attn.softmax", "blocks.0.attn.matmul_av"]
    costs = problem_costs(table, ops, CANDS, config_for("min-max", "paper"))
    fc1, embed, av = rows["blocks.0.mlp.fc1"], rows["patch_embed.proj"], rows["blocks.0.attn.matmul_av"]
    assert costs["bops"]["blocks.0.mlp.fc1"] == {"W4A4": fc1.macs * 16, "W8A8": fc1.macs * 64,
                                                 "float": fc1.macs * 1024}
    assert costs["bops"]["patch_embed.proj"]["W4A4"] == embed.macs * 4 * 8  # "paper": the image stays at 8 bits
    assert costs["size_bytes"]["blocks.0.mlp.fc1"]["W4A4"] == (fc1.weight_elems * 4 + fc1.bias_elems * 32) / 8
    # attn·v is charged to matmul_av (v's width) at the product of both widths; the tie makes it one choice
    assert costs["bops"]["blocks.0.attn.matmul_av"]["W4A4"] == av.macs * 16
    assert costs["bops"]["blocks.0.attn.softmax"] == dict.fromkeys(CANDS, 0.0)
    assert attention_ties(ops) == [("blocks.0.attn.softmax", "blocks.0.attn.matmul_av")]
    limits = uniform_costs(table, ops, config_for("min-max", "paper")("W4A4"))
    assert limits["bops"] == sum(costs["bops"][op]["W4A4"] for op in ops)
    assert limits["size_bytes"] == sum(costs["size_bytes"][op]["W4A4"] for op in ops)


def test_allocation_config_keeps_the_protocol_and_the_methods_quantizers():
    make = config_for("repq+adalog", "paper")
    choice = {"patch_embed.proj": "W4A4", "blocks.0.attn.softmax": "W4A4", "blocks.0.mlp.fc2": "float",
              "blocks.1.mlp.fc1": "W4A4"}
    cfg = allocation_config(choice, make, "W8A8")
    embed, soft = cfg.spec_for("patch_embed.proj"), cfg.spec_for("blocks.0.attn.softmax")
    assert (embed.w_bits, embed.a_bits) == (4, 8)
    assert (soft.w_bits, soft.a_bits, soft.a_quantizer) == (None, 4, "adalog")
    assert cfg.spec_for("blocks.0.mlp.fc2").keep_float
    fc1 = cfg.spec_for("blocks.1.mlp.fc1")
    assert (fc1.w_bits, fc1.a_bits, fc1.w_observer, fc1.w_signedness) == (4, 4, "quantile_mse", "asymmetric")
    assert cfg.spec_for("blocks.1.mlp.fc2").w_bits == 8  # outside the allocation: the top width


def test_mixed_repq_is_repq_when_uniform_and_gives_each_pair_its_width(tiny_vit):
    torch.manual_seed(0)
    calib, x = [torch.randn(8, 3, 32, 32)], torch.randn(4, 3, 32, 32)
    make = config_for("repq+adalog", "paper")
    ops = [n for n, m in tiny_vit.named_modules() if isinstance(m, torch.nn.Linear)]
    uniform = mixed_repq_quantize(tiny_vit, allocation_config(dict.fromkeys(ops, "W4A4"), make, "W4A4"), calib)
    ref = repq_quantize(tiny_vit, 4, 4, calib, "paper", "adalog", progress=False)
    with torch.no_grad():
        assert torch.allclose(uniform(x), ref(x), atol=1e-5)
    mixed = mixed_repq_quantize(tiny_vit, allocation_config({"blocks.0.attn.qkv": "W4A4",
                                                             "blocks.1.attn.qkv": "W8A8"}, make, "W6A6"), calib)
    q0, q1 = (mixed.get_submodule(f"blocks.{i}.attn.qkv").input_quantizer for i in (0, 1))
    assert (q0.qtype.bits, q1.qtype.bits) == (4, 8) and q0.resolved == q1.resolved == "asymmetric"
    rows = {r["name"]: r for r in mixed.vitquant_report.ops}
    assert rows["blocks.0.mlp.fc1"]["a_bits"] == 6


def test_bits_grid_puts_blocks_on_rows_and_float_at_32():
    g = bits_grid({"conv1": "W8A8", "layer1.0.conv1": "W4A4", "layer1.0.conv2": "float",
                   "layer1.1.conv1": "W3A3", "blocks.0.attn.softmax": "W6A6"})
    assert list(g.index) == ["outside blocks", "layer1.0", "layer1.1", "blocks.0"]
    assert g.loc["layer1.0", "conv2"] == 32 and g.loc["layer1.1", "conv1"] == 3
    assert g.loc["blocks.0", "attn.softmax"] == 6
    assert g.isna().loc["layer1.1", "conv2"]


def _fake_study(n: int = 100) -> dict:
    """Uniform right on the first 60 images, the MILP on the first 85, greedy on the first 70."""
    labels = torch.zeros(n, dtype=torch.long)

    def rec(right: int, method: str) -> Record:
        row = {"top1": float(right), "method": method, "agreement": 100.0 - (90 - right) / 2,
               "predicted_top1_drop": 2.0, "budget": {"used": 9.0, "limit": 10.0},
               "size_budget": {"used": 1.0, "limit": 2.0}}
        return Record("k", row, [0] * right + [1] * (n - right))

    exp = SimpleNamespace(correct=lambda r: torch.tensor(r.predictions) == labels)
    records = {("uniform", "W4A4"): rec(60, "uniform"), ("milp", "W4A4"): rec(85, "mixed-milp"),
               ("greedy", "W4A4"): rec(70, "mixed-greedy")}
    return {"model": "m", "exp": exp, "records": records, "fp_top1": 90.0, "sweep_seconds": 12.0}


def test_comparisons_and_answer_from_constructed_predictions():
    st = _fake_study()
    comp = comparisons(st).set_index(["configuration", "against"])
    milp = comp.loc[("mixed-milp", "uniform")]
    assert milp["difference (points)"] == pytest.approx(25.0) and milp["McNemar p"] == pytest.approx(2 * 0.5 ** 25)
    assert comp.loc[("mixed-milp", "mixed-greedy"), "difference (points)"] == pytest.approx(15.0)
    assert milp["BOPs used / limit"] == pytest.approx(0.9)
    g = answer([st])
    assert g["m1_milp_low"] == "85.00" and g["m1_uni_low"] == "60.00" and g["m1_p_low"] == "6e-08"
    assert g["m1_verdict_low"].startswith("at least as accurate as uniform W4A4 (+25.00 points")
    assert g["m1_vs_greedy"] == "at least as accurate as" and g["m1_milp_high"] == "n/a" and g["m2_name"] == "n/a"
    # measured drop 100 − agreement = (90 − right) / 2 against 2.0 predicted: MILP 2.5 (holds), greedy 10
    assert g["m1_additive"] == "holds for 1 of 2 configurations; measured / predicted ranges 1.25–5.00"


def test_problem_from_costs_is_solvable_with_the_tie(tiny_vit):
    table = cost_table(tiny_vit, (3, 32, 32))
    ops = ["blocks.0.attn.softmax", "blocks.0.attn.matmul_av", "blocks.0.mlp.fc1"]
    sens = {op: {"W4A4": 1.0, "W8A8": 0.1} for op in ops}
    p = Problem(tuple(ops), tuple(CANDS), sens, problem_costs(table, ops, CANDS, config_for("min-max", "paper")),
                attention_ties(ops))
    assert len(p.groups) == 2
