"""Pareto fronts on constructed points with known fronts, and points gathered from a constructed
results directory, priced on a hand-made one-layer cost table whose energies are worked by hand."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitquant_core.analysis import pareto_report as report  # noqa: E402
from vitquant_core.analysis.pareto import gather_points, mark_fronts, pareto_front, row_config  # noqa: E402
from vitquant_core.cost import OpCost  # noqa: E402
from vitquant_core.nn.config import QuantConfig  # noqa: E402


def pts(*pairs):
    return [{"top1": a, "energy_uj": e} for a, e in pairs]


@pytest.mark.parametrize("pairs, front", [
    ([(90, 10), (85, 5), (80, 8), (90, 12), (70, 1)], [True, True, False, False, True]),
    ([(90, 10), (90, 11)], [True, False]),  # a tie in accuracy: the dearer one is dominated
    ([(90, 10), (91, 10)], [False, True]),  # a tie in cost: the less accurate one is dominated
    ([(90, 10), (90, 10), (80, 20)], [True, True, False]),  # duplicates do not dominate each other
    ([(50, 1)], [True]),
    ([], []),
], ids=["five", "tie-top1", "tie-cost", "duplicates", "one", "none"])
def test_front_of_constructed_points(pairs, front):
    assert pareto_front(pts(*pairs)) == front


def test_missing_objective_is_neither_on_the_front_nor_dominating():
    points = [{"top1": 99.0, "latency_ms": None}, {"top1": 80.0, "latency_ms": 3.0},
              {"top1": 70.0, "latency_ms": math.nan}, {"top1": 75.0, "latency_ms": 4.0}]
    assert pareto_front(points, "top1", "latency_ms") == [False, True, False, False]


def test_front_takes_a_dataframe_and_several_objectives():
    df = pd.DataFrame({"top1": [90, 90, 80], "energy_uj": [10, 10, 5], "size_mb": [2, 1, 3]})
    assert pareto_front(df, "top1", ["energy_uj", "size_mb"]) == [False, True, True]
    assert pareto_front(df, ["top1"], []) == [True, True, False]


def test_front_refuses_no_objective_or_one_both_ways():
    with pytest.raises(ValueError, match="at least one objective"):
        pareto_front(pts((1, 1)), [], [])
    with pytest.raises(ValueError, match="both maximised and minimised"):
        pareto_front(pts((1, 1)), "top1", ["top1"])


# One conv of 100 MACs, 10 weights, no bias, 5 input elements. With Horowitz's low ends
# (DRAM 1.3 nJ / 64 bits = 20.3125 pJ per bit for weights, SRAM 10 pJ / 64 = 0.15625 pJ per bit
# for activations):
#   FP32: 100 × 4.6 + 10·32 × 20.3125 + 5·32 × 0.15625 = 460 + 6500 + 25 = 6985 pJ
#   W8A8: 100 × (0.2 + 0.1) + 10·8 × 20.3125 + 5·8 × 0.15625 = 30 + 1625 + 6.25 = 1661.25 pJ
#   W4A4: 100 × (0.2·16/64 + 0.1) + 10·4 × 20.3125 + 5·4 × 0.15625 = 15 + 812.5 + 3.125 = 830.625 pJ
CONV = OpCost("layer1.0.conv1", "conv", 100, 10, 10, 0, 5, 0, 5, "layer1.0.conv1", "layer1.0.conv1")
TABLES = {"tiny": [CONV]}
PROV = {"commit": "abc123", "model": "tiny", "checkpoint_sha256": "f00d", "n_calib": 8, "n_eval": 50, "seed": 0}


def row(method, w, a, top1, **extra):
    return {"model": "tiny", "method": method, "w_bits": w, "a_bits": a, "granularity": "per_channel", "top1": top1,
            **extra}


@pytest.fixture
def results(tmp_path):
    w4 = QuantConfig.from_label("W4A4").to_json()
    docs = {
        "02_ptq": [row("fp32", 32, 32, 90.0), row("ptq", 8, 8, 89.5, a_observer="minmax"),
                   row("ptq", 4, 4, 80.0, a_observer="mse", config=w4), row("ptq", 8, 8, 88.0, a_observer="minmax")],
        "07_energy": [row("fp32", 32, 32, 90.0, protocol="none", engine="torch"),
                      row("vitquant-int8", 8, 8, 89.4, protocol="default", engine="ours", latency_ms_b64=2.0),
                      row("fp32", 32, 32, 90.0, protocol="none", engine="fp32", latency_ms_b64=6.0)],
    }
    for name, rows in docs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"notebook": name, "provenance": PROV, "rows": rows}))
    return tmp_path


def test_gather_prices_each_row_at_its_widths_and_merges_duplicates(results):
    points = gather_points(results, ["tiny", "absent"], ["02_ptq", "04_vit_quantizers", "07_energy"], tables=TABLES)
    df = points.frame.set_index("id")
    assert list(df.index) == ["P01", "P02", "P03", "P04", "P05", "P06"]  # 07's torch FP32 merges into P01
    assert df.loc["P01", "sources"] == "02_ptq, 07_energy"
    assert df.loc["P01", "energy_uj"] == pytest.approx(6985e-6) and df.loc["P01", "size_mb"] == pytest.approx(40e-6)
    assert df.loc["P02", "energy_uj"] == pytest.approx(1661.25e-6) and df.loc["P02", "size_mb"] == pytest.approx(10e-6)
    assert df.loc["P03", "energy_uj"] == pytest.approx(830.625e-6) and df.loc["P03", "size_mb"] == pytest.approx(5e-6)
    assert df.loc["P03", "method"] == "mse" and df.loc["P02", "method"] == "min-max"  # 02's observer names it
    assert df.loc["P05", "latency_ms"] == 2.0 and df.loc["P05", "setting"] == "W8A8 (ours)"
    assert df.loc["P05", "energy_uj"] == pytest.approx(1661.25e-6)  # priced from W8A8 under "default"
    assert df.loc["P06", "latency_ms"] == 6.0 and math.isnan(df.loc["P02", "latency_ms"])
    assert set(df.fp32_top1) == {90.0}
    assert points.notes == ["04_vit_quantizers.json is not in results_dir: its configurations are not on this page.",
                            "absent: no configuration in the results read."]


def test_fronts_cheapest_within_one_point_and_the_answer(results):
    points = gather_points(results, ["tiny"], ["02_ptq", "07_energy"], tables=TABLES)
    fronts = mark_fronts(points).set_index("id")
    # energy: P03 (80.0, 830.6 pJ), P02 (89.5, 1661.25 pJ) and FP32 (90.0, 6985 pJ); P04 and P05
    # cost what P02 costs and are less accurate; the ONNX FP32 row P06 ties P01 and is kept
    assert list(fronts.index[fronts.front_energy_uj]) == ["P01", "P02", "P03", "P06"]
    assert list(fronts.index[fronts.front_latency_ms]) == ["P05", "P06"]
    best = report.cheapest_within(points, "tiny")
    assert best.id == "P02"  # 89.5 ≥ 90 − 1 and cheapest; P05 (89.4) costs the same
    g = report.answer(points, ["tiny"])
    assert g["n_points"] == "6" and g["n_latency"] == "2" and g["m2_summary"] == "n/a"
    assert "P02 (min-max W8A8, default) at 89.50 % and 0.00 µJ, 76.2 % below FP32" in g["m1_summary"]
    table = report.front_table(points, "tiny", "energy_uj")
    assert list(table.index) == ["P03", "P02", "P01", "P06"]
    assert table.loc["P02", "latency (ms)"] == "not measured" and table.loc["P06", "latency (ms)"] == 6.0


def test_describe_says_what_was_quantized_and_by_which_run(results):
    points = gather_points(results, None, ["02_ptq"], tables=TABLES)
    text = report.describe(points, "P03")
    assert text.startswith("P03: tiny, mse, W4A4 under protocol default (per_channel)")
    assert "energy 0.00 µJ" in text and "4-bit per_channel weights" in text and '"commit": "abc123"' in text
    assert "float (nothing quantized)" in report.describe(points, "P01")
    with pytest.raises(KeyError, match="ids run from P01 to P04"):
        report.describe(points, "P99")


def test_results_rows_carry_a_latency_only_where_measured(results):
    points = gather_points(results, ["tiny"], ["02_ptq", "07_energy"], tables=TABLES)
    rows = {r["point"]: r for r in report.results_rows(points)}
    assert "latency_ms" not in rows["P02"] and rows["P05"]["latency_ms"] == 2.0
    assert rows["P02"]["energy_pj"] == pytest.approx(1661.25) and rows["P02"]["size_bytes"] == 10
    assert rows["P02"]["front_energy_uj"] is True and rows["P04"]["front_energy_uj"] is False


def test_row_config_rules():
    cfg, protocol = row_config({"model": "m", "method": "onnxruntime-minmax", "w_bits": 8, "a_bits": 8,
                                "engine": "ort-MinMax", "protocol": "onnxruntime default"})
    assert protocol == "onnxruntime default" and cfg.rules == () and cfg.default.w_bits == cfg.default.a_bits == 8
    assert row_config({"model": "m", "method": "fp32", "w_bits": 32, "a_bits": 32}) == (None, "none")
    cfg, protocol = row_config({"model": "m", "method": "ptq_weights_only", "w_bits": 6, "a_bits": 32})
    assert protocol == "default" and cfg.default.w_bits == 6 and cfg.default.a_bits is None
    with pytest.raises(ValueError, match="carries no config"):
        row_config({"model": "m", "method": "mse", "w_bits": 4, "a_bits": 4, "protocol": "mine"})
    # a RepQ-ViT row names its transformation beside the config it priced
    repq = {**QuantConfig.uniform(4, 4).to_json(), "method": "repq-vit"}
    cfg, protocol = row_config({"model": "m", "method": "repq-vit", "w_bits": 4, "a_bits": 4, "protocol": "paper",
                                "config": repq})
    assert protocol == "paper" and cfg.default.w_bits == cfg.default.a_bits == 4


def test_picking_a_point_describes_it():
    fig, ax = plt.subplots()
    sc = ax.scatter([1, 2], [3, 4])
    got: list[str] = []
    handler = report.connect_picker(fig, {sc: ["P01", "P02"]}, lambda i: f"<{i}>", out=got.append)
    assert sc.get_picker() == 5
    handler(SimpleNamespace(artist=sc, ind=[1]))
    handler(SimpleNamespace(artist=object(), ind=[0]))  # another artist: ignored
    assert got == ["<P02>"]
    plt.close(fig)


def test_study_parameters_are_checked():
    report.check_study_parameters(["tiny"], ["02_ptq"], 64)
    with pytest.raises(ValueError, match="not notebooks that write configurations"):
        report.check_study_parameters(["tiny"], ["05_sensitivity"], 64)
    with pytest.raises(TypeError, match="models"):
        report.check_study_parameters("tiny", ["02_ptq"], 64)
    with pytest.raises(ValueError, match="latency_batch"):
        report.check_study_parameters(["tiny"], ["02_ptq"], 0)
