import copy
import json

import pytest

from vitquant_core.energy import DEFAULT_CONSTANTS, ConstantsError, constants_from_json, load_constants


@pytest.fixture
def shipped():
    return json.loads(DEFAULT_CONSTANTS.read_text())


def _write(tmp_path, d):
    p = tmp_path / "constants.json"
    p.write_text(json.dumps(d))
    return p


def test_shipped_horowitz_figures_in_pj():
    c = load_constants()
    assert c.compute == {"int8_add": 0.03, "int8_mult": 0.2, "int32_add": 0.1, "int32_mult": 3.1,
                         "fp32_add": 0.9, "fp32_mult": 3.7}
    assert c.memory == {"sram_read_64bit": (10.0, 100.0), "dram_access_64bit": (1300.0, 2600.0)}  # nJ -> pJ
    assert "Horowitz" in c.citation and "ISSCC" in c.citation and "2014" in c.citation
    assert c.memory_pj_per_bit("dram_access_64bit", "high") == 2600 / 64
    assert c.memory_pj_per_bit("sram_read_64bit") == 10 / 64


def test_units_converted(tmp_path, shipped):
    d = copy.deepcopy(shipped)
    d["compute"]["int8_add"] = {"value": 30, "unit": "fJ"}
    d["memory"]["sram_read_64bit"] = {"low": 0.01, "high": 0.1, "unit": "nJ"}
    c = load_constants(_write(tmp_path, d))
    assert c.compute["int8_add"] == pytest.approx(0.03)
    assert c.memory["sram_read_64bit"] == pytest.approx((10.0, 100.0))
    assert c.source.endswith("constants.json") and c.name == shipped["name"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["compute"]["int8_mult"].update(unit="kcal"), r"compute\.int8_mult: unknown unit 'kcal'"),
    (lambda d: d["compute"]["int8_mult"].pop("unit"), r"compute\.int8_mult lacks \['unit'\]"),
    (lambda d: d["compute"]["fp32_add"].update(value=-0.9), r"compute\.fp32_add\.value is negative"),
    (lambda d: d["memory"]["dram_access_64bit"].update(low=-1.3), r"dram_access_64bit\.low is negative"),
    (lambda d: d["memory"]["sram_read_64bit"].update(low=200), r"sram_read_64bit: low \(200.0 pJ\) is above high"),
    (lambda d: d["compute"].pop("int32_mult"), r"'compute' lacks \['int32_mult'\]"),
    (lambda d: d["memory"].pop("dram_access_64bit"), r"'memory' lacks \['dram_access_64bit'\]"),
    (lambda d: d.pop("citation"), r"missing \['citation'\]"),
    (lambda d: d.update(citation=" "), r"'citation' must say where the figures come from"),
    (lambda d: d["compute"]["int8_add"].update(value="0.03"), r"int8_add\.value must be a finite number"),
    (lambda d: d["compute"]["int8_add"].update(value=float("nan")), r"int8_add\.value must be a finite number"),
    (lambda d: d["compute"].update(int8_add=0.03), r"compute\.int8_add must be an object"),
], ids=["bad-unit", "no-unit", "negative", "negative-range", "low-above-high", "missing-compute",
        "missing-memory", "no-citation", "empty-citation", "string", "nan", "bare-number"])
def test_bad_files_raise_clearly(tmp_path, shipped, edit, message):
    d = copy.deepcopy(shipped)
    edit(d)
    with pytest.raises(ConstantsError, match=message):
        load_constants(_write(tmp_path, d))


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no energy constants file"):
        load_constants(tmp_path / "absent.json")
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ConstantsError, match="not valid JSON"):
        load_constants(p)
    with pytest.raises(ConstantsError, match="must be a JSON object"):
        constants_from_json([1, 2])
