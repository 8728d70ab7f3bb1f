"""Notebook 07's study: the energy model's conclusions, how they move with its constants, and what
real int8 execution on ONNX Runtime's CPU engine measures beside them.

* **Energy** (:mod:`.model`, Horowitz's 45 nm figures, ISSCC 2014): per-layer and total energy of
  one inference at each W/A setting under a protocol, its reduction against FP32, the same under
  other constants and placements (:data:`SCENARIOS`), and the earlier study's 86/90/94 % claims
  recomputed with the formula it stated (:func:`~.model.headline_energy`).
* **Mixed precision**: the configurations notebook 06 wrote, priced by the same model, when its
  results file exists (nothing is assumed when it does not).
* **Real int8** (:mod:`vitquant_core.export`): the FP32 ONNX twin, our W8A8 as QDQ with our scales
  (``ours``), the same with calibrated conv outputs so every conv runs as QLinearConv
  (``ours+req``), and ONNX Runtime's ``quantize_static`` (MinMax, Entropy, Percentile) on the same
  calibration images: top-1 on the evaluation subset, agreement with our simulated W8A8, file size
  beside the size the cost table predicts, and median latency at batch 1 and 64, every engine timed
  in interleaved rounds of one run so that machine noise hits all alike. Each measurement goes
  through the experiment's row store, so a rerun reads it back.
* **Log-grid softmax in integers** (:func:`log_softmax_integer_check`): x̂·v on a log2 grid is a
  right shift of v's integer, on a log√2 grid a shift plus one multiply by √2 for odd codes
  (RepQ-ViT, Li et al., ICCV 2023), checked against the float product.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from ..cost import OpCost
from ..nn.config import QuantConfig
from ..nn.protocols import check_protocol, setting_config
from ..quant.nonuniform import log_codes
from ..results import read_results
from .constants import EnergyConstants, load_constants
from .int8 import (
    ENGINES,
    engine_rows,
    measure_engines,
)
from .model import energy_summary, energy_table, headline_energy

if TYPE_CHECKING:
    from ..experiment import Experiment

MIXED_NOTEBOOK = "06_mixed_precision"
SETTINGS = ("W8A8", "W6A6", "W4A4")
# The earlier study's claims: energy reduction (%) at 8, 6 and 4 bits.
CLAIMS = {8: 86.0, 6: 90.0, 4: 94.0}
# How the conclusions move with the constants: each scenario is a set of energy-model knobs.
SCENARIOS: dict[str, dict[str, Any]] = {
    "reference: weights in DRAM, low ends": {},
    "DRAM ×0.5": {"dram_scale": 0.5},
    "DRAM ×2 (its high end, 2.6 nJ)": {"dram_scale": 2.0},
    "SRAM high end (100 pJ)": {"sram": "high"},
    "all in DRAM": {"placement": "all_dram"},
    "all in SRAM (low end)": {"placement": "all_sram"},
    "all in SRAM (high end)": {"placement": "all_sram", "sram": "high"},
}
PROFILE_DEFAULTS: dict[str, dict[str, int]] = {
    "quick": {"n_calib": 32, "n_eval": 500, "latency_rounds": 3, "runs_batch1": 10, "runs_batch64": 2},
    # 128 calibration images: what the export benchmark used; ORT's Entropy and Percentile
    # histograms over 256 would take minutes more per model on 2 cores
    "full": {"n_calib": 128, "n_eval": 0, "latency_rounds": 5, "runs_batch1": 20, "runs_batch64": 3},
}
PJ_PER_UJ = 1e6


def study_parameters(profile: str, **given: Any) -> dict[str, Any]:
    """The study's parameters with each None replaced by the profile's default."""
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"parameter profile must be one of {sorted(PROFILE_DEFAULTS)}, got {profile!r}")
    return {k: PROFILE_DEFAULTS[profile][k] if v is None else v for k, v in given.items()}


def resolve_models(model: Any, models: Any, checkpoint: Any = None) -> list[str]:
    """The models this run studies: ``[model]`` when the contract's ``model`` is given, else ``models``."""
    if model is not None:
        if not isinstance(model, str) or not model:
            raise TypeError(f"parameter model must be a registry or timm name (or None for models), got {model!r}")
        return [model]
    if isinstance(models, str) or not isinstance(models, (list, tuple)) or not models \
            or not all(isinstance(m, str) and m for m in models):
        raise TypeError(f"parameter models must be a non-empty list of names such as ['resnet18_cifar'], "
                        f"got {models!r}")
    if checkpoint is not None and len(models) > 1:
        raise ValueError("parameter checkpoint names one model's weights: pass model as well (one model per run "
                         "with a checkpoint)")
    return list(models)


