"""Real int8 execution on ONNX Runtime: our W8A8 QDQ export against its FP32 twin and against
ONNX Runtime's own ``quantize_static``, for size, latency and top-1.

For each model: the BN-folded FP32 export, our W8A8 QDQ export as simulated ("ours") and
with calibrated conv-output requantization so that every quantized conv runs as
QLinearConv ("ours+req"), and ONNX Runtime's quantize_static (MinMax, Entropy,
Percentile) on the same calibration images. Latencies are timed in interleaved rounds in
one process, so that machine noise hits all models alike; ratios are to fp32.

    nice -n 19 .venv/bin/python benchmarks/onnx_int8.py --models resnet18_cifar deit_tiny_cifar --n-eval 500
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from vitquant_core import QuantConfig, quantize
from vitquant_core.data import balanced_indices, calibration_batches, load_cifar10
from vitquant_core.energy.int8 import time_interleaved
from vitquant_core.eval import evaluate
from vitquant_core.export import (
    CALIBRATION_METHODS,
    evaluate_onnx,
    export_fp32,
    export_qdq,
    file_size,
    kernel_counts,
    ort_quantize_static,
)
from vitquant_core.models import load_model
from vitquant_core.nn import QuantConv2d

INT_KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "ConvInteger", "MatMulInteger")


def build(name: str, workdir: Path, calib: list[torch.Tensor], methods: list[str]) -> tuple[dict, object]:
    model, _ = load_model(name)
    qmodel = quantize(model, QuantConfig.uniform(8, 8), calib, progress=False)
    example = calib[0][:2]
    paths = {"fp32": export_fp32(model, example, workdir / f"{name}.fp32.onnx"),
             "ours": export_qdq(qmodel, example, workdir / f"{name}.qdq.onnx")}
    if any(isinstance(m, QuantConv2d) for m in qmodel.modules()):  # a ViT has no conv to requantize
        paths["ours+req"] = export_qdq(qmodel, example, workdir / f"{name}.qdq_req.onnx", output_calib=calib)
    for method in methods:
        t0 = time.perf_counter()
        paths[f"ort-{method}"] = ort_quantize_static(paths["fp32"], calib, method)
        print(f"  ORT quantize_static {method}: {time.perf_counter() - t0:.0f} s")
    return {"model": model, "qmodel": qmodel, "paths": paths}, qmodel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18_cifar", "deit_tiny_cifar"])
    p.add_argument("--n-eval", type=int, default=500, help="class-balanced CIFAR-10 test images (0: skip top-1)")
    p.add_argument("--n-calib", type=int, default=128, help="calibration images from the train split")
    p.add_argument("--methods", nargs="*", default=list(CALIBRATION_METHODS), help="ORT quantize_static methods")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: one per core)")
    args = p.parse_args()

    torch.manual_seed(0)
    calib = calibration_batches(load_cifar10("train"), args.n_calib, seed=0, batch_size=64)
    test = load_cifar10("test")
    loader = test.loader(balanced_indices(test.labels, args.n_eval, seed=0), batch_size=100) if args.n_eval else None
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, threads {args.threads or 'default'}, "
          f"calibration {args.n_calib} train images, top-1 on {args.n_eval} test images")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"\n{name}")
            built, qmodel = build(name, Path(tmp), calib, args.methods)
            paths = built["paths"]
            sim = evaluate(qmodel, loader, progress=False) if loader else None
            if loader:
                fp = evaluate(built["model"], loader, progress=False)
                print(f"  torch fp32 top-1 {fp.top1:6.2f}   our simulated W8A8 top-1 {sim.top1:6.2f}")
            lat = {b: time_interleaved(paths, b, args.rounds, 20 if b == 1 else 3, args.threads)
                   for b in (1, 64)}
            print(f"  {'engine':14s} {'MB':>6s} {'x fp32':>6s} {'b1 ms':>7s} {'speedup':>7s} {'b64 ms':>8s} "
                  f"{'speedup':>7s} {'top-1':>6s} {'vs sim':>6s} {'agree':>6s}  conv+matmul int8 / float")
            for k, path in paths.items():
                size = file_size(path) / 1e6
                row = (f"  {k:14s} {size:6.1f} {file_size(paths['fp32']) / 1e6 / size:6.2f} "
                       f"{lat[1][k]:7.2f} {lat[1]['fp32'] / lat[1][k]:6.2f}x {lat[64][k]:8.1f} "
                       f"{lat[64]['fp32'] / lat[64][k]:6.2f}x")
                if loader:
                    r = evaluate_onnx(path, loader, args.threads)
                    agree = 100.0 * (r.predictions == sim.predictions).float().mean().item()
                    row += f" {r.top1:6.2f} {r.top1 - sim.top1:+6.2f} {agree:6.1f}"
                c = kernel_counts(path)
                n_int = sum(c.get(o, 0) for o in INT_KERNELS)
                n_float = sum(c.get(o, 0) for o in ("Conv", "FusedConv", "MatMul", "Gemm", "FusedMatMul"))
                print(row + f"  {n_int} / {n_float}")


if __name__ == "__main__":
    main()
