"""Each numbered notebook runs under papermill on a tiny profile and writes the rows it promises;
each follows the page conventions of notebooks/README.md (checked on its source, without running it)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TINY = {"profile": "quick", "n_eval": 200, "n_calib": 32, "seed": 0}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


def run(name: str, results_dir: Path, tmp: Path, **params) -> dict:
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(tmp / f"{name}.ipynb"), kernel_name="python3",
                        cwd=str(NOTEBOOKS), parameters={**TINY, "results_dir": str(results_dir), **params},
                        progress_bar=False)
    return json.loads((results_dir / f"{name}.json").read_text())


def check_contract(doc: dict, name: str) -> None:
    assert doc["notebook"] == name
    prov = doc["provenance"]
    for key in ("commit", "packages", "model", "checkpoint", "checkpoint_sha256", "dataset", "n_calib", "n_eval",
                "seed", "started", "seconds"):
        assert key in prov, key
    assert prov["n_eval"] >= 1 and prov["n_calib"] >= 1
    for row in doc["rows"]:
        for key in ("model", "method", "w_bits", "a_bits", "granularity", "top1"):
            assert key in row, key
        assert 0.0 <= row["top1"] <= 100.0


def test_00_reference_models(results_dir, tmp_path):
    """00 reads every shipped card and log (no retraining) and re-evaluates on request."""
    doc = run("00_reference_models", results_dir, tmp_path, n_eval=100)
    rows = {r["model"]: r for r in doc["rows"]}
    assert set(rows) == {"resnet20_cifar", "resnet18_cifar", "deit_tiny_cifar"}
    from vitquant_core import models as M

    for name, row in rows.items():
        card = M.read_card(M.get_entry(name).default_checkpoint)
        assert row["top1"] == card["test_top1"] and row["checkpoint_sha256"] == card["sha256"]
        assert row["n_eval"] == 100 and 0.0 <= row["top1_reevaluated"] <= 100.0
        assert row["epochs_in_total"] == card.get("epochs_in_total", card["epochs"]) >= row["epochs"]
    # the JPEG copy's cost, from the probe runs shipped beside the cards
    probe = json.loads((M.get_entry("resnet20_cifar").default_checkpoint.parent / "data_copy_probe.json").read_text())
    tta = [r["tta_top1"] for r in probe["rows"]]
    summary = doc["data_copy_probe"]
    mean = sum(tta) / len(tta)
    assert summary["n_runs"] == len(tta) >= 2 and summary["tta_top1_mean"] == pytest.approx(mean, abs=0.006)
    assert summary["difference"] == pytest.approx(mean - probe["published"]["tta_top1"], abs=0.006)
    assert summary["difference"] < 0  # the book's claim: the copy costs the published recipe accuracy


def test_01_baseline(results_dir, tmp_path):
    doc = run("01_baseline", results_dir, tmp_path)
    check_contract(doc, "01_baseline")
    assert doc["provenance"]["n_eval"] == TINY["n_eval"] and doc["provenance"]["n_calib"] == TINY["n_calib"]
    (fp,) = doc["rows"]
    assert fp["method"] == "fp32" and fp["w_bits"] == 32 and fp["a_bits"] == 32
    assert len(fp["per_class_top1"]) == 10
    assert fp["top1"] > 50.0  # the shipped model is trained, not random
    assert len(doc["weight_ranges"]) == len(doc["activation_ranges"]) > 10


def test_02_ptq(results_dir, tmp_path):
    doc = run("02_ptq", results_dir, tmp_path)
    check_contract(doc, "02_ptq")
    rows = doc["rows"]
    fp = next(r for r in rows if r["method"] == "fp32")
    grid = {(r["method"], r["w_bits"], r["a_bits"], r["granularity"], r.get("a_observer")) for r in rows}
    for b in (8, 6, 4):
        for g in ("per_tensor", "per_channel"):
            assert ("ptq_weights_only", b, 32, g, "none") in grid
            assert ("ptq", b, b, g, "minmax") in grid
        for obs in ("percentile", "mse"):
            assert ("ptq", b, b, "per_channel", obs) in grid
    w8a8 = next(r for r in rows if r["method"] == "ptq" and r["w_bits"] == 8 and r["granularity"] == "per_channel"
                and r["a_observer"] == "minmax")
    assert abs(w8a8["top1"] - fp["top1"]) <= 2.0 and w8a8["agreement"] >= 90.0
    assert all(r["config"]["default"]["w_bits"] == r["w_bits"] for r in rows if r["method"] != "fp32")


def test_03_ranking_aware_runs_on_a_tiny_setting(results_dir, tmp_path):
    """03 end to end on the shipped (distilled) deit_tiny_cifar at a tiny setting: the ablation
    rows, the attention-order rows and the calibration times are written."""
    from vitquant_core import models as M

    doc = run("03_ranking_aware", results_dir, tmp_path, n_eval=50, n_calib=8, settings=["W4A4"],
              ablation=["standard", "ranking-aware"], n_candidates=8, max_rounds=2, n_attention_images=2)
    card = M.read_card(M.get_entry("deit_tiny_cifar").default_checkpoint)
    assert doc["provenance"]["checkpoint_sha256"] == card["sha256"]
    assert doc["rows"][0]["top1"] > 30.0  # the shipped model is trained, not random
    methods = [r["method"] for r in doc["rows"]]
    assert methods == ["fp32", "ptq", "ranking-aware"]
    for row in doc["rows"][1:]:
        assert row["w_bits"] == 4 and row["a_bits"] == 4 and row["calib_seconds"] > 0
        assert -1.0 <= row["kendall_tau"] <= 1.0 and row["ranking_loss"] >= 0.0
    assert {r["layer"] for r in doc["attention_order"]} == {f"blocks.{i}.attn" for i in range(12)}
    # the paired test against standard PTQ, and the exhaustive-search check, are written too
    vs = doc["rows"][2]["vs_standard"]
    assert 0.0 <= vs["mcnemar_p"] <= 1.0 and vs["ci95"][0] <= vs["difference"] <= vs["ci95"][1]
    used, exhaustive = doc["search_check"]["table"]
    assert exhaustive["same multipliers as exhaustive"] == "72/72"
    assert used["top-1"] == doc["rows"][2]["top1"]


def test_04_vit_quantizers_runs_on_a_tiny_setting(results_dir, tmp_path):
    """04 end to end at one setting: rows under both protocols, each naming its protocol and what it
    applied, the SQNR by activation kind, and the paired tests against min-max and RepQ-ViT."""
    doc = run("04_vit_quantizers", results_dir, tmp_path, n_eval=50, n_calib=8, settings=["W4A4"],
              methods=["min-max", "repq-vit", "repq+adalog"], n_sqnr_images=4, n_attention_images=2)
    rows = doc["rows"]
    assert rows[0]["method"] == "fp32" and rows[0]["protocol"] == "none"
    got = {(r["protocol"], r["method"]) for r in rows[1:]}
    assert got == {("paper", "min-max"), ("paper", "repq-vit"), ("paper", "repq+adalog"),
                   ("default", "min-max"), ("default", "repq-vit")}  # repq+adalog = repq-vit under default
    for r in rows[1:]:
        assert r["w_bits"] == 4 and r["a_bits"] == 4 and r["applied"]
        if r["method"] != "min-max" or r["protocol"] == "paper":
            assert set(r["sqnr_by_kind"]) == {"post-LN", "post-softmax", "post-GELU", "other"}
    paper_repq = next(r for r in rows if r["protocol"] == "paper" and r["method"] == "repq-vit")
    assert paper_repq["sqnr_by_kind"]["post-softmax"] is not None  # quantized under "paper" only
    assert {c["method"] for c in doc["vs_repq_vit"]} == {"min-max", "repq+adalog"}
    assert all(c["reference"] == "min-max" for c in doc["vs_min_max"])


def test_03_rerun_reads_every_configuration_back(results_dir, tmp_path):
    """A second run with the same parameters calibrates nothing: each row comes from the row store,
    and a new setting is the only thing computed."""
    params = dict(n_eval=50, n_calib=8, settings=["W4A4"], ablation=["standard", "ranking-aware"], n_candidates=8,
                  max_rounds=2, n_attention_images=2, sampling_check=False)
    first = run("03_ranking_aware", results_dir, tmp_path, **params)
    stored = set((results_dir / "rows").iterdir())
    pm.execute_notebook(str(NOTEBOOKS / "03_ranking_aware.ipynb"), str(tmp_path / "again.ipynb"),
                        kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False,
                        parameters={**TINY, "results_dir": str(results_dir), **params, "settings": ["W4A4", "W8A8"]})
    again = json.loads((results_dir / "03_ranking_aware.json").read_text())
    assert again["rows"][:3] == [{**r} for r in first["rows"]]
    new = set((results_dir / "rows").iterdir()) - stored
    assert len(new) == 2  # W8A8 standard and ranking-aware; W4A4 and the float model were read back
    out = nbformat.read(tmp_path / "again.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs)
    assert printed.count("(stored)") == 2


# The page conventions (notebooks/README.md), read from each notebook's source: no execution.
PAGES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
ANSWER_HEADING = "## What the measurements say"
VISIBILITY = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
GLUE_ROLE = re.compile(r"\{glue:text\}`([A-Za-z0-9_]+)(?::[^`]*)?`")


def glued_names(nb: nbformat.NotebookNode) -> set[str]:
    """The names an executed notebook glued (myst-nb's outputs carry them as scrapbook metadata)."""
    return {o["metadata"]["scrapbook"]["name"] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "scrapbook" in o.get("metadata", {})}


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_a_page_opens_with_its_question_its_glued_answer_then_its_parameters(path):
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {path.stem[:2]} · "), \
        "the first cell is the page's title and question: '# NN · Title'"
    answer = cells[1]
    assert answer.cell_type == "markdown" and answer.source.startswith(ANSWER_HEADING), \
        f"the second cell is the answer, headed '{ANSWER_HEADING}'"
    assert len(GLUE_ROLE.findall(answer.source)) >= 2, "the answer's numbers are {glue:text} roles, not typed"
    assert sum(ANSWER_HEADING in c.source for c in cells if c.cell_type == "markdown") == 1
    assert "parameters" in cells[2].metadata.get("tags", []), "the third cell is the one tagged 'parameters'"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_every_code_cell_is_folded_and_drawn_in_the_book_style(path):
    cells = nbformat.read(path, as_version=4).cells
    unfolded = [i for i, c in enumerate(cells)
                if c.cell_type == "code" and not VISIBILITY & set(c.metadata.get("tags", []))]
    assert unfolded == [], f"code cells {unfolded} have none of the tags {sorted(VISIBILITY)}"
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert "use_book_style()" in code and "sns.set_theme(" not in code, "draw with vitquant_core.style"
    assert "from myst_nb import glue" in code


@pytest.mark.parametrize("path", [p for p in PAGES if (ROOT / "results/full/executed" / p.name).exists()],
                         ids=lambda p: p.stem)
def test_the_stored_page_glues_every_number_its_answer_uses(path):
    """In the committed full-profile copy, each {glue:text} name of the answer was glued."""
    nb = nbformat.read(ROOT / "results/full/executed" / path.name, as_version=4)
    answer = next(c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(ANSWER_HEADING))
    missing = set(GLUE_ROLE.findall(answer.source)) - glued_names(nb)
    assert missing == set(), f"glued nowhere in the executed notebook: {sorted(missing)}"
