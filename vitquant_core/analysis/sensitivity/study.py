"""Notebook 05's study: which operations are sensitive to quantization, by four measures side by side.

For one model, at each candidate width, every quantizable operation is scored by

* the **direct** measure (AIMET ``QuantAnalyzer``'s per-layer view): top-1 drop and KL of the
  logits on a fixed held-out subset with only that operation quantized (:func:`.sensitivity_sweep`);
* AIMET's **left in float** view: what switching that operation alone back to float recovers in
  the fully quantized model;
* NVIDIA ModelOpt ``auto_quantize``'s **Fisher-weighted output error** (:func:`.fisher_proxy`);
* HAWQ-V2/V3's **Hutchinson trace** of the Hessian, and its score Ω = tr(H)/n · ‖Q(W) − W‖²
  (:func:`.hutchinson_trace`, :func:`.hawq_proxy`; Dong et al., NeurIPS 2020; Yao et al., ICML 2021).

The quantizer is a parameter: ``repq+adalog`` (RepQ-ViT, Li et al. ICCV 2023, with an adaptive-log
post-softmax grid; the best of notebook 04) on models with timm blocks, min-max elsewhere. The
sweep quantizes the RepQ-ViT-reparameterized float model with RepQ-ViT's quantizers; one
difference from :func:`~vitquant_core.ptq.repq.repq_quantize`, stated on the page: the
post-LayerNorm input scales come from the same quantile search on the reparameterized
activations instead of being set to RepQ-ViT's averaged targets. Each measurement goes through
the row store, so a rerun reads it back. The tables and the page's answer are in :mod:`.report`.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torch.nn as nn

from ...nn.config import QuantConfig
from ...nn.protocols import check_protocol, setting_bits, setting_config
from ...ptq.repq import norm_linear_pairs, reparameterize, repq_config
from ...rowstore import RowStore
from .proxies import ProxyResult, fisher_proxy, hawq_proxy, hutchinson_trace
from .sweep import sensitivity_sweep

if TYPE_CHECKING:
    from ...experiment import Experiment

NOTEBOOK = "05_sensitivity"
QUANTIZERS = ("repq+adalog", "min-max")
# What a parameter left at None means in each profile. Full: a fixed held-out subset of 1,000 test
# images (the sweep is ~90 passes per width and view); the proxies on the calibration images.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "quick": {"n_calib": 16, "n_eval": 100, "widths": ["W4A4"], "n_fisher_images": 16, "n_trace_images": 16,
              "trace_samples": 4, "n_boot": 200},
    "full": {"n_calib": 64, "n_eval": 1000, "widths": ["W4A4", "W6A6"], "n_fisher_images": 64,
             "n_trace_images": 32, "trace_samples": 32, "n_boot": 1000},
}
# the columns of a model's operation table, one per measure
SCORES = ("top1_drop", "kl", "recovery_top1", "recovery_kl", "fisher", "hawq", "trace_per_param")


def study_parameters(profile: str, **given: Any) -> dict[str, Any]:
    """The study's parameters with each None replaced by the profile's default."""
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"parameter profile must be one of {sorted(PROFILE_DEFAULTS)}, got {profile!r}")
    unknown = sorted(set(given) - set(PROFILE_DEFAULTS[profile]))
    if unknown:
        raise TypeError(f"study_parameters: unknown parameters {unknown}; known: {sorted(PROFILE_DEFAULTS[profile])}")
    return {k: PROFILE_DEFAULTS[profile][k] if v is None else v for k, v in given.items()}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"parameter {name} must be an integer >= 1, got {value!r}")


def check_study_parameters(widths: Any, quantizer: Any, protocol: Any, n_fisher_images: Any, n_trace_images: Any,
                           trace_samples: Any, n_boot: Any) -> None:
    """Notebook 05's own parameters, checked before anything is computed."""
    if isinstance(widths, str) or not isinstance(widths, (list, tuple)) or not widths:
        raise TypeError(f"parameter widths must be a non-empty list such as ['W4A4', 'W6A6'], got {widths!r}")
    for w in widths:
        setting_bits(w)  # raises, naming a label that keeps weights or activations in float
    if len(set(widths)) != len(widths):
        raise ValueError(f"parameter widths repeats a width: {widths!r}")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"parameter quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    check_protocol(protocol)
    for name, v in (("n_fisher_images", n_fisher_images), ("n_trace_images", n_trace_images), ("n_boot", n_boot)):
        _positive_int(name, v)
    if isinstance(trace_samples, bool) or not isinstance(trace_samples, int) or trace_samples < 2:
        raise ValueError(f"parameter trace_samples must be an integer >= 2 (Rademacher vectors; two at least for "
                         f"a standard error), got {trace_samples!r}")


