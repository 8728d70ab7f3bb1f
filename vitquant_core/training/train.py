"""Training the project's reference models on CIFAR-10.

Recipes are the well-known ones for each family:

* CNNs (ResNet-20, ResNet-18): SGD with Nesterov momentum, one-cycle learning rate,
  label smoothing, random crop (pad 4) and horizontal flip; ``trivial_augment=True`` adds
  TrivialAugment (Müller & Hutter, ICCV 2021), a regulariser for runs that fit the training set.
* ViTs (DeiT-Tiny): AdamW, linear warm-up then cosine decay, TrivialAugment, mixup/cutmix
  and stochastic depth (Touvron et al., ICML 2021); optionally hard distillation from a
  CNN teacher through DeiT's distillation token, the paper's recipe for limited data.

Decoded images live in one uint8 tensor (decoding JPEGs is the bottleneck otherwise);
bf16 autocast is used where the device supports it; a resumable state is written every
epoch; the same code runs on a GPU (``device="cuda"``, optional ``torch.compile``). The
augmentation runs batched where the model runs (:mod:`vitquant_core.training.augment`): crop and
flip for the CNNs, and for the ViT (and a CNN with ``trivial_augment``) also TrivialAugment
with one draw per image. The ViT's ``vit_augment="per-image"`` keeps torchvision's own
``TrivialAugmentWide``, one image at a time in DataLoader workers (``workers``), the
pipeline of the shipped DeiT-Tiny's first (GPU) run.

``time_budget`` sizes a run to a wall-clock budget: a short probe on a throwaway copy of
the model times the training step, the number of epochs that fits is chosen *before* the
run starts, and the card records it, so ``--epochs N`` alone reproduces the run. Each
epoch's data order and augmentation draw from a generator seeded by (seed, epoch), so a
resumed run sees the same data as an uninterrupted one. GPU kernels are not bitwise
deterministic (cuDNN autotuning is on), so a GPU rerun matches to within noise.

Each epoch's line in ``<checkpoint>.train.jsonl`` records, besides loss and top-1, the
seconds spent waiting for batches (``data_wait_seconds``): close to the epoch's seconds, the
batch pipeline bounds the run; close to zero, the training step does.

The pieces: :mod:`~vitquant_core.training.config` (the run's options),
:mod:`~vitquant_core.training.trainer` (model, optimiser, batches, one step),
:mod:`~vitquant_core.training.budget` (epochs that fit a time budget),
:mod:`~vitquant_core.training.history` (the log behind a checkpoint) and
:mod:`~vitquant_core.training.cli` (the command line). This module runs the epochs and
writes the log, the resumable state, the checkpoint and its card.

Run ``python -m vitquant_core.training.train --help``.
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import models as M
from ..data import ImageSplit, load_cifar10
from ..io import atomic_write
from .budget import plan_epochs
from .cli import parse_args
from .config import TrainConfig
from .history import history_before
from .trainer import Trainer, evaluate_top1, timed


@dataclass
class _Run:
    """Where a run writes and how far it has come: what a resumed run reads back."""

    out: Path
    epochs: int
    plan: dict[str, Any] | None = None
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None

    @property
    def resume_path(self) -> Path:
        return self.out.with_suffix(".resume.pt")

    @property
    def log_path(self) -> Path:
        return self.out.with_suffix(".train.jsonl")

    @property
    def init_log_path(self) -> Path:
        return self.out.with_suffix(".init.train.jsonl")


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on CIFAR-10 train, evaluate on test, write checkpoint and card."""
    entry = M.get_entry(cfg.model)
    assert entry is not None
    t_start = time.time()
    _prepare_device(cfg)
    run = _Run(out=Path(cfg.out) if cfg.out else entry.default_checkpoint, epochs=cfg.epochs)
    train_split = load_cifar10("train", cfg.data_root)
    test_split = load_cifar10("test", cfg.data_root)
    if cfg.time_budget is not None and not run.resume_path.exists():
        run.plan = plan_epochs(cfg, cfg.time_budget - (time.time() - t_start), train_split, test_split)
        run.epochs = run.plan["epochs"]
        print(json.dumps({"model": cfg.model, "plan": run.plan}), flush=True)

    # seeded after the probe: the run is the one `--epochs <epochs>` alone would give
    torch.manual_seed(cfg.seed)
    import numpy as np

    np.random.seed(cfg.seed)  # timm's mixup draws from numpy
    tr = Trainer(cfg, run.epochs, train_split)
    if run.resume_path.exists():
        tr = _resume(cfg, run, tr, train_split)
    else:
        _write_init_log(cfg, run)
    train_seconds = _train_epochs(cfg, run, tr, test_split, t_start)

    model, weight_dtype = _final_weights(tr.model, cfg.store_dtype)
    test_top1 = evaluate_top1(model, test_split, "cpu", False)  # the card's figure: fp32, CPU
    card = _card(cfg, run, tr, test_split, test_top1, train_seconds, weight_dtype is not None)
    card = M.save_checkpoint(model, run.out, card, weight_dtype=weight_dtype)
    run.resume_path.unlink(missing_ok=True)
    print(json.dumps({k: card[k] for k in ("model", "test_top1", "sha256", "size_bytes")}), flush=True)
    return card


