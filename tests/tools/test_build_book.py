"""The book's keyed build: what counts as a change, and how a stale page is shown."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
bb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bb)


def test_the_book_runs_the_notebooks_the_toc_lists_in_order():
    names = bb.toc_notebooks()
    assert names[:4] == ["00_reference_models", "01_baseline", "02_ptq", "03_ranking_aware"]
    assert all((ROOT / "notebooks" / f"{n}.ipynb").exists() for n in names)


def test_outputs_do_not_change_the_source_key_but_an_edit_does():
    nb = nbformat.read(ROOT / "notebooks" / "01_baseline.ipynb", as_version=4)
    before = bb.source_digest(nb)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="printed\n")]
    code.execution_count = 7
    assert bb.source_digest(nb) == before
    code.source += "\n# an edit"
    assert bb.source_digest(nb) != before


def test_the_parameters_cell_defaults_are_read():
    nb = nbformat.read(ROOT / "notebooks" / "03_ranking_aware.ipynb", as_version=4)
    params = bb.default_parameters(nb)
    assert params["model"] == '"deit_tiny_cifar"' and params["seed"] == "0"


def _files(model: str) -> set[str]:
    restart = json.loads((ROOT / f"checkpoints/{model}.json").read_text()).get("initialised_from")
    exts = ("safetensors", "json", "train.jsonl") + (("init.train.jsonl",) if restart else ())
    return {f"checkpoints/{model}.{ext}" for ext in exts}


def test_a_notebook_depends_only_on_its_own_models_checkpoint():
    """Retraining ResNet-20 must not re-execute the DeiT notebook, and vice versa; 00 shows
    every card and the data-copy probe's runs, so it depends on them all."""
    def deps(name: str, **params) -> set[str]:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        files = bb.checkpoint_files(name, {**bb.default_parameters(nb), **params})
        return {str(p.relative_to(ROOT)) for p in files}

    assert deps("01_baseline") == _files("resnet20_cifar")
    assert deps("03_ranking_aware") == _files("deit_tiny_cifar")
    assert deps("02_ptq", model="resnet18_cifar") == _files("resnet18_cifar")
    assert deps("00_reference_models") == set().union(*(_files(m) for m in (
        "resnet20_cifar", "resnet18_cifar", "deit_tiny_cifar"))) | {"checkpoints/data_copy_probe.json"}


def test_the_key_changes_with_each_of_its_parts(tmp_path):
    data = tmp_path / "data"
    (data / "test" / "cat").mkdir(parents=True)
    (data / "test" / "cat" / "0.jpg").write_bytes(b"x" * 10)
    base = bb.notebook_key("01_baseline", "full", {}, data)
    assert bb.notebook_key("01_baseline", "full", {}, data) == base
    assert bb.notebook_key("01_baseline", "quick", {}, data)["parameters"] != base["parameters"]
    assert bb.notebook_key("01_baseline", "full", {"seed": 1}, data)["key"] != base["key"]
    (data / "test" / "cat" / "0.jpg").write_bytes(b"x" * 11)  # a replaced image
    changed = bb.notebook_key("01_baseline", "full", {}, data)
    assert changed["data"] != base["data"]
    assert bb.stale_reason(base, changed) == "changed since it was executed: data"
    assert bb.stale_reason(None, changed) == "no stored output"


def test_a_stale_page_carries_a_warning_under_its_title(tmp_path):
    src = tmp_path / "in.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · Title"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, src)
    bb.with_banner(src, tmp_path / "out.ipynb", "outputs are stale")
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert cells[0].source == "# 01 · Title"
    assert cells[1].cell_type == "markdown" and cells[1].source == ":::{warning}\noutputs are stale\n:::"


def test_a_repeated_inline_script_is_written_once(tmp_path):
    page = tmp_path / "page.html"
    page.write_text('<head>\n  <script>const A = 1</script>\n  <script src="x.js"></script>\n'
                    '  <script>const A = 1</script>\n  <script src="x.js"></script>\n</head>\n')
    bb.unique_inline_scripts(tmp_path)
    assert page.read_text() == ('<head>\n  <script>const A = 1</script>\n  <script src="x.js"></script>\n'
                                '  <script src="x.js"></script>\n</head>\n')
