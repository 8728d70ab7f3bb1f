"""RepQ-ViT (Li et al., ICCV 2023): quantizer choices, then scale reparameterization.

The official code (zkkli/RepQ-ViT) does the following, and so does :func:`repq_quantize`:

* **Post-LayerNorm activations** (the inputs of ``qkv`` and ``fc1``) are first calibrated
  per channel: asymmetric, each channel's range chosen among the quantile pairs
  (1 − p, p), p ∈ {0.999, 0.9999, 0.99999}, by MSE (the ``quantile_mse`` observer).
* **Reparameterization** turns those per-channel scales Δ_c and zero points z_c into one
  per-tensor pair that integer kernels can use: Δ̃ = mean(Δ_c), z̃ = mean(z_c), r = Δ_c / Δ̃,
  b = min_c / r − miñ (min = −z·Δ). The LayerNorm absorbs the change (γ ← γ / r,
  β ← β / r − b) and the next Linear undoes it (W ← W·diag(r), bias ← bias + W·b), so the
  float network computes exactly what it did; quantizing the new activation with (Δ̃, z̃)
  is quantizing the old one with (Δ_c, z_c). The weight scales are then chosen again for
  the new weights. We round z̃ to an integer (the official code keeps the mean) so that
  the grid is a true integer grid: any target pair gives the same equivalence.
* **Post-softmax** attention: the log√2 quantizer (``a_quantizer="log_sqrt2"``).
* **Weights**: per output channel, asymmetric, the same quantile search; every other
  activation per tensor, asymmetric, the same search.

One difference, stated: the official code calibrates each quantizer on its first call with
every earlier quantizer already active; here all activation ranges are observed in float,
as in the rest of the book. :func:`reparameterize` is also usable on its own, in front of
any other method (``repq+ranking`` in notebook 04).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from ..nn.config import LayerSpec, QuantConfig
from ..nn.modules import ActQuantizer, QuantLinear
from ..nn.protocols import protocol_config
from ..nn.quantize import quantize
from ..quant.granularity import PerChannel, PerTensor
from ..quant.observers import QuantileMSEObserver
from ..quant.qtypes import QType

POST_LN = ("attn.qkv", "mlp.fc1")  # the Linear after norm1 and after norm2 in a timm Block
SOFTMAX_QUANTIZERS = ("log_sqrt2", "adalog", "log2", "uniform", "twin_uniform")


def repq_spec() -> LayerSpec:
    """RepQ-ViT's quantizers for every operation (bits are set by the protocol)."""
    return LayerSpec(w_granularity=PerChannel(0), w_observer="quantile_mse", w_signedness="asymmetric",
                     a_granularity=PerTensor(), a_observer="quantile_mse", a_signedness="asymmetric")


def repq_config(protocol: str, w_bits: int, a_bits: int, softmax: str = "log_sqrt2") -> QuantConfig:
    if softmax not in SOFTMAX_QUANTIZERS:
        raise ValueError(f"softmax quantizer must be one of {SOFTMAX_QUANTIZERS}, got {softmax!r}")
    rules = {"*.softmax": LayerSpec(None, a_bits, a_quantizer=softmax, a_observer="quantile_mse")}
    return protocol_config(protocol, w_bits, a_bits, repq_spec(), rules)


def norm_linear_pairs(model: nn.Module) -> list[tuple[str, nn.LayerNorm, str, nn.Module]]:
    """(norm name, norm, linear name, linear) for norm1 → attn.qkv and norm2 → mlp.fc1 of every block."""
    pairs = []
    for name, block in model.named_modules():
        for norm_attr, linear_path in (("norm1", POST_LN[0]), ("norm2", POST_LN[1])):
            norm = getattr(block, norm_attr, None)
            try:
                linear = block.get_submodule(linear_path)
            except AttributeError:
                continue
            if isinstance(norm, nn.LayerNorm) and hasattr(linear, "weight"):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + norm_attr, norm, prefix + linear_path, linear))
    return pairs


def post_ln_ranges(model: nn.Module, calib: list[torch.Tensor],
                   a_bits: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel (Δ_c, z_c) of every post-LayerNorm activation, by RepQ-ViT's quantile search."""
    pairs = norm_linear_pairs(model)
    if not pairs:
        raise ValueError("RepQ-ViT's reparameterization needs timm-style blocks (norm1 → attn.qkv, "
                         "norm2 → mlp.fc1); this model has none")
    observers = {lin: QuantileMSEObserver(QType(a_bits, signed=False), PerChannel(-1), symmetric=False,
                                          max_samples=1 << 21) for _, _, lin, _ in pairs}
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=lin: observers[n].update(args[0]))
             for _, _, lin, m in pairs]
    try:
        with torch.inference_mode():
            for x in calib:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: tuple(t.reshape(-1) for t in obs.compute()) for n, obs in observers.items()}  # type: ignore[misc]


