"""Where ranking-aware PTQ spends its time on DeiT-Tiny (CIFAR, 12 blocks, 65 tokens).

Three parts, all in one run on the same machine state:

1. The profile setting (12 blocks, ``--n-calib`` images, ``--candidates``, ``--rounds``)
   calibrated with the pre-speed-up *settings* (``incremental=False, max_rows=None``: every
   layer's inputs re-captured from the network input, the ranking loss on every score row),
   with the defaults, and with the defaults plus ``coarse_to_fine``; times and ratios. The
   code-level speed-ups (ranking-loss kernel, similarity reductions) apply to all three;
   ``--baseline REV`` also times the code of git revision REV (e.g. ``af07db8``, before the
   speed-ups) with its own defaults, in a subprocess, so that the ratios cover them too.
2. The paper setting (C = 100, up to 20 rounds) on the first ``--extrapolate-blocks`` blocks
   with ``--extrapolate-images`` images, scaled to 12 blocks and ``--target-images`` images.
   Every cost of the search is linear in the images and the blocks are alike, so the scaling
   is linear (conservative for the defaults: the ranking term's rows are capped at 4,096,
   so its cost stops growing with the images); what it cannot know is how many alternating
   rounds deeper layers need (the first block's layers stop after 1-3 rounds), so it is an
   estimate, not a measurement.
3. ``--profile``: the functions taking most of the default run (cProfile).

    PYTHONPATH=. .venv/bin/python benchmarks/ranking_profile.py --threads 1 --baseline af07db8
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vitquant_core import QuantConfig
from vitquant_core.models import create_model
from vitquant_core.ptq import RankingAwareConfig, ranking_aware_quantize

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, dict[str, Any]] = {
    "old settings (full re-capture, all rows)": dict(incremental=False, max_rows=None),
    "defaults (incremental, <= 4096 rows)": {},
    "defaults + coarse_to_fine": dict(coarse_to_fine=True),
}


def time_run(blocks: int | None, n_images: int, bits: int, rq_kwargs: dict[str, Any],
             prof: cProfile.Profile | None = None) -> tuple[float, list[int]]:
    """Seconds of one calibration of DeiT-Tiny (its first ``blocks`` blocks) and the rounds each
    searched operation took; the model and the images depend on nothing but the seed."""
    torch.manual_seed(0)
    model = create_model("deit_tiny_cifar")
    if blocks is not None:
        model.blocks = model.blocks[:blocks]
    calib = [torch.randn(n_images, 3, 32, 32)]
    rq = RankingAwareConfig(**rq_kwargs)
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    q = ranking_aware_quantize(model, QuantConfig.uniform(bits, bits), calib, rq, progress=False)
    if prof is not None:
        prof.disable()
    seconds = time.perf_counter() - t0
    return seconds, [row["rounds"] for row in q.vitquant_report.layers if row.get("searched")]


def time_at_revision(rev: str, blocks: int | None, n_images: int, bits: int, rq_kwargs: dict[str, Any],
                     threads: int) -> tuple[float, list[int]]:
    """``time_run`` with the package as it was at git revision ``rev`` (in a subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "src.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "vitquant_core"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        job = json.dumps(dict(blocks=blocks, n_images=n_images, bits=bits, rq_kwargs=rq_kwargs, threads=threads))
        env = dict(os.environ, PYTHONPATH=tmp)
        out = subprocess.run([sys.executable, __file__, "--child", job], env=env, check=True,
                             capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["seconds"], res["rounds"]


def child(job: str) -> None:
    spec = json.loads(job)
    torch.set_num_threads(spec.pop("threads"))
    seconds, rounds = time_run(**spec)
    print(json.dumps({"seconds": seconds, "rounds": rounds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-calib", type=int, default=8)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--baseline", default=None, help="git revision whose code is timed too (its own defaults)")
    p.add_argument("--skip-old", action="store_true", help="do not time the old settings (the slowest run)")
    p.add_argument("--extrapolate-blocks", type=int, default=1, help="0: skip the paper-setting estimate")
    p.add_argument("--extrapolate-images", type=int, default=32)
    p.add_argument("--target-images", type=int, default=128)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"DeiT-Tiny (12 blocks), W{args.bits}A{args.bits}, {args.n_calib} images, C={args.candidates}, "
          f"{args.rounds} round(s), {threads} threads")
    search = dict(n_candidates=args.candidates, max_rounds=args.rounds)
    times: dict[str, float] = {}
    if args.baseline:
        times[f"code at {args.baseline} (its defaults)"], _ = time_at_revision(
            args.baseline, None, args.n_calib, args.bits, search, threads)
    prof = cProfile.Profile() if args.profile else None
    for label, kw in SETTINGS.items():
        if args.skip_old and kw.get("incremental") is False:
            continue
        times[label], _ = time_run(None, args.n_calib, args.bits, {**search, **kw},
                                   prof if label.startswith("defaults (") else None)
    ref_label, ref = next(iter(times.items()))
    for label, t in times.items():
        print(f"  {label:42s} {t:7.1f} s   x{ref / t:5.2f} faster than '{ref_label}'")

    if args.extrapolate_blocks > 0:
        k, n = args.extrapolate_blocks, args.extrapolate_images
        paper = RankingAwareConfig()
        scale = (12 / k) * (args.target_images / n)
        print(f"\npaper setting (C={paper.n_candidates}, <= {paper.max_rounds} rounds), first {k} block(s), "
              f"{n} images, scaled to 12 blocks and {args.target_images} images:")
        runs: dict[str, tuple[float, list[int]]] = {}
        if args.baseline:
            runs[f"code at {args.baseline} (its defaults)"] = time_at_revision(args.baseline, k, n, args.bits, {},
                                                                                threads)
        for label, kw in list(SETTINGS.items())[1:]:
            runs[label] = time_run(k, n, args.bits, kw)
        for label, (t, rounds) in runs.items():
            print(f"  {label:42s} {t:7.1f} s measured (rounds {min(rounds)}-{max(rounds)}) "
                  f"-> ~{t * scale / 60:5.1f} min estimated")

    if prof is not None:
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
