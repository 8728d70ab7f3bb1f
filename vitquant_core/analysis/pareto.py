"""Pareto fronts of accuracy against cost, over every configuration the earlier notebooks measured.

A configuration is *on the front* when no other one is at least as accurate and at least as cheap
and strictly better in one of the two: the non-dominated set of multi-objective optimisation
(Deb, *Multi-Objective Optimization using Evolutionary Algorithms*, Wiley 2001, §2.4), the
accuracy-cost curve HAQ (Wang et al., CVPR 2019) and HAWQ-V3 (Yao et al., ICML 2021) draw for
mixed precision. :func:`pareto_front` is that definition, pure and exact (O(n²), a few hundred
points at most).

:func:`gather_points` reads the rows of the earlier notebooks' results files (``results_dir/
NN_name.json``, :mod:`vitquant_core.results`) and prices each one at its own bit widths with the
energy model (:mod:`vitquant_core.energy`, Horowitz's 45 nm constants unless replaced) on the
model's per-layer cost table (:mod:`vitquant_core.cost`): a row that carries its per-layer
``config`` is priced layer by layer from it, one that does not from its W/A bits under its
protocol. Size is the weight bytes of the quantizable operations at their widths (biases at 32
bits). Latency is only what notebook 07 measured on ONNX Runtime; a simulated width has none.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import style
from ..cost import OpCost, priced
from ..energy import EnergyConstants, energy_summary, load_constants
from ..energy.int8 import ENGINES as ONNX_ENGINES
from ..nn.config import QuantConfig
from ..nn.protocols import PROTOCOLS, protocol_config
from ..results import read_results

# The notebooks whose rows become points, in book order (a missing file is skipped with a note).
SOURCES = ("00_reference_models", "01_baseline", "02_ptq", "03_ranking_aware", "04_vit_quantizers",
           "06_mixed_precision", "07_energy")
COSTS = {"energy_uj": "energy per inference (µJ)", "size_mb": "weight size (MB)",
         "latency_ms": "measured latency (ms)"}
FLOAT_BITS = 32
PJ_PER_UJ, BYTES_PER_MB = 1e6, 1e6
# Notebooks 00-03 ran before rows named their protocol; they quantized what "default" does.
UNNAMED_PROTOCOL = "default"
ORT_PROTOCOL = "onnxruntime default"  # ONNX Runtime's quantize_static: every weight and input at 8 bits
PROVENANCE_KEYS = ("commit", "model", "checkpoint", "checkpoint_sha256", "n_calib", "n_eval", "seed", "profile",
                   "started")


def _value(point: Any, key: str) -> float | None:
    v = point.get(key) if isinstance(point, Mapping) else getattr(point, key, None)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def pareto_front(points: Sequence[Mapping[str, Any]] | pd.DataFrame, maximise: str | Sequence[str] = "top1",
                 minimise: str | Sequence[str] = "energy_uj") -> list[bool]:
    """For each point, in order, whether it is on the Pareto front: no other point is at least as
    good in every objective (≥ on ``maximise``, ≤ on ``minimise``) and strictly better in one.

    Exact duplicates do not dominate each other, so both stay on the front. A point missing an
    objective (None or NaN) is not compared and not on the front.
    """
    up = [maximise] if isinstance(maximise, str) else list(maximise)
    down = [minimise] if isinstance(minimise, str) else list(minimise)
    if not up and not down:
        raise ValueError("pareto_front needs at least one objective: name a column to maximise or minimise")
    if set(up) & set(down):
        raise ValueError(f"{sorted(set(up) & set(down))} cannot be both maximised and minimised")
    recs = points.to_dict("records") if isinstance(points, pd.DataFrame) else list(points)
    # every objective as "larger is better", so dominance is one comparison
    vecs: list[tuple[float, ...] | None] = []
    for p in recs:
        vals = [_value(p, k) for k in up] + [None if (v := _value(p, k)) is None else -v for k in down]
        vecs.append(None if any(v is None for v in vals) else tuple(vals))  # type: ignore[arg-type]

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [v is not None and not any(w is not None and dominates(w, v) for w in vecs) for v in vecs]


# -- pricing -----------------------------------------------------------------------------------

def model_cost_table(model: str) -> list[OpCost]:
    """The per-layer cost table of a registry or timm model, built without weights (MACs and element
    counts do not depend on them; nothing is downloaded)."""
    from ..cost import cost_table
    from ..models import create_model, data_config

    net = create_model(model, pretrained=False)
    return cost_table(net, tuple(data_config(model, net)["input_size"]))


def row_config(row: Mapping[str, Any]) -> tuple[QuantConfig | None, str]:
    """(what a results row quantized, its protocol); the config is None for a float model.

    The row's own per-layer ``config`` when it has one; else ONNX Runtime's engines quantize every
    weight and input at 8 bits; else the row's W/A bits under its protocol (``default`` for the
    rows of notebooks written before protocols were named).
    """
    w = row.get("w_bits", FLOAT_BITS)
    a = row.get("a_bits", FLOAT_BITS)
    protocol = row.get("protocol") or UNNAMED_PROTOCOL
    floating = style.canonical_method(str(row.get("method", ""))) == "fp32" or (w >= FLOAT_BITS and a >= FLOAT_BITS)
    if floating and not isinstance(row.get("config"), dict):
        return None, "none"
    if isinstance(row.get("config"), dict):
        # RepQ-ViT's rows name the transformation applied beside the config ("method")
        return QuantConfig.from_json({k: v for k, v in row["config"].items() if k != "method"}), protocol
    if str(row.get("engine", "")).startswith("ort-") or protocol == ORT_PROTOCOL:
        return QuantConfig.uniform(8, 8, keep_float=()), ORT_PROTOCOL
    if protocol not in PROTOCOLS:
        raise ValueError(f"row of {row.get('model')!r}, method {row.get('method')!r}: protocol {protocol!r} is "
                         f"none of {PROTOCOLS} and the row carries no config to price it from")
    return protocol_config(protocol, w if w < FLOAT_BITS else None, a if a < FLOAT_BITS else None), protocol


def price(table: Sequence[OpCost], config: QuantConfig | None,
          constants: EnergyConstants | None = None) -> dict[str, float]:
    """Energy of one inference (µJ, the energy model's reference placement) and weight size (MB)
    of ``config`` (None: FP32) on ``table``, layer by layer."""
    c = constants or load_constants()
    e = energy_summary(table, config, c)
    size = float(priced(table, config).weight_bytes.sum()) if table else 0.0
    return {"energy_uj": e["total_pj"] / PJ_PER_UJ, "size_mb": size / BYTES_PER_MB,
            "fp32_energy_uj": e["fp32_total_pj"] / PJ_PER_UJ}


# -- gathering ---------------------------------------------------------------------------------

def method_name(row: Mapping[str, Any]) -> str:
    """The row's method as the book's colours name it: notebook 02's standard PTQ with percentile or
    MSE activation ranges is that method, not min-max."""
    m = style.canonical_method(str(row["method"]))
    observer = style.ALIASES.get(str(row.get("a_observer", "")), str(row.get("a_observer", "")))
    return observer if m == "min-max" and observer in ("percentile", "mse") else m


def setting_label(row: Mapping[str, Any]) -> str:
    if row.get("budget") is not None or str(row.get("method", "")).startswith("mixed"):
        return f"mixed ({row.get('budget', 'budget not stated')})"
    return f"W{row.get('w_bits', FLOAT_BITS)}A{row.get('a_bits', FLOAT_BITS)}"


@dataclass
class Points:
    """The gathered configurations: ``frame`` (one row per point, ``id`` P01, P02, ...), what each
    point was measured under (``details``: config, provenance, the row), and ``notes`` saying what
    was skipped and why."""

    frame: pd.DataFrame
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def models(self) -> list[str]:
        return list(dict.fromkeys(self.frame.model)) if len(self.frame) else []

    def of(self, model: str) -> pd.DataFrame:
        return self.frame[self.frame.model == model]


POINT_COLUMNS = ("id", "model", "method", "protocol", "setting", "granularity", "w_bits", "a_bits", "top1",
                 "energy_uj", "size_mb", "latency_ms", "fp32_top1", "source", "sources", "n_eval")


def _provenance(doc: dict[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The run's provenance for this row's model; a run over several models without a provenance per
    model says so rather than name another model's checkpoint."""
    model = row.get("model")
    prov = (doc.get("provenance_by_model") or {}).get(model) or doc.get("provenance") or {}
    out = {k: prov[k] for k in PROVENANCE_KEYS if k in prov}
    if out.get("model") not in (None, model):
        out = {"note": f"one run over several models; its provenance is {out['model']}'s",
               **{k: v for k, v in out.items() if k not in ("model", "checkpoint", "checkpoint_sha256")},
               "model": model}
    if row.get("checkpoint_sha256"):
        out["checkpoint_sha256"] = row["checkpoint_sha256"]
    return out


def gather_points(results_dir: str | Path, models: Sequence[str] | None = None, sources: Sequence[str] = SOURCES,
                  constants: EnergyConstants | None = None, latency_batch: int = 64,
                  tables: Mapping[str, Sequence[OpCost]] | None = None,
                  table_for: Callable[[str], Sequence[OpCost]] = model_cost_table) -> Points:
    """Every row of ``sources`` found in ``results_dir`` (of ``models``, or of every model when None)
    as a priced point. ``tables`` gives cost tables by model (else ``table_for(model)`` builds
    them). The same measurement written by several notebooks (same model, method, protocol, bits,
    granularity, top-1 and latency) is one point naming all its sources."""
    c = constants or load_constants()
    cost_tables = dict(tables or {})
    recs: list[dict[str, Any]] = []
    details: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    seen: dict[tuple, dict[str, Any]] = {}
    for source in sources:
        doc = read_results(results_dir, source)
        if doc is None:
            notes.append(f"{source}.json is not in results_dir: its configurations are not on this page.")
            continue
        fp32_of = {r["model"]: r["top1"] for r in doc.get("rows", []) if method_name(r) == "fp32"
                   and r.get("engine") not in ONNX_ENGINES}  # the PyTorch model on the same images
        for i, row in enumerate(doc.get("rows", [])):
            model = row.get("model")
            if models is not None and model not in models:
                continue
            if model not in cost_tables:
                cost_tables[model] = list(table_for(model))
            config, protocol = row_config(row)
            p = price(cost_tables[model], config, c)
            latency = row.get(f"latency_ms_b{latency_batch}")
            rec = {"model": model, "method": method_name(row), "protocol": protocol, "setting": setting_label(row),
                   "granularity": row.get("granularity", "none"), "w_bits": row.get("w_bits", FLOAT_BITS),
                   "a_bits": row.get("a_bits", FLOAT_BITS), "top1": float(row["top1"]),
                   "energy_uj": p["energy_uj"], "size_mb": p["size_mb"],
                   "latency_ms": None if latency is None else float(latency),
                   "fp32_top1": fp32_of.get(model), "source": source, "sources": source, "n_eval": row.get("n_eval")}
            if row.get("engine") in ONNX_ENGINES:  # "torch" rows are the PyTorch model, as elsewhere
                rec["setting"] += f" ({row['engine']})"
            key = tuple(rec[k] for k in ("model", "method", "protocol", "setting", "granularity", "top1",
                                         "energy_uj", "latency_ms"))
            if key in seen:
                seen[key]["sources"] += f", {source}"
                details[seen[key]["id"]]["also_in"].append(f"{source} row {i}")
                continue
            rec["id"] = f"P{len(recs) + 1:02d}"
            seen[key] = rec
            recs.append(rec)
            details[rec["id"]] = {"config": None if config is None else config.describe(), "row_index": i,
                                  "provenance": _provenance(doc, row), "also_in": [],
                                  "row": {k: v for k, v in row.items() if k not in ("config", "per_class_top1",
                                                                                     "classes", "quantized")}}
    frame = pd.DataFrame(recs, columns=list(POINT_COLUMNS))
    _fill_fp32(frame)
    if models is not None:
        notes += [f"{m}: no configuration in the results read." for m in models if m not in set(frame.model)]
    return Points(frame, details, notes)


def _fill_fp32(frame: pd.DataFrame) -> None:
    """Each point's FP32 reference: its own notebook's FP32 row (same images), else the model's
    first FP32 point from another notebook."""
    for model in frame.model.unique():
        mine = frame.model == model
        fp = frame[mine & (frame.method == "fp32") & frame.latency_ms.isna()]
        if len(fp):
            frame.loc[mine & frame.fp32_top1.isna(), "fp32_top1"] = float(fp.top1.iloc[0])


def mark_fronts(points: Points, costs: Sequence[str] = tuple(COSTS)) -> pd.DataFrame:
    """``points.frame`` with ``front_<cost>`` columns: on each model's front of top-1 against that
    cost (False where the cost was not measured)."""
    df = points.frame.copy()
    for cost in costs:
        df[f"front_{cost}"] = False
        for model in df.model.unique():
            sel = df.model == model
            df.loc[sel, f"front_{cost}"] = pareto_front(df[sel], "top1", cost)
    return df
