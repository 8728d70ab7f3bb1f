"""Notebook 07's study functions: tables checked against hand calculations on a two-operation table,
notebook 06's hook, the integer log-softmax check, and the engines' rows on constructed records."""
import json
import math

import pytest
import torch
import torch.nn as nn

from vitquant_core import QuantConfig
from vitquant_core.cost import OpCost
from vitquant_core.energy import energy_summary
from vitquant_core.energy import int8 as I
from vitquant_core.energy import study as S
from vitquant_core.rowstore import Record

DRAM_BIT = 1300 / 64  # pJ per bit, low end
SRAM_BIT = 10 / 64
# a Linear (100 weights, 10 biases, 50 inputs) and an attention matmul (16 softmax + 8 v elements)
LIN = OpCost("blocks.0.mlp.fc1", "linear", 1000, 110, 100, 10, 50, 0, 20, "blocks.0.mlp.fc1", "blocks.0.mlp.fc1")
AV = OpCost("a.matmul_av", "matmul", 64, 0, 0, 0, 16, 8, 8, "a.softmax", "a.matmul_av")
TABLE = [LIN, AV]
FP32 = 1000 * 4.6 + 110 * 32 * DRAM_BIT + 50 * 32 * SRAM_BIT + 64 * 4.6 + 24 * 32 * SRAM_BIT


def test_energy_by_setting_by_hand():
    t = S.energy_by_setting(TABLE, ["W8A8"], "default")
    # default protocol: the softmax output stays float, so attn·v is a float MAC with v at 8 bits
    w8 = 1000 * 0.3 + (100 * 8 + 10 * 32) * DRAM_BIT + 50 * 8 * SRAM_BIT + 64 * 4.6 + (16 * 32 + 8 * 8) * SRAM_BIT
    assert t.loc["FP32", "total (µJ)"] == pytest.approx(FP32 / 1e6)
    assert t.loc["W8A8", "total (µJ)"] == pytest.approx(w8 / 1e6)
    assert t.loc["W8A8", "compute (µJ)"] == pytest.approx((300 + 64 * 4.6) / 1e6)
    assert t.loc["W8A8", "reduction vs FP32 (%)"] == pytest.approx(100 * (1 - w8 / FP32))
    assert t.loc["FP32", "reduction vs FP32 (%)"] == 0
    # under "paper" the softmax output is quantized too: an integer MAC at 8 x 8 bits
    p = S.energy_by_setting(TABLE, ["W8A8"], "paper")
    assert p.loc["W8A8", "compute (µJ)"] == pytest.approx((300 + 64 * 0.3) / 1e6)


def test_sensitivity_scenarios_by_hand():
    s = S.sensitivity([LIN], ["W4A4"], "default").set_index("scenario")
    assert list(s.index) == list(S.SCENARIOS)
    w4 = 1000 * (0.2 * 16 / 64 + 0.1)
    # weights 400 + biases 320 bits and inputs 200 bits, all in DRAM
    fp_dram = 4600 + (3520 + 1600) * DRAM_BIT
    assert s.loc["all in DRAM", "reduction vs FP32 (%)"] == pytest.approx(100 * (1 - (w4 + 920 * DRAM_BIT) / fp_dram))
    half = w4 + 720 * DRAM_BIT / 2 + 200 * SRAM_BIT
    assert s.loc["DRAM ×0.5", "total (µJ)"] == pytest.approx(half / 1e6)
    sram_hi = w4 + 920 * 100 / 64
    assert s.loc["all in SRAM (high end)", "memory share (%)"] == pytest.approx(100 * (920 * 100 / 64) / sram_hi)


def test_headline_check_is_the_stated_formula():
    h = S.headline_check([LIN])
    e8 = 1000 * 0.23 + 160 * 8 * DRAM_BIT  # N_mem: 110 parameters + 50 inputs
    e32 = 1000 * 0.23 * 16 + 160 * 32 * DRAM_BIT
    assert h.loc[8, "claimed (%)"] == 86.0 and list(h.index) == [8, 6, 4]
    assert h.loc[8, "formula vs its 32-bit self (%)"] == pytest.approx(100 * (1 - e8 / e32))
    assert h.loc[8, "formula vs FP32 (%)"] == pytest.approx(100 * (1 - e8 / (4600 + 160 * 32 * DRAM_BIT)))
    # memory falls by exactly 1 - b/32, compute faster: the total reduction is at least 1 - b/32
    assert (h["formula vs its 32-bit self (%)"] >= 100 * (1 - h.index / 32)).all()


