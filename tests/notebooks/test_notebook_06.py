"""Notebook 06 end to end on a tiny setting: every solver at two budgets on ResNet-20, each mixed row
within its budget, the comparisons and the additivity table written, and every row read back on a rerun."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TINY = {"profile": "quick", "model": "resnet20_cifar", "n_eval": 50, "n_calib": 8, "n_sens": 32, "seed": 0,
        "methods": {"resnet20_cifar": "min-max"}, "protocols": {"resnet20_cifar": "default"},
        "candidates": ["W4A4", "W8A8", "float"], "references": ["W4A4", "W6A6"], "sweep": []}


def run(results_dir: Path, out: Path) -> dict:
    pm.execute_notebook(str(NOTEBOOKS / "06_mixed_precision.ipynb"), str(out), kernel_name="python3",
                        cwd=str(NOTEBOOKS), parameters={**TINY, "results_dir": str(results_dir)}, progress_bar=False)
    return json.loads((results_dir / "06_mixed_precision.json").read_text())


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return results, run(results, results / "out.ipynb")


def test_06_rows_carry_budgets_they_keep(executed):
    _, doc = executed
    assert doc["notebook"] == "06_mixed_precision" and doc["provenance"]["model"] == "resnet20_cifar"
    rows = doc["rows"]
    assert rows[0]["method"] == "fp32" and rows[0]["top1"] > 50.0  # the shipped model, not random weights
    methods = [(r["method"], r["setting"]) for r in rows[1:]]
    assert methods == [(m, ref) for ref in ("W4A4", "W6A6")
                       for m in ("uniform", "mixed-milp", "mixed-greedy", "mixed-bisection")]
    for r in rows[1:]:
        assert 0.0 <= r["top1"] <= 100.0 and r["protocol"] == "default" and isinstance(r["config"], dict)
        b = r["budget"]
        assert b["kind"] == "bops" and b["reference"] == r["setting"] and b["used"] <= b["limit"] * (1 + 1e-9)
        if r["method"] == "uniform":
            assert b["used"] == b["limit"] and (r["w_bits"], r["a_bits"]) == (int(r["setting"][1]),) * 2
            continue
        s = r["size_budget"]
        assert s["kind"] == "size_bytes" and 0 < s["used"] <= s["limit"] * (1 + 1e-9)
        assert set(r["allocation"].values()) <= {"W4A4", "W8A8", "float"} and r["w_bits"] == "mixed"
    # the W6A6 budget leaves room above W4A4: the MILP spends it on 8-bit operations
    milp6 = next(r for r in rows if r["method"] == "mixed-milp" and r["setting"] == "W6A6")
    assert milp6["counts"].get("W8A8", 0) >= 1
    comp = doc["comparisons"]
    assert len(comp) == 2 * 3 + 2  # three solvers against uniform, and the MILP against greedy, per budget
    assert all(0.0 <= c["McNemar p"] <= 1.0 for c in comp)
    assert len(doc["additivity"]) == 6 and all(a["predicted drop (points)"] >= -100 for a in doc["additivity"])
    assert {r["candidate"] for r in doc["sensitivity"]["resnet20_cifar"]} == {"W4A4", "W8A8"}
    assert doc["sweep_seconds"]["resnet20_cifar"] > 0


def test_06_rerun_reads_every_row_back(executed, tmp_path):
    results, first = executed
    before = {p.name for p in (results / "rows").iterdir()}
    again = run(results, tmp_path / "again.ipynb")
    assert {p.name for p in (results / "rows").iterdir()} == before
    assert [r["top1"] for r in again["rows"]] == [r["top1"] for r in first["rows"]]
