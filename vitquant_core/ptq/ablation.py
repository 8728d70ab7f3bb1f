"""The ablation of ranking-aware PTQ (Liu et al., NeurIPS 2021) that notebook 03 measures.

Each variant switches the paper's three parts (similarity-aware scale search, the ranking
loss on attention scores, bias correction) on or off; ``"standard"`` is min-max PTQ with the
same config. :func:`measure_variant` calibrates and evaluates one (setting, variant) through
the experiment's row store, together with how well the quantized model keeps the order of
its attention scores, so a rerun reads it back instead of calibrating again.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from ..analysis.attention import attention_order, attention_scores
from ..nn.config import QuantConfig
from ..nn.quantize import quantize
from .ranking import RankingAwareConfig, ranking_aware_quantize, ranking_loss

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..rowstore import Record

VARIANTS: dict[str, dict[str, bool]] = {  # which of the paper's three parts each variant switches on
    "similarity": dict(similarity=True, ranking=False, bias_correction=False),
    "similarity+ranking": dict(similarity=True, ranking=True, bias_correction=False),
    "similarity+bias": dict(similarity=True, ranking=False, bias_correction=True),
    "ranking-aware": dict(similarity=True, ranking=True, bias_correction=True),
}
ABLATION = ("standard", *VARIANTS)
# What a parameter left at None means in each profile. The full profile is the paper's search
# (C = 100 candidates, at most 20 rounds) on 64 calibration images (RepQ-ViT and PTQ4ViT
# calibrate with 32) and the whole test split: about 5 min per calibration on 2 CPU cores.
# The quick one is sized for minutes in all.
PROFILE_DEFAULTS: dict[str, dict[str, int]] = {
    "quick": {"n_calib": 32, "n_eval": 500, "n_candidates": 20, "max_rounds": 4},
    "full": {"n_calib": 64, "n_eval": 0, "n_candidates": 100, "max_rounds": 20},
}


def study_parameters(profile: str, **given: Any) -> dict[str, Any]:
    """The study's parameters with each None replaced by the profile's default."""
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"parameter profile must be one of {sorted(PROFILE_DEFAULTS)}, got {profile!r}")
    return {k: PROFILE_DEFAULTS[profile][k] if v is None else v for k, v in given.items()}


def check_ablation(ablation: list[str]) -> None:
    if isinstance(ablation, str) or not isinstance(ablation, (list, tuple)) or not ablation:
        raise TypeError(f"parameter ablation must be a non-empty list of variants, got {ablation!r}; "
                        f"choose from {list(ABLATION)} (papermill: -y 'ablation: [standard, ranking-aware]')")
    unknown = [v for v in ablation if v not in ABLATION]
    if unknown:
        raise ValueError(f"parameter ablation: unknown variants {unknown}; choose from {list(ABLATION)}")


def check_study_parameters(settings: list[str], ablation: list[str], n_attention_images: int,
                           check_setting: str, **flags: bool) -> None:
    """Notebook 03's own parameters, checked before anything is computed."""
    check_ablation(ablation)
    if isinstance(settings, str) or not isinstance(settings, (list, tuple)) or not settings:
        raise TypeError(f"parameter settings must be a non-empty list such as ['W8A8', 'W4A8'], got {settings!r}")
    for s in [*settings, check_setting]:
        QuantConfig.from_label(s)  # raises, naming the label, for anything but 'W<bits>A<bits>' or 'W<bits>'
    if isinstance(n_attention_images, bool) or not isinstance(n_attention_images, int) or n_attention_images < 1:
        raise ValueError(f"parameter n_attention_images must be an integer >= 1, got {n_attention_images!r}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"parameter {name} must be True or False, got {value!r}")


def sampled_pairs_check(fp_scores: dict[str, torch.Tensor], q_scores: dict[str, torch.Tensor],
                        max_pairs: int = 2048, seed: int = 0) -> list[dict[str, Any]]:
    """Per attention block: the ranking loss over all key pairs and over ``max_pairs`` seeded pairs."""
    rows = []
    for name in fp_scores:
        full = ranking_loss(fp_scores[name], q_scores[name]).item()
        sampled = ranking_loss(fp_scores[name], q_scores[name], max_pairs=max_pairs,
                               generator=torch.Generator().manual_seed(seed)).item()
        rows.append({"layer": name, "all pairs": full, f"{max_pairs} sampled pairs": sampled,
                     "relative difference": abs(sampled / full - 1) if full > 0 else None})
    return rows


def _analyse(exp: Experiment, x_attn: torch.Tensor):
    def analyse(qmodel: torch.nn.Module) -> dict[str, Any]:
        order = attention_order(exp.model, qmodel, x_attn, seed=exp.seed)
        data: dict[str, Any] = {
            "attention_order": order,
            "sampled_pairs": sampled_pairs_check(attention_scores(exp.model, x_attn),
                                                 attention_scores(qmodel, x_attn), seed=exp.seed),
            "summary": {"kendall_tau": round(sum(o["kendall_tau"] for o in order) / len(order), 4),
                        "ranking_loss": round(sum(o["ranking_loss"] for o in order) / len(order), 5)},
        }
        layers = getattr(qmodel.vitquant_report, "layers", None)
        if layers is not None:  # what the search chose, to compare two searches layer by layer
            data["multipliers"] = {r["name"]: r.get("multipliers") for r in layers}
        return data
    return analyse


def measure_variant(exp: Experiment, setting: str, variant: str, x_attn: torch.Tensor,
                    **search: Any) -> Record:
    """Calibrate ``setting`` (e.g. "W4A8") with ``variant`` and evaluate it, through the row store.

    ``search`` holds :class:`RankingAwareConfig` fields (n_candidates, max_rounds, coarse_to_fine,
    max_rows ...); the variant sets the three parts. The record's row gains the mean Kendall's τ
    and ranking loss over the attention blocks; its data holds them block by block.
    """
    check_ablation([variant])
    config = QuantConfig.from_label(setting)
    spec: dict[str, Any] = {"study": "03_ranking_aware", "variant": variant, "config": config.to_json(),
                            "n_attention_images": len(x_attn)}
    if variant == "standard":
        def build():
            return quantize(exp.model, config, exp.calib, progress=False)
        method = "ptq"
    else:
        rq = RankingAwareConfig(seed=exp.seed, **search, **VARIANTS[variant])
        spec["ranking_aware"] = asdict(rq)

        def build():
            return ranking_aware_quantize(exp.model, config, exp.calib, rq, progress=False)
        method = variant
    record = exp.measure(spec, build, method, config.default.w_bits, config.default.a_bits, "per_channel",
                         analyse=_analyse(exp, x_attn))
    record.row.update(record.data["summary"])
    return record


def compare_with_standard(exp: Experiment, records: dict[tuple[str, str], Record]) -> list[dict[str, Any]]:
    """McNemar's test of every variant against standard PTQ at the same setting, on the same images.

    Also writes each result into its record's row as ``vs_standard`` (difference, 95 % interval,
    p-value), so the results file carries the test beside the accuracy.
    """
    from ..analysis.significance import compare_to_reference, vs_reference

    out = []
    for (setting, variant), record in records.items():
        if variant == "standard" or (setting, "standard") not in records:
            continue
        (c,) = compare_to_reference({"standard": exp.correct(records[setting, "standard"]),
                                     variant: exp.correct(record)}, "standard")
        record.row["vs_standard"] = vs_reference(c)
        out.append({"setting": setting, "variant": variant, "difference (points)": c["difference"],
                    "95 % interval": c["ci95"], "only standard right": c["only_a"],
                    "only variant right": c["only_b"], "McNemar p": c["p_value"]})
    return out


def verdicts(records: dict[tuple[str, str], Record], settings: list[str]) -> list[str]:
    """One sentence per setting, from the measurements only: is ranking-aware PTQ (all three parts)
    at least as accurate as standard PTQ, is a loss resolvable, and which variant does best."""
    lines = []
    for setting in settings:
        if (setting, "standard") not in records or (setting, "ranking-aware") not in records:
            continue
        s = records[setting, "standard"].row["top1"]
        r = records[setting, "ranking-aware"].row["top1"]
        lo, hi = records[setting, "ranking-aware"].row["vs_standard"]["ci95"]
        p = records[setting, "ranking-aware"].row["vs_standard"]["mcnemar_p"]
        verdict = ("at least as accurate" if r >= s else
                   "below, by less than this test split can resolve" if lo <= 0 <= hi else "significantly below")
        gains = {v: rec.row["top1"] - s for (st, v), rec in records.items() if st == setting and v != "standard"}
        best = max(gains, key=gains.get)
        lines.append(f"{setting}: standard {s:.2f} %, ranking-aware {r:.2f} % ({r - s:+.2f} points, 95 % interval "
                     f"[{lo:+.2f}, {hi:+.2f}], McNemar p = {p:.3f}): {verdict}; best variant: '{best}' "
                     f"({gains[best]:+.2f})")
    return lines


def search_check(exp: Experiment, used: Record, exhaustive: Record, used_label: str) -> dict[str, Any]:
    """The search used in the ablation against the paper's exhaustive search, at one setting:
    top-1, calibration time, how many layers chose the same multipliers, and McNemar's test."""
    from ..analysis.significance import paired_comparison

    ref, mine = exhaustive.data["multipliers"], used.data["multipliers"]
    same = sum(mine.get(n) == ref[n] for n in ref)
    c = paired_comparison(exp.correct(used), exp.correct(exhaustive))
    table = [
        {"search": f"used above ({used_label})", "top-1": used.row["top1"],
         "calibration (s)": used.row["calib_seconds"], "same multipliers as exhaustive": f"{same}/{len(ref)}"},
        {"search": "paper's exhaustive (all rows, all candidates)", "top-1": exhaustive.row["top1"],
         "calibration (s)": exhaustive.row["calib_seconds"],
         "same multipliers as exhaustive": f"{len(ref)}/{len(ref)}"},
    ]
    lo, hi = c["ci95"]
    if lo <= 0 <= hi:
        verdict = "the two searches differ by less than this test split can resolve"
    else:
        better = "exhaustive" if c["difference"] > 0 else "faster"
        verdict = (f"the {better} search is more accurate by more than this test split can resolve: "
                   f"{abs(c['difference']):.2f} points at this setting")
    return {"table": table, "difference": c["difference"], "ci95": list(c["ci95"]), "p_value": c["p_value"],
            "verdict": verdict}