def check_study_parameters(settings: Any, engines: Any, protocol: Any, batches: Any) -> None:
    """Notebook 07's own parameters, checked before anything is computed."""
    check_protocol(protocol)
    if isinstance(settings, str) or not isinstance(settings, (list, tuple)) or not settings:
        raise TypeError(f"parameter settings must be a non-empty list such as ['W8A8', 'W4A4'], got {settings!r}")
    for s in settings:
        d = QuantConfig.from_label(s).default  # raises, naming the label
        if d.w_bits is None or d.a_bits is None:
            raise ValueError(f"parameter settings: {s!r} keeps a tensor in float; give W/A settings such as 'W4A4'")
    if isinstance(engines, str) or not isinstance(engines, (list, tuple)):
        raise TypeError(f"parameter engines must be a list such as ['fp32', 'ours'] ([] skips them), got {engines!r}")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ValueError(f"parameter engines: unknown {unknown}; choose from {list(ENGINES)}")
    if engines and "fp32" not in engines:
        raise ValueError("parameter engines must include 'fp32': every speed-up is a ratio to the FP32 ONNX twin")
    if not isinstance(batches, (list, tuple)) or not batches or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
        raise ValueError(f"parameter batches must be a list of batch sizes >= 1 such as [1, 64], got {batches!r}")


# -- the energy model's tables ----------------------------------------------------------------

def energy_by_setting(table: Sequence[OpCost], settings: Sequence[str], protocol: str,
                      constants: EnergyConstants | None = None, **knobs: Any) -> pd.DataFrame:
    """Energy of one inference (µJ) at FP32 and each setting: compute, memory, total, reduction (%)."""
    c = constants or load_constants()
    rows = []
    for setting in ("FP32", *settings):
        s = energy_summary(table, None if setting == "FP32" else setting_config(setting, protocol), c, **knobs)
        rows.append({"setting": setting, "compute (µJ)": s["compute_pj"] / PJ_PER_UJ,
                     "memory (µJ)": s["memory_pj"] / PJ_PER_UJ, "total (µJ)": s["total_pj"] / PJ_PER_UJ,
                     "memory share (%)": 100 * s["memory_pj"] / s["total_pj"],
                     "reduction vs FP32 (%)": 100 * s["reduction_vs_fp32"]})
    return pd.DataFrame(rows).set_index("setting")


def layer_energy(table: Sequence[OpCost], setting: str | None, protocol: str,
                 constants: EnergyConstants | None = None, **knobs: Any) -> pd.DataFrame:
    """Per-layer energy (µJ) at ``setting`` (None: FP32), in forward order, split compute / memory."""
    cfg = None if setting is None else setting_config(setting, protocol)
    df = energy_table(table, cfg, constants or load_constants(), **knobs)
    return pd.DataFrame({"index": range(len(df)), "layer": df.name, "kind": df.kind, "b_w": df.b_w, "b_a": df.b_a,
                         "compute (µJ)": df.compute_pj / PJ_PER_UJ, "memory (µJ)": df.memory_pj / PJ_PER_UJ,
                         "total (µJ)": df.total_pj / PJ_PER_UJ})


def sensitivity(table: Sequence[OpCost], settings: Sequence[str], protocol: str,
                constants: EnergyConstants | None = None) -> pd.DataFrame:
    """The reduction vs FP32 (%) and memory share (%) at each setting under every scenario of
    :data:`SCENARIOS` (long form: scenario, setting, reduction, memory share, total µJ)."""
    c = constants or load_constants()
    rows = []
    for name, knobs in SCENARIOS.items():
        t = energy_by_setting(table, settings, protocol, c, **knobs)
        for setting in settings:
            rows.append({"scenario": name, "setting": setting,
                         "reduction vs FP32 (%)": t.loc[setting, "reduction vs FP32 (%)"],
                         "memory share (%)": t.loc[setting, "memory share (%)"],
                         "total (µJ)": t.loc[setting, "total (µJ)"]})
    return pd.DataFrame(rows)


