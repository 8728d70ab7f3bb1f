"""The results store: one JSON file per notebook, written atomically, with provenance.

``{results_dir}/{notebook}.json`` holds ``{"notebook", "provenance", "rows"}``. Each row
has at least ``model, method, w_bits, a_bits, granularity, top1`` (float rows use 32 bits).
Later notebooks read earlier results instead of recomputing them. What is written names no
path of the machine that made it: a path inside the repository is written relative to it,
one outside by its last component only (:func:`public_paths`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import atomic_write

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRED_ROW_KEYS = ("model", "method", "w_bits", "a_bits", "granularity", "top1")
PACKAGES = ("torch", "torchvision", "timm", "numpy", "vitquant_core")


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    root = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def package_versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for p in packages:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return versions


def public_paths(obj: Any, root: str | os.PathLike = REPO_ROOT) -> Any:
    """``obj`` with every machine path made public: strings and paths (in dicts and lists too)
    that are an absolute path inside ``root`` become relative to it, other absolute paths become
    ``<outside the repository>/<name>``, and ``root`` written inside longer text is dropped.
    A results file or a published page then says which file, not whose machine."""
    base = str(Path(root).resolve())
    if isinstance(obj, dict):
        return {k: public_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(public_paths(v, base) for v in obj)
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    if not isinstance(obj, str):
        return obj
    if os.path.isabs(obj) and "\n" not in obj and len(Path(obj).parts) > 2:  # not "/" or "/s"
        path = Path(obj)
        if path == Path(base):
            return "."
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
        return f"<outside the repository>/{path.name}"
    return obj.replace(base + os.sep, "").replace(base, ".")


class Provenance:
    """Collects what a results file must say about how it was made; times the run."""

    def __init__(self, notebook: str, **fields: Any) -> None:
        self.notebook = notebook
        self.fields = dict(fields)
        self.started = _dt.datetime.now(_dt.UTC)
        self._t0 = time.perf_counter()

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)

    def to_json(self) -> dict[str, Any]:
        return public_paths({
            "commit": git_commit(),
            "packages": package_versions(),
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
            **self.fields,
            "started": self.started.isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self._t0, 1),
        })


def check_finite(obj: Any, path: str = "") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"results value at {path or 'top level'} is {obj}: refusing to write a "
                         "non-finite number into a results table (find where it came from)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{path}[{i}]")


def check_rows(rows: list[dict[str, Any]]) -> None:
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED_ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"row {i} lacks {missing}; every row needs {REQUIRED_ROW_KEYS}")
    check_finite(rows, "rows")


def write_results(results_dir: str | os.PathLike, notebook: str, provenance: Provenance | dict[str, Any],
                  rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Write ``{results_dir}/{notebook}.json`` atomically (readers see the old file or the new one)."""
    check_rows(rows)
    prov = provenance.to_json() if isinstance(provenance, Provenance) else provenance
    doc = public_paths({"notebook": notebook, "provenance": prov, "rows": rows, **(extra or {})})
    check_finite(doc)
    path = Path(results_dir) / f"{notebook}.json"
    atomic_write(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path


def read_results(results_dir: str | os.PathLike, notebook: str) -> dict[str, Any] | None:
    """The results of ``notebook`` if they exist, else None."""
    path = Path(results_dir) / f"{notebook}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def find_row(doc: dict[str, Any] | None, **match: Any) -> dict[str, Any] | None:
    if not doc:
        return None
    for row in doc.get("rows", []):
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None
