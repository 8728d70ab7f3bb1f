"""The keyed row store: one file per evaluated configuration, keyed by what produced it.

A notebook's grid can take hours on 2 CPU cores. Each configuration it evaluates (one
quantizer, one bit width, one calibration) is stored as ``{results_dir}/rows/{key}.json``,
where the key is the SHA-256 of everything that determines the measurement: the model's
checkpoint hash, the evaluation subset and calibration images (hashed), the seed, the
pinned package versions, :data:`STORE_VERSION`, and the configuration itself. A rerun
with the same inputs reads the row back; a changed parameter computes only the rows it
touches; a run that stops part-way resumes where it stopped.

What the key leaves out is the library's own source: a change to ``vitquant_core`` that
moves a number must bump :data:`STORE_VERSION` (or rerun with ``recompute=True``).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import atomic_write
from .results import check_finite, package_versions

# Bump when a library change moves a stored number: every key changes, so every row is
# recomputed (the commit that bumps it says why).
STORE_VERSION = 1
KEY_PACKAGES = ("torch", "torchvision", "timm", "numpy")


def canonical(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same content always hashes the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


@dataclass
class Record:
    """One stored measurement: its results row, per-image predictions, and any other data."""

    key: str
    row: dict[str, Any]
    predictions: list[int] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    cached: bool = False  # read back from the store rather than computed in this run


class RowStore:
    """Keyed records under ``root``; ``context`` is what every key of one experiment shares."""

    def __init__(self, root: str | Path, context: Mapping[str, Any], recompute: bool = False) -> None:
        self.root = Path(root)
        self.context = {"store_version": STORE_VERSION, "packages": package_versions(KEY_PACKAGES),
                        **dict(context)}
        self.recompute = recompute

    def key(self, spec: Mapping[str, Any]) -> str:
        return digest({"context": self.context, "spec": dict(spec)})

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, spec: Mapping[str, Any]) -> Record | None:
        """The stored record for ``spec``, or None (always None with ``recompute``)."""
        key = self.key(spec)
        path = self.path(key)
        if self.recompute or not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            return Record(key, doc["row"], doc.get("predictions"), doc.get("data", {}), cached=True)
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"stored row {path} is unreadable ({e}): delete it and it will be "
                             "recomputed") from e

    def put(self, spec: Mapping[str, Any], record: Record, seconds: float) -> Record:
        doc = {"key": record.key, "spec": dict(spec), "context": self.context,
               "computed": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "seconds": round(seconds, 1), "row": record.row, "predictions": record.predictions,
               "data": record.data}
        check_finite(doc, f"row {record.key[:12]}")
        atomic_write(self.path(record.key), json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
        return record

    def get_or_compute(self, spec: Mapping[str, Any],
                       compute: Callable[[], tuple[dict[str, Any], list[int] | None, dict[str, Any]]]) -> Record:
        """The record for ``spec``, computed by ``compute() -> (row, predictions, data)`` if not stored."""
        found = self.get(spec)
        if found is not None:
            return found
        t0 = time.perf_counter()
        row, predictions, data = compute()
        record = Record(self.key(spec), row, predictions, data)
        return self.put(spec, record, time.perf_counter() - t0)