def test_mixed_precision_hook_prices_notebook_06_configs_or_says_they_are_absent(tmp_path):
    empty, note = S.mixed_precision_energy(tmp_path, "m", TABLE)
    assert empty.empty and "not in results_dir" in note
    cfg = QuantConfig.uniform(4, 4, keep_float=())
    doc = {"notebook": "06_mixed_precision", "provenance": {},
           "rows": [{"model": "m", "method": "mixed-milp", "budget": "energy <= 50 %", "top1": 80.5,
                     "config": cfg.to_json()},
                    {"model": "other", "method": "mixed-milp", "top1": 70.0, "config": cfg.to_json()},
                    {"model": "m", "method": "fp32", "top1": 90.0}]}
    (tmp_path / "06_mixed_precision.json").write_text(json.dumps(doc))
    t, note = S.mixed_precision_energy(tmp_path, "m", TABLE)
    assert len(t) == 1 and note.startswith("1 configurations of m")
    s = energy_summary(TABLE, cfg)
    assert t.loc[0, "total (µJ)"] == pytest.approx(s["total_pj"] / 1e6)
    assert t.loc[0, "reduction vs FP32 (%)"] == pytest.approx(100 * s["reduction_vs_fp32"])
    assert t.loc[0, "top-1 (%)"] == 80.5 and t.loc[0, "budget"] == "energy <= 50 %"
    none, note = S.mixed_precision_energy(tmp_path, "absent", TABLE)
    assert none.empty and "no configuration of absent" in note


def test_log2_softmax_is_exact_in_shifts_and_log_sqrt2_errs_only_by_its_constant():
    t = S.log_softmax_integer_check(bits=4)
    assert t.loc["log2", "max relative error"] == 0.0
    coarse = t.loc["log√2", "max relative error"]
    assert 0 < coarse < 1e-3
    fine = S.log_softmax_integer_check(bits=4, sqrt2_bits=20).loc["log√2", "max relative error"]
    assert fine < coarse / 100  # a finer √2 constant removes the error: the shifts are exact
    assert "362/2^8" in t.loc["log√2", "integer operations"]  # round(√2 · 256) = 362


def test_parameters_are_checked():
    assert S.resolve_models(None, ["a", "b"]) == ["a", "b"]
    assert S.resolve_models("x", ["a", "b"]) == ["x"]
    with pytest.raises(TypeError, match="models"):
        S.resolve_models(None, "resnet18_cifar")
    with pytest.raises(ValueError, match="checkpoint"):
        S.resolve_models(None, ["a", "b"], checkpoint="w.safetensors")
    S.check_study_parameters(["W8A8"], ["fp32", "ours"], "default", [1, 64])
    with pytest.raises(ValueError, match="fp32"):
        S.check_study_parameters(["W8A8"], ["ours"], "default", [1])
    with pytest.raises(ValueError, match="unknown"):
        S.check_study_parameters(["W8A8"], ["fp32", "tensorrt"], "default", [1])
    with pytest.raises(ValueError, match="float"):
        S.check_study_parameters(["W8"], [], "default", [1])
    with pytest.raises(ValueError, match="batch"):
        S.check_study_parameters(["W8A8"], [], "default", [0])
    with pytest.raises(ValueError, match="protocol"):
        S.check_study_parameters(["W8A8"], [], "fp", [1])
    with pytest.raises(ValueError, match="profile"):
        S.study_parameters("huge", n_eval=None)
    assert S.study_parameters("full", n_eval=None, n_calib=7) == {"n_eval": 0, "n_calib": 7}


def _engine(engine, top1, size, predicted):
    return Record(engine, {"model": "m", "engine": engine, "top1": top1, "size_bytes": size,
                           "predicted_size_bytes": predicted, "agreement_with_simulated": 99.0,
                           "int_kernels": 0 if engine == "fp32" else 20,
                           "float_kernels": 20 if engine == "fp32" else 1})


