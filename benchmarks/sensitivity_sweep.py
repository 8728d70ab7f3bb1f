"""How long a full one-operation-at-a-time sensitivity sweep takes, against one full evaluation.

Measured in one run on the same machine state: one evaluation of the float model on the
fixed held-out subset (the unit), the sweep's calibration (one calibrated model per width),
and the sweep itself (every quantizable operation of ``--protocol`` at ``--candidate``,
direct view, block-boundary replay), and the ratio sweep / evaluation. ``--no-replay``
times the same sweep re-running every pass from the input as well, to show what the replay
saves. The subset and calibration images are the CIFAR-10 test and train splits, drawn as
the notebooks draw them (seeded, class-balanced).

    PYTHONPATH=. .venv/bin/python benchmarks/sensitivity_sweep.py --model deit_tiny_cifar --threads 2
    PYTHONPATH=. .venv/bin/python benchmarks/sensitivity_sweep.py --tiny   # a micro ViT, synthetic images
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from vitquant_core.analysis.sensitivity import sensitivity_sweep
from vitquant_core.analysis.sensitivity.ops import config_of, prepared_float_calibrated


def tiny_setup(n_eval: int, n_calib: int) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """A micro timm ViT (16x16 images, 4x4 patches, dim 32, 2 blocks) and synthetic images."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10).eval()
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(n_calib, 3, 16, 16, generator=g)]
    return model, calib, torch.randn(n_eval, 3, 16, 16, generator=g), torch.randint(0, 10, (n_eval,), generator=g)


def real_setup(name: str, checkpoint: str | None, data_root: str | None, n_eval: int, n_calib: int,
               seed: int) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    from vitquant_core.data import balanced_indices, calibration_batches, load_split
    from vitquant_core.models import get_entry, load_model

    model, _ = load_model(name, checkpoint)
    dataset = get_entry(name).dataset
    test = load_split(dataset, "test", data_root, model_name=name, model=model)
    idx = balanced_indices(test.labels, n_eval, seed)
    xs, ys = zip(*test.loader(idx, batch_size=250))
    calib = calibration_batches(load_split(dataset, "train", data_root, model_name=name, model=model), n_calib,
                                seed, batch_size=min(64, n_calib))
    return model.eval(), calib, torch.cat(xs), torch.cat(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_tiny_cifar")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--tiny", action="store_true", help="a micro ViT on synthetic images (checks the script)")
    ap.add_argument("--protocol", default="paper", choices=("default", "paper"))
    ap.add_argument("--candidate", default="W4A4")
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-replay", action="store_true", help="also time the sweep without block-boundary replay")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, calib, x, y = (tiny_setup(args.n_eval, args.n_calib) if args.tiny else
                          real_setup(args.model, args.checkpoint, args.data_root, args.n_eval, args.n_calib,
                                     args.seed))
    name = "micro ViT (synthetic images)" if args.tiny else args.model
    bs = args.batch_size

    with torch.no_grad():
        model(x[:bs])  # warm-up: the first call pays one-off allocations
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, x.shape[0], bs):
            model(x[i:i + bs])
    eval_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    prepared_float_calibrated(model, config_of(args.protocol, args.candidate), calib)
    calib_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = sensitivity_sweep(model, args.protocol, [args.candidate], calib, x, y, batch_size=bs)
    sweep_s = time.perf_counter() - t0
    n_ops = sum(r["quantized"] for r in rows)
    result = {"model": name, "protocol": args.protocol, "candidate": args.candidate, "n_eval": int(x.shape[0]),
              "n_calib": sum(int(c.shape[0]) for c in calib), "threads": args.threads, "n_ops": n_ops,
              "eval_seconds": round(eval_s, 2), "calibration_seconds": round(calib_s, 2),
              "sweep_seconds": round(sweep_s, 2), "sweep_over_eval": round(sweep_s / eval_s, 2),
              "passes_per_eval": round((sweep_s - calib_s) / eval_s / max(n_ops, 1), 3)}
    if args.no_replay:
        t0 = time.perf_counter()
        sensitivity_sweep(model, args.protocol, [args.candidate], calib, x, y, batch_size=bs, replay_depth=0)
        result["sweep_no_replay_seconds"] = round(time.perf_counter() - t0, 2)
        result["replay_speedup"] = round(result["sweep_no_replay_seconds"] / sweep_s, 2)
    print(f"{name}: {n_ops} operations at {args.candidate} ({args.protocol}), {x.shape[0]} images, "
          f"{args.threads} threads")
    print(f"one full evaluation: {eval_s:.2f} s; calibration of one width: {calib_s:.2f} s")
    print(f"sensitivity sweep:   {sweep_s:.2f} s = {sweep_s / eval_s:.1f} full evaluations "
          f"({result['passes_per_eval']} of an evaluation per operation, calibration excluded)")
    if args.no_replay:
        print(f"without replay:      {result['sweep_no_replay_seconds']:.2f} s (replay {result['replay_speedup']}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
