"""Tables, the budget curve, the bits picture and the page's answer for notebook 06, from what
:func:`vitquant_core.mixed.study.study_model` returns (nothing is calibrated here).

McNemar's exact test (:func:`~vitquant_core.analysis.significance.paired_comparison`) sets each
mixed configuration beside the uniform one of the same budget, and the MILP beside greedy; the
additivity table sets the summed one-at-a-time drops beside the measured drop
(:func:`~vitquant_core.mixed.additivity_check`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.sensitivity import split_name
from ..analysis.significance import paired_comparison
from .problem import additivity_check, parse_candidate

Study = dict[str, Any]


def _verdict(c: dict[str, Any]) -> str:
    if c["p_value"] >= 0.05:
        return "not resolvable (p ≥ 0.05)"
    return "more accurate" if c["difference"] > 0 else "less accurate"


def comparisons(st: Study) -> pd.DataFrame:
    """Each solver's configuration against uniform at its budget, and the MILP against greedy."""
    exp, recs, out = st["exp"], st["records"], []
    for (solver, ref), rec in recs.items():
        pairs = [] if solver == "uniform" else [("uniform", ref)]
        pairs += [("greedy", ref)] if solver == "milp" and ("greedy", ref) in recs else []
        for against in pairs:
            c = paired_comparison(exp.correct(recs[against]), exp.correct(rec))
            out.append({"model": st["model"], "budget": ref, "configuration": f"mixed-{solver}",
                        "against": against[0] if against[0] == "uniform" else f"mixed-{against[0]}",
                        "top-1 (%)": rec.row["top1"], "against top-1 (%)": recs[against].row["top1"],
                        "difference (points)": c["difference"], "95 % interval": list(c["ci95"]),
                        "McNemar p": c["p_value"], "verdict": _verdict(c),
                        "BOPs used / limit": rec.row["budget"]["used"] / rec.row["budget"]["limit"],
                        "size used / limit": rec.row["size_budget"]["used"] / rec.row["size_budget"]["limit"]})
    return pd.DataFrame(out)


def curve(st: Study) -> pd.DataFrame:
    """Top-1 against BOPs (G) of every measured configuration: the MILP's sweep and the uniform points."""
    return pd.DataFrame([{"model": st["model"], "method": "uniform" if s == "uniform" else f"mixed-{s}",
                          "budget": ref, "GBOPs": r.row["budget"]["used"] / 1e9, "top1": r.row["top1"]}
                         for (s, ref), r in st["records"].items()])


def additivity(st: Study) -> pd.DataFrame:
    """Summed one-at-a-time top-1 drops (sensitivity subset) against the measured drop (test
    images: disagreement with the float model, the quantity the sweep measures), per configuration."""
    rows = []
    for (solver, ref), rec in st["records"].items():
        if solver == "uniform":
            continue
        measured = 100.0 - rec.row["agreement"] if rec.row.get("agreement") is not None else float("nan")
        chk = additivity_check(rec.row["predicted_top1_drop"], measured)
        rows.append({"model": st["model"], "budget": ref, "solver": solver,
                     "predicted drop (points)": chk["predicted"], "measured drop (points)": chk["measured"],
                     "measured / predicted": chk["ratio"], "fp top-1 − top-1 (points)": st["fp_top1"] - rec.row["top1"],
                     "additive model holds": chk["holds"]})
    return pd.DataFrame(rows)


def bits_grid(choice: dict[str, str]) -> pd.DataFrame:
    """Block (rows, forward order) × layer (columns) of the chosen bits: weight bits where the
    operation has weights, activation bits for the attention matmuls, 32 for float. Operations
    outside any block (stem, patch embedding, head) form the row "outside blocks"."""
    cells, blocks, layers = {}, [], []
    for op, label in choice.items():
        block, layer = split_name(op)
        block = block or "outside blocks"
        w, a = parse_candidate(label)
        cells[block, layer] = 32 if (w, a) == (None, None) else (w if w is not None else a)
        blocks += [block] if block not in blocks else []
        layers += [layer] if layer not in layers else []
    return pd.DataFrame([[cells.get((b, ly)) for ly in layers] for b in blocks], index=blocks, columns=layers,
                        dtype=float)


