import json

import pytest

from vitquant_core import FLOAT, LayerSpec, QuantConfig
from vitquant_core.cost import OpCost, cost_table
from vitquant_core.energy import (
    DEFAULT_CONSTANTS,
    energy_summary,
    energy_table,
    headline_energy,
    load_constants,
    mac_energy_pj,
)

DRAM_BIT = 1300 / 64  # pJ per bit, low end
SRAM_BIT = 10 / 64

# a Linear (100 weights, 10 biases, 50 inputs) and an attention matmul (16 softmax + 8 v elements)
FC = OpCost("fc", "linear", 1000, 110, 100, 10, 50, 0, 20, "fc", "fc")
AV = OpCost("a.matmul_av", "matmul", 64, 0, 0, 0, 16, 8, 8, "a.softmax", "a.matmul_av")
TABLE = [FC, AV]
# fc at W4A8, softmax output at 6 bits, v at 8 bits
CONFIG = QuantConfig(LayerSpec(8, 8), (("fc", LayerSpec(4, 8)), ("*.softmax", LayerSpec(None, 6))))
FP32_FC = 1000 * 4.6 + 110 * 32 * DRAM_BIT + 50 * 32 * SRAM_BIT
FP32_AV = 64 * 4.6 + (16 + 8) * 32 * SRAM_BIT


def test_mac_energy_law():
    assert mac_energy_pj(8, 8) == pytest.approx(0.2 + 0.1)
    assert mac_energy_pj(4, 8) == pytest.approx(0.2 * 32 / 64 + 0.1)
    assert mac_energy_pj(4, 4, accumulator_bits=16) == pytest.approx(0.2 * 16 / 64 + 0.05)
    assert mac_energy_pj(None, 8) == mac_energy_pj(8, None) == pytest.approx(3.7 + 0.9)
    # the b_w*b_a law from the int8 multiply lands within 4 % of Horowitz's int32 multiply
    assert mac_energy_pj(32, 32) - 0.1 == pytest.approx(3.1, rel=0.04)
    with pytest.raises(ValueError, match="accumulator_bits"):
        mac_energy_pj(8, 8, accumulator_bits=0)


def test_known_config_by_hand():
    df = energy_table(TABLE, CONFIG).set_index("name")
    fc = df.loc["fc"]
    assert (fc.b_a, fc.b_w) == (8, 4)
    assert fc.compute_pj == pytest.approx(1000 * 0.2)
    assert fc.weight_memory_pj == pytest.approx((100 * 4 + 10 * 32) * DRAM_BIT)  # weights from DRAM
    assert fc.act_memory_pj == pytest.approx(50 * 8 * SRAM_BIT)  # activations in SRAM
    av = df.loc["a.matmul_av"]
    assert (av.b_a, av.b_w) == (6, 8)
    assert av.compute_pj == pytest.approx(64 * (0.2 * 48 / 64 + 0.1))
    assert (av.weight_memory_pj, av.act_memory_pj) == (0, pytest.approx((16 * 6 + 8 * 8) * SRAM_BIT))
    total = 200 + 720 * DRAM_BIT + 400 * SRAM_BIT + 16 + 160 * SRAM_BIT
    assert df.total_pj.sum() == pytest.approx(total)
    s = energy_summary(TABLE, CONFIG)
    assert s["total_pj"] == pytest.approx(total)
    assert s["compute_pj"] + s["memory_pj"] == pytest.approx(total)
    assert s["fp32_total_pj"] == pytest.approx(FP32_FC + FP32_AV)
    assert s["reduction_vs_fp32"] == pytest.approx(1 - total / (FP32_FC + FP32_AV))
    assert (s["placement"], s["sram"], s["dram"], s["constants"]) == ("weights_dram", "low", "low", "horowitz_45nm")


def test_fp32_baseline():
    s = energy_summary(TABLE, None)
    assert s["total_pj"] == pytest.approx(FP32_FC + FP32_AV)
    assert s["compute_pj"] == pytest.approx(1064 * 4.6)
    assert s["reduction_vs_fp32"] == 0
    fc_float = QuantConfig(LayerSpec(8, 8), (("fc", FLOAT), ("*.softmax", FLOAT)))
    assert energy_table(TABLE, fc_float).set_index("name").loc["fc"].total_pj == pytest.approx(FP32_FC)


