"""PTQ4ViT: twin-uniform quantization and a Hessian-guided scale search for vision transformers.

Yuan, Xu, Wang, Wu and Sun, "PTQ4ViT: Post-Training Quantization for Vision Transformers with
Twin Uniform Quantization", ECCV 2022 (arXiv:2111.12293); official code
github.com/hahnyuan/PTQ4ViT (consulted, not copied).

:func:`ptq4vit_quantize` does, in order:

1. **Config** (:func:`.driver.ptq4vit_config`): the protocol's WbAb config with the twin-uniform
   quantizer on the post-softmax attention and on the post-GELU input of ``fc2``
   (:class:`~vitquant_core.nn.nonuniform.TwinUniformActQuantizer`); weights per output channel,
   symmetric; other activations uniform per tensor. ``quantize()`` gives the initial scales.
2. **Gradients** (:mod:`.capture`). One pass over the search images of the float model records
   every quantized operation's float inputs (the paper's parallel mode: each operation is
   calibrated on float activations, independently) and ∂L/∂O at its output O.
3. **Search** (:mod:`.search`), operation by operation: minimise E[(∂L/∂O ⊙ (O − Ô))²]
   (metric "hessian"; "mse" drops the weight), alternating the weight-like and input-like
   operands for ``search_rounds`` rounds, over multipliers linspace(α, β, n) of the max-based
   scales, the softmax split over 2^-0 … 2^-19, the GELU Δ_pos = Δ_neg·2^m.

Which gradient (deliberate deviation from the published code)
-------------------------------------------------------------
PTQ4ViT's objective approximates the task loss change by its Gauss–Newton (Fisher) form,
E[(∂L/∂O)ᵀ diag(...) ...], keeping only the diagonal: each output element's error weighted by
(∂L/∂O)². The published parallel mode takes ∂L/∂O for L = KL(softmax(z) ‖ softmax(z_float))
on the float model itself, where z = z_float: the KL is at its minimum and its gradient,
p − p, is zero up to rounding (:mod:`.capture` keeps that option to show it). We take the
gradient where it carries signal: labels y are drawn (seeded) from the float model's own
softmax and L = cross-entropy(z, y). Then E_y[(∂L/∂O)²] is the diagonal of the Fisher
information of O, which equals the Gauss–Newton Hessian of KL(p_float ‖ p_quant) at the float
model — the curvature the metric needs. One label per image; the expectation over images and
labels is the mean of the squared per-image gradients.

Other deviations: the max-based scale itself (multiplier 1) is always a candidate and every
step keeps the current choice on ties, so the search never increases an operation's
objective; per-output-channel weight multipliers are chosen channel by channel (the objective
separates by output channel; the published code uses one scale per weight tensor or block);
zero points and signed/unsigned grids stay those of the min-max calibration; the patch
embedding is searched too (weights and its 8-bit input under protocol "paper").

Cost and measured effect
------------------------
The search costs about (search images) × (candidates) × rounds × 2 evaluations of each
operation. On ``deit_tiny_cifar`` (CIFAR-10, 32×32, 65 tokens), 64 calibration images from the
train split, one shared CPU core, ``n_search_images=32, n_candidates=32`` (the paper's 32
calibration images; 32 multipliers instead of 100, i.e. a step of 0.037 in [0.01, 1.2]) took
181 s at W4A4 with the Hessian metric and 80–111 s with MSE or at W6A6; the paper's
100 candidates on all 64 images would take about 6× longer. Top-1 on a class-balanced
1,000-image subset of the test split, protocol "paper" (FP 78.7): W4A4 min-max 61.2,
PTQ4ViT hessian 76.4, mse 76.3; W6A6 min-max 78.2, hessian 78.9, mse 78.1.
"""
from .capture import GRADIENTS, capture_operations, float_twin, quantized_operations
from .driver import METRICS, PTQ4ViTReport, ptq4vit_config, ptq4vit_quantize
from .search import SearchSettings, alternate

__all__ = ["GRADIENTS", "METRICS", "PTQ4ViTReport", "SearchSettings", "alternate", "capture_operations",
           "float_twin", "ptq4vit_config", "ptq4vit_quantize", "quantized_operations"]
