"""Notebook 08 end to end at the quick profile on a results directory holding notebook 02's committed
full-profile results for resnet20_cifar and a small constructed notebook 07 file: every row becomes
a priced point, the fronts are marked, a missing results file is skipped with a note, and only the
ONNX Runtime rows carry a latency."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
FULL = ROOT / "results" / "full"


def onnx_row(engine, method, bits, top1, latency):
    return {"model": "resnet20_cifar", "method": method, "engine": engine, "w_bits": bits, "a_bits": bits,
            "granularity": "none" if bits == 32 else "per_channel", "protocol": "none" if bits == 32 else "default",
            "top1": top1, "latency_ms_b64": latency}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    shutil.copy(FULL / "02_ptq.json", results / "02_ptq.json")
    rows = [onnx_row("fp32", "fp32", 32, 89.30, 40.0), onnx_row("ours", "vitquant-int8", 8, 89.20, 12.0)]
    prov = {"commit": "0123abc", "model": "resnet20_cifar", "n_calib": 128, "n_eval": 10000, "seed": 0}
    (results / "07_energy.json").write_text(json.dumps({"notebook": "07_energy", "provenance": prov, "rows": rows}))
    out = results / "out.ipynb"
    pm.execute_notebook(str(NOTEBOOKS / "08_pareto.ipynb"), str(out), kernel_name="python3", cwd=str(NOTEBOOKS),
                        parameters={"profile": "quick", "results_dir": str(results), "models": ["resnet20_cifar"],
                                    "sources": ["02_ptq", "04_vit_quantizers", "07_energy"]}, progress_bar=False)
    return json.loads((results / "08_pareto.json").read_text()), nbformat.read(out, as_version=4)


def test_08_prices_every_configuration_and_marks_the_fronts(run):
    doc, _ = run
    committed = json.loads((FULL / "02_ptq.json").read_text())["rows"]
    rows = doc["rows"]
    assert doc["notebook"] == "08_pareto" and doc["read"] == ["02_ptq", "07_energy"]
    assert len(rows) == len(committed) + 2  # every row of 02, and the two ONNX engines
    by = {(r["method"], r["setting"], r["granularity"]): r for r in rows}
    fp32, w8, w4 = by[("fp32", "W32A32", "none")], by[("min-max", "W8A8", "per_channel")], \
        by[("mse", "W4A4", "per_channel")]
    assert fp32["top1"] == 89.3 and w4["top1"] == 86.86  # notebook 02's measurements, not recomputed
    # resnet20: 0.27 M parameters, weights 1.09 MB in fp32 and a quarter of the quantized ones' at 8 bits
    assert fp32["size_bytes"] == pytest.approx(1.087e6, rel=1e-3)
    assert 0.25 < w8["size_bytes"] / fp32["size_bytes"] < 0.26
    assert fp32["energy_pj"] > w8["energy_pj"] > w4["energy_pj"] > 0
    assert w8["energy_pj"] / fp32["energy_pj"] == pytest.approx(59.485 / 365.399, rel=1e-3)
    # on 02's rows the energy front is mse at 4, 6 and 8 bits; mse W8A8 (89.38 %) is more accurate
    # than the float model (89.30 %) at a sixth of its energy, so FP32 is dominated
    front = {(r["method"], r["setting"]) for r in rows if r["front_energy_uj"]}
    assert front == {("mse", "W4A4"), ("mse", "W6A6"), ("mse", "W8A8")}
    latency = {r["setting"]: r["latency_ms"] for r in rows if "latency_ms" in r}
    assert latency == {"W32A32 (fp32)": 40.0, "W8A8 (ours)": 12.0}
    assert {r["setting"] for r in rows if r["front_latency_ms"]} == {"W32A32 (fp32)", "W8A8 (ours)"}
    assert doc["notes"] == ["04_vit_quantizers.json is not in results_dir: its configurations are not on this page."]


def test_08_page_prints_the_skip_and_no_nan(run):
    _, nb = run
    text = "".join(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "04_vit_quantizers.json is not in results_dir" in text
    assert "NaN" not in text and "not measured" in text
    # describe() of the cheapest point within 1 point of FP32: mse W6A6 (89.04 %), cheaper than int8 W8A8
    assert ": resnet20_cifar, mse, W6A6 under protocol default (per_channel)" in text
    assert sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs) == 1
