"""What every notebook does first: the model, the data, the subsets, the provenance.

``setup_experiment`` turns the notebook contract's parameters into an :class:`Experiment`,
so that a notebook only chooses parameters, calls the core and plots what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import models as M
from .data import ImageSplit, balanced_indices, calibration_batches, load_split
from .eval import EvalResult, evaluate
from .nn.quantize import quant_report
from .results import Provenance, write_results

PROFILES: dict[str, dict[str, int]] = {
    "quick": {"n_calib": 64, "n_eval": 1000},  # CI-sized: minutes on 2 CPU cores
    "full": {"n_calib": 256, "n_eval": 0},  # the published book: the whole test split
}


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
    batch_size: int = 250
    _fp: EvalResult | None = field(default=None, repr=False)

    def loader(self):
        return self.eval_split.loader(self.eval_indices, batch_size=self.batch_size)

    def evaluate(self, model: nn.Module, desc: str = "eval", reference: EvalResult | None = None,
                 progress: bool = True) -> EvalResult:
        return evaluate(model, self.loader(), reference=reference, desc=desc, progress=progress,
                        num_classes=len(self.eval_split.classes))

    def fp(self) -> EvalResult:
        """The float model's evaluation on this experiment's subset (computed once)."""
        if self._fp is None:
            self._fp = self.evaluate(self.model, desc=f"{self.model_name} fp32")
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

    def save(self, rows: list[dict[str, Any]], **extra: Any) -> Path:
        return write_results(self.results_dir, self.notebook, self.provenance, rows, extra or None)


def setup_experiment(notebook: str, model: str = "resnet20_cifar", checkpoint: str | None = None,
                     dataset: str | None = None, data_root: str | None = None, n_calib: int | None = None,
                     n_eval: int | None = None, seed: int = 0, profile: str = "quick",
                     results_dir: str | Path = "results", batch_size: int = 250) -> Experiment:
    """Load the model and data a notebook studies and draw its seeded subsets.

    ``n_calib`` / ``n_eval`` of None take the profile's value; ``n_eval = 0`` is the whole
    evaluation split. Calibration images come from the training split (ImageNet without a
    train folder: from validation images outside the evaluation subset).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    n_calib = PROFILES[profile]["n_calib"] if n_calib is None else int(n_calib)
    n_eval = PROFILES[profile]["n_eval"] if n_eval is None else int(n_eval)
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
    return Experiment(notebook, model, fp_model, info, eval_split, eval_idx, calib, n_calib, len(eval_idx), seed,
                      profile, Path(results_dir), prov, batch_size)
