"""How much a fake-quantized evaluation costs against the float model's, measured as a ratio.

Runs FP and quantized (W8A8, W4A4) forward passes over the same batches, interleaved and
repeated, so that machine noise hits all of them alike; prints the median time of each and
its ratio to fp32.

    .venv/bin/python benchmarks/eval_overhead.py --model resnet20_cifar --random-weights
    .venv/bin/python benchmarks/eval_overhead.py --model deit_tiny_cifar --random-weights
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from vitquant_core import QuantConfig, quantize
from vitquant_core.models import create_model, get_entry, load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--random-weights", action="store_true", help="skip the checkpoint (timing only)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    torch.manual_seed(0)
    model = create_model(args.model) if args.random_weights else load_model(args.model)[0]
    entry = get_entry(args.model)
    size = entry.input_size if entry else (3, 224, 224)
    xs = [torch.randn(args.batch_size, *size) for _ in range(args.batches)]
    models = {"fp32": model}
    for bits in (8, 4):
        models[f"W{bits}A{bits}"] = quantize(model, QuantConfig.uniform(bits, bits), xs[:1], progress=False)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            m(xs[0])
        for _ in range(args.repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                for x in xs:
                    m(x)
                times[name].append(time.perf_counter() - t0)
    fp = statistics.median(times["fp32"])
    print(f"{args.model}: {args.batches} x {args.batch_size} images, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"  {name:6s} median {med:7.3f} s   ratio to fp32 {med / fp:5.2f}x")


if __name__ == "__main__":
    main()
