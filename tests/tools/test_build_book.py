"""The book's keyed build: what counts as a change, and how a stale page is shown."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

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
    # a page over several models depends on each of them, or on the one `model` names
    assert deps("07_energy") == _files("resnet18_cifar") | _files("deit_tiny_cifar")
    assert deps("07_energy", model="resnet20_cifar") == _files("resnet20_cifar")
    assert deps("07_energy", models=["deit_tiny_cifar"]) == _files("deit_tiny_cifar")
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
    bb.write_page(src, tmp_path / "out.ipynb", "outputs are stale")
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert cells[0].source == "# 01 · Title"
    assert cells[1].cell_type == "markdown" and cells[1].source == ":::{warning}\noutputs are stale\n:::"
    assert cells[2].metadata.tags == ["hide-input"]


def _cell(source: str, tags: list[str], *outputs) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": tags} if tags else {})
    cell.outputs = list(outputs)
    return cell


def test_a_page_is_published_folded_without_the_injected_parameters():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 02 · PTQ"),
        _cell("bits = [8]", ["parameters"]),
        _cell(f"results_dir = '{ROOT}/results/full'", ["injected-parameters"]),
        _cell("setup()", []),
        _cell("glue('x', 1)", ["remove-cell"]),
        _cell("plot()", ["hide-cell"]),
        _cell("table()", ["remove-input", "full-width"])])
    tags = [c.metadata.get("tags") for c in bb.publish(nb).cells]
    assert tags == [None, ["parameters", "hide-input"], ["injected-parameters", "remove-cell"], ["hide-input"],
                    ["remove-cell"], ["hide-cell"], ["remove-input", "full-width"]]


def test_progress_bars_and_machine_paths_leave_the_outputs():
    stream = nbformat.v4.new_output
    nb = nbformat.v4.new_notebook(cells=[_cell("run()", [],
        stream("stream", name="stderr", text="ptq W4A4:  45%|████▌     | 18/40 [00:04<00:04,  4.53it/s]\r"
                                             "ptq W4A4: 100%|██████████| 40/40 [00:09<00:00,  4.45it/s]\n"),
        stream("stream", name="stderr", text=f"{ROOT}/.venv/lib/tqdm/auto.py:21: TqdmWarning: IProgress not "
                                             "found.\n  from .autonotebook import tqdm as notebook_tqdm\n"),
        stream("stream", name="stderr", text=f"UserWarning: {ROOT}/data is read-only\n"),
        stream("stream", name="stdout", text=f"checkpoint {ROOT}/checkpoints/r.safetensors\n"),
        stream("display_data", data={"text/plain": f"'{ROOT}/x'", "image/png": "iVBOR"}))])
    nb.metadata["papermill"] = {"input_path": f"{ROOT}/notebooks/02_ptq.ipynb", "parameters": {"seed": 0}}
    out = bb.clean_outputs(nb)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in out.cells[0].outputs] == [
        ("stream", "stderr", "UserWarning: data is read-only\n"),
        ("stream", "stdout", "checkpoint checkpoints/r.safetensors\n"), ("display_data", None, None)]
    assert out.cells[0].outputs[2].data == {"text/plain": "'x'", "image/png": "iVBOR"}
    assert out.metadata["papermill"] == {"input_path": "notebooks/02_ptq.ipynb", "parameters": {"seed": 0}}


def test_results_provenance_names_no_machine_path(tmp_path):
    """What the notebooks write (vitquant_core.results) says which file, not whose machine."""
    from vitquant_core.results import Provenance, public_paths, write_results

    assert public_paths({"root": f"{ROOT}/.cache/data/cifar10-jpeg", "copy": "cifar10-jpeg (quality 75)",
                         "data": ["/mnt/imagenet/val", "/", ROOT], "n": 3}) == {
        "root": ".cache/data/cifar10-jpeg", "copy": "cifar10-jpeg (quality 75)",
        "data": ["<outside the repository>/val", "/", "."], "n": 3}
    prov = Provenance("01_baseline", checkpoint=str(ROOT / "checkpoints" / "resnet20_cifar.safetensors"),
                      dataset={"root": "/tmp/vq/cifar10-jpeg", "split": "test"})
    row = {"model": "m", "method": "fp32", "w_bits": 32, "a_bits": 32, "granularity": "none", "top1": 90.0}
    doc = json.loads(write_results(tmp_path, "01_baseline", prov, [row]).read_text())
    assert doc["provenance"]["checkpoint"] == "checkpoints/resnet20_cifar.safetensors"
    assert doc["provenance"]["dataset"] == {"root": "<outside the repository>/cifar10-jpeg", "split": "test"}
    assert doc["rows"] == [row]


def test_a_repeated_inline_script_is_written_once(tmp_path):
    page = tmp_path / "page.html"
    page.write_text('<head>\n  <script>const A = 1</script>\n  <script src="x.js"></script>\n'
                    '  <script>const A = 1</script>\n  <script src="x.js"></script>\n</head>\n')
    bb.unique_inline_scripts(tmp_path)
    assert page.read_text() == ('<head>\n  <script>const A = 1</script>\n  <script src="x.js"></script>\n'
                                '  <script src="x.js"></script>\n</head>\n')


def test_only_names_an_existing_notebook(capsys):
    with pytest.raises(SystemExit):
        bb.main(["--only", "99_no_such_page"])
    assert "there is no notebooks/99_no_such_page.ipynb" in capsys.readouterr().err
