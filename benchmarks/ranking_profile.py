"""Where ranking-aware PTQ spends its time on DeiT-Tiny (CIFAR, 12 blocks, 65 tokens).

Three parts, all in one run on the same machine state:

1. The profile setting (12 blocks, ``--n-calib`` images, ``--candidates``, ``--rounds``)
   calibrated with the pre-speed-up *settings* (``incremental=False, max_rows=None``: every
   layer's inputs re-captured from the network input, the ranking loss on every score row),
   with the defaults, and with the defaults plus ``coarse_to_fine``; times and ratios. The
   code-level speed-ups (ranking-loss kernel, similarity reductions) apply to all three, so
   these ratios understate the gain over the earlier code (33.9 s at 2 threads, 52.9 s at 1
   thread on this profile setting before them).
2. The paper setting (C = 100, up to 20 rounds) on the first ``--extrapolate-blocks`` blocks
   with ``--extrapolate-images`` images, scaled to 12 blocks and ``--target-images`` images.
   Every cost of the search is linear in the images and the blocks are alike, so the scaling
   is linear (conservative for the defaults: the ranking term's rows are capped at 4,096,
   so its cost stops growing with the images); what it cannot know is how many alternating
   rounds deeper layers need (the first block's layers stop after 1-3 rounds), so it is an
   estimate, not a measurement.
3. ``--profile``: the functions taking most of the default run (cProfile).

    PYTHONPATH=. .venv/bin/python benchmarks/ranking_profile.py --threads 1
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from typing import Any

import torch

from vitquant_core import QuantConfig
from vitquant_core.models import create_model
from vitquant_core.ptq import RankingAwareConfig, ranking_aware_quantize

SETTINGS: dict[str, dict[str, Any]] = {
    "old settings (full re-capture, all rows)": dict(incremental=False, max_rows=None),
    "defaults (incremental, <= 4096 rows)": {},
    "defaults + coarse_to_fine": dict(coarse_to_fine=True),
}


def calibrate(model: torch.nn.Module, bits: int, calib: list[torch.Tensor], rq: RankingAwareConfig,
              prof: cProfile.Profile | None = None) -> tuple[float, torch.nn.Module]:
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    q = ranking_aware_quantize(model, QuantConfig.uniform(bits, bits), calib, rq, progress=False)
    if prof is not None:
        prof.disable()
    return time.perf_counter() - t0, q


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-calib", type=int, default=8)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--skip-old", action="store_true", help="do not time the old settings (the slowest run)")
    p.add_argument("--extrapolate-blocks", type=int, default=1, help="0: skip the paper-setting estimate")
    p.add_argument("--extrapolate-images", type=int, default=32)
    p.add_argument("--target-images", type=int, default=128)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("deit_tiny_cifar")
    calib = [torch.randn(args.n_calib, 3, 32, 32)]
    print(f"DeiT-Tiny (12 blocks), W{args.bits}A{args.bits}, {args.n_calib} images, C={args.candidates}, "
          f"{args.rounds} round(s), {torch.get_num_threads()} threads")
    times: dict[str, float] = {}
    prof = cProfile.Profile() if args.profile else None
    for label, kw in SETTINGS.items():
        if args.skip_old and kw.get("incremental") is False:
            continue
        rq = RankingAwareConfig(n_candidates=args.candidates, max_rounds=args.rounds, **kw)
        times[label], _ = calibrate(model, args.bits, calib, rq, prof if label.startswith("defaults (") else None)
    ref = next(iter(times.values()))
    for label, t in times.items():
        print(f"  {label:42s} {t:7.1f} s   x{ref / t:5.2f} faster than the first line")

    if args.extrapolate_blocks > 0:
        k, n = args.extrapolate_blocks, args.extrapolate_images
        short = create_model("deit_tiny_cifar")
        short.blocks = short.blocks[:k]
        x = [torch.randn(n, 3, 32, 32)]
        paper = RankingAwareConfig()
        print(f"\npaper setting (C={paper.n_candidates}, <= {paper.max_rounds} rounds), first {k} block(s), "
              f"{n} images, scaled to 12 blocks and {args.target_images} images:")
        for label, kw in list(SETTINGS.items())[1:]:
            t, q = calibrate(short, args.bits, x, RankingAwareConfig(**kw))
            rounds = [row["rounds"] for row in q.vitquant_report.layers if row.get("searched")]
            est = t * (12 / k) * (args.target_images / n)
            print(f"  {label:42s} {t:7.1f} s measured (rounds {min(rounds)}-{max(rounds)}) "
                  f"-> ~{est / 60:5.1f} min estimated")

    if prof is not None:
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
