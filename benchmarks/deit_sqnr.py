"""Logit and token SQNR of 8-bit DeiT-Tiny (random timm weights) under several observers.

Reproduces the figures behind tests/nn/test_quantize.py::test_deit_tiny_8bit_sqnr: the logits
(read from the class token) against the patch tokens, for weights-only W8 and for W8A8 with
each activation observer, over a few seeds.

    .venv/bin/python benchmarks/deit_sqnr.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse

import torch

from vitquant_core import QuantConfig, quantize
from vitquant_core.models import create_model


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    return (10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean())).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--with-mse", action="store_true", help="also MSE + asymmetric grids (slower)")
    args = p.parse_args()
    configs = {"W8 weights only": QuantConfig.uniform(8, None),
               "W8A8 minmax": QuantConfig.uniform(8, 8),
               "W8A8 percentile": QuantConfig.uniform(8, 8, a_observer="percentile")}
    if args.with_mse:
        configs["W8A8 mse asymmetric"] = QuantConfig.uniform(8, 8, a_observer="mse", a_signedness="asymmetric")
    print(f"{'seed':>4}  {'config':22s} {'logits dB':>9} {'cls token dB':>12} {'patch tokens dB':>15}")
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = create_model("deit_tiny_patch16_224", pretrained=False)
        calib = [torch.randn(8, 3, 224, 224) for _ in range(2)]
        x = torch.randn(8, 3, 224, 224)
        with torch.no_grad():
            ref, ref_tok = model(x), model.forward_features(x)
            for name, cfg in configs.items():
                q = quantize(model, cfg, calib if cfg.default.a_bits else None, progress=False)
                out, tok = q(x), q.forward_features(x)
                print(f"{seed:>4}  {name:22s} {sqnr_db(ref, out):9.2f} {sqnr_db(ref_tok[:, 0], tok[:, 0]):12.2f} "
                      f"{sqnr_db(ref_tok[:, 1:], tok[:, 1:]):15.2f}", flush=True)


if __name__ == "__main__":
    main()
