"""Post-training quantization methods.

* :mod:`.standard`: standard PTQ grids (uniform configs calibrated by min-max, percentile or MSE).
* :mod:`.ranking`: ranking-aware PTQ for vision transformers (Liu et al., NeurIPS 2021):
  similarity-aware scale search, a ranking loss on the attention scores, bias correction
  (:mod:`.bias_correction`); with :func:`ranking_loss` and :func:`kendall_tau` to measure how
  well a quantized model keeps the order of its attention scores.
* :mod:`.ptq4vit`: PTQ4ViT (Yuan et al., ECCV 2022): twin-uniform grids and a Hessian-guided
  scale search.
* :mod:`.repq`: RepQ-ViT (Li et al., ICCV 2023): scale reparameterization of the post-LayerNorm
  activations, log√2 post-softmax quantization.
* :mod:`.vit_quantizers`: notebook 04's study of them all side by side, under a named protocol.
"""
from .bias_correction import correct_bias, expected_output_error
from .ptq4vit import PTQ4ViTReport, ptq4vit_quantize
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
from .repq import reparameterize, repq_quantize

__all__ = ["INPUT_SOURCES", "PTQ4ViTReport", "REFERENCES", "RankingAwareConfig", "RankingAwareReport",
           "alternating_search", "ptq4vit_quantize", "reparameterize", "repq_quantize",
           "correct_bias", "expected_output_error", "kendall_tau", "pair_indices", "pearson_similarity",
           "ranking_aware_quantize", "ranking_loss", "refine_linear", "refine_matmul_av", "refine_matmul_qk"]