def method_for(model: nn.Module, quantizer: str) -> str:
    """The quantizer ``model`` gets: RepQ-ViT needs timm blocks (norm1 → attn.qkv, norm2 → mlp.fc1)."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    return quantizer if quantizer == "min-max" or norm_linear_pairs(model) else "min-max"


def width_model(model: nn.Module, calib: list[torch.Tensor], method: str, protocol: str,
                width: str) -> tuple[nn.Module, QuantConfig]:
    """(the float model the sweep quantizes, its config) at ``width``: RepQ-ViT's reparameterized twin
    (the same function as ``model``) with its quantizers, or ``model`` itself with min-max."""
    w, a = setting_bits(width)
    if method == "repq+adalog":
        return reparameterize(model, calib, a)[0], repq_config(protocol, w, a, "adalog")
    return model, setting_config(width, protocol)


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class _Width:
    """The measures of one width, each through the row store; the width's model is built lazily,
    so that a rerun whose measures are all stored builds nothing."""

    def __init__(self, store: RowStore, base: dict[str, Any], model: nn.Module, calib: list[torch.Tensor],
                 width: str, method: str, protocol: str) -> None:
        self.store, self.base, self.model, self.calib = store, base, model, calib
        self.width, self.method, self.protocol = width, method, protocol
        self._built: tuple[nn.Module, dict[str, QuantConfig]] | None = None

    def built(self) -> tuple[nn.Module, dict[str, QuantConfig]]:
        if self._built is None:
            m, cfg = width_model(self.model, self.calib, self.method, self.protocol, self.width)
            self._built = m, {self.width: cfg}
        return self._built

    def get(self, measure: str, compute: Any, **spec: Any) -> Any:
        return self.store.get_or_compute({**self.base, "measure": measure, "width": self.width, **spec}, compute)

    def sweep(self, view: str, x_eval: torch.Tensor, y_eval: torch.Tensor, batch_size: int, progress: bool) -> Any:
        def compute():
            m, cf = self.built()
            rows, s = _timed(lambda: sensitivity_sweep(m, cf, [self.width], self.calib, x_eval, y_eval, views=(view,),
                                                       batch_size=batch_size, progress=progress))
            return {"seconds": s, "n_ops": len(rows)}, None, {"rows": rows}
        return self.get(view, compute)

    def fisher(self, n_images: int, seed: int) -> Any:
        def compute():
            m, cf = self.built()
            r = fisher_proxy(m, cf, [self.width], self.calib, images=torch.cat(self.calib)[:n_images], seed=seed)
            return {"seconds": r.seconds}, None, {"scores": {op: v[self.width] for op, v in r.scores.items()}}
        return self.get("fisher", compute, n_images=n_images, seed=seed)

    def hawq(self, trace: dict[str, Any], trace_key: str) -> Any:
        def compute():
            # HAWQ scores the float model's own weights with the width's weight quantizer
            w, a = setting_bits(self.width)
            cfg = (repq_config(self.protocol, w, a, "adalog") if self.method == "repq+adalog"
                   else setting_config(self.width, self.protocol))
            t = ProxyResult("hutchinson_trace", trace["scores"], 0.0, trace["extra"])  # its cost is counted apart
            r = hawq_proxy(self.model, {self.width: cfg}, [self.width], self.calib, trace=t)
            return {"seconds": r.seconds}, None, {"scores": {op: v[self.width] for op, v in r.scores.items()}}
        return self.get("hawq", compute, trace=trace_key)


def _table(direct: Any, left: Any, fisher: Any, hawq: Any, per_param: dict[str, float]) -> pd.DataFrame:
    """One width's operations with every measure as a column (NaN where one does not apply)."""
    lf = {r["op"]: r for r in left.data["rows"]}
    df = pd.DataFrame(direct.data["rows"]).rename(columns={"candidate": "width"})
    df = df[["op", "block", "layer", "width", "n_eval", "float_top1", "top1", "top1_drop", "kl"]]
    for col in ("recovery_top1", "recovery_kl"):
        df[col] = [lf[op][col] if op in lf else None for op in df.op]
    df["all_top1"] = left.data["rows"][0]["all_top1"] if left.data["rows"] else None
    df["fisher"] = [fisher.data["scores"].get(op) for op in df.op]
    df["hawq"] = [hawq.data["scores"].get(op) for op in df.op]
    df["trace_per_param"] = [per_param.get(op) for op in df.op]
    return df


