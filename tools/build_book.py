"""Build the book from keyed, committed notebook outputs; execute only what is stale.

Each notebook that ``_toc.yml`` lists is executed by papermill into
``{results}/executed/{name}.ipynb``, stamped with a key: the SHA-256 of its source (code,
markdown and cell tags, not outputs), its parameters (profile and overrides), the checkpoint
files of its model, the data copy (file names and sizes) and the pinned requirements. The
full profile's executed notebooks and results are committed, so a fresh clone renders the
published book without recomputing it. Each run then:

* uses a notebook whose stamped key matches, as it is;
* re-executes a stale or missing one (``--stale recompute``, the default), which is quick
  when its configurations are already in the row store (``{results}/rows``); or
* with ``--stale mark`` (CI), shows a stale one with a warning on its page saying what
  changed, and executes a missing one at the quick profile, marked as such.

``--recompute`` re-executes every notebook and ignores stored rows. The rendered book is
``build/book/_build/html``.

What is stored and published names no path of this machine (paths become relative to the
repository) and holds no progress bar (``TQDM_DISABLE=1`` while executing, leftovers
stripped). Each page is published folded (notebooks/README.md): papermill's injected
parameters cell is removed (``remove-cell``), and every other code cell that does not choose
its own visibility (``hide-input``, ``hide-cell``, ``remove-input``, ``remove-cell``) gets
``hide-input``: its source behind a toggle, its output shown.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "build" / "book"
KEY_PARTS = ("source", "parameters", "checkpoints", "data", "requirements")
# tags with which a cell chooses how its source is shown (Jupyter Book / myst-nb)
VISIBILITY_TAGS = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
# a line of a tqdm bar ("45%|####   | 18/40 [00:04<00:04, 4.53it/s]") or of tqdm's warning on import
PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\d(?:it|s)/(?:s|it)\]|TqdmWarning|import tqdm as notebook_tqdm")


def toc_notebooks(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """The notebook stems `_toc.yml` lists, in book order."""
    return re.findall(r"file:\s*notebooks/([0-9]{2}_[A-Za-z0-9_]+)", toc.read_text())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_digest(nb: nbformat.NotebookNode) -> str:
    cells = [{"type": c.cell_type, "source": c.source, "tags": sorted(c.get("metadata", {}).get("tags", []))}
             for c in nb.cells]
    return sha256_bytes(json.dumps(cells, sort_keys=True).encode())


def default_parameters(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The literal defaults of the cell tagged ``parameters`` (name = value lines)."""
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError("a numbered notebook needs a cell tagged 'parameters' (the notebook contract)")
    params: dict[str, Any] = {}
    for line in cell.source.splitlines():
        m = re.match(r"^(\w+)\s*=\s*(.+?)\s*(#.*)?$", line)
        if m:
            params[m[1]] = m[2]
    return params


def checkpoint_files(name: str, params: dict[str, Any]) -> list[Path]:
    """The checkpoint files a notebook's numbers depend on: 00 shows every card, the others
    their model's files (a model named in the overrides wins over the default)."""
    folder = ROOT / "checkpoints"
    if name.startswith("00_"):
        return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".jsonl"))
    model = str(params.get("model", "None")).strip("\"'")
    # a notebook that studies several models names them in `models` and leaves `model` None
    names = re.findall(r"[\"']([A-Za-z0-9_.-]+)[\"']", str(params.get("models", ""))) if model == "None" else [model]
    return sorted(p for name in names for p in folder.glob(f"{name}.*"))


