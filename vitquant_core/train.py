"""Training the project's reference models on CIFAR-10.

Recipes are the well-known ones for each family:

* CNNs (ResNet-20, ResNet-18): SGD with Nesterov momentum, one-cycle learning rate,
  label smoothing, random crop (pad 4) and horizontal flip.
* ViTs (DeiT-Tiny): AdamW, linear warm-up then cosine decay, TrivialAugment, mixup/cutmix
  and stochastic depth (Touvron et al., ICML 2021); optionally hard distillation from a
  CNN teacher through DeiT's distillation token, the paper's recipe for limited data.

Decoded images live in one uint8 tensor (decoding JPEGs is the bottleneck otherwise);
bf16 autocast is used where the CPU supports it; a resumable state is written every
epoch; the same code runs on a GPU (``device="cuda"``, optional ``torch.compile``).

Run ``python -m vitquant_core.train --help``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import models as M
from .data import load_cifar10


@dataclass
class TrainConfig:
    model: str = "resnet20_cifar"
    epochs: int = 30
    batch_size: int = 128
    lr: float | None = None  # None: the family's default
    weight_decay: float | None = None
    label_smoothing: float = 0.1
    warmup_epochs: float = 5.0  # ViT only
    mixup: float = 0.8  # ViT only
    cutmix: float = 1.0  # ViT only
    drop_path: float = 0.1  # ViT only
    teacher: str | None = None  # registry name of a CNN teacher (DeiT hard distillation)
    teacher_checkpoint: str | None = None
    seed: int = 0
    device: str = "cpu"
    bf16: bool | None = None  # None: on where supported
    compile: bool = False
    threads: int | None = None
    eval_every: int = 1
    out: str | None = None  # checkpoint path; default checkpoints/<model>.safetensors
    data_root: str | None = None
    max_steps: int | None = None  # for smoke tests: stop each epoch after this many steps
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if M.get_entry(self.model) is None:
            raise ValueError(f"{self.model!r} is not a registered CIFAR model: "
                             f"choose one of {M.list_models()}")


def bf16_supported(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # CPUs with AVX-512 BF16 / AMX run bf16 matmuls natively; elsewhere autocast is slower
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def random_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and a horizontal flip, per image of a uint8 batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(3)
    return out


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
def _test_top1(model: nn.Module, test, device: str, bf16: bool) -> float:
    model.eval()
    correct = 0
    for x, y in test.loader(batch_size=500):
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            logits = model(x.to(device))
        correct += (logits.float().argmax(1).cpu() == y).sum().item()
    return 100.0 * correct / len(test)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on CIFAR-10 train, evaluate on test, write checkpoint and card."""
    entry = M.get_entry(cfg.model)
    assert entry is not None
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = cfg.device
    bf16 = bf16_supported(device) if cfg.bf16 is None else cfg.bf16
    out = Path(cfg.out) if cfg.out else entry.default_checkpoint
    resume_path = out.with_suffix(".resume.pt")
    log_path = out.with_suffix(".train.jsonl")

    train_split = load_cifar10("train", cfg.data_root)
    test_split = load_cifar10("test", cfg.data_root)
    is_vit = entry.family == "vit"
    kwargs: dict[str, Any] = {}
    if is_vit:
        kwargs = {"drop_path_rate": cfg.drop_path, "distilled": cfg.teacher is not None}
    model = entry.builder(num_classes=entry.num_classes, **kwargs).to(device)
    if not is_vit:  # channels-last convolutions are ~1.4x faster on this CPU, and on GPUs
        model = model.to(memory_format=torch.channels_last)

    teacher = None
    if cfg.teacher:
        teacher, _ = M.load_model(cfg.teacher, cfg.teacher_checkpoint)
        teacher = teacher.to(device).eval()

    lr = cfg.lr if cfg.lr is not None else (5e-4 * cfg.batch_size / 512 if is_vit else 0.1 * cfg.batch_size / 128)
    wd = cfg.weight_decay if cfg.weight_decay is not None else (0.05 if is_vit else 5e-4)
    steps_per_epoch = len(train_split) // cfg.batch_size
    if cfg.max_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    total = steps_per_epoch * cfg.epochs
    if is_vit:
        opt = torch.optim.AdamW(_param_groups(model, wd), lr=lr, betas=(0.9, 0.999))
        warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                                  0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    else:
        opt = torch.optim.SGD(_param_groups(model, wd), lr=lr, momentum=0.9, nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15,
                                                    div_factor=10, final_div_factor=100)

    mixup_fn = None
    augment = None
    if is_vit:
        from timm.data import Mixup
        from torchvision.transforms import v2

        mixup_fn = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                         num_classes=entry.num_classes)
        augment = v2.TrivialAugmentWide()

    step_model = torch.compile(model) if cfg.compile else model
    start_epoch, history = 0, []
    if resume_path.exists():
        state = torch.load(resume_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, history = state["epoch"], json.loads(state["history"])
        print(f"resuming {cfg.model} from epoch {start_epoch}")

    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start_epoch):  # keep the data order of an uninterrupted run
        torch.randperm(len(train_split), generator=g)
    t_start = time.time() - sum(h["seconds"] for h in history)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(train_split), generator=g)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for step in bar:
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb = random_crop_flip(train_split.images[idx], g)
            if augment is not None:
                xb = torch.stack([augment(img) for img in xb])
            x = train_split.normalize(xb).to(device, non_blocking=True)
            if not is_vit:
                x = x.contiguous(memory_format=torch.channels_last)
            y = train_split.labels[idx].to(device, non_blocking=True)
            target = y
            if mixup_fn is not None:
                x, target = mixup_fn(x, y)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                out_ = step_model(x)
                if isinstance(out_, tuple):  # DeiT distilled: (class head, distillation head)
                    logits, logits_dist = out_
                    with torch.no_grad():
                        teacher_y = teacher(x).argmax(1)
                    loss = 0.5 * _soft_ce(logits, target, cfg.label_smoothing) + \
                        0.5 * F.cross_entropy(logits_dist.float(), teacher_y)
                else:
                    logits = out_
                    loss = _soft_ce(logits, target, cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1} step {step}: "
                                         "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if is_vit:
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_top1": 100 * correct / seen,
               "lr": sched.get_last_lr()[0], "seconds": time.time() - t0}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            rec["test_top1"] = _test_top1(model, test_split, device, bf16)
        history.append(rec)
        print(json.dumps(rec), flush=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("".join(json.dumps(h) + "\n" for h in history))
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1, "history": json.dumps(history)}, resume_path)

    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    test_top1 = _test_top1(model, test_split, "cpu", False)  # the card's figure: fp32, CPU
    card = {
        "model": cfg.model,
        "architecture": entry.description,
        "dataset": "CIFAR-10 " + test_split.describe()["copy"],
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("out", "data_root", "extra")}
        | {"lr": lr, "weight_decay": wd,
           "optimizer": "AdamW" if is_vit else "SGD nesterov momentum 0.9",
           "schedule": "warmup+cosine" if is_vit else "one-cycle",
           "augmentation": ("random crop (pad 4) + flip + TrivialAugmentWide + mixup/cutmix"
                            if is_vit else "random crop (pad 4) + flip"),
           "bf16_autocast": bf16},
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "train_seconds": round(time.time() - t_start, 1),
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}",
        "torch": torch.__version__,
        "test_top1": round(test_top1, 2),
        "test_top1_note": "fp32 on CPU, full 10k test split of the JPEG copy",
        "history": history[-1],
    }
    card = M.save_checkpoint(model, out, card)
    if resume_path.exists():
        resume_path.unlink()
    print(json.dumps({k: card[k] for k in ("model", "test_top1", "sha256", "size_bytes")}))
    return card


def _soft_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    logits = logits.float()
    if target.ndim == 2:  # mixup/cutmix soft targets already carry the smoothing
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=smoothing)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a reference model on CIFAR-10.")
    for f, default in asdict(TrainConfig()).items():
        if f == "extra":
            continue
        kind = type(default) if default is not None else str
        if f in ("lr", "weight_decay"):
            kind = float
        if f in ("max_steps", "threads"):
            kind = int
        if isinstance(default, bool) or f == "bf16":
            p.add_argument(f"--{f.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"),
                           default=default)
        else:
            p.add_argument(f"--{f.replace('_', '-')}", type=kind, default=default)
    args = p.parse_args(argv)
    train(TrainConfig(**vars(args)))


if __name__ == "__main__":
    main()
