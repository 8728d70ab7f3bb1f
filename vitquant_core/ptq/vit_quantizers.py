"""Notebook 04's study: the field's ViT quantizers side by side, under a named protocol.

Methods (each a name in the rows; what each applied is recorded in the row's ``applied``):

* ``min-max``, ``percentile``, ``mse`` — standard PTQ, per-channel weights, per-tensor
  activations calibrated by that observer (notebook 02's calibrations);
* ``ranking-aware`` — Liu et al. (NeurIPS 2021), all three parts (:mod:`.ranking`);
* ``ptq4vit`` — Yuan et al. (ECCV 2022): twin-uniform post-softmax / post-GELU grids and the
  Hessian-guided scale search (:mod:`.ptq4vit`);
* ``repq-vit`` — Li et al. (ICCV 2023): reparameterized post-LayerNorm scales, log√2
  post-softmax, quantile-searched asymmetric grids (:mod:`.repq`);
* two combinations no published method has: ``repq+ranking`` (RepQ-ViT's reparameterization
  and log√2 softmax, with the ranking-aware search for every other scale) and ``repq+adalog``
  (RepQ-ViT with an adaptive log base for the softmax instead of √2).

Under protocol ``default`` the softmax output stays in float, so ``repq+adalog`` is
``repq-vit`` there and is not measured twice; the default protocol's ``min-max`` and
``ranking-aware`` rows are notebook 03's own configurations (same keys, read back when stored).
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import torch

from ..analysis.sqnr import activation_sqnr, sqnr_by_kind
from ..nn.config import LayerSpec, QuantConfig
from ..nn.protocols import PROTOCOLS, check_protocol, protocol_config
from ..nn.quantize import quantize
from .ranking import RankingAwareConfig, ranking_aware_quantize
from .repq import reparameterize, repq_quantize

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..rowstore import Record

METHODS = ("min-max", "percentile", "mse", "ranking-aware", "ptq4vit", "repq-vit", "repq+ranking", "repq+adalog")
COMBINATIONS = ("repq+ranking", "repq+adalog")
SAME_AS = {("default", "repq+adalog"): "repq-vit"}  # identical configurations: measured once
# What a parameter left at None means in each profile (RepQ-ViT and PTQ4ViT calibrate with 32
# images; the book uses 64 for every method, as notebook 03 does).
PROFILE_DEFAULTS: dict[str, dict[str, int]] = {
    "quick": {"n_calib": 32, "n_eval": 500, "n_candidates": 20, "max_rounds": 4, "n_search_images": 16,
              "search_rounds": 1, "ptq4vit_candidates": 8},
    # PTQ4ViT: the paper's 3 rounds on 32 images, 32 candidates instead of its 100 (a multiplier
    # step of 0.037; 100 would take about 15 minutes per calibration on 2 CPU cores)
    "full": {"n_calib": 64, "n_eval": 0, "n_candidates": 100, "max_rounds": 20, "n_search_images": 32,
             "search_rounds": 3, "ptq4vit_candidates": 32},
}


def study_parameters(profile: str, **given: Any) -> dict[str, Any]:
    """The study's parameters with each None replaced by the profile's default."""
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"parameter profile must be one of {sorted(PROFILE_DEFAULTS)}, got {profile!r}")
    return {k: PROFILE_DEFAULTS[profile][k] if v is None else v for k, v in given.items()}


def _list_param(name: str, value: Any, allowed: tuple[str, ...] | None, example: str) -> None:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"parameter {name} must be a non-empty list such as {example}, got {value!r}")
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise ValueError(f"parameter {name}: unknown {unknown}; choose from {list(allowed)}")


def check_study_parameters(settings: Any, methods: Any, protocols: Any, n_sqnr_images: Any,
                           not_run: Any = None) -> None:
    """Notebook 04's own parameters, checked before anything is computed."""
    _list_param("settings", settings, None, "['W8A8', 'W4A4']")
    for s in settings:
        cfg = QuantConfig.from_label(s)  # raises, naming the label
        if cfg.default.w_bits is None or cfg.default.a_bits is None:
            raise ValueError(f"parameter settings: {s!r} keeps weights or activations in float; this study "
                             "compares W/A settings such as 'W4A4'")
    _list_param("methods", methods, METHODS, "['min-max', 'repq-vit']")
    _list_param("protocols", protocols, PROTOCOLS, "['paper', 'default']")
    if isinstance(n_sqnr_images, bool) or not isinstance(n_sqnr_images, int) or n_sqnr_images < 1:
        raise ValueError(f"parameter n_sqnr_images must be an integer >= 1, got {n_sqnr_images!r}")
    if not isinstance(not_run or {}, dict):
        raise TypeError(f"parameter not_run must be a dict such as {{'repq+ranking': ['default']}}, got {not_run!r}")
    for method, where in (not_run or {}).items():
        if method not in METHODS:
            raise ValueError(f"parameter not_run: unknown method {method!r}; choose from {list(METHODS)}")
        _list_param(f"not_run[{method!r}]", where, tuple(PROTOCOLS) + tuple(settings), "['default', 'W8A8']")