@pytest.mark.parametrize("settings, weight_bit, act_bit", [
    ({"placement": "all_dram"}, DRAM_BIT, DRAM_BIT),
    ({"placement": "all_sram"}, SRAM_BIT, SRAM_BIT),
    ({"placement": "all_sram", "sram": "high"}, 100 / 64, 100 / 64),
    ({"dram": "high"}, 2600 / 64, SRAM_BIT),
    ({"dram_scale": 0.5}, DRAM_BIT / 2, SRAM_BIT),
    ({"dram_scale": 2, "placement": "all_dram"}, 2 * DRAM_BIT, 2 * DRAM_BIT),
], ids=["all-dram", "all-sram", "sram-high", "dram-high", "dram-x0.5", "all-dram-x2"])
def test_placement_and_knobs(settings, weight_bit, act_bit):
    fc = energy_table(TABLE, CONFIG, **settings).set_index("name").loc["fc"]
    assert fc.weight_memory_pj == pytest.approx(720 * weight_bit)
    assert fc.act_memory_pj == pytest.approx(400 * act_bit)
    assert fc.compute_pj == pytest.approx(200)


@pytest.mark.parametrize("placement", ["weights_dram", "all_dram", "all_sram"])
def test_reduction_monotone_in_bits(tiny_vit, placement):
    table = cost_table(tiny_vit, (3, 32, 32))
    reductions = [energy_summary(table, QuantConfig.uniform(b, b, keep_float=()), placement=placement)
                  ["reduction_vs_fp32"] for b in (16, 8, 6, 4, 3, 2)]
    assert all(0 < r < 1 for r in reductions)
    assert reductions == sorted(reductions) and len(set(reductions)) == len(reductions)
    headline = [headline_energy(table, b)["reduction_vs_formula32"] for b in (16, 8, 6, 4, 3, 2)]
    assert headline == sorted(headline) and len(set(headline)) == len(headline)


def test_headline_formula_by_hand():
    n_mac, n_mem = 1064, 110 + 50 + 16 + 8
    h = headline_energy(TABLE, 4)
    assert h["compute_pj"] == pytest.approx(n_mac * 0.23 * (4 / 8) ** 2)
    assert h["memory_pj"] == pytest.approx(n_mem * 4 * DRAM_BIT)
    f32 = n_mac * 0.23 * 16 + n_mem * 32 * DRAM_BIT
    assert h["formula32_total_pj"] == pytest.approx(f32)
    assert h["reduction_vs_formula32"] == pytest.approx(1 - h["total_pj"] / f32)
    assert h["fp32_total_pj"] == pytest.approx(n_mac * 4.6 + n_mem * 32 * DRAM_BIT)
    with pytest.raises(ValueError, match="bits must be an int"):
        headline_energy(TABLE, 0)


def test_replaced_constants_file(tmp_path):
    d = json.loads(DEFAULT_CONSTANTS.read_text())
    d["compute"]["int8_mult"]["value"] = 0.4
    d["memory"]["dram_access_64bit"].update(low=2.6, high=5.2)
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(d))
    fc = energy_table(TABLE, CONFIG, str(p)).set_index("name").loc["fc"]
    assert fc.compute_pj == pytest.approx(1000 * (0.4 * 32 / 64 + 0.1))
    assert fc.weight_memory_pj == pytest.approx(720 * 2 * DRAM_BIT)
    assert energy_summary(TABLE, CONFIG, load_constants(p))["total_pj"] == pytest.approx(
        energy_table(TABLE, CONFIG, str(p)).total_pj.sum())


@pytest.mark.parametrize("settings, message", [
    ({"placement": "dram"}, "placement must be one of"),
    ({"sram": "mid"}, "end must be 'low' or 'high'"),
    ({"dram_scale": 0}, "dram_scale must be a positive number"),
    ({"dram_scale": float("inf")}, "dram_scale must be a positive number"),
], ids=["placement", "sram-end", "zero-scale", "inf-scale"])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        energy_table(TABLE, CONFIG, **settings)


def test_bad_constants_argument():
    with pytest.raises(TypeError, match="constants must be EnergyConstants"):
        energy_table(TABLE, CONFIG, {"int8_add": 0.03})
