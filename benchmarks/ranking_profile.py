"""Where ranking-aware PTQ spends its time on DeiT-Tiny (CIFAR, 12 blocks, 65 tokens).

Profiles one ranking_aware_quantize call with cProfile and prints the total time and the
functions that take most of it.

    .venv/bin/python benchmarks/ranking_profile.py --n-calib 8 --candidates 20 --rounds 1
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import torch

from vitquant_core import QuantConfig
from vitquant_core.models import create_model
from vitquant_core.ptq import RankingAwareConfig, ranking_aware_quantize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-calib", type=int, default=8)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    torch.manual_seed(0)
    model = create_model("deit_tiny_cifar")
    calib = [torch.randn(args.n_calib, 3, 32, 32)]
    rq = RankingAwareConfig(n_candidates=args.candidates, max_rounds=args.rounds)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    ranking_aware_quantize(model, QuantConfig.uniform(args.bits, args.bits), calib, rq, progress=False)
    prof.disable()
    print(f"W{args.bits}A{args.bits}, {args.n_calib} images, C={args.candidates}, {args.rounds} round(s), "
          f"{torch.get_num_threads()} threads: {time.perf_counter() - t0:.1f} s")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
