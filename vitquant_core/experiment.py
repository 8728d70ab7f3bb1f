"""What every notebook does first: the model, the data, the subsets, the provenance.

``setup_experiment`` checks the notebook contract's parameters, then turns them into an
:class:`Experiment`, so that a notebook only chooses parameters, calls the core and plots
what it returns. Every evaluation goes through the experiment's row store
(:mod:`vitquant_core.rowstore`): a configuration measured once is read back, not recomputed.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import models as M
from .data import ImageSplit, balanced_indices, calibration_batches, load_split
from .eval import EvalResult, evaluate
from .io import atomic_write
from .nn.quantize import quant_report
from .results import Provenance, write_results
from .rowstore import Record, RowStore

PROFILES: dict[str, dict[str, int]] = {
    "quick": {"n_calib": 64, "n_eval": 1000},  # CI-sized: minutes on 2 CPU cores
    "full": {"n_calib": 256, "n_eval": 0},  # the published book: the whole test split
}
DATASETS = ("cifar10", "imagenet")


def _int_param(name: str, value: Any, minimum: int, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"parameter {name} must be an integer, got {value!r} ({type(value).__name__}); "
                        f"pass it unquoted, e.g. -p {name} {max(minimum, 0)}")
    if value < minimum:
        raise ValueError(f"parameter {name} must be >= {minimum}, got {value}")
    return value


def check_results_dir(results_dir: str | os.PathLike) -> Path:
    """Create ``results_dir`` if needed and prove it writable now, not after hours of work."""
    path = Path(results_dir)
    probe = path / ".write-test"
    try:
        atomic_write(probe, "")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"parameter results_dir={str(results_dir)!r} is not writable ({e.strerror}): "
                              "pass a folder you can write to") from e
    return path


def check_parameters(model: Any, checkpoint: Any, dataset: Any, data_root: Any, n_calib: Any, n_eval: Any,
                     seed: Any, profile: Any, results_dir: Any, batch_size: Any) -> None:
    """Validate every notebook-contract parameter before any computation, naming the bad one."""
    if not isinstance(model, str) or not model:
        raise TypeError(f"parameter model must be a registry or timm name, got {model!r}")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"parameter checkpoint must be a path or None, got {checkpoint!r}")
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"parameter checkpoint={str(checkpoint)!r}: no such file")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"parameter dataset must be one of {DATASETS} or None, got {dataset!r}")
    if data_root is not None and not isinstance(data_root, (str, os.PathLike)):
        raise TypeError(f"parameter data_root must be a folder path or None, got {data_root!r}")
    if profile not in PROFILES:
        raise ValueError(f"parameter profile must be one of {sorted(PROFILES)}, got {profile!r}")
    _int_param("n_calib", n_calib, 1)
    _int_param("n_eval", n_eval, 0)
    _int_param("seed", seed, 0, allow_none=False)
    _int_param("batch_size", batch_size, 1, allow_none=False)
    if not isinstance(results_dir, (str, os.PathLike)):
        raise TypeError(f"parameter results_dir must be a folder path, got {results_dir!r}")
    check_results_dir(results_dir)


def subset_fingerprint(split: ImageSplit, indices: torch.Tensor) -> str:
    """SHA-256 of the images and labels a subset holds (in-memory pixels, else file names and sizes)."""
    h = hashlib.sha256(f"{split.dataset}|{split.describe()['copy']}|{','.join(split.classes)}".encode())
    h.update(split.labels[indices].numpy().tobytes())
    if split.images is not None:
        h.update(split.images[indices].contiguous().numpy().tobytes())
    elif split.folder is not None:
        for i in indices.tolist():
            p = Path(split.folder.samples[i][0])
            h.update(f"{p.relative_to(split.root)}|{p.stat().st_size}".encode())
    return h.hexdigest()


def batches_fingerprint(batches: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for x in batches:
        h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Experiment:
    notebook: str
    model_name: str
    model: nn.Module
    model_info: dict[str, Any]
    eval_split: ImageSplit
    eval_indices: torch.Tensor
    calib: list[torch.Tensor]
    n_calib: int
    n_eval: int
    seed: int
    profile: str
    results_dir: Path
    provenance: Provenance
    store: RowStore
    batch_size: int = 250
    _fp: EvalResult | None = field(default=None, repr=False)

    def loader(self):
        return self.eval_split.loader(self.eval_indices, batch_size=self.batch_size)

    @property
    def labels(self) -> torch.Tensor:
        """The evaluation labels, in the order every evaluation sees them."""
        return self.eval_split.labels[self.eval_indices]

    def evaluate(self, model: nn.Module, desc: str = "eval", reference: EvalResult | None = None,
                 progress: bool = True) -> EvalResult:
        return evaluate(model, self.loader(), reference=reference, desc=desc, progress=progress,
                        num_classes=len(self.eval_split.classes))

    def fp(self) -> EvalResult:
        """The float model's evaluation on this experiment's subset (stored once, read back after)."""
        if self._fp is None:
            def compute():
                r = self.evaluate(self.model, desc=f"{self.model_name} fp32")
                row = {"top1": r.top1, "top5": r.top5, "n": r.n, "seconds": r.seconds,
                       "per_class_top1": r.per_class_top1}
                return row, r.predictions.tolist(), {}
            rec = self.store.get_or_compute({"kind": "fp32"}, compute)
            self._fp = EvalResult(top1=rec.row["top1"], top5=rec.row["top5"], n=rec.row["n"],
                                  seconds=rec.row["seconds"], predictions=torch.tensor(rec.predictions),
                                  per_class_top1=rec.row["per_class_top1"])
        return self._fp

    def row(self, method: str, w_bits: int | None, a_bits: int | None, granularity: str,
            result: EvalResult, qmodel: nn.Module | None = None, **extra: Any) -> dict[str, Any]:
        """A results row; ``None`` bits (float) are written as 32, as the contract asks."""
        row = {"model": self.model_name, "method": method, "w_bits": w_bits or 32, "a_bits": a_bits or 32,
               "granularity": granularity, "top1": round(result.top1, 3), "top5": round(result.top5, 3),
               "agreement": None if result.agreement is None else round(result.agreement, 3),
               "n_eval": result.n, "eval_seconds": round(result.seconds, 2)}
        report = quant_report(qmodel) if qmodel is not None else None
        if report is not None:
            row["quantized"] = report.summary()
            row["config"] = report.config
        row.update(extra)
        return row

    def measure(self, spec: Mapping[str, Any], build: Callable[[], nn.Module], method: str,
                w_bits: int | None, a_bits: int | None, granularity: str,
                analyse: Callable[[nn.Module], dict[str, Any]] | None = None, **extra: Any) -> Record:
        """Quantize with ``build()``, evaluate against the float model and store the row.

        ``spec`` names the configuration (its quantizer settings, in JSON-able form): with the
        experiment's model, data, seed and versions it is the row's key, so a configuration is
        calibrated and evaluated once. ``analyse(qmodel)`` returns more data to keep with it.
        """
        fp = self.fp()

        def compute():
            t0 = time.perf_counter()
            qmodel = build()
            calib_s = time.perf_counter() - t0
            res = self.evaluate(qmodel, f"{method} W{w_bits or 32}A{a_bits or 32}", reference=fp)
            row = self.row(method, w_bits, a_bits, granularity, res, qmodel, calib_seconds=round(calib_s, 2),
                           eval_time_ratio=round(res.seconds / fp.seconds, 3), **extra)
            return row, res.predictions.tolist(), analyse(qmodel) if analyse else {}

        return self.store.get_or_compute({"kind": "quantized", **dict(spec)}, compute)

    def correct(self, record: Record) -> torch.Tensor:
        """Which evaluation images a stored record got right (for paired tests)."""
        return torch.tensor(record.predictions) == self.labels

    def save(self, rows: list[dict[str, Any]], **extra: Any) -> Path:
        return write_results(self.results_dir, self.notebook, self.provenance, rows, extra or None)


def setup_experiment(notebook: str, model: str = "resnet20_cifar", checkpoint: str | None = None,
                     dataset: str | None = None, data_root: str | None = None, n_calib: int | None = None,
                     n_eval: int | None = None, seed: int = 0, profile: str = "quick",
                     results_dir: str | Path = "results", batch_size: int = 250,
                     recompute: bool | None = None) -> Experiment:
    """Check the parameters, load the model and data a notebook studies and draw its seeded subsets.

    ``n_calib`` / ``n_eval`` of None take the profile's value; ``n_eval = 0`` is the whole
    evaluation split. Calibration images come from the training split (ImageNet without a
    train folder: from validation images outside the evaluation subset). ``recompute``
    ignores stored rows and overwrites them (None: when ``VITQUANT_RECOMPUTE=1``, as
    ``make book RECOMPUTE=1`` sets it).
    """
    if recompute is None:
        recompute = os.environ.get("VITQUANT_RECOMPUTE") == "1"
    check_parameters(model, checkpoint, dataset, data_root, n_calib, n_eval, seed, profile, results_dir,
                     batch_size)
    n_calib = PROFILES[profile]["n_calib"] if n_calib is None else n_calib
    n_eval = PROFILES[profile]["n_eval"] if n_eval is None else n_eval
    torch.manual_seed(seed)
    entry = M.get_entry(model)
    dataset = dataset or (entry.dataset if entry else "imagenet")
    fp_model, info = M.load_model(model, checkpoint)
    eval_split = load_split(dataset, "test", data_root, model_name=model, model=fp_model)
    eval_idx = balanced_indices(eval_split.labels, n_eval, seed)
    try:
        calib_split = load_split(dataset, "train", data_root, model_name=model, model=fp_model)
        calib = calibration_batches(calib_split, n_calib, seed, batch_size=min(64, n_calib))
        calib_source = calib_split.describe()
    except FileNotFoundError:
        if dataset != "imagenet":
            raise
        rest = balanced_indices(eval_split.labels, n_calib, seed + 7, exclude=eval_idx)
        calib = [x for x, _ in eval_split.loader(rest, batch_size=min(64, n_calib))]
        calib_source = {**eval_split.describe(), "note": "no train/ folder: calibration images drawn from "
                        "validation images outside the evaluation subset"}
    prov = Provenance(notebook, model=model, checkpoint=info["checkpoint"],
                      checkpoint_sha256=info["checkpoint_sha256"], dataset=eval_split.describe(),
                      calibration_data=calib_source, n_calib=n_calib, n_eval=len(eval_idx), seed=seed,
                      profile=profile, torch_threads=torch.get_num_threads())
    context = {"model": model, "checkpoint_sha256": info["checkpoint_sha256"] or info["checkpoint"],
               "eval_subset": subset_fingerprint(eval_split, eval_idx), "n_eval": len(eval_idx),
               "calibration": batches_fingerprint(calib), "n_calib": n_calib, "seed": seed}
    store = RowStore(Path(results_dir) / "rows", context, recompute=recompute)
    return Experiment(notebook, model, fp_model, info, eval_split, eval_idx, calib, n_calib, len(eval_idx), seed,
                      profile, Path(results_dir), prov, store, batch_size)
