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

Run ``python -m vitquant_core.training.train --help``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import platform
import statistics
import time
import typing
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .. import models as M
from .augment import random_crop_flip, trivial_augment_wide
from ..data import ImageSplit, load_cifar10


def _opt(default: Any, help: str) -> Any:
    """A config field with its ``--help`` text (read by :func:`parse_args`)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
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
    device: str = _opt("cpu", "'cpu', 'cuda' or 'cuda:N'")
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
    def from_card(cls, card: dict[str, Any], **overrides: Any) -> "TrainConfig":
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


def bf16_supported(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # CPUs with AVX-512 BF16 / AMX run bf16 matmuls natively; elsewhere autocast is slower
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class _AugmentedImages(torch.utils.data.Dataset):
    """Per-image crop + flip + TrivialAugment, for DataLoader workers (the ViT recipe)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: Any) -> None:
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # the worker's torch RNG, which the DataLoader seeds from its generator
        x = random_crop_flip(self.images[i:i + 1], None)[0]
        return (x if self.augment is None else self.augment(x)), self.labels[i]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # no weight decay on norms, biases, position embeddings and tokens
        (no_decay if p.ndim <= 1 or "pos_embed" in name or "token" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@torch.inference_mode()
def _test_top1(model: nn.Module, test: ImageSplit, device: str, bf16: bool, n: int | None = None) -> float:
    model.eval()
    correct, seen = 0, 0
    idx = None if n is None else torch.arange(min(n, len(test)))
    for x, y in test.loader(idx, batch_size=500):
        x = x.to(device)
        if device != "cpu" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        correct += (logits.float().argmax(1).cpu() == y).sum().item()
        seen += len(y)
    return 100.0 * correct / seen


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # one stream per (seed, epoch): a resumed run draws exactly what an uninterrupted one would
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class _Trainer:
    """Model, optimiser, schedule and the batch pipeline of one run (or of a timing probe)."""

    def __init__(self, cfg: TrainConfig, epochs: int, train_split: ImageSplit) -> None:
        entry = M.get_entry(cfg.model)
        assert entry is not None
        self.cfg, self.entry, self.epochs, self.split = cfg, entry, epochs, train_split
        self.device = cfg.device
        self.bf16 = bf16_supported(cfg.device) if cfg.bf16 is None else cfg.bf16
        self.is_vit = entry.family == "vit"
        self.trivial_augment = self.is_vit if cfg.trivial_augment is None else cfg.trivial_augment
        self.builder_kwargs: dict[str, Any] = {}
        if self.is_vit:
            self.builder_kwargs = {"distilled": cfg.teacher is not None}
            model = entry.builder(num_classes=entry.num_classes, drop_path_rate=cfg.drop_path,
                                  **self.builder_kwargs)
        else:
            model = entry.builder(num_classes=entry.num_classes)
        self.init_card: dict[str, Any] | None = None
        if cfg.init_from:
            # a warm restart: the weights of an earlier run, a fresh optimiser and schedule
            init_card = M.read_card(cfg.init_from)
            if init_card.get("model") != cfg.model:
                raise ValueError(f"init_from: {cfg.init_from} holds {init_card.get('model')!r}, "
                                 f"not {cfg.model!r}: start a warm restart from a checkpoint of the same model")
            init, info = M.load_model(cfg.model, cfg.init_from)  # SHA-256 checked against its card
            model.load_state_dict(init.state_dict())
            self.init_card = info["card"]
        self.model = model.to(self.device)
        if not self.is_vit:  # channels-last convolutions are ~1.4x faster on this CPU, and on GPUs
            self.model = self.model.to(memory_format=torch.channels_last)
        self.teacher = None
        self.teacher_info: dict[str, Any] | None = None
        if cfg.teacher:
            teacher, info = M.load_model(cfg.teacher, cfg.teacher_checkpoint)
            self.teacher = teacher.to(self.device, memory_format=torch.channels_last).eval()
            self.teacher_info = {"model": cfg.teacher, "file": Path(info["checkpoint"]).name,
                                 "sha256": info["checkpoint_sha256"], "test_top1": info["card"].get("test_top1")}

        bs = cfg.batch_size
        self.lr = cfg.lr if cfg.lr is not None else (5e-4 * bs / 512 if self.is_vit else 0.1 * bs / 128)
        self.wd = cfg.weight_decay if cfg.weight_decay is not None else (0.05 if self.is_vit else 5e-4)
        self.steps_per_epoch = len(train_split) // bs
        if cfg.max_steps:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps)
        total = self.steps_per_epoch * epochs
        if self.is_vit:
            self.opt = torch.optim.AdamW(_param_groups(self.model, self.wd), lr=self.lr, betas=(0.9, 0.999))
            warm = max(1, int(cfg.warmup_epochs * self.steps_per_epoch))
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.opt, lambda s: (s + 1) / warm if s < warm else
                0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm)))))
        else:
            self.opt = torch.optim.SGD(_param_groups(self.model, self.wd), lr=self.lr, momentum=0.9, nesterov=True)
            self.sched = torch.optim.lr_scheduler.OneCycleLR(
                self.opt, max_lr=self.lr, total_steps=total, pct_start=0.15, div_factor=10, final_div_factor=100)

        self.mixup_fn = None
        self.augment = None
        if self.is_vit:
            from timm.data import Mixup
            from torchvision.transforms import v2

            if cfg.mixup > 0 or cfg.cutmix > 0:  # timm's Mixup asserts that one of them is on
                self.mixup_fn = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                                      label_smoothing=cfg.label_smoothing, num_classes=entry.num_classes)
            self.augment = v2.TrivialAugmentWide() if self.trivial_augment else None
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        # the batched pipelines run where the model runs; torchvision's per-image one in workers
        self.per_image = self.is_vit and cfg.vit_augment == "per-image"
        self.images = train_split.images if self.per_image else train_split.images.to(self.device)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Augmented uint8 images and labels on the device, ``steps_per_epoch`` of them."""
        cfg = self.cfg
        g = _epoch_generator(cfg.seed, epoch)
        if not self.per_image:
            perm = torch.randperm(len(self.split), generator=g)
            for step in range(self.steps_per_epoch):
                idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                x = random_crop_flip(self.images[idx.to(self.images.device)], g)
                if self.trivial_augment:
                    x = trivial_augment_wide(x, g)
                yield x, self.split.labels[idx].to(self.device, non_blocking=True)
            return
        ds = _AugmentedImages(self.images, self.split.labels, self.augment)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=cfg.batch_size, drop_last=True, num_workers=cfg.workers,
            sampler=torch.utils.data.RandomSampler(ds, generator=g), generator=g,
            pin_memory=self.device.startswith("cuda"))
        for step, (x, y) in enumerate(loader):
            if step == self.steps_per_epoch:
                break
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def step(self, xb: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step; returns the (detached) loss and the number of correct top-1."""
        x = self.split.normalize(xb)
        if not self.is_vit:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y
        if self.mixup_fn is not None:
            x, target = self.mixup_fn(x, y)
        with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16):
            out = self.step_model(x)
            if isinstance(out, tuple):  # DeiT distilled: (class head, distillation head)
                logits, logits_dist = out
                with torch.no_grad():
                    xt = x.contiguous(memory_format=torch.channels_last)
                    teacher_y = self.teacher(xt).argmax(1)
                loss = 0.5 * _soft_ce(logits, target, self.cfg.label_smoothing) + \
                    0.5 * F.cross_entropy(logits_dist.float(), teacher_y)
            else:
                logits = out
                loss = _soft_ce(logits, target, self.cfg.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.is_vit:
            nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        self.sched.step()
        return loss.detach(), (logits.argmax(1) == y).sum()


def _timed(batches: Iterator[Any], clock: list[float]) -> Iterator[Any]:
    """Yield from ``batches``, adding the seconds spent waiting for each item to ``clock[0]``.

    The wait is what the training step cannot hide: on a GPU, where steps run asynchronously,
    a large share means the batch pipeline (loader workers, augmentation) bounds the epoch.
    """
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        clock[0] += time.perf_counter() - t
        yield item


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def epochs_that_fit(budget_s: float, probe_s: float, final_eval_s: float, epoch_s: float,
                    max_epochs: int) -> int:
    """Whole epochs left in the budget after the probe and the final evaluation (at least 1)."""
    # 5% of the budget is kept back for what the probe cannot see (saving, a slower epoch)
    left = budget_s * 0.95 - probe_s - final_eval_s
    return int(max(1, min(max_epochs, left // epoch_s)))


def plan_epochs(cfg: TrainConfig, budget_s: float, train_split: ImageSplit, test_split: ImageSplit,
                warmup_steps: int = 5, timed_steps: int = 20) -> dict[str, Any]:
    """How many epochs of ``cfg`` fit in ``budget_s`` seconds, measured on this machine.

    Trains a throwaway copy for a few steps (the first ``warmup_steps`` untimed: cuDNN
    autotuning, worker start-up), times an evaluation pass, and keeps a reserve for the
    final fp32 CPU evaluation. The run itself is built afterwards from a fresh seed.
    """
    t0 = time.time()
    probe = _Trainer(cfg, cfg.epochs, train_split)
    batches = probe.batches(epoch=10**6)  # a stream of its own, unused by the run
    n = min(warmup_steps + timed_steps, probe.steps_per_epoch)
    warmup_steps = min(warmup_steps, max(0, n - 1))
    t_first = time.time()
    first = next(batches)  # an epoch's fixed cost: starting the loader's workers
    startup_s = time.time() - t_first
    step_times = []
    for i in range(n):
        _sync(cfg.device)
        t_step = time.time()
        probe.step(*(first if i == 0 else next(batches)))
        _sync(cfg.device)
        if i >= warmup_steps:
            step_times.append(time.time() - t_step)
    # the median, not the mean: one step slowed by a late recompilation or a busy core
    # would otherwise stretch every planned epoch and shorten the run
    step_s = statistics.median(step_times)
    # one untimed batch first: cuDNN autotunes each new batch shape, once
    _test_top1(probe.model, test_split, cfg.device, probe.bf16, n=500)
    _sync(cfg.device)
    t_eval = time.time()
    n_eval = min(2000, len(test_split))
    _test_top1(probe.model, test_split, cfg.device, probe.bf16, n=n_eval)
    _sync(cfg.device)
    eval_s = (time.time() - t_eval) * len(test_split) / n_eval
    cpu_model = copy.deepcopy(probe.model).float().cpu().to(memory_format=torch.contiguous_format)
    t_cpu = time.time()
    n_cpu = min(500, len(test_split))
    _test_top1(cpu_model, test_split, "cpu", False, n=n_cpu)
    final_eval_s = (time.time() - t_cpu) * len(test_split) / n_cpu
    del probe, cpu_model
    epoch_s = step_s * (len(train_split) // cfg.batch_size if not cfg.max_steps else
                        min(cfg.max_steps, len(train_split) // cfg.batch_size)) + startup_s + eval_s / cfg.eval_every
    probe_s = time.time() - t0
    epochs = epochs_that_fit(budget_s, probe_s, final_eval_s, epoch_s, cfg.epochs)
    return {"epochs": epochs, "step_seconds": step_s, "epoch_seconds": epoch_s, "loader_start_seconds": startup_s,
            "final_eval_seconds": final_eval_s, "probe_seconds": probe_s, "budget_seconds": budget_s}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on CIFAR-10 train, evaluate on test, write checkpoint and card."""
    entry = M.get_entry(cfg.model)
    assert entry is not None
    t_start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {cfg.device!r} asked for, but torch sees no CUDA device: "
                               "train with --device cpu")
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out) if cfg.out else entry.default_checkpoint
    resume_path = out.with_suffix(".resume.pt")
    log_path = out.with_suffix(".train.jsonl")

    train_split = load_cifar10("train", cfg.data_root)
    test_split = load_cifar10("test", cfg.data_root)
    plan = None
    epochs = cfg.epochs
    if cfg.time_budget is not None and not resume_path.exists():
        plan = plan_epochs(cfg, cfg.time_budget - (time.time() - t_start), train_split, test_split)
        epochs = plan["epochs"]
        print(json.dumps({"model": cfg.model, "plan": plan}), flush=True)

    # seeded after the probe: the run is the one `--epochs <epochs>` alone would give
    torch.manual_seed(cfg.seed)
    import numpy as np

    np.random.seed(cfg.seed)  # timm's mixup draws from numpy
    tr = _Trainer(cfg, epochs, train_split)
    model = tr.model

    # a warm restart ships the whole log behind its starting weights beside its own, so that the
    # whole curve can be drawn (notebook 00); read before this run's log can overwrite it (a
    # restart may write over the checkpoint it started from); a fresh run leaves no stale one
    init_log_path = out.with_suffix(".init.train.jsonl")
    if not resume_path.exists():
        before = history_before(cfg.init_from) if cfg.init_from else []
        if before:
            text = "".join(json.dumps(row) + "\n" for row in before)
            _atomic_write(init_log_path, lambda f: f.write_text(text))
        else:
            init_log_path.unlink(missing_ok=True)

    start_epoch, history = 0, []
    if resume_path.exists():
        state = torch.load(resume_path, weights_only=True)
        if state.get("epochs", epochs) != epochs and cfg.time_budget is None:
            raise ValueError(f"{resume_path} belongs to a {state['epochs']}-epoch run, not {epochs}: "
                             "resume with the same --epochs, or delete it to start over")
        epochs = state.get("epochs", epochs)
        if epochs != tr.epochs:
            tr = _Trainer(cfg, epochs, train_split)
            model = tr.model
        model.load_state_dict(state["model"])
        tr.opt.load_state_dict(state["opt"])
        tr.sched.load_state_dict(state["sched"])
        start_epoch, history = state["epoch"], json.loads(state["history"])
        plan = json.loads(state.get("plan", "null"))
        print(f"resuming {cfg.model} from epoch {start_epoch} of {epochs}")

    t_train = time.time() - sum(h["seconds"] for h in history)
    stopped_early = None
    for epoch in range(start_epoch, epochs):
        if cfg.stop_after is not None and epoch >= cfg.stop_after:
            stopped_early = f"stopped after epoch {epoch} of {epochs} planned, as stop_after asked"
            break
        if cfg.time_budget is not None and history and epoch > start_epoch:
            # a safety net, not the plan: if the machine slowed down so much that the next
            # epoch would overrun the budget by 15 %, stop and say so in the card
            if time.time() - t_start + history[-1]["seconds"] > 1.15 * cfg.time_budget:
                stopped_early = f"stopped by the time budget after epoch {epoch} of {epochs} planned"
                print(stopped_early, flush=True)
                break
        model.train()
        t0 = time.time()
        loss_sum = torch.zeros((), device=cfg.device)
        correct = torch.zeros((), dtype=torch.long, device=cfg.device)
        seen = 0
        data_wait = [0.0]
        bar = tqdm(_timed(tr.batches(epoch), data_wait), total=tr.steps_per_epoch, desc=f"{cfg.model} epoch {epoch + 1}/{epochs}",
                   leave=False, mininterval=2.0)
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
        rec = {"epoch": epoch + 1, "train_loss": mean_loss, "train_top1": 100 * correct.item() / seen,
               "lr": tr.sched.get_last_lr()[0], "seconds": time.time() - t0,
               "data_wait_seconds": round(data_wait[0], 3)}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 in (epochs, cfg.stop_after):
            rec["test_top1"] = _test_top1(model, test_split, cfg.device, tr.bf16)
        history.append(rec)
        print(json.dumps({"model": cfg.model} | rec), flush=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # written to a temporary file and renamed: a run killed while writing keeps its last state
        _atomic_write(log_path, lambda f: f.write_text("".join(json.dumps(h) + "\n" for h in history)))
        state = {"model": model.state_dict(), "opt": tr.opt.state_dict(), "sched": tr.sched.state_dict(),
                 "epoch": epoch + 1, "epochs": epochs, "history": json.dumps(history), "plan": json.dumps(plan)}
        _atomic_write(resume_path, lambda f: torch.save(state, f))
    train_seconds = time.time() - t_train

    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    weight_dtype = None
    if cfg.store_dtype == "float16":
        # round the weights to what the file will hold, so the card's figure is the file's
        weight_dtype = torch.float16
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim >= 2:
                    p.copy_(p.half().float())
    test_top1 = _test_top1(model, test_split, "cpu", False)  # the card's figure: fp32, CPU
    hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if cfg.device.startswith("cuda"):
        hardware = f"{torch.cuda.get_device_name()}, " + hardware
    epochs_run = len(history) if stopped_early else epochs
    # a warm restart's starting weights carry the epochs of their own run (and its ancestors')
    epochs_before = 0 if tr.init_card is None else tr.init_card.get("epochs_in_total", tr.init_card["epochs"])
    card = {
        "model": cfg.model,
        "architecture": entry.description,
        "builder_kwargs": tr.builder_kwargs,
        "dataset": "CIFAR-10 " + test_split.describe()["copy"],
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("out", "data_root", "extra")}
        | {"lr": tr.lr, "weight_decay": tr.wd,
           "optimizer": "AdamW" if tr.is_vit else "SGD nesterov momentum 0.9",
           "schedule": "warmup+cosine" if tr.is_vit else "one-cycle",
           "augmentation": "random crop (pad 4) + flip" + (
               f" + TrivialAugmentWide ({'torchvision, per image' if tr.per_image else 'batched, one draw per image'})"
               if tr.trivial_augment else "") + (_mixing(cfg) if tr.is_vit else ""),
           "distillation": f"hard, through the distillation token, teacher {cfg.teacher}" if cfg.teacher else None,
           "bf16_autocast": tr.bf16},
        "epochs": epochs_run,
        "epochs_planned": epochs,  # the schedule's length: more than epochs where the run stopped early
        # the teacher by hash: retraining later distils from whatever checkpoint is then the default
        "teacher": tr.teacher_info,
        "initialised_from": None if tr.init_card is None else {
            "file": Path(cfg.init_from).name, "sha256": tr.init_card["sha256"],
            "epochs": epochs_before, "test_top1": tr.init_card["test_top1"]},
        # with a warm restart, the epochs behind the weights: the earlier run's and this one's
        "epochs_in_total": epochs_before + epochs_run,
        "stopped_early": stopped_early,
        "time_budget_plan": plan,
        "seed": cfg.seed,
        "train_seconds": round(train_seconds, 1),
        "hardware": f"{hardware}, {cfg.device}",
        "torch": torch.__version__,
        "weights_stored_as": ("float16 (conv and linear weights; the rest float32)"
                              if weight_dtype is not None else "float32"),
        "test_top1": round(test_top1, 2),
        "test_top1_note": "fp32 on CPU, full 10k test split of the JPEG copy",
        "history": history[-1],
    }
    card = M.save_checkpoint(model, out, card, weight_dtype=weight_dtype)
    if resume_path.exists():
        resume_path.unlink()
    print(json.dumps({k: card[k] for k in ("model", "test_top1", "sha256", "size_bytes")}), flush=True)
    return card


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def history_before(init_from: str | Path) -> list[dict[str, Any]]:
    """The training log behind a checkpoint, whole: the log of the run that wrote it
    (``<name>.train.jsonl``) after the log behind *its* starting weights
    (``<name>.init.train.jsonl``, where it was a warm restart), and so on back to the first run.

    Epochs count from the first run's start; each row names its ``run`` (0: the first), that
    run's ``augmentation`` and, for a ViT, its ``drop_path`` (from the run's card), so that a plot
    can mark each restart and what changed there: either moves the training-batch curve by
    itself. Empty when the checkpoint has no log beside it.
    """
    init = Path(init_from)
    rows = [{"run": 0, **row} for row in _read_jsonl(init.with_suffix(".init.train.jsonl"))]
    own = _read_jsonl(init.with_suffix(".train.jsonl"))
    card_path = init.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    # the epochs behind the run's starting weights: its card's count, else the earlier log's
    offset = (card["epochs_in_total"] - card["epochs"] if "epochs_in_total" in card
              else max((row["epoch"] for row in rows), default=0))
    # its place in the chain, also when the log of the run before it was not kept
    run = max(row["run"] for row in rows) + 1 if rows else int(bool(card.get("initialised_from")))
    recipe = card.get("recipe", {})
    tags = {"augmentation": recipe["augmentation"]} if recipe.get("augmentation") else {}
    entry = M.get_entry(card.get("model", ""))
    if entry is not None and entry.family == "vit" and "drop_path" in recipe:  # a CNN has none
        tags["drop_path"] = recipe["drop_path"]
    return rows + [{**row, "epoch": row["epoch"] + offset, "run": run} | tags for row in own]


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp)``, then rename ``tmp`` over ``path``: readers see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _mixing(cfg: TrainConfig) -> str:
    """The card's words for the batch mixing a ViT run used ("" when mixup and cutmix are off)."""
    on = [name for name, alpha in (("mixup", cfg.mixup), ("cutmix", cfg.cutmix)) if alpha > 0]
    return " + " + "/".join(on) if on else ""


def _soft_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    logits = logits.float()
    if target.ndim == 2:  # mixup/cutmix soft targets already carry the smoothing
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=smoothing)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _parse_bool_or_auto(text: str) -> bool | None:
    return None if text.lower() == "auto" else _parse_bool(text)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a command line: one ``--option`` per field, its help from the field."""
    p = argparse.ArgumentParser(prog="python -m vitquant_core.training.train",
                                description="Train a reference model on CIFAR-10.")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        # "float | None" parses as float, "bool | None" also takes "auto" for None
        kinds = [k for k in typing.get_args(hints[f.name]) if k is not type(None)] or [hints[f.name]]
        parse = {bool: _parse_bool_or_auto if type(None) in typing.get_args(hints[f.name]) else _parse_bool}.get(
            kinds[0], kinds[0])
        help = f.metadata["help"]
        if "default" not in help and f.default is not None:
            help += " (default: %(default)s)"
        p.add_argument(f"--{f.name.replace('_', '-')}", type=parse, default=f.default, help=help)
    args = p.parse_args(argv)
    try:
        return TrainConfig(**vars(args))
    except (ValueError, FileNotFoundError) as e:  # a bad value: a usage error, not a traceback
        p.error(str(e))


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
