"""Cheap sensitivity proxies, to set beside the direct measure.

* **Fisher-weighted output error** (NVIDIA TensorRT Model Optimizer, ``auto_quantize``):
  Σ (∂L/∂Y)² · (Ŷ − Y)² over the images and the elements of the operation's output Y, where Ŷ
  is its output with that operation alone quantized and ∂L/∂Y the gradient of the
  cross-entropy with labels drawn, seeded, from the float model's own softmax (the diagonal
  Fisher of the output, :mod:`vitquant_core.ptq.ptq4vit.capture`). One backward pass of the
  float model serves every width.
* **Hutchinson trace of the Hessian** (HAWQ-V2 / V3, Dong et al. NeurIPS 2020, Yao et al.
  ICML 2021): tr(H_op) ≈ (1/n) Σ_s v_sᵀ (H v_s)_op with seeded Rademacher vectors v_s over all
  weights at once and Hessian-vector products by double backward of the float model's loss
  on calibration images (PyHessian's estimator); the cross-block terms vanish in
  expectation, so each block's estimate is unbiased. HAWQ's per-width score is
  Ω = tr(H_op)/n_op · ‖Q(W) − W‖². Operations without weights (the attention matmuls) get none.

Each returns a :class:`ProxyResult` with its cost in seconds.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.modules import QuantConv2d
from ...nn.quantize import _batches, fold_batchnorm, prepare
from ...ptq.ptq4vit.capture import capture_operations, float_twin
from .ops import (
    ConfigFor,
    Switches,
    check_candidates,
    check_ops,
    config_of,
    operation_names,
    prepared_float_calibrated,
    width_candidates,
)


@dataclass
class ProxyResult:
    """scores[op][candidate] (0 for "float" and for operations a width keeps in float) and cost."""

    name: str
    scores: dict[str, dict[str, float]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _images(data: Any) -> torch.Tensor:
    xs = [x for x in _batches(data) if x.numel()]
    if not xs:
        raise ValueError("no images: pass a tensor (N, C, H, W) or batches of images (tensors or (x, y) pairs)")
    return torch.cat(xs)


def _output_error(sw: Switches, op: str, rec: Any) -> torch.Tensor:
    """Ŷ − Y of ``op`` on its recorded float inputs: its output with its quantizers on, minus off."""
    s = sw.ops[op]
    ins = rec.operands()
    a = s.module  # for the attention pseudo-operations, the QuantAttention owning the quantizers
    with torch.no_grad():
        if s.kind in ("linear", "conv"):
            y = a(ins[0])
        s.set(True)
        try:
            if s.kind in ("linear", "conv"):
                return a(ins[0]) - y
            if s.kind == "matmul_qk":
                q, k = ins
                return a.q_quantizer(q) @ a.k_quantizer(k).transpose(-2, -1) - q @ k.transpose(-2, -1)
            p, v = ins
            if s.kind == "softmax":
                return (a.attn_quantizer(p) - p) @ v
            return p @ (a.v_quantizer(v) - v)
        finally:
            s.set(False)


def fisher_proxy(model: nn.Module, config_for: ConfigFor, candidates: Sequence[str], calib: Any,
                 images: Any | None = None, ops: Sequence[str] | None = None, seed: int = 0,
                 chunk: int = 16) -> ProxyResult:
    """ModelOpt's score Σ (∂L/∂Y)²·(Ŷ − Y)² per operation and width (module docstring).

    ``calib`` calibrates the activation scales (as the direct measure does: on float
    activations); ``images`` (default: the calibration images) are those the score sums over.
    Chunk ``i`` of ``chunk`` images draws its labels with seed ``seed + i``.
    """
    cands = check_candidates(candidates)
    t0 = time.perf_counter()
    widths = width_candidates(cands)
    configs = {c: config_of(config_for, c) for c in widths}
    default_ops, known = operation_names(model, configs) if configs else ([], set())
    ops = check_ops(ops, default_ops, known) if configs else []
    x = _images(calib if images is None else images)
    prepared = {c: prepared_float_calibrated(model, configs[c], calib) for c in widths}
    scores = {op: dict.fromkeys(cands, 0.0) for op in ops}
    if prepared:
        # a float twin holding every operation (any width's prepared model does; the attention
        # matmuls need one that quantizes attention); a pseudo-operation is recorded at the
        # matmul whose output it changes: the softmax output and v both at attn·v
        qm = next((prepared[c][0] for c in widths if configs[c].quantize_attention), prepared[widths[0]][0])
        twin = float_twin(qm)
        record_of = {op: _record_name(op) for op in ops}
        kinds = {record_of[op]: _kind(twin, record_of[op]) for op in ops}
        for i, start in enumerate(range(0, x.shape[0], chunk)):
            recs = capture_operations(twin, list(kinds.items()), x[start:start + chunk], "fisher", seed + i, chunk)
            for c, (_qm, sw) in prepared.items():
                for op in ops:
                    if op in sw.ops:
                        rec = recs[record_of[op]]
                        err = _output_error(sw, op, rec)
                        scores[op][c] += float((rec.grad().double() ** 2 * err.double() ** 2).sum())
    return ProxyResult("fisher", scores, time.perf_counter() - t0, {"n_images": int(x.shape[0]), "seed": seed})


def _record_name(op: str) -> str:
    return op[: -len("softmax")] + "matmul_av" if op.endswith(".softmax") else op


def _kind(twin: nn.Module, name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("matmul_qk", "matmul_av"):
        return leaf
    return "conv" if isinstance(twin.get_submodule(name), (nn.Conv2d, QuantConv2d)) else "linear"


def rademacher(params: Sequence[torch.Tensor], seed: int, sample: int) -> list[torch.Tensor]:
    """Sample ``sample``'s ±1 vectors, one per parameter, the same for every batch of images."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + sample)
    return [torch.randint(0, 2, p.shape, generator=g).to(p.dtype) * 2 - 1 for p in params]