def _pick(comp: pd.DataFrame, conf: str, against: str, ref: str) -> dict[str, Any] | None:
    if not len(comp):
        return None
    hit = comp[(comp.configuration == conf) & (comp.against == against) & (comp.budget == ref)]
    return hit.iloc[0].to_dict() if len(hit) else None


def answer(studies: list[Study], reference: str = "W4A4", high: str = "W6A6") -> dict[str, str]:
    """The strings the page's answer glues (``m1_*`` the first model, ``m2_*`` the second), each
    "n/a" where this run did not measure it."""
    keys = ("name", "fp_top1", "uni_low", "milp_low", "greedy_low", "p_low", "verdict_low", "vs_greedy",
            "p_greedy", "uni_high", "milp_high", "verdict_high", "p_high", "sweep_s", "additive")
    g = {f"m{i}_{k}": "n/a" for i in (1, 2) for k in keys}
    g.update(low=reference, high=high)
    for i, st in enumerate(studies[:2], start=1):
        recs, comp = st["records"], comparisons(st)
        g.update({f"m{i}_name": st["model"], f"m{i}_fp_top1": f"{st['fp_top1']:.2f}",
                  f"m{i}_sweep_s": f"{st['sweep_seconds']:.0f}"})

        for tag, ref in (("low", reference), ("high", high)):
            for s in ("uniform", "milp", "greedy"):
                if (s, ref) in recs and (s != "greedy" or tag == "low"):
                    g[f"m{i}_{'uni' if s == 'uniform' else s}_{tag}"] = f"{recs[s, ref].row['top1']:.2f}"
            c = _pick(comp, "mixed-milp", "uniform", ref)
            if c:
                g[f"m{i}_p_{tag}"] = f"{c['McNemar p']:.2g}"
                g[f"m{i}_verdict_{tag}"] = ("at least as accurate as" if c["difference (points)"] >= 0
                                            else "less accurate than") + f" uniform {ref} ({_verdict_text(c)})"
        c = _pick(comp, "mixed-milp", "mixed-greedy", reference)
        if c:
            g[f"m{i}_vs_greedy"] = "at least as accurate as" if c["difference (points)"] >= 0 else "less accurate than"
            g[f"m{i}_p_greedy"] = f"{c['McNemar p']:.2g}"
        add = additivity(st)
        if len(add):
            g[f"m{i}_additive"] = (f"holds for {int(add['additive model holds'].sum())} of {len(add)} configurations; "
                                   f"measured / predicted ranges {add['measured / predicted'].min():.2f}–"
                                   f"{add['measured / predicted'].max():.2f}")
    return g


def _verdict_text(c: dict[str, Any]) -> str:
    return (f"{c['difference (points)']:+.2f} points, McNemar p = {c['McNemar p']:.2g}, "
            + ("beyond what chance explains" if c["McNemar p"] < 0.05 else "within what chance explains"))


def save_results(studies: list[Study]) -> Path:
    """Write ``{results_dir}/06_mixed_precision.json``: every configuration's row (FP32 first),
    the comparisons, the additivity table and the sensitivity rows, per model."""
    rows, exps = [], [st["exp"] for st in studies]
    for st in studies:
        exp = st["exp"]
        rows.append(exp.row("fp32", None, None, "none", exp.fp(), protocol=st["protocol"]))
        rows += [r.row for r in st["records"].values()]
    extra = {
        "comparisons": pd.concat([comparisons(st) for st in studies]).to_dict("records"),
        "additivity": pd.concat([additivity(st) for st in studies]).to_dict("records"),
        "sensitivity": {st["model"]: st["sens_rows"] for st in studies},
        "sweep_seconds": {st["model"]: st["sweep_seconds"] for st in studies},
        "provenance_by_model": {exp.model_name: exp.provenance.to_json() for exp in exps},
    }
    return exps[0].save(rows, **extra)
