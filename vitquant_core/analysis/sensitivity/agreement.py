"""How well a cheap proxy ranks operations, and an earlier study's claims about DeiT-Tiny.

:func:`rank_agreement` is Spearman's ρ (:func:`scipy.stats.spearmanr`) between a proxy's
scores and the direct measure over the same operations, with a seeded percentile bootstrap
over operations for its 95 % interval. :func:`study_claims` reads the direct 4-bit drops
of DeiT's per-block Linears the way the earlier study did: which is most and least
sensitive, the spread max/min, and MLP (fc1, fc2) against attention (qkv, proj) with a
bootstrap interval of the difference of their means.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

# what the earlier study reported for DeiT-Tiny at 4 bits
STUDY_CLAIMS = {"most": "blocks.8.mlp.fc2", "least": "blocks.7.attn.proj", "spread": 4.7, "mlp_above_attention": True}
_LINEAR = re.compile(r"^(?:.*\.)?blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$")
MLP, ATTENTION = ("mlp.fc1", "mlp.fc2"), ("attn.qkv", "attn.proj")


def _check_scores(scores: Any, what: str) -> dict[str, float]:
    if not isinstance(scores, Mapping):
        raise TypeError(f"{what} must map operation names to numbers, got {type(scores).__name__}")
    out = {}
    for op, v in scores.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ValueError(f"{what}[{op!r}] must be a finite number, got {v!r}")
        out[str(op)] = float(v)
    return out


def _check_boot(n_boot: Any, seed: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")


def rank_agreement(proxy_scores: Mapping[str, float], direct_scores: Mapping[str, float], n_boot: int = 1000,
                   seed: int = 0, ops: Sequence[str] | None = None) -> dict[str, Any]:
    """Spearman ρ between two scorings of the same operations, and its 95 % bootstrap interval.

    ``ops``: the operations compared (default: those both score; at least 3). Bootstrap
    resamples of operations in which either scoring is constant have no ρ and are skipped;
    ``n_boot_used`` says how many counted. Returns spearman_rho, ci95 (low, high), n, n_boot_used.
    """
    p, d = _check_scores(proxy_scores, "proxy_scores"), _check_scores(direct_scores, "direct_scores")
    _check_boot(n_boot, seed)
    if ops is None:
        ops = [op for op in d if op in p]
    else:
        missing = [op for op in ops if op not in p or op not in d]
        if missing:
            raise ValueError(f"operations {missing[:5]} are not scored by both: pass ops both score")
    ops = list(ops)
    if len(ops) < 3:
        raise ValueError(f"a rank correlation needs at least 3 operations scored by both, got {len(ops)}: do the "
                         "two scorings name operations the same way?")
    a, b = np.array([p[o] for o in ops]), np.array([d[o] for o in ops])
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError("one scoring gives every operation the same value: a rank correlation is undefined")
    rho = float(spearmanr(a, b).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(ops), len(ops))
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            boots.append(spearmanr(a[i], b[i]).statistic)
    lo, hi = (np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan))
    return {"spearman_rho": rho, "ci95": (float(lo), float(hi)), "n": len(ops), "n_boot_used": len(boots)}


def study_claims(drops: Mapping[str, float], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The earlier study's reading of per-block Linear sensitivities, on our numbers.

    ``drops``: op → direct 4-bit sensitivity (top-1 drop or KL); only ``blocks.<i>.attn.qkv``,
    ``.attn.proj``, ``.mlp.fc1``, ``.mlp.fc2`` are read. Returns the ranking (most sensitive
    first), most, least, spread = max/min (None when the smallest is <= 0: a ratio to a
    non-positive drop means nothing), mlp_mean, attention_mean, their difference
    mlp − attention with a 95 % bootstrap interval (operations resampled within each group,
    seeded), and ``checks``: whether each of :data:`STUDY_CLAIMS` holds (the same most and
    least sensitive operation; a spread within a factor 1.5 of 4.7; MLP above attention when
    the whole interval of the difference is above zero).
    """
    scores = _check_scores(drops, "drops")
    _check_boot(n_boot, seed)
    linear = {op: v for op, v in scores.items() if _LINEAR.match(op)}
    if len(linear) < 2:
        raise ValueError("drops needs at least two per-block Linears named like 'blocks.8.mlp.fc2' "
                         f"(qkv, proj, fc1, fc2); got {sorted(scores)[:5]}")
    ranking = sorted(linear, key=lambda op: (-linear[op], op))
    lo_v, hi_v = linear[ranking[-1]], linear[ranking[0]]
    spread = hi_v / lo_v if lo_v > 0 else None
    mlp = np.array([v for op, v in linear.items() if _LINEAR.match(op).group(2) in MLP])
    att = np.array([v for op, v in linear.items() if _LINEAR.match(op).group(2) in ATTENTION])
    out: dict[str, Any] = {"ranking": ranking, "most": ranking[0], "least": ranking[-1], "spread": spread,
                           "n_mlp": len(mlp), "n_attention": len(att)}
    if len(mlp) and len(att):
        rng = np.random.default_rng(seed)
        diffs = [rng.choice(mlp, len(mlp)).mean() - rng.choice(att, len(att)).mean() for _ in range(n_boot)]
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        out.update(mlp_mean=float(mlp.mean()), attention_mean=float(att.mean()),
                   difference=float(mlp.mean() - att.mean()), difference_ci95=(float(lo), float(hi)))
    out["checks"] = {
        "most": ranking[0] == STUDY_CLAIMS["most"],
        "least": ranking[-1] == STUDY_CLAIMS["least"],
        # the claimed spread lies within a factor 1.5 either way (None: undefined spread)
        "spread": None if spread is None else bool(abs(math.log(spread / STUDY_CLAIMS["spread"])) <= math.log(1.5)),
        # MLP above attention when the whole interval of the difference is above zero
        "mlp_above_attention": (bool(out["difference_ci95"][0] > 0) if "difference_ci95" in out else None),
    }
    return out
