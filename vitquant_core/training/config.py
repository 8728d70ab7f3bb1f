"""The configuration of one training run, validated where it is made.

:class:`TrainConfig` holds a run's every option, with the ``--help`` text of its command
line (:mod:`vitquant_core.training.cli`), and rebuilds the run behind a shipped model from
its card (:meth:`TrainConfig.from_card`).
"""
from __future__ import annotations

import difflib
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import models as M

DEVICES = "'cpu', 'cuda', 'cuda:N' (N a GPU index) or 'mps'"
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


def check_lr(lr: float | None) -> None:
    """Refuse a learning rate that is not a positive finite number (None: the recipe's default)."""
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number (e.g. 0.1), got {lr}; "
                         "leave it out for the recipe's default")


def check_device(device: str) -> None:
    """Refuse a device torch cannot train on here."""
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"device must be {DEVICES}, got {device!r}")


def check_model_name(name: str, what: str) -> None:
    """Refuse a name that is not in the model registry, naming the registered ones closest to it."""
    if M.get_entry(name) is not None:
        return
    names = M.list_models()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ValueError(f"{what} {name!r} is not a registered model: {hint}choose one of {names}")


def _opt(default: Any, help: str) -> Any:
    """A config field with its ``--help`` text (read by :func:`vitquant_core.training.cli.parse_args`)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run: the model, its recipe's options, where it runs and where it writes."""

    model: str = _opt("resnet20_cifar", "registry name of the model to train")
    epochs: int = _opt(30, "epochs to run; with --time-budget, the most epochs to plan")
    batch_size: int = _opt(128, "images per step")
    lr: float | None = _opt(None, "peak learning rate (default: 0.1 x batch/128 for the CNNs' SGD, "
                                  "5e-4 x batch/512 for the ViT's AdamW)")
    weight_decay: float | None = _opt(None, "weight decay (default: 5e-4 for the CNNs, 0.05 for the ViT)")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy")
    warmup_epochs: float = _opt(5.0, "linear warm-up epochs of the ViT schedule (ViT only)")
    mixup: float = _opt(0.8, "mixup alpha, 0 turns it off (ViT only)")
    cutmix: float = _opt(1.0, "cutmix alpha, 0 turns it off (ViT only)")
    drop_path: float = _opt(0.1, "stochastic depth rate (ViT only)")
    teacher: str | None = _opt(None, "registry name of a CNN teacher: DeiT hard distillation through the "
                                     "distillation token")
    teacher_checkpoint: str | None = _opt(None, "the teacher's checkpoint (default: its shipped one)")
    seed: int = _opt(0, "seed of the initialisation, data order and augmentation")
    device: str = _opt("cpu", DEVICES)
    bf16: bool | None = _opt(None, "bf16 autocast: true, false, or auto (on where the device runs bf16 natively)")
    compile: bool = _opt(False, "torch.compile the training step")
    threads: int | None = _opt(None, "CPU threads for torch (default: torch's choice)")
    trivial_augment: bool | None = _opt(None, "TrivialAugment after crop and flip: true, false, or auto (on for "
                                              "the ViT, off for the CNNs, as in each family's recipe)")
    vit_augment: str = _opt("batched", "ViT TrivialAugment: 'batched' on the device, or 'per-image' (torchvision, "
                                       "in DataLoader workers)")
    workers: int = _opt(0, "DataLoader workers for --vit-augment per-image (0: in-process)")
    time_budget: float | None = _opt(None, "seconds for the whole run: a timing probe picks the epochs that fit")
    init_from: str | None = _opt(None, "a carded checkpoint whose weights start the run (a warm restart with a "
                                       "fresh optimiser and schedule)")
    store_dtype: str = _opt("float32", "'float32', or 'float16' to store conv and linear weights in half precision")
    eval_every: int = _opt(1, "evaluate on the test split every N epochs (and after the last)")
    out: str | None = _opt(None, "checkpoint path (default: checkpoints/<model>.safetensors)")
    data_root: str | None = _opt(None, "folder of the CIFAR-10 JPEG copy (default: the project's cache)")
    max_steps: int | None = _opt(None, "stop each epoch after this many steps (smoke tests)")
    stop_after: int | None = _opt(None, "run only the first N epochs of the --epochs schedule (repeats a run "
                                        "that its time budget stopped early)")
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if M.get_entry(self.model) is None:
            raise ValueError(f"{self.model!r} is not a registered CIFAR model: "
                             f"choose one of {M.list_models()}")
        check_lr(self.lr)
        check_device(self.device)
        if self.teacher is not None:
            check_model_name(self.teacher, "teacher")
        if self.store_dtype not in ("float32", "float16"):
            raise ValueError(f"store_dtype must be 'float32' or 'float16', got {self.store_dtype!r}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be > 0 seconds, got {self.time_budget}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 epoch, got {self.eval_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None for whole epochs), got {self.max_steps}")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.epochs:
            raise ValueError(f"stop_after must be between 1 and epochs ({self.epochs}), got {self.stop_after}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.init_from is not None and not Path(self.init_from).is_file():
            raise FileNotFoundError(f"init_from: no checkpoint at {self.init_from}; give the path "
                                    "of a .safetensors file that has its .json card beside it")
        if self.vit_augment not in ("batched", "per-image"):
            raise ValueError(f"vit_augment must be 'batched' or 'per-image', got {self.vit_augment!r}")

    @classmethod
    def from_card(cls, card: dict[str, Any], **overrides: Any) -> TrainConfig:
        """The config that reproduces a shipped model: its card's recipe and epochs."""
        names = {f for f in cls.__dataclass_fields__ if f != "extra"}
        cfg = {k: v for k, v in card["recipe"].items() if k in names}
        if "vit_augment" not in card["recipe"] and "TrivialAugment" in card["recipe"].get("augmentation", ""):
            cfg["vit_augment"] = "per-image"  # cards from before the batched pipeline
        # the card's epochs are the ones actually run (a time budget chose them); a run the budget
        # stopped early ran the first epochs of a longer schedule, which stop_after repeats
        run = card["epochs"]
        planned = card.get("epochs_planned")
        if planned is None and card.get("stopped_early"):  # cards from before epochs_planned
            planned = card["time_budget_plan"]["epochs"]
        planned = planned or run
        cfg.update(epochs=planned, stop_after=run if run < planned else None, time_budget=None)
        cfg.update(overrides)
        if "epochs" in overrides and "stop_after" not in overrides:
            cfg["stop_after"] = None  # another length: its whole schedule
        start = card.get("initialised_from")
        if cfg.get("init_from") and not Path(cfg["init_from"]).is_file() and start:
            raise FileNotFoundError(
                f"{card.get('file', 'this checkpoint')} is a warm restart: its run started from "
                f"{start['file']} ({start['epochs']} epochs, {start['test_top1']} %, SHA-256 {start['sha256']}), "
                f"which is not at {cfg['init_from']}. Pass init_from=<that checkpoint> to repeat the run, "
                f"or init_from=None (with epochs={card.get('epochs_in_total', card['epochs'])}) to train "
                "the recipe from scratch")
        if start and cfg.get("init_from"):
            # the path may hold other weights (a checkpoint shipped over the one the run started
            # from): repeating the run needs the very file it started from
            now = M.read_card(cfg["init_from"])["sha256"] if M.card_path(cfg["init_from"]).exists() else None
            if now != start["sha256"]:
                raise ValueError(
                    f"{card.get('file', 'this checkpoint')} is a warm restart from {start['file']} "
                    f"({start['epochs']} epochs, {start['test_top1']} %, SHA-256 {start['sha256']}), but "
                    f"{cfg['init_from']} now holds SHA-256 {now}. Pass init_from=<the file it started from> "
                    "(its card's note says where git history holds it) to repeat the run, or init_from=None "
                    f"(with epochs={card.get('epochs_in_total', card['epochs'])}) to train the recipe from scratch")
        teacher = card.get("teacher")
        entry = M.get_entry(cfg.get("teacher") or "")
        if teacher and entry is not None and not cfg.get("teacher_checkpoint"):
            default = entry.default_checkpoint
            now = M.read_card(default)["sha256"] if M.card_path(default).exists() else None
            if now != teacher["sha256"]:
                warnings.warn(
                    f"{card.get('file', 'this checkpoint')} was distilled from {teacher['file']} "
                    f"({teacher['test_top1']} %, SHA-256 {teacher['sha256']}), but the default {cfg['teacher']} "
                    f"checkpoint is now {default} (SHA-256 {now}): the run will distil from that one. Pass "
                    "teacher_checkpoint=<the earlier file> (git history holds it) to repeat the card's run",
                    stacklevel=2)
        return cls(**cfg)