def headline_check(table: Sequence[OpCost], constants: EnergyConstants | None = None,
                   claims: dict[int, float] = CLAIMS) -> pd.DataFrame:
    """The earlier study's claims beside its own formula (every operand at b bits, all memory in
    DRAM, E_MAC ∝ b²) against the formula at 32 bits and against FP32 priced with float MACs."""
    c = constants or load_constants()
    rows = []
    for bits, claim in claims.items():
        h = headline_energy(table, bits, c)
        rows.append({"bits": bits, "claimed (%)": claim,
                     "formula vs its 32-bit self (%)": 100 * h["reduction_vs_formula32"],
                     "formula vs FP32 (%)": 100 * h["reduction_vs_fp32"],
                     "memory share (%)": 100 * h["memory_pj"] / h["total_pj"]})
    return pd.DataFrame(rows).set_index("bits")


def mixed_precision_energy(results_dir: str | Path, model: str, table: Sequence[OpCost],
                           constants: EnergyConstants | None = None) -> tuple[pd.DataFrame, str]:
    """Notebook 06's configurations for ``model`` priced by the energy model, and a sentence
    saying what was found. Nothing is priced when its results file or its configs are absent."""
    doc = read_results(results_dir, MIXED_NOTEBOOK)
    if doc is None:
        return pd.DataFrame(), (f"Notebook 06's results ({MIXED_NOTEBOOK}.json) are not in results_dir: "
                                "no mixed-precision configuration is priced on this page.")
    c = constants or load_constants()
    rows = []
    for r in doc.get("rows", []):
        if r.get("model") != model or not isinstance(r.get("config"), dict):
            continue
        s = energy_summary(table, QuantConfig.from_json(r["config"]), c)
        rows.append({"method": r["method"], "budget": str(r.get("budget", "not stated")),
                     "top-1 (%)": r["top1"], "total (µJ)": s["total_pj"] / PJ_PER_UJ,
                     "reduction vs FP32 (%)": 100 * s["reduction_vs_fp32"]})
    if not rows:
        return pd.DataFrame(), (f"{MIXED_NOTEBOOK}.json holds no configuration of {model}: "
                                "no mixed-precision configuration is priced for it.")
    return pd.DataFrame(rows), f"{len(rows)} configurations of {model} from {MIXED_NOTEBOOK}.json, priced."


# -- log-grid softmax on integer arithmetic ---------------------------------------------------

