"""The ViT recipe's augmentation, per image (torchvision) against batched (vitquant_core.training.augment).

Both pipelines do the same work on the same uint8 batches: random crop (pad 4) + flip, then
TrivialAugmentWide with one draw per image. torchvision's ``v2.TrivialAugmentWide`` draws
once per call, so it runs image by image (what a DataLoader worker does); the batched
pipeline transforms the images that drew the same operation together. Repeats are
interleaved so that machine noise hits both alike; prints the median milliseconds per image
of each, on one CPU thread and, where there is one, on the GPU, and their ratios.

    .venv/bin/python vitquant_core/training/benchmarks/augment_throughput.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.transforms import v2

from vitquant_core.training.augment import random_crop_flip, trivial_augment_wide


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (a DataLoader worker has one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    per_image_tf = v2.TrivialAugmentWide()

    def per_image() -> None:
        for img in random_crop_flip(x, None):
            per_image_tf(img)

    def batched(device: str) -> None:
        trivial_augment_wide(random_crop_flip(x.to(device), None), None)
        if device == "cuda":
            torch.cuda.synchronize()

    runs = {"torchvision per image, cpu": per_image, "batched, cpu": lambda: batched("cpu")}
    if torch.cuda.is_available():
        runs["batched, cuda"] = lambda: batched("cuda")
    for f in runs.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, f in runs.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["torchvision per image, cpu"])
    print(f"batch {args.batch_size}, {args.threads} CPU thread(s), median of {args.repeats} interleaved repeats")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:28s} {1e3 * med / args.batch_size:7.3f} ms/image   {base / med:6.1f}x torchvision per image")


if __name__ == "__main__":
    main()
