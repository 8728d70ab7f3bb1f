"""Notebook 05's tables and answer, from what :func:`.study.study_model` measured.

The ranking of operations per model and width, the block × layer grid of a heat map, MLP against
attention (the earlier study's reading, :func:`.study_claims`), each cheap proxy's rank agreement
with the direct measure (:func:`.rank_agreement`: Spearman ρ with a bootstrap interval) beside
what it costs, the earlier study's four claims checked, the page's glued strings and the
results rows.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...nn.protocols import setting_bits
from .agreement import STUDY_CLAIMS, rank_agreement, study_claims

if TYPE_CHECKING:
    from ...experiment import Experiment

DIRECT = "kl"  # the direct measure the page ranks by: continuous, where top-1 drops on a subset are ties
# each proxy: (its column in a study's ``ops``, the measures whose seconds it costs)
PROXIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "left in float (AIMET)": ("recovery_kl", ("left_float",)),
    "Fisher output error (ModelOpt)": ("fisher", ("fisher",)),
    "HAWQ Ω": ("hawq", ("hutchinson_trace", "hawq")),
    "Hessian trace per weight": ("trace_per_param", ("hutchinson_trace",)),
}
_LINEAR = re.compile(r"(?:^|\.)(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$")


def op_group(op: str) -> str:
    """What kind of operation ``op`` is, by its name: MLP, attention projection, attention matmul,
    patch embedding, classifier, shortcut conv, stem or conv."""
    m = _LINEAR.search(op)
    if m:
        return "MLP" if m.group(1).startswith("mlp") else "attention projection"
    leaf = op.rsplit(".", 1)[-1]
    if leaf in ("matmul_qk", "softmax", "matmul_av"):
        return "attention matmul"
    if op.startswith("patch_embed"):
        return "patch embedding"
    if leaf in ("head", "head_dist", "fc", "classifier"):  # head_dist: a distilled DeiT's second head
        return "classifier"
    if "downsample" in op or "shortcut" in op:
        return "shortcut conv"
    return "stem" if "." not in op else "conv"


def _at(st: dict[str, Any], width: str) -> pd.DataFrame:
    d = st["ops"][st["ops"].width == width]
    if d.empty:
        raise ValueError(f"{st['model']} was not measured at {width!r}; its widths are {sorted(set(st['ops'].width))}")
    return d


def ranking(st: dict[str, Any], width: str, measure: str = DIRECT) -> pd.DataFrame:
    """The operations of one model at ``width``, most sensitive first (rank 1)."""
    d = _at(st, width).sort_values([measure, "op"], ascending=[False, True], kind="stable")
    out = pd.DataFrame({"rank": range(1, len(d) + 1), "operation": d.op.values,
                        "group": [op_group(op) for op in d.op], "KL (nats/image)": d.kl.values,
                        "top-1 drop (points)": d.top1_drop.values})
    return out.set_index("rank")


def heatmap(st: dict[str, Any], width: str, measure: str = DIRECT) -> pd.DataFrame:
    """Block × layer grid of ``measure`` (blocks and layers in forward order; operations outside a
    block, and layers a block lacks, are left out or NaN: a heat map shows them blank)."""
    d = _at(st, width)
    d = d[d.block.notna()]
    if d.empty:
        return pd.DataFrame()
    blocks, layers = list(dict.fromkeys(d.block)), list(dict.fromkeys(d.layer))
    return d.pivot(index="block", columns="layer", values=measure).reindex(index=blocks, columns=layers)


def group_summary(studies: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Mean and largest KL of each group of operations, per model and width."""
    rows = []
    for st in studies:
        d = st["ops"].assign(group=[op_group(op) for op in st["ops"].op])
        for (width, group), g in d.groupby(["width", "group"], sort=False):
            rows.append({"model": st["model"], "width": width, "group": group, "operations": len(g),
                         "mean KL (nats/image)": g.kl.mean(), "largest KL (nats/image)": g.kl.max(),
                         "mean top-1 drop (points)": g.top1_drop.mean()})
    return pd.DataFrame(rows).set_index(["model", "width", "group"])