@torch.no_grad()
def reparameterize_norm_linear(norm: nn.LayerNorm, linear: nn.Module, r: torch.Tensor, b: torch.Tensor) -> None:
    """γ ← γ/r, β ← β/r − b on the LayerNorm; W ← W·diag(r), bias ← bias + W_new·b on the Linear.

    The float output of ``linear(norm(x))`` is unchanged (to float rounding).
    """
    norm.weight.data = norm.weight.data / r
    norm.bias.data = norm.bias.data / r - b
    linear.weight.data = linear.weight.data * r[None, :]
    shift = linear.weight.data @ b
    if linear.bias is None:
        linear.bias = nn.Parameter(shift.clone(), requires_grad=False)
    else:
        linear.bias.data = linear.bias.data + shift


def reparameterize(model: nn.Module, calib: list[torch.Tensor], a_bits: int) -> tuple[nn.Module, dict[str, Any]]:
    """A float copy of ``model`` whose post-LayerNorm activations quantize per tensor with (Δ̃, z̃)
    exactly as the original ones did per channel with (Δ_c, z_c); returns it and the targets."""
    reparam = copy.deepcopy(model).eval()
    ranges = post_ln_ranges(reparam, calib, a_bits)
    targets: dict[str, Any] = {}
    for _norm_name, norm, lin_name, linear in norm_linear_pairs(reparam):
        delta, zp = ranges[lin_name]
        t_delta, t_zp = delta.mean(), torch.round(zp.mean())
        r = delta / t_delta
        b = (-zp * delta) / r - (-t_zp * t_delta)
        reparameterize_norm_linear(norm, linear, r, b)
        targets[lin_name] = {"scale": float(t_delta), "zero_point": float(t_zp),
                             "r_min": float(r.min()), "r_max": float(r.max())}
    return reparam, targets


def set_targets(qmodel: nn.Module, targets: dict[str, Any], a_bits: int) -> None:
    """Give each reparameterized Linear's input quantizer its one per-tensor scale and zero point
    (RepQ-ViT's mean Δ̃ and z̃), at ``a_bits``."""
    for name, t in targets.items():
        module = qmodel.get_submodule(name)
        q = module.input_quantizer if isinstance(module, QuantLinear) else None
        if isinstance(q, ActQuantizer):  # None where the protocol keeps this input in float
            q.granularity = PerTensor()
            q.set_scale(torch.tensor(t["scale"]), QType(a_bits, signed=False), torch.tensor(t["zero_point"]))
            q.resolved = "asymmetric"


def repq_quantize(model: nn.Module, w_bits: int, a_bits: int, calib_data: Iterable[torch.Tensor],
                  protocol: str = "paper", softmax: str = "log_sqrt2", progress: bool = True) -> nn.Module:
    """A RepQ-ViT-quantized copy of ``model`` (``model`` is untouched); see the module docstring.

    ``softmax`` picks the post-softmax quantizer: RepQ-ViT's ``log_sqrt2``, or ``adalog`` (an
    adaptive base), ``log2``, ``uniform``, ``twin_uniform`` for comparison.
    """
    t0 = time.perf_counter()
    calib = [b[0] if isinstance(b, (tuple, list)) else b for b in calib_data]
    if not calib:
        raise ValueError("RepQ-ViT needs calibration data: pass at least one batch of inputs")
    reparam, targets = reparameterize(model, calib, a_bits)
    config = repq_config(protocol, w_bits, a_bits, softmax)
    qmodel = quantize(reparam, config, calib, progress=progress)
    set_targets(qmodel, targets, a_bits)
    report = qmodel.vitquant_report
    report.config["method"] = {"name": "repq-vit", "transform": "repq_reparameterization",
                               "softmax_quantizer": softmax, "reparameterized": targets,
                               "calib_seconds": round(time.perf_counter() - t0, 2)}
    return qmodel


def repq_post_ln_spec(spec: LayerSpec) -> LayerSpec:
    """The spec of a post-LayerNorm input after reparameterization: per tensor, asymmetric."""
    return replace(spec, a_granularity=PerTensor(), a_signedness="asymmetric")
