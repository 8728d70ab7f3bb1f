"""The training step of one run: model, optimiser, schedule and batch pipeline.

:class:`Trainer` builds what a run (or a timing probe) trains: the model, from scratch or
from an earlier checkpoint (a warm restart); the CNN recipe's SGD with Nesterov momentum and
one-cycle schedule or the ViT recipe's AdamW with warm-up and cosine decay; the batches,
augmented where the model runs (:mod:`vitquant_core.training.augment`) or, for the ViT's
``vit_augment="per-image"``, by torchvision in DataLoader workers; and DeiT's hard
distillation from a CNN teacher (Touvron et al., ICML 2021).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import models as M
from ..data import ImageSplit
from .augment import random_crop_flip, trivial_augment_wide
from .config import TrainConfig


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast runs natively (and so faster than fp32) on ``device``."""
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
def evaluate_top1(model: nn.Module, test: ImageSplit, device: str, bf16: bool, n: int | None = None) -> float:
    """Top-1 (%) of ``model`` on the first ``n`` images of ``test`` (all of them when None)."""
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


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's data order and augmentation draws."""
    # one stream per (seed, epoch): a resumed run draws exactly what an uninterrupted one would
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Trainer:
    """Model, optimiser, schedule and the batch pipeline of one run (or of a timing probe)."""

    def __init__(self, cfg: TrainConfig, epochs: int, train_split: ImageSplit) -> None:
        entry = M.get_entry(cfg.model)
        assert entry is not None
        self.cfg, self.entry, self.epochs, self.split = cfg, entry, epochs, train_split
        self.device = cfg.device
        self.bf16 = bf16_supported(cfg.device) if cfg.bf16 is None else cfg.bf16
        self.is_vit = entry.family == "vit"
        self.trivial_augment = self.is_vit if cfg.trivial_augment is None else cfg.trivial_augment
        self.model = self._build_model(cfg, entry)
        self._load_teacher(cfg)
        self._build_optimiser(cfg, epochs, train_split)
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

    def _build_model(self, cfg: TrainConfig, entry: M.ModelEntry) -> nn.Module:
        """A fresh model, or an earlier run's weights for a warm restart, on the device."""
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
        model = model.to(self.device)
        if not self.is_vit:  # channels-last convolutions are ~1.4x faster on this CPU, and on GPUs
            model = model.to(memory_format=torch.channels_last)
        return model

    def _load_teacher(self, cfg: TrainConfig) -> None:
        """DeiT's CNN teacher, recorded by hash: a later default checkpoint is another teacher."""
        self.teacher = None
        self.teacher_info: dict[str, Any] | None = None
        if cfg.teacher:
            teacher, info = M.load_model(cfg.teacher, cfg.teacher_checkpoint)
            self.teacher = teacher.to(self.device, memory_format=torch.channels_last).eval()
            self.teacher_info = {"model": cfg.teacher, "file": Path(info["checkpoint"]).name,
                                 "sha256": info["checkpoint_sha256"], "test_top1": info["card"].get("test_top1")}

    def _build_optimiser(self, cfg: TrainConfig, epochs: int, train_split: ImageSplit) -> None:
        """Each family's optimiser and per-step schedule, over ``epochs`` epochs."""
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

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Augmented uint8 images and labels on the device, ``steps_per_epoch`` of them."""
        cfg = self.cfg
        g = epoch_generator(cfg.seed, epoch)
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


def timed(batches: Iterator[Any], clock: list[float]) -> Iterator[Any]:
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


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()

def _soft_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    logits = logits.float()
    if target.ndim == 2:  # mixup/cutmix soft targets already carry the smoothing
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=smoothing)
