"""PTQ4ViT on a whole model: config, initial calibration, gradients, then one search per operation."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from ...nn.config import LayerSpec
from ...nn.modules import QuantAttention
from ...nn.protocols import check_protocol, protocol_config
from ...nn.quantize import QuantReport, quantize
from .capture import capture_operations, float_twin, quantized_operations
from .search import SearchSettings, search_matmul, search_weighted

METRICS = ("hessian", "mse")


@dataclass
class PTQ4ViTReport(QuantReport):
    """A :class:`QuantReport` plus what PTQ4ViT chose, operation by operation."""

    method: str = "ptq4vit"
    method_config: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    calib_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        d = super().summary()
        d.update(method=self.method, calib_seconds=self.calib_seconds, n_searched=len(self.layers))
        return d

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d.update(method=self.method, method_config=self.method_config, layers=self.layers,
                 calib_seconds=self.calib_seconds)
        return d


def ptq4vit_config(protocol: str, w_bits: int, a_bits: int) -> Any:
    """The QuantConfig PTQ4ViT searches: twin-uniform post-softmax and post-GELU (fc2 input),
    per-output-channel symmetric weights, per-tensor uniform other activations."""
    return protocol_config(protocol, w_bits, a_bits, rules={
        "*.softmax": LayerSpec(None, a_bits, a_quantizer="twin_uniform"),
        "*.mlp.fc2": LayerSpec(w_bits, a_bits, a_quantizer="twin_uniform")})


def _check(w_bits: Any, a_bits: Any, metric: Any, n_candidates: Any, alpha: Any, beta: Any, search_rounds: Any,
           n_search_images: Any, seed: Any, chunk: Any) -> None:
    for what, b in (("w_bits", w_bits), ("a_bits", a_bits)):
        if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 16:
            raise ValueError(f"{what} must be an integer from 2 to 16, got {b!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    for what, v, low in (("n_candidates", n_candidates, 2), ("search_rounds", search_rounds, 1), ("chunk", chunk, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{what} must be an int >= {low}, got {v!r}")
    if not (isinstance(alpha, (int, float)) and isinstance(beta, (int, float)) and 0 < alpha < beta):
        raise ValueError(f"need 0 < alpha < beta (candidate multipliers of the max-based scale), "
                         f"got alpha={alpha!r}, beta={beta!r}")
    if n_search_images is not None and (isinstance(n_search_images, bool) or not isinstance(n_search_images, int)
                                        or n_search_images < 1):
        raise ValueError(f"n_search_images must be None (all calibration images) or an int >= 1, "
                         f"got {n_search_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")


def _images(calib_data: Any) -> list[torch.Tensor]:
    if calib_data is None:
        raise ValueError("PTQ4ViT needs calibration data: batches of inputs, e.g. "
                         "vitquant_core.data.calibration_batches(split, n_calib=64)")
    if isinstance(calib_data, torch.Tensor):
        calib_data = [calib_data]
    out = [b[0] if isinstance(b, (tuple, list)) else b for b in calib_data]  # once: used twice
    out = [b for b in out if b.numel() > 0]
    if not out:
        raise ValueError("the calibration set is empty: pass at least one batch of inputs")
    return out


def ptq4vit_quantize(model: nn.Module, w_bits: int, a_bits: int, calib_data: Iterable[Any],
                     protocol: str = "paper", metric: str = "hessian", n_candidates: int = 100,
                     alpha: float = 0.01, beta: float = 1.2, search_rounds: int = 3,
                     n_search_images: int | None = None, seed: int = 0, chunk: int = 8,
                     progress: bool = True) -> nn.Module:
    """A quantized copy of ``model`` (WbAb under ``protocol``) with scales chosen by PTQ4ViT.

    ``calib_data``: batches of inputs (or (x, y) pairs); every image sets the initial min-max
    scales, the first ``n_search_images`` of them (None: all) feed the search (the calibration
    batches are already a seeded random draw). On DeiT-Tiny/CIFAR on one CPU core,
    ``n_search_images=32, n_candidates=32`` takes about 2–3 minutes (package docstring). ``metric``:
    "hessian" (squared Fisher gradients of each operation's output as weights) or "mse".
    Candidate uniform scales are ``linspace(alpha, beta, n_candidates)`` times the max-based
    one; weights and activations are searched alternately for ``search_rounds`` rounds.
    ``seed`` draws the labels of the Fisher gradients; ``chunk`` images go through the float
    model at a time. ``model`` is never mutated. ``qmodel.vitquant_report`` is a
    :class:`PTQ4ViTReport`: per operation the chosen multipliers / split / m and the
    objective before and after the search; and ``calib_seconds``.
    """
    _check(w_bits, a_bits, metric, n_candidates, alpha, beta, search_rounds, n_search_images, seed, chunk)
    check_protocol(protocol)
    t0 = time.perf_counter()
    batches = _images(calib_data)
    qmodel = quantize(model, ptq4vit_config(protocol, w_bits, a_bits), batches, progress=progress)
    base: QuantReport = qmodel.vitquant_report  # type: ignore[assignment]
    images = torch.cat(batches)[:n_search_images]
    device = next(qmodel.parameters()).device
    ops = quantized_operations(qmodel)
    records = capture_operations(float_twin(qmodel), ops, images.to(device),
                                 "fisher" if metric == "hessian" else None, seed, chunk)
    settings = SearchSettings(float(alpha), float(beta), n_candidates, search_rounds)
    layers: list[dict[str, Any]] = []
    bar = tqdm(ops, desc="PTQ4ViT search", unit="op", disable=not progress, leave=False)
    with torch.no_grad():
        for name, kind in bar:
            bar.set_postfix_str(name, refresh=False)
            t1 = time.perf_counter()
            rec = records.pop(name)  # freed as the search advances
            operands, g = rec.operands(), rec.grad()
            w = g.pow(2) if g is not None else None
            if kind in ("linear", "conv"):
                info = search_weighted(name, qmodel.get_submodule(name), operands[0], w, settings, metric)
            else:
                attn: QuantAttention = qmodel.get_submodule(name.rsplit(".", 1)[0])  # type: ignore[assignment]
                info = search_matmul(name, attn, kind, operands[0], operands[1], w, settings, metric)
            info["seconds"] = round(time.perf_counter() - t1, 3)
            layers.append(info)
    method_config = {"protocol": protocol, "w_bits": w_bits, "a_bits": a_bits, "metric": metric,
                     "gradient": "fisher" if metric == "hessian" else None, "n_candidates": n_candidates,
                     "alpha": alpha, "beta": beta, "search_rounds": search_rounds,
                     "n_search_images": int(images.shape[0]), "seed": seed,
                     "quantizers": {"*.softmax": "twin_uniform", "*.mlp.fc2 input": "twin_uniform"}}
    report = PTQ4ViTReport(**{f.name: getattr(base, f.name) for f in fields(QuantReport)},
                           method_config=method_config, layers=layers, calib_seconds=time.perf_counter() - t0)
    qmodel.vitquant_report = report  # type: ignore[assignment]
    return qmodel
