"""Post-training quantization methods.

* :mod:`.standard`: standard PTQ grids (uniform configs calibrated by min-max, percentile or MSE).
* :mod:`.ranking`: ranking-aware PTQ for vision transformers (Liu et al., NeurIPS 2021):
  similarity-aware scale search, a ranking loss on the attention scores, bias correction
  (:mod:`.bias_correction`); with :func:`ranking_loss` and :func:`kendall_tau` to measure how
  well a quantized model keeps the order of its attention scores.
"""
from .bias_correction import correct_bias, expected_output_error
from .ranking import (
                      INPUT_SOURCES,
                      REFERENCES,
                      RankingAwareConfig,
                      RankingAwareReport,
                      alternating_search,
                      kendall_tau,
                      pair_indices,
                      pearson_similarity,
                      ranking_aware_quantize,
                      ranking_loss,
                      refine_linear,
                      refine_matmul_av,
                      refine_matmul_qk,
)

__all__ = ["INPUT_SOURCES", "REFERENCES", "RankingAwareConfig", "RankingAwareReport", "alternating_search",
           "correct_bias", "expected_output_error", "kendall_tau", "pair_indices", "pearson_similarity",
           "ranking_aware_quantize", "ranking_loss", "refine_linear", "refine_matmul_av", "refine_matmul_qk"]
