"""Bias correction: fold a layer's expected quantization error into its bias.

Liu et al., "Post-Training Quantization for Vision Transformer" (NeurIPS 2021, arXiv:2106.14156),
§3.4. With ε_X = Q(X) − X and ε_W = Q(W) − W, a quantized linear layer outputs

    Ô = Q(X)·Q(W)ᵀ + b = O + ε_X·Wᵀ + X·ε_Wᵀ + ε_X·ε_Wᵀ,

so its expected output error per output channel is E[ε_X·W] + E[X·ε_W] + E[ε_X·ε_W]. That
expectation, estimated on the calibration set, is subtracted from the bias, which removes
the systematic (mean) part of the error; the zero-mean part is left to the scale search.
This is the "empirical" bias correction of Nagel et al. (ICCV 2019, §4.2) applied per layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn.modules import QuantLinear


def expected_output_error(module: QuantLinear, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """E[Ô − O] per output channel of ``module`` on the inputs ``x`` (shape ``[..., in]``).

    Ô is the module's own quantized forward (its input quantizer and cached quantized
    weight, exactly what inference computes). O is ``target`` if given (e.g. the float
    model's output of this layer, whose inputs differ from ``x`` by the upstream error),
    else the float layer on the same inputs: then the bias cancels in the difference and the
    result is the sum of the three error terms E[ε_X·W] + E[X·ε_W] + E[ε_X·ε_W], averaged
    over every sample and token.
    """
    if not isinstance(module, QuantLinear):
        raise TypeError(f"bias correction handles QuantLinear layers, got {type(module).__name__}")
    with torch.no_grad():
        x = x.to(module.weight.device, module.weight.dtype)
        q_out = module(x)
        fp_out = F.linear(x, module.weight, module.bias) if target is None else target.to(q_out)
        if fp_out.shape != q_out.shape:
            raise ValueError(f"target shape {tuple(fp_out.shape)} does not match the output {tuple(q_out.shape)}")
        # mean in float64: the shift is a small difference of large sums over many tokens
        return (q_out - fp_out).reshape(-1, module.out_features).double().mean(dim=0).to(module.weight.dtype)


def correct_bias(module: QuantLinear, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Fold the expected output error of ``module`` on ``x`` into its bias; returns the shift.

    ``bias ← bias − E[Ô − O]`` (O: ``target``, or the float layer on ``x``); a layer without a
    bias gets one (initialised to ``−E[Ô − O]``), since a per-channel constant is the only
    thing bias correction can add.
    """
    shift = expected_output_error(module, x, target)
    with torch.no_grad():
        old = module.bias if module.bias is not None else torch.zeros_like(shift)
        # a fresh Parameter rather than an in-place update: the module may share nothing with
        # the float model, but a new tensor makes that certain
        module.bias = nn.Parameter((old.detach() - shift).clone(), requires_grad=False)
    return shift