def hutchinson_trace(model: nn.Module, calib: Any, ops: Sequence[str] | None = None, n_samples: int = 32,
                     seed: int = 0, chunk: int = 32) -> ProxyResult:
    """tr(H) of each operation's weights, of the mean cross-entropy on the calibration images.

    Labels: those the batches carry ((x, y) pairs), else the float model's predictions.
    ``ops``: Linear / Conv2d names (default: all). BatchNorm is folded first, so that the
    weights are those ``quantize`` rounds. ``extra`` holds n_params, trace_per_param and the
    standard error of each trace over the samples. The Hessian need not be positive away from
    a minimum (an untrained model, pseudo-labels), so a trace, and HAWQ's Ω, may come out
    negative: use them to rank, not as a sensitivity for the allocation problem.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer (Rademacher vectors), got {n_samples!r}")
    t0 = time.perf_counter()
    fm = copy.deepcopy(model).eval()
    fold_batchnorm(fm)
    for m in fm.modules():
        if hasattr(m, "fused_attn"):  # the fused attention kernel has no double backward
            m.fused_attn = False
    weighted = [n for n, m in fm.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    ops = check_ops(ops, weighted, set(weighted))
    if not ops:
        raise ValueError("the model has no nn.Linear or nn.Conv2d: no weights to take a Hessian trace of")
    for p in fm.parameters():
        p.requires_grad_(False)
    params = [fm.get_submodule(op).weight.requires_grad_(True) for op in ops]
    batches = []
    for b in calib if not isinstance(calib, torch.Tensor) else [calib]:
        x, y = (b[0], b[1]) if isinstance(b, (tuple, list)) else (b, None)
        batches += [(x[i:i + chunk], None if y is None else y[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
    n = sum(x.shape[0] for x, _ in batches)
    if n == 0:
        raise ValueError("the calibration set is empty: pass at least one batch of images")
    est = torch.zeros(n_samples, len(ops), dtype=torch.float64)
    for x, y in batches:
        with torch.enable_grad():
            logits = fm(x)
            if y is None:
                y = logits.detach().argmax(-1)
            loss = F.cross_entropy(logits, y, reduction="sum") / n  # the mean over all images
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for s in range(n_samples):
                vs = rademacher(params, seed, s)
                hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=s < n_samples - 1)
                est[s] += torch.stack([(v * h).sum().double() for v, h in zip(vs, hv)])
    trace = est.mean(0)
    stderr = est.std(0) / n_samples ** 0.5 if n_samples > 1 else torch.full_like(trace, float("nan"))
    n_params = {op: p.numel() for op, p in zip(ops, params)}
    extra = {"n_params": n_params, "n_images": n, "n_samples": n_samples, "seed": seed,
             "trace_per_param": {op: float(t) / n_params[op] for op, t in zip(ops, trace)},
             "stderr": {op: float(e) for op, e in zip(ops, stderr)}}
    return ProxyResult("hutchinson_trace", {op: {"trace": float(t)} for op, t in zip(ops, trace)},
                       time.perf_counter() - t0, extra)


def hawq_proxy(model: nn.Module, config_for: ConfigFor, candidates: Sequence[str], calib: Any,
               ops: Sequence[str] | None = None, n_samples: int = 32, seed: int = 0,
               trace: ProxyResult | None = None) -> ProxyResult:
    """HAWQ's Ω = tr(H)/n · ‖Q(W) − W‖² per weighted operation and width.

    ``trace``: a :func:`hutchinson_trace` result to reuse (its cost is then not counted again).
    """
    cands = check_candidates(candidates)
    t0 = time.perf_counter()
    if trace is None:
        trace = hutchinson_trace(model, calib, ops, n_samples, seed)
    per_param = trace.extra["trace_per_param"]
    scores = {op: dict.fromkeys(cands, 0.0) for op in per_param}
    for c in width_candidates(cands):
        qmodel, _ = prepare(model, config_of(config_for, c))  # weight scales need no calibration data
        for op, s in Switches(qmodel).ops.items():
            if op in scores and s.w_quant is not None:
                scores[op][c] = per_param[op] * float(((s.w_quant - s.module.weight).double() ** 2).sum())
    return ProxyResult("hawq", scores, trace.seconds + time.perf_counter() - t0, dict(trace.extra))