def _prepare_device(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {cfg.device!r} asked for, but torch sees no CUDA device: "
                               "train with --device cpu")
        torch.backends.cudnn.benchmark = True


def _write_init_log(cfg: TrainConfig, run: _Run) -> None:
    """Ship the whole log behind a warm restart's starting weights beside its own.

    So that the whole curve can be drawn (notebook 00); read before this run's log can
    overwrite it (a restart may write over the checkpoint it started from); a fresh run
    leaves no stale one.
    """
    before = history_before(cfg.init_from) if cfg.init_from else []
    if before:
        atomic_write(run.init_log_path, "".join(json.dumps(row) + "\n" for row in before))
    else:
        run.init_log_path.unlink(missing_ok=True)


def _resume(cfg: TrainConfig, run: _Run, tr: Trainer, train_split: ImageSplit) -> Trainer:
    """Load the state an interrupted run left; returns the trainer of that run's length."""
    state = torch.load(run.resume_path, weights_only=True)
    if state.get("epochs", run.epochs) != run.epochs and cfg.time_budget is None:
        raise ValueError(f"{run.resume_path} belongs to a {state['epochs']}-epoch run, not {run.epochs}: "
                         "resume with the same --epochs, or delete it to start over")
    run.epochs = state.get("epochs", run.epochs)
    if run.epochs != tr.epochs:
        tr = Trainer(cfg, run.epochs, train_split)
    tr.model.load_state_dict(state["model"])
    tr.opt.load_state_dict(state["opt"])
    tr.sched.load_state_dict(state["sched"])
    run.start_epoch, run.history = state["epoch"], json.loads(state["history"])
    run.plan = json.loads(state.get("plan", "null"))
    print(f"resuming {cfg.model} from epoch {run.start_epoch} of {run.epochs}")
    return tr


def _train_epochs(cfg: TrainConfig, run: _Run, tr: Trainer, test_split: ImageSplit, t_start: float) -> float:
    """Run the epochs left, logging and saving the state after each; returns the training seconds."""
    t_train = time.time() - sum(h["seconds"] for h in run.history)
    for epoch in range(run.start_epoch, run.epochs):
        run.stopped_early = _stop_reason(cfg, run, epoch, t_start)
        if run.stopped_early:
            break
        rec = _train_epoch(cfg, tr, epoch, run.epochs)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 in (run.epochs, cfg.stop_after):
            rec["test_top1"] = evaluate_top1(tr.model, test_split, cfg.device, tr.bf16)
        run.history.append(rec)
        print(json.dumps({"model": cfg.model} | rec), flush=True)
        _save_state(run, tr)
    return time.time() - t_train


def _stop_reason(cfg: TrainConfig, run: _Run, epoch: int, t_start: float) -> str | None:
    """Why the run stops before ``epoch``, or None to go on."""
    if cfg.stop_after is not None and epoch >= cfg.stop_after:
        return f"stopped after epoch {epoch} of {run.epochs} planned, as stop_after asked"
    if cfg.time_budget is not None and run.history and epoch > run.start_epoch:
        # a safety net, not the plan: if the machine slowed down so much that the next
        # epoch would overrun the budget by 15 %, stop and say so in the card
        if time.time() - t_start + run.history[-1]["seconds"] > 1.15 * cfg.time_budget:
            reason = f"stopped by the time budget after epoch {epoch} of {run.epochs} planned"
            print(reason, flush=True)
            return reason
    return None


def _train_epoch(cfg: TrainConfig, tr: Trainer, epoch: int, epochs: int) -> dict[str, Any]:
    """One pass over the training split; returns its log line (without the test top-1)."""
    tr.model.train()
    t0 = time.time()
    loss_sum = torch.zeros((), device=cfg.device)
    correct = torch.zeros((), dtype=torch.long, device=cfg.device)
    seen = 0
    data_wait = [0.0]
    bar = tqdm(timed(tr.batches(epoch), data_wait), total=tr.steps_per_epoch,
               desc=f"{cfg.model} epoch {epoch + 1}/{epochs}", leave=False, mininterval=2.0)
    for step, (xb, y) in enumerate(bar):
        loss, n_correct = tr.step(xb, y)
        loss_sum += loss * len(y)
        correct += n_correct
        seen += len(y)
        if step % 50 == 0:  # a host sync: only now and then
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"loss became {mean_loss} at epoch {epoch + 1} step {step}: "
                                         "lower the learning rate")
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{100 * correct.item() / seen:.1f}")
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"loss became {mean_loss} in epoch {epoch + 1}: lower the learning rate")
    return {"epoch": epoch + 1, "train_loss": mean_loss, "train_top1": 100 * correct.item() / seen,
            "lr": tr.sched.get_last_lr()[0], "seconds": time.time() - t0,
            "data_wait_seconds": round(data_wait[0], 3)}