def _result():
    lat = {"1": {"fp32": 2.0, "ours+req": 1.0, "ort-MinMax": 1.6}, "64": {"fp32": 60.0, "ours+req": 18.0,
                                                                         "ort-MinMax": 30.0}}
    return {"simulated": Record("s", {"top1": 90.0}),
            "engines": {"fp32": _engine("fp32", 91.0, 4_000_000, 3_900_000),
                        "ours+req": _engine("ours+req", 90.2, 1_100_000, 1_000_000),
                        "ort-MinMax": _engine("ort-MinMax", 89.0, 1_050_000, 980_000)},
            "latency": Record("l", {"latency_ms": lat}), "skipped": {}}


def test_engine_rows_and_table_from_constructed_records():
    rows = I.engine_rows(_result())
    ours = next(r for r in rows if r["engine"] == "ours+req")
    assert ours["speedup_b64"] == pytest.approx(60 / 18, abs=1e-3) and ours["latency_ms_b1"] == 1.0
    assert ours["simulated_top1"] == 90.0
    t = I.engine_table(rows)
    assert t.loc[("m", "ours+req"), "top-1 − simulated (points)"] == pytest.approx(0.2)
    assert t.loc[("m", "fp32"), "size (MB)"] == 4.0 and t.loc[("m", "ours+req"), "int8 / float kernels"] == "20 / 1"
    # a latency not measured for one engine reads "not measured", never NaN
    partial = rows[:2] + [{k: v for k, v in rows[2].items() if not k.startswith(("latency", "speedup"))}]
    t2 = I.engine_table(partial)
    assert t2.loc[("m", "ort-MinMax"), "latency (ms) @ batch 64"] == "not measured"
    assert not t2.isna().any().any()


def test_answer_glues_every_name_and_n_a_for_the_missing_model():
    study = {"model": "m", "energy": S.energy_by_setting(TABLE, ["W8A8", "W4A4"], "default"),
             "sensitivity": S.sensitivity(TABLE, ["W8A8", "W4A4"], "default"), "headline": S.headline_check(TABLE),
             "rows": I.engine_rows(_result())}
    g = S.answer([study], ["W8A8", "W4A4"])
    assert all(isinstance(v, str) for v in g.values())
    assert g["m1_name"] == "m" and g["m1_speedup64"] == "3.33" and g["m1_onnx_top1"] == "90.20"
    assert g["m1_size_ratio"] == f"{4 / 1.1:.2f}" and g["m1_pred_size_ratio"] == "3.90"
    assert g["m1_vs_ort"].startswith("at least ONNX Runtime's best") and "ort-MinMax, 89.00 %" in g["m1_vs_ort"]
    assert g["m1_w8_red"] == f"{study['energy'].loc['W8A8', 'reduction vs FP32 (%)']:.1f}"
    assert g["m2_name"] == g["m2_speedup64"] == "n/a" and g["low_setting"] == "W4A4"
    assert g["claim8"] == "86" and "misses them" in g["head_verdict"]


def test_interleaved_latency_and_predicted_size_of_a_real_onnx_file(tmp_path):
    from vitquant_core.cost import cost_table
    from vitquant_core.export import export_fp32, file_size

    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    path = export_fp32(m, torch.randn(2, 3, 4, 4), tmp_path / "m.onnx")
    ms = I.time_interleaved({"a": path, "b": path}, batch=4, rounds=2, runs=2, threads=1)
    assert set(ms) == {"a", "b"} and all(0 < v < 1000 for v in ms.values())
    predicted = I.predicted_size_bytes(cost_table(m, (3, 4, 4)), None)
    assert predicted == 4 * (48 * 64 + 64 + 64 * 10 + 10)
    assert predicted < file_size(path) < predicted + 2_000  # the graph's own bytes on top
    assert math.isclose(I.predicted_size_bytes(cost_table(m, (3, 4, 4)), QuantConfig.uniform(8, 8, keep_float=())),
                        48 * 64 + 64 * 10 + 4 * 74)


def test_engine_config_prices_what_each_engine_quantizes():
    assert I.engine_config("fp32", "default") is None
    assert I.engine_config("ort-Entropy", "default").rules == ()
    ours = I.engine_config("ours", "default")
    assert ours.default.w_bits == 8 and any(p == "*.softmax" for p, _ in ours.rules)