def data_digest(data_root: Path) -> str:
    """File names and sizes of the data copy (not contents: that would read 60,000 files)."""
    if not data_root.is_dir():
        return "absent"
    h = hashlib.sha256()
    for p in sorted(data_root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(f"{p.relative_to(data_root)}|{p.stat().st_size}\n".encode())
    return h.hexdigest()


def notebook_key(name: str, profile: str, overrides: dict[str, Any], data_root: Path,
                 data_digest_value: str | None = None) -> dict[str, str]:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    params = {**default_parameters(nb), **overrides}
    ckpt = hashlib.sha256()
    for p in checkpoint_files(name, params):
        ckpt.update(p.name.encode() + b"|" + sha256_bytes(p.read_bytes()).encode() + b"\n")
    parts = {"source": source_digest(nb),
             "parameters": sha256_bytes(json.dumps({"profile": profile, **overrides}, sort_keys=True).encode()),
             "checkpoints": ckpt.hexdigest(),
             "data": data_digest_value if data_digest_value is not None else data_digest(data_root),
             "requirements": sha256_bytes((ROOT / "requirements.txt").read_bytes())}
    parts["key"] = sha256_bytes(json.dumps(parts, sort_keys=True).encode())
    return parts


def stored_key(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    return nbformat.read(path, as_version=4).metadata.get("vitquant", {}).get("key")


def execute(name: str, out: Path, profile: str, results: Path, overrides: dict[str, Any],
            key: dict[str, str], recompute: bool) -> None:
    """papermill into a temporary file, stamped and renamed on success: no half-written output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    running = out.with_name(f"{name}.running.ipynb")
    params = {"profile": profile, "results_dir": os.path.relpath(results, ROOT / "notebooks"), **overrides}
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{name}.ipynb"), str(running),
           "-k", "python3", "--cwd", str(ROOT / "notebooks")]
    for k, v in params.items():
        cmd += ["-y", json.dumps({k: v})]
    env = dict(os.environ, VITQUANT_RECOMPUTE="1" if recompute else os.environ.get("VITQUANT_RECOMPUTE", ""),
               TQDM_DISABLE="1")  # progress bars are for a person watching, not for the page
    print(f"[book] executing {name} ({profile} profile)", flush=True)
    subprocess.run(cmd, check=True, env=env)
    nb = clean_outputs(nbformat.read(running, as_version=4))
    nb.metadata["vitquant"] = {"key": key, "profile": profile,
                               "executed": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    nbformat.write(nb, running)
    running.replace(out)


def public(value: Any) -> Any:
    """``value`` with this repository's absolute paths made relative (vitquant_core.results)."""
    from vitquant_core.results import public_paths

    return public_paths(value, ROOT)


def clean_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop progress-bar leftovers from stderr and make every path in outputs and metadata
    relative to the repository (papermill records its input and output paths)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text = out.text
                if out.name == "stderr":
                    text = "".join(line for line in text.splitlines(keepends=True) if not PROGRESS.search(line))
                    if not text.strip():
                        continue
                out.text = public(text)
            elif "data" in out:
                out.data = {k: public(v) if isinstance(v, str) else v for k, v in out.data.items()}
            elif out.output_type == "error":
                out.traceback = [public(line) for line in out.traceback]
            outputs.append(out)
        cell.outputs = outputs
    nb.metadata = public(nb.metadata)
    return nb


def publish(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The page as the book shows it: papermill's injected cell removed, other code folded."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        elif not VISIBILITY_TAGS & set(tags):
            tags.append("hide-input")
        cell.metadata["tags"] = tags
    return clean_outputs(nb)


def write_page(src: Path, dest: Path, banner: str | None = None) -> None:
    """Publish the executed notebook ``src`` as the page ``dest``, a warning under its title
    when ``banner`` says why its outputs are not current."""
    nb = publish(nbformat.read(src, as_version=4))
    if banner:
        title = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
        nb.cells.insert(title + 1, nbformat.v4.new_markdown_cell(f":::{{warning}}\n{banner}\n:::"))
    nbformat.write(nb, dest)


def stale_reason(old: dict[str, str] | None, new: dict[str, str]) -> str:
    if old is None:
        return "no stored output"
    changed = [p for p in KEY_PARTS if old.get(p) != new[p]]
    return "changed since it was executed: " + ", ".join(changed)


def prepare(names: list[str], args: argparse.Namespace, overrides: dict[str, Any]) -> list[Path]:
    """Bring each notebook's executed copy up to date (or mark it); return the copies to render."""
    results = (ROOT / args.results).resolve()
    data_value = data_digest(args.data_root)
    pages = []
    for name in names:
        key = notebook_key(name, args.profile, overrides, args.data_root, data_value)
        stored = results / "executed" / f"{name}.ipynb"
        old = stored_key(stored)
        fresh = old is not None and old.get("key") == key["key"] and not args.recompute
        page = BOOK / "notebooks" / f"{name}.ipynb"
        if fresh:
            print(f"[book] {name}: stored output is current", flush=True)
            write_page(stored, page)
        elif args.stale == "recompute" or args.recompute:
            print(f"[book] {name}: {'--recompute' if args.recompute else stale_reason(old, key)}", flush=True)
            execute(name, stored, args.profile, results, overrides, key, args.recompute)
            write_page(stored, page)
        elif old is not None:
            print(f"[book] {name}: STALE ({stale_reason(old, key)}); shown with a warning", flush=True)
            write_page(stored, page, f"This page shows outputs stored before its inputs changed "
                        f"({stale_reason(old, key)}). Run `make book` to recompute it.")
        else:
            quick = ROOT / "build" / "executed-quick"
            print(f"[book] {name}: no stored {args.profile} output; executing the quick profile", flush=True)
            execute(name, quick / f"{name}.ipynb", "quick", ROOT / "results" / "quick", overrides, key, False)
            write_page(quick / f"{name}.ipynb", page, f"No {args.profile}-profile output of this page is "
                        "stored yet: it was computed with the small quick profile. Run `make book` to "
                        "compute the published one.")
        pages.append(page)
    return pages


def copy_mathjax(dest: Path) -> None:
    """MathJax 3 beside the pages (``html_extra_path`` and ``mathjax_path`` in _config.yml), so
    equations render without a CDN; the files come from the pinned django-static-mathjax wheel
    (no Django needed). Not under _static: Jupyter Book would add every script there to every page."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: MathJax is not installed: `make venv` installs requirements-dev.txt")
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    shutil.copytree(es5, dest)


def unique_inline_scripts(html: Path) -> None:
    """Drop a repeated inline ``<script>`` line from each page. Jupyter Book 1.x writes
    sphinx-thebe's configuration script twice per page, and the second ``const THEBE_JS_URL``
    is a console error in the browser."""
    for page in html.rglob("*.html"):
        lines, seen, out = page.read_text().splitlines(keepends=True), set(), []
        for line in lines:
            s = line.strip()
            if s.startswith("<script>") and s.endswith("</script>"):
                if s in seen:
                    continue
                seen.add(s)
            out.append(line)
        if len(out) != len(lines):
            page.write_text("".join(out))


def build(args: argparse.Namespace) -> int:
    names = toc_notebooks()
    if not names:
        raise SystemExit("error: _toc.yml lists no notebooks/NN_name entries")
    overrides = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.param)}
    if args.only:
        # bring just these executed copies up to date (several can run side by side); no book
        (BOOK / "notebooks").mkdir(parents=True, exist_ok=True)
        prepare(args.only, args, overrides)
        return 0
    shutil.rmtree(BOOK, ignore_errors=True)
    (BOOK / "notebooks").mkdir(parents=True)
    prepare(names, args, overrides)
    for f in ("_config.yml", "_toc.yml", "references.bib"):
        shutil.copyfile(ROOT / f, BOOK / f)
    shutil.copytree(ROOT / "book", BOOK / "book")
    copy_mathjax(BOOK / "_mathjax" / "mathjax")
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(BOOK), "-W", "-n", "--keep-going"]
    rc = subprocess.run(cmd).returncode
    if rc == 0:
        unique_inline_scripts(BOOK / "_build" / "html")
        print(f"The book: {BOOK / '_build' / 'html' / 'index.html'}")
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="full", choices=("quick", "full"))
    p.add_argument("--results", default=None, help="results folder (default results/<profile>)")
    p.add_argument("--stale", default="recompute", choices=("recompute", "mark"),
                   help="a stale notebook: re-execute it, or show it with a warning (CI)")
    p.add_argument("--recompute", action="store_true", help="re-execute every notebook, ignoring stored rows")
    p.add_argument("--data-root", type=Path, default=ROOT / ".cache" / "data" / "cifar10-jpeg")
    p.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                   help="a papermill parameter for every notebook, e.g. --param seed=1 (part of the key)")
    p.add_argument("--only", action="append", default=[], metavar="NN_NAME",
                   help="only bring this notebook's executed copy up to date (repeatable); no book is built")
    args = p.parse_args(argv)
    for name in args.only:
        if not (ROOT / "notebooks" / f"{name}.ipynb").exists():
            p.error(f"--only {name}: there is no notebooks/{name}.ipynb")
    for a in args.param:
        if "=" not in a:
            p.error(f"--param {a!r}: write NAME=JSON, e.g. --param seed=1")
    args.results = args.results or f"results/{args.profile}"
    return build(args)


if __name__ == "__main__":
    sys.exit(main())