def measure_model(store: RowStore, model: nn.Module, calib: list[torch.Tensor], x_eval: torch.Tensor,
                  y_eval: torch.Tensor, widths: Sequence[str], method: str, protocol: str, n_fisher_images: int,
                  n_trace_images: int, trace_samples: int, seed: int = 0, progress: bool = False,
                  batch_size: int = 250) -> dict[str, Any]:
    """Every measure of every operation at each width, each through ``store`` (a rerun reads it back).

    Returns ``ops`` (a DataFrame: one row per operation and width, the columns of :data:`SCORES`,
    NaN where a measure does not apply, e.g. HAWQ on the attention matmuls), ``seconds`` (one
    row per width and measure: the wall time of computing it, calibration included; the Hessian
    trace, shared by every width, has width None), the float top-1 on the subset and the trace's
    standard errors.
    """
    base = {"study": NOTEBOOK, "kind": "sensitivity", "method": method, "protocol": protocol}
    x_trace = torch.cat(calib)[:n_trace_images]
    trace_spec = {**base, "measure": "hutchinson_trace", "n_images": int(x_trace.shape[0]),
                  "n_samples": trace_samples, "seed": seed}

    def trace_compute():
        t = hutchinson_trace(model, [x_trace], n_samples=trace_samples, seed=seed)
        return {"seconds": t.seconds}, None, {"scores": t.scores, "extra": t.extra}

    trace_rec = store.get_or_compute(trace_spec, trace_compute)
    frames, seconds = [], [{"width": None, "measure": "hutchinson_trace", "seconds": trace_rec.row["seconds"]}]
    for width in widths:
        w = _Width(store, base, model, calib, width, method, protocol)
        recs = {"direct": w.sweep("direct", x_eval, y_eval, batch_size, progress),
                "left_float": w.sweep("left_float", x_eval, y_eval, batch_size, progress),
                "fisher": w.fisher(n_fisher_images, seed), "hawq": w.hawq(trace_rec.data, trace_rec.key)}
        frames.append(_table(*recs.values(), trace_rec.data["extra"]["trace_per_param"]))
        seconds += [{"width": width, "measure": m, "seconds": r.row["seconds"]} for m, r in recs.items()]
    ops = pd.concat(frames, ignore_index=True)
    return {"method": method, "protocol": protocol, "ops": ops, "seconds": pd.DataFrame(seconds),
            "float_top1": float(ops.float_top1.iloc[0]), "n_eval": int(x_eval.shape[0]),
            "trace_stderr": trace_rec.data["extra"]["stderr"]}


def eval_tensors(exp: Experiment) -> tuple[torch.Tensor, torch.Tensor]:
    """The experiment's fixed held-out subset as one tensor of images and one of labels."""
    xs, ys = zip(*exp.loader())
    return torch.cat(xs), torch.cat(ys)


def study_model(exp: Experiment, widths: Sequence[str], quantizer: str, protocol: str, n_fisher_images: int,
                n_trace_images: int, trace_samples: int) -> dict[str, Any]:
    """:func:`measure_model` on an experiment's model and subsets, with its float evaluation's time
    (the unit the sweep's time is compared with)."""
    x, y = eval_tensors(exp)
    method = method_for(exp.model, quantizer)
    with warnings.catch_warnings():
        # protocol "paper" names the ViT patch embedding; on a CNN that rule matches nothing, as intended
        warnings.filterwarnings("ignore", message=r"rule 'patch_embed\.\*' of the QuantConfig matches no")
        out = measure_model(exp.store, exp.model, exp.calib, x, y, widths, method, protocol, n_fisher_images,
                            n_trace_images, trace_samples, exp.seed, batch_size=exp.batch_size)
    fp = exp.fp()
    out.update(model=exp.model_name, fp_top1=fp.top1, eval_seconds=fp.seconds,
               kind="vit" if norm_linear_pairs(exp.model) else "cnn")
    return out
