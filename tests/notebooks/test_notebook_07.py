"""Notebook 07 end to end on a tiny setting: the energy tables of both models, every ONNX engine on
ResNet-18, and the ViT's engines without the conv-only one, each row read back on a rerun."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TINY = {"profile": "quick", "n_eval": 50, "n_calib": 8, "seed": 0, "latency_rounds": 1, "runs_batch1": 2,
        "runs_batch64": 1, "batches": [1, 8]}


def run(results_dir: Path, out: Path, **params) -> dict:
    pm.execute_notebook(str(NOTEBOOKS / "07_energy.ipynb"), str(out), kernel_name="python3", cwd=str(NOTEBOOKS),
                        parameters={**TINY, "results_dir": str(results_dir), **params}, progress_bar=False)
    return json.loads((results_dir / "07_energy.json").read_text())


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return results, run(results, results / "out.ipynb", model="resnet18_cifar")


def test_07_measures_every_engine_on_resnet18(resnet):
    _, doc = resnet
    assert doc["notebook"] == "07_energy" and doc["provenance"]["model"] == "resnet18_cifar"
    rows = doc["rows"]
    assert [r["engine"] for r in rows] == ["torch", "torch (simulated)", "fp32", "ours", "ours+req", "ort-MinMax",
                                           "ort-Entropy", "ort-Percentile"]
    for r in rows:
        for key in ("model", "method", "w_bits", "a_bits", "granularity", "top1", "protocol", "energy_pj"):
            assert key in r, key
        assert 0.0 <= r["top1"] <= 100.0 and r["energy_pj"] > 0
    fp32, sim = rows[2], rows[1]
    assert sim["w_bits"] == sim["a_bits"] == 8 and rows[0]["top1"] > 50.0  # the shipped model, not random
    for r in rows[3:]:
        assert r["latency_ms_b1"] > 0 and r["latency_ms_b8"] > 0 and r["speedup_b8"] > 0
        assert 0.2 < r["size_bytes"] / fp32["size_bytes"] < 0.3  # int8 weights: about a quarter
        assert abs(r["size_bytes"] / r["predicted_size_bytes"] - 1) < 0.02  # the cost table prices the file
        assert r["int_kernels"] > 0
    assert rows[4]["float_kernels"] < rows[3]["float_kernels"]  # requantized conv outputs: int8 convs
    assert fp32["speedup_b1"] == 1.0
    # energy tables, the sensitivity, the headline check and the log-softmax check are written
    assert {r["setting"] for r in doc["energy"]} == {"FP32", "W8A8", "W6A6", "W4A4"}
    assert {r["bits"] for r in doc["headline"]} == {8, 6, 4}
    assert {r["grid"] for r in doc["log_softmax_integer_check"]} == {"log2", "log√2"}
    assert doc["mixed_precision"] == []  # notebook 06's results are not in this results_dir


def test_07_runs_the_vit_without_the_conv_only_engine_and_reads_rows_back(resnet, tmp_path):
    results, _ = resnet
    before = set((results / "rows").iterdir())
    doc = run(results, tmp_path / "out.ipynb", models=["resnet18_cifar", "deit_tiny_cifar"],
              engines=["fp32", "ours", "ours+req"])
    vit = [r for r in doc["rows"] if r["model"] == "deit_tiny_cifar"]
    assert [r["engine"] for r in vit] == ["torch", "torch (simulated)", "fp32", "ours"]
    assert doc["skipped_engines"]["deit_tiny_cifar"] == {"ours+req": "no quantized conv: nothing to requantize"}
    assert set(doc["provenance_by_model"]) == {"resnet18_cifar", "deit_tiny_cifar"}
    new = {p.name for p in set((results / "rows").iterdir()) - before}
    # ResNet-18's rows are read back, only its latency over three engines is new, and the ViT's
    # float, simulated, two engines and latency records
    assert len(new) == 6