def _bits(setting: str) -> tuple[int, int]:
    d = QuantConfig.from_label(setting).default
    assert d.w_bits is not None and d.a_bits is not None
    return d.w_bits, d.a_bits


def _ranking_config(exp: Experiment, search: dict[str, Any]) -> RankingAwareConfig:
    return RankingAwareConfig(seed=exp.seed, n_candidates=search["n_candidates"], max_rounds=search["max_rounds"])


def plan(exp: Experiment, protocol: str, setting: str, method: str,
         search: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(the row-store spec, the build function, what is applied) of one configuration."""
    check_protocol(protocol)
    w, a = _bits(setting)
    model, calib = exp.model, exp.calib
    log_softmax = {"*.softmax": LayerSpec(None, a, a_quantizer="log_sqrt2", a_observer="quantile_mse")}
    if method in ("min-max", "percentile", "mse"):
        observer = {"min-max": "minmax"}.get(method, method)
        config = protocol_config(protocol, w, a, LayerSpec(a_observer=observer))
        applied = {"weights": "per-channel symmetric, min-max", "activations": f"per-tensor, {observer}"}
        return ({"config": config.to_json()}, lambda: quantize(model, config, calib, progress=False), applied)
    if method == "ranking-aware":
        config, rq = protocol_config(protocol, w, a), _ranking_config(exp, search)
        applied = {"search": "ranking-aware (similarity + ranking loss + bias correction)"}
        return ({"config": config.to_json(), "ranking_aware": asdict(rq)},
                lambda: ranking_aware_quantize(model, config, calib, rq, progress=False), applied)
    if method == "ptq4vit":
        from .ptq4vit import ptq4vit_quantize

        kw = dict(metric=search["ptq4vit_metric"], n_search_images=search["n_search_images"],
                  search_rounds=search["search_rounds"], n_candidates=search["ptq4vit_candidates"], seed=exp.seed)
        applied = {"post-softmax": "twin-uniform", "post-GELU": "twin-uniform",
                   "search": f"PTQ4ViT scale search ({kw['metric']} metric)"}
        return ({"ptq4vit": kw}, lambda: ptq4vit_quantize(model, w, a, calib, protocol, progress=False, **kw),
                applied)
    if method in ("repq-vit", "repq+adalog"):
        softmax = "adalog" if method == "repq+adalog" else "log_sqrt2"
        applied = {"transform": "RepQ-ViT reparameterization", "post-softmax": softmax,
                   "weights": "per-channel asymmetric, quantile search", "activations": "asymmetric, quantile search"}
        return ({"softmax": softmax}, lambda: repq_quantize(model, w, a, calib, protocol, softmax, progress=False),
                applied)
    if method == "repq+ranking":
        config, rq = protocol_config(protocol, w, a, rules=log_softmax), _ranking_config(exp, search)
        applied = {"transform": "RepQ-ViT reparameterization", "post-softmax": "log_sqrt2",
                   "search": "ranking-aware (similarity + ranking loss + bias correction)"}

        def build():
            reparam, _ = reparameterize(model, calib, a)
            return ranking_aware_quantize(reparam, config, calib, rq, progress=False)
        return {"config": config.to_json(), "ranking_aware": asdict(rq)}, build, applied
    raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")


def measure_method(exp: Experiment, protocol: str, setting: str, method: str, x_sqnr: torch.Tensor,
                   x_attn: torch.Tensor, **search: Any) -> Record:
    """Calibrate and evaluate one (protocol, setting, method) through the row store."""
    w, a = _bits(setting)
    if protocol == "default" and method in ("min-max", "ranking-aware"):
        from .ablation import measure_variant  # notebook 03's configuration, read back when stored

        variant = "standard" if method == "min-max" else "ranking-aware"
        rec = measure_variant(exp, setting, variant, x_attn, n_candidates=search["n_candidates"],
                              max_rounds=search["max_rounds"])
        rec.row.update(method=method, protocol=protocol, applied={"same configuration as": f"notebook 03, {variant}"})
        return rec
    spec, build, applied = plan(exp, protocol, setting, method, search)

    def analyse(qmodel: torch.nn.Module) -> dict[str, Any]:
        rows = activation_sqnr(qmodel, x_sqnr)
        return {"sqnr": rows, "sqnr_by_kind": sqnr_by_kind(rows)}

    spec = {"study": "04_vit_quantizers", "protocol": protocol, "method": method, "w_bits": w, "a_bits": a,
            "n_sqnr_images": len(x_sqnr), **spec}
    rec = exp.measure(spec, build, method, w, a, "per_channel", analyse=analyse, protocol=protocol, applied=applied)
    rec.row["sqnr_by_kind"] = rec.data["sqnr_by_kind"]
    return rec


def methods_for(protocol: str, methods: list[str], setting: str | None = None,
                not_run: dict[str, list[str]] | None = None) -> list[str]:
    """The methods measured under ``protocol`` at ``setting``: identical configurations only once,
    and none that ``not_run`` leaves out (method -> the protocols and settings it skips)."""
    skip = not_run or {}
    return [m for m in methods if (protocol, m) not in SAME_AS and not {protocol, setting} & set(skip.get(m, ()))]


def compare(exp: Experiment, records: dict[tuple[str, str, str], Record], reference: str) -> list[dict[str, Any]]:
    """McNemar's test of each method against ``reference`` at the same protocol and setting."""
    from ..analysis.significance import paired_comparison

    out = []
    for (protocol, setting, method), rec in records.items():
        ref = records.get((protocol, setting, reference))
        if ref is None or method == reference:
            continue
        c = paired_comparison(exp.correct(ref), exp.correct(rec))
        out.append({"protocol": protocol, "setting": setting, "method": method, "reference": reference,
                    "difference (points)": round(c["difference"], 2),
                    "95 % interval": [round(v, 2) for v in c["ci95"]], "McNemar p": c["p_value"]})
    return out


def best_method(records: dict[tuple[str, str, str], Record], protocol: str, setting: str) -> str | None:
    """The most accurate method at ``setting`` under ``protocol`` (None if none was measured)."""
    cands = {m: r.row["top1"] for (p, s, m), r in records.items() if p == protocol and s == setting}
    return max(cands, key=cands.get) if cands else None


def done_when(records: dict[tuple[str, str, str], Record], fp_top1: float) -> dict[str, Any]:
    """The issue's targets under protocol "paper", from this run's rows: the best W4A4 method's
    loss against FP is at most half of min-max's; the best W6A6 is within 1 point of FP."""
    out: dict[str, Any] = {}
    best4 = best_method(records, "paper", "W4A4")
    if best4 and ("paper", "W4A4", "min-max") in records:
        loss_best = fp_top1 - records["paper", "W4A4", best4].row["top1"]
        loss_mm = fp_top1 - records["paper", "W4A4", "min-max"].row["top1"]
        out["W4A4"] = {"best": best4, "loss_best": round(loss_best, 2), "loss_min_max": round(loss_mm, 2),
                       "at most half": loss_best <= loss_mm / 2}
    best6 = best_method(records, "paper", "W6A6")
    if best6:
        loss6 = fp_top1 - records["paper", "W6A6", best6].row["top1"]
        out["W6A6"] = {"best": best6, "loss_best": round(loss6, 2), "within 1 point": loss6 <= 1.0}
    return out


# Published ImageNet DeiT-Tiny top-1 (%), quoted as context only: another data set and
# resolution, never compared with the measured columns.
PUBLISHED_DEIT_TINY_IMAGENET = [
    {"method": "FP32", "W4A4": 72.21, "W6A6": 72.21, "source": "Touvron et al., ICML 2021"},
    {"method": "PTQ4ViT", "W4A4": 36.96, "W6A6": None, "source": "as reported by Li et al., ICCV 2023 (RepQ-ViT)"},
    {"method": "RepQ-ViT", "W4A4": 57.43, "W6A6": 70.76, "source": "Li et al., ICCV 2023"},
    {"method": "AdaLog", "W4A4": 63.52, "W6A6": 71.38, "source": "Wu et al., ECCV 2024"},
]


def log_softmax_rule(a_bits: int, quantizer: str = "log_sqrt2") -> dict[str, LayerSpec]:
    """A rule putting the post-softmax attention on a log grid (for users composing their own)."""
    return {"*.softmax": replace(LayerSpec(None, a_bits), a_quantizer=quantizer, a_observer="quantile_mse")}
