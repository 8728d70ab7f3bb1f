"""Tables and the page's answer for notebook 04, from its records (no computation of scales here)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ..analysis.sqnr import ACTIVATION_KINDS
from .vit_quantizers import COMBINATIONS, best_method, done_when

if TYPE_CHECKING:
    from ..rowstore import Record

Records = dict[tuple[str, str, str], "Record"]


def accuracy_table(records: Records, protocol: str, settings: list[str], methods: list[str]) -> pd.DataFrame:
    """Top-1 (%) per method (rows, in ``methods`` order) and setting (columns)."""
    rows = [{"method": m, "setting": s, "top1": r.row["top1"]} for (p, s, m), r in records.items() if p == protocol]
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows).pivot_table(index="method", columns="setting", values="top1")
    t = t.reindex([m for m in methods if m in t.index])[[s for s in settings if s in t.columns]].round(2)
    return t.astype(object).where(t.notna(), "not run")  # a gap says so, never NaN


def long_table(records: Records) -> pd.DataFrame:
    return pd.DataFrame([{"protocol": p, "setting": s, "method": m, "top1": r.row["top1"],
                          "calib_seconds": r.row.get("calib_seconds"), "stored": r.cached}
                         for (p, s, m), r in records.items()])


def sqnr_table(records: Records, protocol: str, setting: str) -> pd.DataFrame:
    """Mean SQNR (dB) per activation kind and method at one setting (long form, for plotting)."""
    rows = []
    for (p, s, m), r in records.items():
        by_kind = r.row.get("sqnr_by_kind") if p == protocol and s == setting else None
        for kind in ACTIVATION_KINDS if by_kind else ():
            if by_kind.get(kind) is not None:
                rows.append({"method": m, "activation": kind, "sqnr_db": by_kind[kind]})
    return pd.DataFrame(rows)


def _fmt_ci(ci: list[float]) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _verdict(c: dict[str, Any], better: str, worse: str) -> str:
    lo, hi = c["95 % interval"]
    if lo <= 0 <= hi:
        return "a difference this test split cannot resolve"
    return better if c["difference (points)"] > 0 else worse


def answer(records: Records, fp_top1: float, vs_repq: list[dict[str, Any]], settings: list[str]) -> dict[str, str]:
    """The strings the page's answer glues, each "n/a" where this run did not measure it."""
    g: dict[str, str] = {k: "n/a" for k in (
        "best_w4", "best_w4_top1", "minmax_w4_top1", "repq_w4_top1", "ptq4vit_w4_top1", "loss_ratio",
        "half_verdict", "best_w6", "best_w6_top1", "w6_verdict", "low_setting", "best_low", "best_low_top1",
        "minmax_low_top1", "default_minmax_w4_top1", "combo_w4", "combo_w4_diff", "combo_w4_ci", "combo_w4_verdict")}
    g["fp_top1"] = f"{fp_top1:.2f}"

    def top1(protocol: str, setting: str, method: str) -> str:
        r = records.get((protocol, setting, method))
        return f"{r.row['top1']:.2f}" if r else "n/a"

    targets = done_when(records, fp_top1)
    if "W4A4" in targets:
        t = targets["W4A4"]
        g.update(best_w4=t["best"], best_w4_top1=top1("paper", "W4A4", t["best"]),
                 minmax_w4_top1=top1("paper", "W4A4", "min-max"), repq_w4_top1=top1("paper", "W4A4", "repq-vit"),
                 ptq4vit_w4_top1=top1("paper", "W4A4", "ptq4vit"),
                 default_minmax_w4_top1=top1("default", "W4A4", "min-max"),
                 loss_ratio=f"{t['loss_best'] / t['loss_min_max']:.2f}" if t["loss_min_max"] > 0 else "n/a",
                 half_verdict="at most half" if t["at most half"] else "more than half")
    if "W6A6" in targets:
        t = targets["W6A6"]
        g.update(best_w6=t["best"], best_w6_top1=top1("paper", "W6A6", t["best"]),
                 w6_verdict=f"within {t['loss_best']:.2f} points of" if t["within 1 point"]
                 else f"{t['loss_best']:.2f} points below")
    low = min(settings, key=lambda s: sum(int(c) for c in s[1:].split("A")))
    best_low = best_method(records, "paper", low)
    if best_low:
        g.update(low_setting=low, best_low=best_low, best_low_top1=top1("paper", low, best_low),
                 minmax_low_top1=top1("paper", low, "min-max"))
    combos = [c for c in vs_repq if c["protocol"] == "paper" and c["setting"] == "W4A4" and c["method"] in COMBINATIONS]
    if combos:
        c = max(combos, key=lambda c: c["difference (points)"])
        g.update(combo_w4=c["method"], combo_w4_diff=f"{c['difference (points)']:+.2f}",
                 combo_w4_ci=_fmt_ci(c["95 % interval"]),
                 combo_w4_verdict=_verdict(c, "better than RepQ-ViT beyond what chance explains",
                                           "worse than RepQ-ViT beyond what chance explains"))
    return g


def calibration_table(records: Records, methods: list[str]) -> pd.DataFrame:
    """Calibration seconds per method (rows) and protocol / setting (columns); a configuration
    not measured says why instead of showing a gap."""
    from .vit_quantizers import SAME_AS

    t = long_table(records).pivot_table(index="method", columns=["protocol", "setting"], values="calib_seconds")
    t = t.reindex([m for m in methods if m in t.index]).round(1).astype(object)
    for method in t.index:
        for col in t.columns:
            if pd.isna(t.loc[method, col]):
                same = SAME_AS.get((col[0], method))
                t.loc[method, col] = f"= {same}" if same else "not measured"
    return t


def published_table() -> pd.DataFrame:
    """The published ImageNet figures, with "not quoted" where this page quotes none."""
    from .vit_quantizers import PUBLISHED_DEIT_TINY_IMAGENET

    return pd.DataFrame(PUBLISHED_DEIT_TINY_IMAGENET).set_index("method").astype(object).fillna("not quoted")