def log_softmax_integer_check(bits: int = 4, n_keys: int = 64, n_rows: int = 256, frac_bits: int = 24,
                              sqrt2_bits: int = 8, seed: int = 0) -> pd.DataFrame:
    """x̂·v in integers against the float product, for post-softmax attention on log grids.

    Attention rows are softmaxes of random logits; v holds int8 codes. On a log2 grid
    x̂ = Δ·2^(−q), so x̂·v = Δ·(v ≫ q) in fixed point with ``frac_bits`` fraction bits (exact while
    q ≤ frac_bits). On a log√2 grid x̂ = Δ·2^(−q/2): even codes shift by q/2; odd codes shift by
    (q+1)/2 and their sum is multiplied once by √2 ≈ round(√2·2^m)/2^m (m = ``sqrt2_bits``).
    Returns, per grid, the integer operations used and the largest error relative to the largest
    float result.
    """
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(n_rows, n_keys, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randint(-128, 128, (n_keys,), generator=g, dtype=torch.int64)
    zero = 2 ** bits - 1
    rows = []
    for grid, base in (("log2", 2.0), ("log√2", math.sqrt(2.0))):
        q = log_codes(p, 1.0, bits, base).to(torch.int64)
        live = q != zero
        exact = (torch.where(live, base ** (-q.double()), 0.0) * v.double()).sum(-1)
        fixed = (v << frac_bits).expand_as(q)
        if grid == "log2":
            acc = torch.where(live, fixed >> q.clamp(max=62), 0).sum(-1)
            ops = "right shift of v's integer by q, then add"
        else:
            even, odd = live & (q % 2 == 0), live & (q % 2 == 1)
            acc_even = torch.where(even, fixed >> (q // 2).clamp(max=62), 0).sum(-1)
            acc_odd = torch.where(odd, fixed >> ((q + 1) // 2).clamp(max=62), 0).sum(-1)
            m = round(math.sqrt(2.0) * 2 ** sqrt2_bits)
            acc = acc_even + ((acc_odd * m) >> sqrt2_bits)
            ops = f"shift by ⌈q/2⌉; odd-code sum × {m}/2^{sqrt2_bits} (≈ √2) once per output"
        integer = acc.double() / 2 ** frac_bits
        err = (integer - exact).abs().max().item() / exact.abs().max().item()
        rows.append({"grid": grid, "bits": bits, "integer operations": ops, "max relative error": err,
                     "non-zero codes": int(live.sum().item())})
    return pd.DataFrame(rows).set_index("grid")


# -- one model, end to end, and the page's answer ---------------------------------------------

def study_model(exp: Experiment, settings: Sequence[str], protocol: str, engines: Sequence[str],
                batches: Sequence[int], latency_rounds: int, runs_batch1: int, runs_batch64: int,
                results_dir: str | Path, constants: EnergyConstants | None = None,
                threads: int | None = None) -> dict[str, Any]:
    """Everything the page shows for one model: energy tables, sensitivity, the headline check,
    notebook 06's configurations priced, and (``engines`` not empty) the measured int8 engines."""
    from ..cost import cost_table
    from ..models import get_entry

    c = constants or load_constants()
    entry = get_entry(exp.model_name)
    shape = entry.input_size if entry else tuple(exp.calib[0].shape[1:])
    table = cost_table(exp.model, shape)
    mixed, mixed_note = mixed_precision_energy(results_dir, exp.model_name, table, c)
    out: dict[str, Any] = {
        "model": exp.model_name, "table": table, "energy": energy_by_setting(table, settings, protocol, c),
        "layers": layer_energy(table, "W8A8" if "W8A8" in settings else settings[0], protocol, c),
        "sensitivity": sensitivity(table, settings, protocol, c),
        "headline": headline_check(table, c), "mixed": mixed, "mixed_note": mixed_note, "fp_top1": exp.fp().top1,
        "int8": None, "rows": []}
    if engines:
        runs = {b: runs_batch1 if b == 1 else runs_batch64 for b in batches}
        out["int8"] = measure_engines(exp, engines, protocol, table, batches, latency_rounds, runs, threads, c)
        out["rows"] = engine_rows(out["int8"])
    return out


def _pct(x: float) -> str:
    return f"{x:.1f}"


def answer(studies: list[dict[str, Any]], settings: Sequence[str]) -> dict[str, str]:
    """The strings the page's answer glues (``m1_*`` the first model, ``m2_*`` the second), each
    "n/a" where this run did not measure it."""
    g = {f"claim{b}": f"{c:.0f}" for b, c in CLAIMS.items()}
    low = settings[-1]
    g["low_setting"] = low
    for i in (1, 2):
        for k in ("name", "w8_uj", "w8_red", "low_red", "w8_mem", "sens_min", "sens_max", "speedup64",
                  "onnx_top1", "sim_top1", "size_ratio", "pred_size_ratio", "vs_ort"):
            g[f"m{i}_{k}"] = "n/a"
    for i, st in enumerate(studies[:2], start=1):
        e, sens = st["energy"], st["sensitivity"]
        w8 = sens[sens.setting == "W8A8"]["reduction vs FP32 (%)"]
        g.update({f"m{i}_name": st["model"], f"m{i}_sens_min": _pct(w8.min()) if len(w8) else "n/a",
                  f"m{i}_sens_max": _pct(w8.max()) if len(w8) else "n/a"})
        if "W8A8" in e.index:
            g.update({f"m{i}_w8_uj": f"{e.loc['W8A8', 'total (µJ)']:.1f}",
                      f"m{i}_w8_red": _pct(e.loc["W8A8", "reduction vs FP32 (%)"]),
                      f"m{i}_w8_mem": _pct(e.loc["W8A8", "memory share (%)"])})
        g[f"m{i}_low_red"] = _pct(e.loc[low, "reduction vs FP32 (%)"])
        rows = {r["engine"]: r for r in st["rows"]}
        ours, fp = rows.get("ours+req", rows.get("ours")), rows.get("fp32")
        if ours is not None:
            g.update({f"m{i}_onnx_top1": f"{ours['top1']:.2f}", f"m{i}_sim_top1": f"{ours['simulated_top1']:.2f}"})
            if "speedup_b64" in ours:
                g[f"m{i}_speedup64"] = f"{ours['speedup_b64']:.2f}"
            if fp is not None:
                g[f"m{i}_size_ratio"] = f"{fp['size_bytes'] / ours['size_bytes']:.2f}"
                g[f"m{i}_pred_size_ratio"] = f"{fp['predicted_size_bytes'] / ours['predicted_size_bytes']:.2f}"
            ort = [r for k, r in rows.items() if k.startswith("ort-")]
            if ort:
                best = max(ort, key=lambda r: r["top1"])
                ours_best = max(r["top1"] for k, r in rows.items() if k.startswith("ours"))
                g[f"m{i}_vs_ort"] = (f"{'at least' if ours_best >= best['top1'] else 'below'} ONNX Runtime's best "
                                     f"quantize_static ({best['engine']}, {best['top1']:.2f} %)")
    h = studies[0]["headline"] if studies else None
    for b in CLAIMS:
        g[f"head{b}"] = _pct(h.loc[b, "formula vs its 32-bit self (%)"]) if h is not None else "n/a"
        g[f"head{b}_fp32"] = _pct(h.loc[b, "formula vs FP32 (%)"]) if h is not None else "n/a"
    if h is not None:
        gaps = [abs(h.loc[b, "formula vs its 32-bit self (%)"] - c) for b, c in CLAIMS.items()]
        g["head_verdict"] = ("the formula reproduces them to within 1 point" if max(gaps) <= 1.0 else
                             f"the formula misses them by up to {max(gaps):.1f} points")
    else:
        g["head_verdict"] = "n/a"
    return g


def results_rows(exp: Experiment, study: dict[str, Any], protocol: str) -> list[dict[str, Any]]:
    """The contract's rows for one model: FP32 in PyTorch, our simulated W8A8, each ONNX engine."""
    fp32_pj = energy_summary(study["table"], None)["total_pj"]
    rows = [exp.row("fp32", None, None, "none", exp.fp(), protocol="none", engine="torch", energy_pj=fp32_pj)]
    if study["int8"] is not None:
        sim = study["int8"]["simulated"].row
        rows.append({**sim, "energy_pj": energy_summary(study["table"], setting_config("W8A8", protocol))["total_pj"]})
    return rows + study["rows"]


def energy_records(study: dict[str, Any], protocol: str) -> list[dict[str, Any]]:
    """The energy tables of one model as JSON records (what notebook 08 reads)."""
    e = study["energy"].reset_index()
    configs = {s: (None if s == "FP32" else setting_config(s, protocol).to_json()) for s in e.setting}
    return [{"model": study["model"], "protocol": protocol, **r, "config": configs[r["setting"]]}
            for r in e.to_dict("records")]


def save_results(exps: list[Experiment], studies: list[dict[str, Any]], protocol: str,
                 log_check: pd.DataFrame) -> Path:
    """Write ``{results_dir}/07_energy.json``: the contract's rows of every model (the top-level
    provenance is the first model's, each model's own is under ``provenance_by_model``), the energy
    tables, the sensitivity, the headline check and the integer log-softmax check."""
    rows = [r for exp, st in zip(exps, studies) for r in results_rows(exp, st, protocol)]
    extra = {
        "energy": [r for st in studies for r in energy_records(st, protocol)],
        "sensitivity": [{"model": st["model"], **r} for st in studies for r in st["sensitivity"].to_dict("records")],
        "headline": [{"model": st["model"], **r} for st in studies
                     for r in st["headline"].reset_index().to_dict("records")],
        "mixed_precision": [{"model": st["model"], **r} for st in studies for r in st["mixed"].to_dict("records")],
        "log_softmax_integer_check": log_check.reset_index().to_dict("records"),
        "provenance_by_model": {exp.model_name: exp.provenance.to_json() for exp in exps},
        "skipped_engines": {st["model"]: st["int8"]["skipped"] for st in studies if st["int8"] is not None},
    }
    return exps[0].save(rows, **extra)
