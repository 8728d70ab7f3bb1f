"""Ranking-aware post-training quantization of vision transformers.

Liu, Wang, Han, Zhang, Ma and Gao, "Post-Training Quantization for Vision Transformer",
NeurIPS 2021 (arXiv:2106.14156), §3.2–3.4. Three parts, each switchable so that the
paper's ablation can be reproduced:

* **Similarity-aware quantization** (§3.2). For each linear operation O = X·Wᵀ the weight
  scale Δ_W and the input scale Δ_X are chosen to maximise the mean, over the calibration
  images, of the Pearson correlation Γ(O, Ô) between the float output and the quantized
  output Ô = Q(X; Δ_X)·Q(W; Δ_W)ᵀ. The search alternates (Δ_W with Δ_X fixed, then Δ_X with
  Δ_W fixed); each tries C candidates linearly spaced in [αΔ, βΔ] around the max-based
  scale Δ (paper: α = 0.5, β = 1.2, C = 100), for at most ``max_rounds`` rounds. The two
  matrix multiplications of self-attention are linear operations in both operands and are
  searched the same way: q·kᵀ (k plays W's part, q plays X's) and attn·v (v plays W's part).
* **Ranking-aware quantization** (§3.3). For the operations that produce the attention
  scores (the q·kᵀ matmul, and the qkv linear that feeds it) the objective becomes
  similarity − γ·L_ranking, with the pairwise hinge loss
  L_ranking = Σ_heads Σ_rows Σ_{i<j} Φ((Â_i − Â_j)·sign(A_i − A_j)), Φ(p) = max(θ − p, 0),
  over the keys i, j of each query row of the float score map A and the quantized one Â
  (paper: γ = 0.1, θ = 0.2). It penalises pairs of keys whose order the quantized scores
  swap, or keep by less than the margin θ. A and Â are the pre-softmax scores (q/√d)·kᵀ that
  QuantAttention computes. For the qkv linear, Â is formed from each candidate's quantized
  qkv output with q and k in float (the q·kᵀ operand quantizers are searched right after, on
  their own); its similarity term covers the whole qkv output, v included.
* **Bias correction** (§3.4, :mod:`..bias_correction`). With the scales fixed, the expected
  output error E[ε_W·X] + E[ε_X·W] + E[ε_X·ε_W] on the calibration set is folded into the
  bias of each quantized linear layer.

One module per concern: :mod:`.metrics` (Pearson similarity, the ranking loss, Kendall's τ),
:mod:`.search` (the alternating search over candidate scales), :mod:`.refine` (one operation:
its operands, search and bias correction), :mod:`.capture` (the inputs each operation sees),
:mod:`.config` (the hyper-parameters) and :mod:`.driver` (the layer-by-layer loop over a
model; which inputs and which float reference each layer is calibrated against is documented
there).

Deviations from the paper (documented, deliberate)
---------------------------------------------------
* The ranking loss is *averaged* over images, heads, query rows and key pairs instead of
  summed: the sum grows as heads·N³ and would swamp the similarity term (which lies in
  [−1, 1]) for any γ; the mean keeps γ = 0.1 meaningful at every sequence length. The sum is
  available as ``ranking_loss(..., reduction="sum")``.
* Per-channel weight scales (the project's default) are searched with one common multiplier
  of the max-based per-channel scales, i.e. the candidates are [α, β]·Δ_W channel-wise; the
  paper uses one scale per layer, which is the per-tensor special case.
* The max-based starting scale itself (multiplier 1) is added to the C grid points, so the
  search can never end below its starting objective.
* Conv2d layers (the patch embedding, kept in float by the default configs) keep their
  min-max scales; only linear layers and the attention matmuls are refined.
* Speed. By default the ranking loss is estimated on a seeded subset of at most 4,096 score
  rows (image, head, query) per layer, all key pairs of each row kept (``max_rows``; None:
  every row); with 128 DeiT-Tiny images (24,960 rows) that makes the term 6x cheaper.
  ``coarse_to_fine=True`` (off by default) evaluates every k-th of the C candidates
  (k ≈ √(C/2), 7 at C = 100), then those within k of the best of them: ~29 evaluations
  instead of 101. On the first block of DeiT-Tiny (CIFAR, 65 tokens, W4A4, 32 images, random
  weights) both chose exactly the multipliers of the exhaustive search in all six
  operations (6x faster together); but on the micro ViT of the tests the coarse pass missed
  the exhaustive optimum in one of twelve layers at W8A8 and at W4A4 (the objective along
  the weight multiplier is not unimodal there), costing 0.4–0.5 dB of output SQNR, hence
  off by default. Notebook 03 repeats the comparison on the trained model.
"""
from .config import INPUT_SOURCES, REFERENCES, RankingAwareConfig
from .driver import RankingAwareReport, ranking_aware_quantize
from .metrics import kendall_tau, pair_indices, pearson_similarity, ranking_loss
from .refine import refine_linear, refine_matmul_av, refine_matmul_qk
from .search import alternating_search

__all__ = ["INPUT_SOURCES", "REFERENCES", "RankingAwareConfig", "RankingAwareReport", "alternating_search",
           "kendall_tau", "pair_indices", "pearson_similarity", "ranking_aware_quantize", "ranking_loss",
           "refine_linear", "refine_matmul_av", "refine_matmul_qk"]
