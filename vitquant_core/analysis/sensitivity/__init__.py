"""Per-operation sensitivity to quantization: the direct measure, cheap proxies, their agreement.

* :func:`sensitivity_sweep` — the direct measure (AIMET ``QuantAnalyzer``'s two views): top-1
  drop and KL of the logits with only one operation quantized, and the recovery with only
  one left in float; fast through one calibration per width and block-boundary replay.
* :func:`fisher_proxy` (NVIDIA ModelOpt ``auto_quantize``'s Σ(∂L/∂Y)²·(Ŷ−Y)²),
  :func:`hutchinson_trace` and :func:`hawq_proxy` (HAWQ-V2/V3's Hessian trace) — cheap
  proxies, each with its cost.
* :func:`rank_agreement` — Spearman ρ of a proxy against the direct measure, with a
  bootstrap interval over operations; :func:`study_claims` checks an earlier study's ranking
  of DeiT-Tiny's Linears.
* :func:`sensitivity_table` — ``sensitivity[op][candidate]`` for :class:`vitquant_core.mixed.Problem`.

Notebook 05's study (every measure of one model through the row store) is in :mod:`.study`, its
tables and answer in :mod:`.report`.
"""
from .agreement import STUDY_CLAIMS, rank_agreement, study_claims
from .ops import all_but_op_config, config_of, only_op_config, split_name
from .proxies import ProxyResult, fisher_proxy, hawq_proxy, hutchinson_trace, rademacher
from .sweep import MEASURES, VIEWS, scores_at, sensitivity_sweep, sensitivity_table

__all__ = ["MEASURES", "STUDY_CLAIMS", "VIEWS", "ProxyResult", "all_but_op_config", "config_of", "fisher_proxy",
           "hawq_proxy", "hutchinson_trace", "only_op_config", "rademacher", "rank_agreement", "scores_at",
           "sensitivity_sweep", "sensitivity_table", "split_name", "study_claims"]
