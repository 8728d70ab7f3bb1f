"""Seconds per training step of the reference recipes: fp32 against bf16 autocast, eager against compiled.

Builds the trainer of ``vitquant_core.training.train`` for each setting (same model, recipe, batch
pipeline and optimiser as a real run) on a synthetic uint8 training split, runs a few
untimed warm-up steps (compilation, oneDNN's first-call kernels), then times steps with the
settings interleaved so that machine noise hits them alike. Prints the median seconds per
step, images per second and each setting's speed relative to eager fp32: the figures behind
``--bf16`` and ``--compile`` in the training command line.

    .venv/bin/python vitquant_core/training/benchmarks/train_step.py --model resnet20_cifar
    .venv/bin/python vitquant_core/training/benchmarks/train_step.py --model resnet18_cifar --batch-size 128 --steps 5
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vitquant_core.data import ImageSplit
from vitquant_core.models import CIFAR10_MEAN, CIFAR10_STD
from vitquant_core.training.config import TrainConfig
from vitquant_core.training.trainer import Trainer, bf16_supported, sync


def synthetic_split(n: int, seed: int = 0) -> ImageSplit:
    """CIFAR-shaped random uint8 images: the step's cost does not depend on their content."""
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(dataset="cifar10", split="train", root=Path("."), classes=tuple(str(i) for i in range(10)),
                      labels=torch.randint(0, 10, (n,), generator=g),
                      images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                      mean=CIFAR10_MEAN, std=CIFAR10_STD)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps per setting")
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile settings")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device; use --device cpu")

    settings = [(False, False)]
    if bf16_supported(args.device):
        settings.append((True, False))
    else:
        print(f"bf16 autocast: not native on {args.device}, left out")
    if not args.no_compile:
        settings += [(bf16, True) for bf16, _ in list(settings)]
    split = synthetic_split(args.batch_size * (args.warmup + args.steps + 1))
    trainers, streams = {}, {}
    for bf16, compiled in settings:
        cfg = TrainConfig(model=args.model, batch_size=args.batch_size, device=args.device,
                          bf16=bf16, compile=compiled, epochs=1)
        name = f"{'bf16' if bf16 else 'fp32'}, {'compiled' if compiled else 'eager'}"
        trainers[name] = Trainer(cfg, 1, split)
        streams[name] = trainers[name].batches(epoch=0)
    for name, tr in trainers.items():  # warm-up, setting by setting
        t = time.perf_counter()
        for _ in range(args.warmup):
            tr.step(*next(streams[name]))
        sync(args.device)
        print(f"  warm-up {name:16s} {time.perf_counter() - t:6.1f} s")
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(args.steps):
        for name, tr in trainers.items():
            batch = next(streams[name])
            sync(args.device)
            t = time.perf_counter()
            tr.step(*batch)
            sync(args.device)
            times[name].append(time.perf_counter() - t)
    print(f"{args.model}, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}; median of {args.steps} interleaved steps")
    base = statistics.median(times["fp32, eager"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:16s} {med:7.3f} s/step  {args.batch_size / med:7.0f} images/s  {base / med:5.2f}x fp32 eager")


if __name__ == "__main__":
    main()