def mlp_vs_attention(studies: Sequence[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """MLP (fc1, fc2) against attention projections (qkv, proj): mean KL of each and the bootstrap
    interval of their difference, per ViT and width (a model without them has no row)."""
    rows = []
    for st in studies:
        for width in dict.fromkeys(st["ops"].width):
            d = _at(st, width)
            linear = {op: v for op, v in zip(d.op, d.kl) if _LINEAR.search(op)}
            if len(linear) < 2:
                continue
            c = study_claims(linear, n_boot, seed)
            if "difference_ci95" not in c:
                continue
            lo, hi = c["difference_ci95"]
            rows.append({"model": st["model"], "width": width, "MLP mean KL": c["mlp_mean"],
                         "attention mean KL": c["attention_mean"],
                         "ratio MLP / attention": c["mlp_mean"] / c["attention_mean"] if c["attention_mean"] > 0
                         else None, "difference": c["difference"], "95 % low": lo, "95 % high": hi,
                         "verdict": "MLP above" if lo > 0 else "attention above" if hi < 0 else "not resolved"})
    return pd.DataFrame(rows)


def agreement(studies: Sequence[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each proxy's Spearman ρ against the direct KL over the operations both score, its 95 %
    bootstrap interval, and its cost beside the direct sweep's, per model and width. A proxy that
    scores fewer than 3 operations, or gives them all one value, has no row."""
    rows = []
    for st in studies:
        sec = st["seconds"]
        # the width-independent measures (the Hessian trace) have no width: keyed by None
        cost = {(w if isinstance(w, str) else None, m): s for w, m, s in zip(sec.width, sec.measure, sec.seconds)}
        for width in dict.fromkeys(st["ops"].width):
            d = _at(st, width)
            direct = dict(zip(d.op, d.kl))
            for name, (col, measures) in PROXIES.items():
                scores = {op: float(v) for op, v in zip(d.op, d[col]) if v is not None and not pd.isna(v)}
                try:
                    a = rank_agreement(scores, direct, n_boot, seed)
                except ValueError:
                    continue
                seconds = sum(cost.get((width, m), cost.get((None, m), 0.0)) for m in measures)
                rows.append({"model": st["model"], "width": width, "proxy": name, "spearman rho": a["spearman_rho"],
                             "95 % low": a["ci95"][0], "95 % high": a["ci95"][1], "operations": a["n"],
                             "proxy (s)": seconds, "direct sweep (s)": cost[(width, "direct")]})
    return pd.DataFrame(rows)


def claims(studies: Sequence[dict[str, Any]], width: str = "W4A4", n_boot: int = 1000,
           seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The earlier study's four claims about DeiT-Tiny at 4 bits, against the first ViT measured at
    ``width`` (direct KL over its 48 per-block Linears): a table and :func:`.study_claims`' result."""
    for st in studies:
        if st["kind"] != "vit" or width not in set(st["ops"].width):
            continue
        d = _at(st, width)
        c = study_claims(dict(zip(d.op, d.kl)), n_boot, seed)
        c["model"] = st["model"]
        spread = "n/a" if c["spread"] is None else f"{c['spread']:.1f}×"
        ci = c.get("difference_ci95")
        diff = "n/a" if ci is None else f"{c['difference']:+.4f} nats (95 % {ci[0]:+.4f} to {ci[1]:+.4f})"
        ours = {"most": c["most"], "least": c["least"], "spread": spread, "mlp_above_attention": diff}
        theirs = {"most": STUDY_CLAIMS["most"], "least": STUDY_CLAIMS["least"], "spread": f"{STUDY_CLAIMS['spread']}×",
                  "mlp_above_attention": "MLP needs more precision than attention"}
        what = {"most": "most sensitive Linear", "least": "least sensitive Linear", "spread": "spread max / min",
                "mlp_above_attention": "MLP − attention (mean KL)"}
        table = pd.DataFrame([{"claim": what[k], "earlier study": theirs[k], f"ours ({st['model']}, {width})": ours[k],
                               "holds": _word(c["checks"][k])} for k in what]).set_index("claim")
        return table, c
    return pd.DataFrame(), None


def _word(check: bool | None) -> str:
    return "n/a" if check is None else "yes" if check else "no"


def _f(x: Any, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def answer(studies: Sequence[dict[str, Any]], widths: Sequence[str], agree: pd.DataFrame,
           claim: dict[str, Any] | None, mva: pd.DataFrame) -> dict[str, str]:
    """The strings the page's answer glues (``m1_*`` the first model, ``m2_*`` the second), each
    "n/a" where this run did not measure it."""
    w1 = widths[0]
    g = {"w1": w1, "claims_model": "n/a", "claim_most": "n/a", "claim_least": "n/a", "claim_spread": "n/a",
         "claims_held": "n/a", "best_proxy": "n/a", "best_rho": "n/a", "best_lo": "n/a", "best_hi": "n/a",
         "best_s": "n/a", "direct_s": "n/a", "worst_proxy": "n/a", "worst_rho": "n/a"}
    for i in (1, 2):
        for k in ("name", "method", "n_ops", "most", "most_kl", "least", "least_kl", "mlp_verdict", "mlp_kl", "att_kl",
                  "sweep_s", "sweep_evals", "n_eval"):
            g[f"m{i}_{k}"] = "n/a"
    for i, st in enumerate(studies[:2], start=1):
        g.update({f"m{i}_name": st["model"], f"m{i}_method": st["method"], f"m{i}_n_eval": str(st["n_eval"])})
        if w1 not in set(st["ops"].width):
            continue
        r = ranking(st, w1)
        g.update({f"m{i}_n_ops": str(len(r)), f"m{i}_most": r.operation.iloc[0],
                  f"m{i}_most_kl": _kl(r['KL (nats/image)'].iloc[0]), f"m{i}_least": r.operation.iloc[-1],
                  f"m{i}_least_kl": _kl(r['KL (nats/image)'].iloc[-1])})
        sec = st["seconds"]
        direct_s = float(sec[(sec.width == w1) & (sec.measure == "direct")].seconds.iloc[0])
        g[f"m{i}_sweep_s"] = f"{direct_s:.0f}"
        g[f"m{i}_sweep_evals"] = _f(direct_s / st["eval_seconds"] if st["eval_seconds"] > 0 else None, ".0f")
        m = mva[(mva.model == st["model"]) & (mva.width == w1)] if len(mva) else mva
        if len(m):
            row = m.iloc[0]
            g.update({f"m{i}_mlp_verdict": {"MLP above": "more sensitive than",
                                            "attention above": "less sensitive than",
                                            "not resolved": "not resolvably different from"}[row.verdict],
                      f"m{i}_mlp_kl": _kl(row['MLP mean KL']), f"m{i}_att_kl": _kl(row['attention mean KL'])})
    if studies and len(agree):
        a = agree[(agree.model == studies[0]["model"]) & (agree.width == w1)]
        if len(a):
            best, worst = a.loc[a["spearman rho"].idxmax()], a.loc[a["spearman rho"].idxmin()]
            g.update({"best_proxy": best.proxy, "best_rho": f"{best['spearman rho']:.2f}",
                      "best_lo": f"{best['95 % low']:.2f}", "best_hi": f"{best['95 % high']:.2f}",
                      "best_s": f"{best['proxy (s)']:.0f}", "direct_s": f"{best['direct sweep (s)']:.0f}",
                      "worst_proxy": worst.proxy, "worst_rho": f"{worst['spearman rho']:.2f}"})
    if claim is not None:
        held = sum(bool(v) for v in claim["checks"].values())
        g.update({"claims_model": claim["model"], "claim_most": claim["most"], "claim_least": claim["least"],
                  "claim_spread": _f(claim["spread"], ".1f"), "claims_held": f"{held} of {len(claim['checks'])}"})
    return g


def _kl(v: float) -> str:
    """A KL in nats: four decimals, or two significant digits below 0.001 (where four decimals read as zero)."""
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _json(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v.item() if hasattr(v, "item") else v


def results_rows(exp: Experiment, st: dict[str, Any]) -> list[dict[str, Any]]:
    """The contract's rows for one model: FP32, then one per operation and width (its top-1 with
    only that operation quantized, and every measure; None where a measure does not apply)."""
    fp = exp.fp()
    rows = [exp.row("fp32", None, None, "none", fp, protocol="none")]
    for r in st["ops"].to_dict("records"):
        w, a = setting_bits(r["width"])
        rows.append({"model": st["model"], "method": st["method"], "w_bits": w, "a_bits": a,
                     "granularity": "per_channel", "protocol": st["protocol"], "group": op_group(r["op"]),
                     **{k: _json(v) for k, v in r.items()}})
    return rows


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _json(v) for k, v in r.items()} for r in df.to_dict("records")]


def save_results(exps: Sequence[Experiment], studies: Sequence[dict[str, Any]], agree: pd.DataFrame,
                 mva: pd.DataFrame, claim: dict[str, Any] | None) -> Any:
    """Write ``{results_dir}/05_sensitivity.json``: every model's rows (the top-level provenance is
    the first model's, each model's own under ``provenance_by_model``), the proxies' agreement,
    MLP against attention, the claims checked and each measure's seconds."""
    rows = [r for exp, st in zip(exps, studies) for r in results_rows(exp, st)]
    extra = {"agreement": _records(agree), "mlp_vs_attention": _records(mva),
             "claims": None if claim is None else {k: v for k, v in claim.items() if k != "ranking"},
             "seconds": [{"model": st["model"], **r} for st in studies for r in _records(st["seconds"])],
             "eval_seconds": {st["model"]: st["eval_seconds"] for st in studies},
             "provenance_by_model": {exp.model_name: exp.provenance.to_json() for exp in exps}}
    return exps[0].save(rows, **extra)