def _save_state(run: _Run, tr: Trainer) -> None:
    """The log so far and the resumable state, each written whole or not at all, so a run
    killed while writing keeps its last state."""
    atomic_write(run.log_path, "".join(json.dumps(h) + "\n" for h in run.history))
    state = {"model": tr.model.state_dict(), "opt": tr.opt.state_dict(), "sched": tr.sched.state_dict(),
             "epoch": run.history[-1]["epoch"], "epochs": run.epochs, "history": json.dumps(run.history),
             "plan": json.dumps(run.plan)}
    atomic_write(run.resume_path, lambda tmp: torch.save(state, tmp))


def _final_weights(model: torch.nn.Module, store_dtype: str) -> tuple[torch.nn.Module, torch.dtype | None]:
    """The model as the checkpoint holds it (fp32 on the CPU), and the dtype its weights are stored in."""
    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    if store_dtype != "float16":
        return model, None
    # round the weights to what the file will hold, so the card's figure is the file's
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(p.half().float())
    return model, torch.float16


def _card(cfg: TrainConfig, run: _Run, tr: Trainer, test_split: ImageSplit, test_top1: float,
          train_seconds: float, float16: bool) -> dict[str, Any]:
    """The model card: the recipe that repeats the run, what it started from, and what it reached."""
    entry = tr.entry
    hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if cfg.device.startswith("cuda"):
        hardware = f"{torch.cuda.get_device_name()}, " + hardware
    epochs_run = len(run.history) if run.stopped_early else run.epochs
    # a warm restart's starting weights carry the epochs of their own run (and its ancestors')
    epochs_before = 0 if tr.init_card is None else tr.init_card.get("epochs_in_total", tr.init_card["epochs"])
    return {
        "model": cfg.model,
        "architecture": entry.description,
        "builder_kwargs": tr.builder_kwargs,
        "dataset": "CIFAR-10 " + test_split.describe()["copy"],
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("out", "data_root", "extra")}
        | {"lr": tr.lr, "weight_decay": tr.wd,
           "optimizer": "AdamW" if tr.is_vit else "SGD nesterov momentum 0.9",
           "schedule": "warmup+cosine" if tr.is_vit else "one-cycle",
           "augmentation": _augmentation(cfg, tr),
           "distillation": f"hard, through the distillation token, teacher {cfg.teacher}" if cfg.teacher else None,
           "bf16_autocast": tr.bf16},
        "epochs": epochs_run,
        "epochs_planned": run.epochs,  # the schedule's length: more than epochs where the run stopped early
        # the teacher by hash: retraining later distils from whatever checkpoint is then the default
        "teacher": tr.teacher_info,
        "initialised_from": None if tr.init_card is None else {
            "file": Path(cfg.init_from).name, "sha256": tr.init_card["sha256"],
            "epochs": epochs_before, "test_top1": tr.init_card["test_top1"]},
        # with a warm restart, the epochs behind the weights: the earlier run's and this one's
        "epochs_in_total": epochs_before + epochs_run,
        "stopped_early": run.stopped_early,
        "time_budget_plan": run.plan,
        "seed": cfg.seed,
        "train_seconds": round(train_seconds, 1),
        "hardware": f"{hardware}, {cfg.device}",
        "torch": torch.__version__,
        "weights_stored_as": "float16 (conv and linear weights; the rest float32)" if float16 else "float32",
        "test_top1": round(test_top1, 2),
        "test_top1_note": "fp32 on CPU, full 10k test split of the JPEG copy",
        "history": run.history[-1],
    }


def _augmentation(cfg: TrainConfig, tr: Trainer) -> str:
    """The card's words for the run's augmentation."""
    words = "random crop (pad 4) + flip"
    if tr.trivial_augment:
        pipeline = "torchvision, per image" if tr.per_image else "batched, one draw per image"
        words += f" + TrivialAugmentWide ({pipeline})"
    return words + (_mixing(cfg) if tr.is_vit else "")


def _mixing(cfg: TrainConfig) -> str:
    """The card's words for the batch mixing a ViT run used ("" when mixup and cutmix are off)."""
    on = [name for name, alpha in (("mixup", cfg.mixup), ("cutmix", cfg.cutmix)) if alpha > 0]
    return " + " + "/".join(on) if on else ""


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
