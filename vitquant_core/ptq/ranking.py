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
* **Bias correction** (§3.4, :mod:`.bias_correction`). With the scales fixed, the expected
  output error E[ε_W·X] + E[ε_X·W] + E[ε_X·ε_W] on the calibration set is folded into the
  bias of each quantized linear layer.

Inputs and reference of each layer
----------------------------------
Layers are refined one at a time in forward order. By default (``inputs="quantized"``) the
inputs X̃ of a layer are taken from the *partially quantized* model: every earlier layer is
already quantized with its refined scales and corrected bias, so the layer is calibrated on
the inputs it sees at inference. Its float reference O is, by default
(``reference="model"``), the float model's own output of that layer: the objective then
compares Ô = Q(X̃)·Q(W)ᵀ with what the float network computes there, and bias correction
also absorbs the mean error propagated from earlier layers, E[(X̃ − X)·W], besides the
layer's own E[ε_W·X] + E[ε_X·W] + E[ε_X·ε_W]. This is how the public Base-PTQ reproduction of
this method in PTQ4ViT (Yuan et al., ECCV 2022) calibrates, and our reading of the paper's
layer-by-layer Algorithm 1, where O^l is "the original output" of layer l (the paper's text
does not say which inputs feed Ô^l). ``reference="layer"`` instead compares with the float
layer on the same inputs X̃ (only this layer's own error, the literal one-X form of the
paper's equations); ``inputs="float"`` takes X from the float model (each layer calibrated
independently of the others). In a check on small random-init timm ViTs (6 seeds, W8A8 and
W4A4, 16 calibration images) the default was the only variant never below min-max PTQ in
output SQNR on the calibration inputs (mean gain +0.6 dB at W8A8, +4.1 dB at W4A4; on held-out
inputs +0.1 and +3.9 dB, single seeds down to −0.6 dB at W8A8); the others are kept for the
ablation. Each layer's inputs are computed from activations stored at the boundary of its
block (``incremental=True``): the block boundaries advance one block at a time as the layers
are refined in forward order, which gives the values of a forward pass from the network
input at the cost of one block per layer instead of a growing prefix of the network.

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
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from ..nn.config import QuantConfig
from ..nn.modules import ActQuantizer, QuantAttention, QuantConv2d, QuantLinear
from ..nn.quantize import QuantReport, quantize
from ..quant.observers import make_observer
from ..quant.qtypes import QType
from ..quant.quantizer import fake_quantize, symmetric_scale, tensor_absmax
from .bias_correction import correct_bias

INPUT_SOURCES = ("quantized", "float")
REFERENCES = ("layer", "model")

__all__ = ["INPUT_SOURCES", "REFERENCES", "RankingAwareConfig", "RankingAwareReport", "alternating_search",
           "kendall_tau", "pair_indices", "pearson_similarity", "ranking_aware_quantize", "ranking_loss",
           "refine_linear", "refine_matmul_av", "refine_matmul_qk"]


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class RankingAwareConfig:
    """Hyper-parameters of ranking-aware PTQ (defaults: the paper's values; the ranking loss on
    at most 4,096 sampled score rows, ``max_rows=None`` for all of them).

    ``alpha``/``beta``/``n_candidates``: the candidate scales are ``n_candidates`` points
    linearly spaced in [alpha·Δ, beta·Δ] around the max-based scale Δ (plus Δ itself).
    ``max_rounds``: rounds of the alternating Δ_W / Δ_X search (stops early when neither
    changes). ``gamma``/``theta``: weight of the ranking loss and margin of its hinge.
    ``similarity``/``ranking``/``bias_correction``: the three parts, for the ablation; all
    off gives standard min-max PTQ. ``max_pairs``: use a seeded random subset of at most this
    many key pairs per query row in the ranking loss (None: all N(N−1)/2 pairs). ``inputs``:
    where each layer's calibration inputs come from ("quantized": the partially quantized
    model, "float": the float model). ``reference``: the float output a layer is compared
    with ("model": the float model's output of that layer, "layer": the float layer on the
    same inputs); see the module docstring. ``chunk_bytes``: memory budget of one batched
    candidate evaluation (candidates are chunked to stay under it). ``incremental``: capture
    each layer's inputs from stored activations at its block's boundary, advanced block by
    block (the same values as a forward pass from the network input, in linear rather than
    quadratic time in depth); False re-runs the model from its input for every layer.
    ``max_rows``: use a seeded random subset of at most this many score rows (image, head,
    query) in the ranking loss (None: every row); the loss is a mean over rows, so a subset
    estimates it without bias at a cost proportional to the rows kept. ``coarse_to_fine``:
    evaluate every k-th grid candidate (k ≈ √(C/2)), then every candidate within k of the
    best of them, instead of all C (about 3.5x fewer evaluations at C = 100; exact when the
    objective is unimodal along the grid, which the paper's exhaustive search does not assume;
    off by default, see the module docstring).
    """

    alpha: float = 0.5
    beta: float = 1.2
    n_candidates: int = 100
    max_rounds: int = 20
    gamma: float = 0.1
    theta: float = 0.2
    similarity: bool = True
    ranking: bool = True
    bias_correction: bool = True
    max_pairs: int | None = None
    seed: int = 0
    inputs: str = "quantized"
    reference: str = "model"
    chunk_bytes: int = 256 << 20
    incremental: bool = True
    max_rows: int | None = 4096
    coarse_to_fine: bool = False

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for name in ("alpha", "beta", "gamma", "theta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite number, got {v!r}")
        if not 0 < self.alpha < self.beta:
            raise ValueError(f"need 0 < alpha < beta, got alpha={self.alpha}, beta={self.beta}")
        if self.gamma < 0 or self.theta < 0:
            raise ValueError(f"gamma and theta must be >= 0, got gamma={self.gamma}, theta={self.theta}")
        if not is_int(self.n_candidates) or self.n_candidates < 2:
            raise ValueError(f"n_candidates must be an int >= 2, got {self.n_candidates!r}")
        if not is_int(self.max_rounds) or self.max_rounds < 1:
            raise ValueError(f"max_rounds must be an int >= 1, got {self.max_rounds!r}")
        for name in ("similarity", "ranking", "bias_correction", "incremental", "coarse_to_fine"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.max_pairs is not None and (not is_int(self.max_pairs) or self.max_pairs < 1):
            raise ValueError(f"max_pairs must be None or an int >= 1, got {self.max_pairs!r}")
        if self.max_rows is not None and (not is_int(self.max_rows) or self.max_rows < 1):
            raise ValueError(f"max_rows must be None or an int >= 1, got {self.max_rows!r}")
        if not is_int(self.seed):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if self.inputs not in INPUT_SOURCES:
            raise ValueError(f"inputs must be one of {INPUT_SOURCES}, got {self.inputs!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if not is_int(self.chunk_bytes) or self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive int, got {self.chunk_bytes!r}")

    @property
    def searches(self) -> bool:
        return self.similarity or self.ranking

    def coarse_step(self) -> int:
        """Spacing of the coarse pass of the coarse-to-fine search (1: exhaustive)."""
        if not self.coarse_to_fine:
            return 1
        # n/k coarse points + 2(k − 1) fine ones is smallest at k = √(n/2)
        return max(2, round(math.sqrt(len(self.multipliers()) / 2)))

    def multipliers(self) -> torch.Tensor:
        """The candidate multipliers of the max-based scale: the C-point grid plus 1 (float64)."""
        grid = torch.linspace(self.alpha, self.beta, self.n_candidates, dtype=torch.float64)
        return torch.unique(torch.cat([grid, torch.ones(1, dtype=torch.float64)]))  # sorted


# ----------------------------------------------------------------------------- metrics
def pair_indices(n: int, max_pairs: int | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j), i < j, over ``n`` keys: all n(n−1)/2, or a random subset of ``max_pairs``.

    The subset is drawn with ``generator`` (seeded by the caller for reproducibility) and is
    shared by every row, head and image, so that candidates are compared on the same pairs.
    """
    i, j = torch.triu_indices(n, n, offset=1)
    if max_pairs is not None and max_pairs < i.numel():
        keep = torch.randperm(i.numel(), generator=generator)[:max_pairs].sort().values
        i, j = i[keep], j[keep]
    return i.to(device), j.to(device)


def _rows_per_block(per_row: int, n_cand: int, budget: int) -> int:
    # a block materialises ~2 float tensors of rows x per_row per candidate (+ the float signs)
    return max(1, budget // max(1, 4 * per_row * (2 * n_cand + 2)))


# The ranking term is a few elementwise passes over c x rows x N x N floats: memory-bound, so
# its row blocks are sized to stay in cache (a few MiB) rather than to the search's memory
# budget; 64 MiB blocks ran ~6x slower than 4 MiB ones on DeiT-Tiny's 65-token maps.
_RANKING_BLOCK_BYTES = 4 << 20


def _ranking_sums(a_fp: torch.Tensor, a_q: torch.Tensor, theta: float,
                  pairs: tuple[torch.Tensor, torch.Tensor] | None = None, budget: int = 256 << 20) -> torch.Tensor:
    """Σ over rows and key pairs i < j of Φ((â_i − â_j)·sign(a_i − a_j)), Φ(p) = max(θ − p, 0).

    ``a_fp`` [R, N], ``a_q`` [c, R, N] → [c] (float64). ``pairs=None``: all pairs, computed
    densely over the N×N grid without per-pair gathers. With the keys of each row sorted by
    their float score the sign is −1 for every i < j, so the sum is Σ_{i<j} relu(θ + â_i − â_j)
    over the upper triangle (one broadcast difference, one relu, one masked matrix-vector
    reduction). Row blocks with tied float scores (sign 0) take the signed form instead: the
    term is exactly symmetric in (i, j) (swapping negates both factors), so with the diagonal
    zeroed Σ_{i<j} = Σ_{i≠j} / 2. Otherwise only the given (i, j) index pairs. ``budget`` caps
    the bytes of one row block (the cache-sized default block is used when it is smaller).
    """
    c, n_rows, n = a_q.shape
    total = torch.zeros(c, dtype=torch.float64, device=a_q.device)
    if n < 2 or n_rows == 0 or (pairs is not None and pairs[0].numel() == 0):
        return total
    per_row = n * n if pairs is None else pairs[0].numel()
    # one block holds the c candidates' pair terms and the float signs: 4·per_row·(c + 1) bytes a row
    step = max(1, min(budget, _RANKING_BLOCK_BYTES) // (4 * per_row * (c + 1)))
    theta_t = torch.tensor(theta, dtype=a_q.dtype, device=a_q.device)
    upper = torch.ones(n, n, dtype=a_q.dtype, device=a_q.device).triu_(1).reshape(-1) if pairs is None else None
    for r0 in range(0, n_rows, step):
        f = a_fp[r0:r0 + step]
        q = a_q[:, r0:r0 + step]
        r = f.shape[0]
        if pairs is None:
            f_sorted, order = f.sort(dim=-1)
            if not bool((f_sorted[:, 1:] == f_sorted[:, :-1]).any()):  # no ties: the sorted form
                qs = q.gather(-1, order.expand(c, r, n))
                d = (qs + theta_t).unsqueeze(-1) - qs.unsqueeze(-2)  # [c, r, N, N]: θ + â_i − â_j
                total += torch.mv(d.relu_().reshape(c * r, n * n), upper).reshape(c, r).sum(dim=-1).double()
                continue
            # −sign(a_i − a_j) (0 for ties), then θ − p·sign = θ + p·(−sign)
            neg_s = torch.sign(f.unsqueeze(-2) - f.unsqueeze(-1))  # [r, N, N]
            p = q.unsqueeze(-1) - q.unsqueeze(-2)  # [c, r, N, N]
            phi = p.mul_(neg_s).add_(theta_t).clamp_(min=0)
            phi.diagonal(dim1=-2, dim2=-1).zero_()  # i = j is no pair
            total += phi.reshape(c, -1).sum(dim=-1).double() / 2
        else:
            i, j = pairs
            neg_s = torch.sign(f[:, j] - f[:, i])  # [r, P]
            p = q[..., i]
            p.sub_(q[..., j])  # [c, r, P]
            # float32 sums within a row block, float64 across blocks
            total += torch.addcmul(theta_t, p, neg_s).clamp_(min=0).reshape(c, -1).sum(dim=-1).double()
    return total


def ranking_loss(a_fp: torch.Tensor, a_q: torch.Tensor, theta: float = 0.2, max_pairs: int | None = None,
                 generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    """The paper's pairwise ranking loss between a float and a quantized attention-score map.

    ``a_fp``, ``a_q``: the same shape ``[..., N]`` (e.g. ``[B, heads, N_query, N_key]``); pairs
    are taken over the last dimension (keys) within each row. For each pair i < j:
    Φ((â_i − â_j)·sign(a_i − a_j)) with Φ(p) = max(θ − p, 0). ``reduction="mean"`` averages
    over every row and pair (the form the search uses), ``"sum"`` sums them (the paper's
    Σ_heads Σ_{i<j}, summed also over images and rows). ``max_pairs``: a seeded random subset
    of the pairs (shared by all rows), for long sequences.
    """
    if a_fp.shape != a_q.shape:
        raise ValueError(f"a_fp and a_q must have the same shape, got {tuple(a_fp.shape)} and {tuple(a_q.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if a_fp.ndim == 0:
        raise ValueError("ranking_loss needs at least one dimension (the keys)")
    n = a_fp.shape[-1]
    out_dtype = a_fp.dtype if a_fp.is_floating_point() else torch.float32
    f, q = a_fp.reshape(-1, n).float(), a_q.reshape(1, -1, n).float()
    pairs = _pairs_or_none(n, max_pairs, generator, f.device)
    total = _ranking_sums(f, q, float(theta), pairs)[0]
    if reduction == "mean":
        total = total / max(1, f.shape[0] * _n_pairs(n, pairs))
    return total.to(out_dtype)


def _pairs_or_none(n: int, max_pairs: int | None, generator: torch.Generator | None,
                   device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """None (all pairs: the dense path) unless a strict subset of the pairs is asked for."""
    if max_pairs is None or max_pairs >= n * (n - 1) // 2:
        return None
    return pair_indices(n, max_pairs, generator, device)


def _n_pairs(n: int, pairs: tuple[torch.Tensor, torch.Tensor] | None) -> int:
    return n * (n - 1) // 2 if pairs is None else pairs[0].numel()


def kendall_tau(a_fp: torch.Tensor, a_q: torch.Tensor, max_pairs: int | None = None,
                generator: torch.Generator | None = None, variant: str = "b") -> torch.Tensor:
    """Kendall's τ between the float and quantized order of the keys, averaged over rows.

    ``a_fp``, ``a_q``: the same shape ``[..., N]``; each row (every index of the leading
    dimensions: image, head, query) gives one τ over its N keys, and the mean over rows is
    returned. ``variant="b"`` (default, scipy's) corrects for ties, which a coarse quantization
    grid creates; ``"a"`` counts tied pairs as neither concordant nor discordant. A row whose
    τ is undefined (all its keys tied) counts as 0: no order is kept there.
    """
    if a_fp.shape != a_q.shape:
        raise ValueError(f"a_fp and a_q must have the same shape, got {tuple(a_fp.shape)} and {tuple(a_q.shape)}")
    if variant not in ("a", "b"):
        raise ValueError(f"variant must be 'a' or 'b', got {variant!r}")
    n = a_fp.shape[-1]
    f, q = a_fp.reshape(-1, n).float(), a_q.reshape(-1, n).float()
    i, j = pair_indices(n, max_pairs, generator, f.device)
    n_pairs = i.numel()
    if n_pairs == 0 or f.shape[0] == 0:
        return torch.tensor(float("nan"))
    total = torch.zeros((), dtype=torch.float64, device=f.device)
    step = _rows_per_block(n_pairs, 2, 256 << 20)
    for r0 in range(0, f.shape[0], step):
        sf = torch.sign(f[r0:r0 + step, i] - f[r0:r0 + step, j])
        sq = torch.sign(q[r0:r0 + step, i] - q[r0:r0 + step, j])
        num = (sf * sq).sum(dim=1, dtype=torch.float64)
        if variant == "b":
            den = torch.sqrt(sf.abs().sum(dim=1, dtype=torch.float64) * sq.abs().sum(dim=1, dtype=torch.float64))
        else:
            den = torch.full_like(num, float(n_pairs))
        total += torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num)).sum()
    return (total / f.shape[0]).float()


def _pearson_per_candidate(ref_centered: torch.Tensor, ref_norm: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Mean over images of Γ(O_b, Ô_b); ref [B, D] centred, ref_norm [B], out [c, B, D] → [c] (float64)."""
    # Σ (ô − mean ô)(o − mean o) = Σ ô (o − mean o): the reference is centred once per layer,
    # so the candidates need no centred copy; one matrix-vector product per image (a strided
    # gemv streams the candidates' outputs once, ~6x faster than the same einsum)
    num = torch.stack([torch.mv(out[:, b], ref_centered[b]) for b in range(out.shape[1])], dim=1)
    # Σ (ô − mean ô)² = Σ ô² − (Σ ô)² / D from two fast reductions (Tensor.var was ~20x slower
    # here), combined in float64. The float32 Σ ô² carries a relative error of ~3e-7, so a
    # constant output can leave a residue of that order: below 1e-5·Σ ô² (std < 0.3 % of the
    # RMS) the output counts as constant.
    sq = torch.linalg.vector_norm(out, dim=-1).double().square()
    tot = out.sum(dim=-1).double()  # a float64 accumulator (dtype=) was slower than var itself
    ss = sq - tot * tot / out.shape[-1]
    ss = torch.where(ss > 1e-5 * sq, ss, torch.zeros_like(ss))
    den = torch.sqrt(ss).to(num.dtype) * ref_norm
    # a constant output (zero variance) has no correlation with anything: count it as 0
    r = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))
    return r.double().mean(dim=-1)


def pearson_similarity(o_fp: torch.Tensor, o_q: torch.Tensor) -> torch.Tensor:
    """The paper's similarity: Pearson correlation Γ(O_b, Ô_b) of each image b (dimension 0,
    correlation over all the other elements of that image's output), averaged over images."""
    if o_fp.shape != o_q.shape:
        raise ValueError(f"o_fp and o_q must have the same shape, got {tuple(o_fp.shape)} and {tuple(o_q.shape)}")
    ref = o_fp.reshape(o_fp.shape[0], -1).float()
    ref = ref - ref.mean(dim=-1, keepdim=True)
    return _pearson_per_candidate(ref, ref.norm(dim=-1), o_q.reshape(1, o_q.shape[0], -1).float())[0].float()


# ----------------------------------------------------------------------------- the search
def alternating_search(evaluate: Callable[[int, list[int]], torch.Tensor], start: Sequence[int],
                       order: Sequence[int], max_rounds: int) -> tuple[list[int], int, int]:
    """Coordinate ascent over grid indices, one operand at a time.

    ``evaluate(k, idx)`` returns the objective of every grid candidate for operand ``k`` with
    the other operands at ``idx`` (one batched call). Operands are visited in ``order`` (the
    weight-like one first), at most ``max_rounds`` times each. An operand moves only on a
    strict improvement over its current candidate, so the objective never decreases and ties
    keep the incumbent. The search stops as soon as every operand was last evaluated with the
    others at their current values, i.e. when a full round would change nothing.
    Returns (indices, rounds started, number of evaluate calls).
    """
    idx = list(start)
    fresh: set[int] = set()
    rounds = calls = 0
    for _ in range(max_rounds):
        if len(fresh) == len(order):
            break
        rounds += 1
        for k in order:
            if len(fresh) == len(order):
                break
            obj = evaluate(k, idx)
            calls += 1
            best = int(torch.argmax(obj))
            if bool(obj[best] > obj[idx[k]]):
                idx[k] = best
                fresh = {k}  # the others were evaluated against the old value
            else:
                fresh.add(k)
    return idx, rounds, calls


class _Operand:
    """One quantized (or float) operand of a bilinear operation, with its cached float value."""

    def __init__(self, role: str, x: torch.Tensor, base: torch.Tensor | None = None,
                 zero_point: torch.Tensor | float = 0.0, qtype: QType | None = None,
                 apply: Callable[[torch.Tensor], None] | None = None) -> None:
        self.role, self.x, self.qtype, self.apply = role, x, qtype, apply
        self.searchable = qtype is not None and base is not None
        if self.searchable:
            nd = x.ndim
            base = base.to(x.device, torch.float32)
            self.base = base.reshape([1] * (nd - base.ndim) + list(base.shape))
            zp = torch.as_tensor(zero_point, dtype=torch.float32, device=x.device)
            self.zero_point = zp.reshape([1] * (nd - zp.ndim) + list(zp.shape))

    def quantized(self, mults: torch.Tensor) -> torch.Tensor:
        """Fake-quantized copies for each multiplier: ``[c, *x.shape]`` (``[1, ...]`` if float)."""
        if not self.searchable:
            return self.x.unsqueeze(0)
        return fake_quantize(self.x.unsqueeze(0), self.scales(mults), self.zero_point.unsqueeze(0), self.qtype)

    def scales(self, mults: torch.Tensor) -> torch.Tensor:
        # the same arithmetic in the search and when the chosen scale is written back
        return mults.view((-1,) + (1,) * self.x.ndim) * self.base.unsqueeze(0)


class _Unit:
    """A bilinear operation out = combine(Q(a), Q(b)), its float reference and its objective."""

    def __init__(self, name: str, kind: str, a: _Operand, b: _Operand,
                 combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rq: RankingAwareConfig,
                 use_similarity: bool, scores_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 generator: torch.Generator | None = None, target: torch.Tensor | None = None) -> None:
        self.name, self.kind, self.a, self.b, self.combine, self.rq = name, kind, a, b, combine, rq
        self.use_similarity = use_similarity
        self.use_ranking = scores_fn is not None
        self.scores_fn = scores_fn
        device = a.x.device
        self.grid = rq.multipliers().to(device, torch.float32)
        self.start = int((rq.multipliers() == 1.0).nonzero()[0])
        with torch.no_grad():  # the float reference, cached once per layer
            fp = combine(a.x.unsqueeze(0), b.x.unsqueeze(0))[0] if target is None else target.float()
        self.fp_out = fp
        self.n_samples = fp.shape[0]
        flat = fp.reshape(self.n_samples, -1)
        self.ref_centered = flat - flat.mean(dim=-1, keepdim=True)
        self.ref_norm = self.ref_centered.norm(dim=-1)
        self.score_numel = 0
        if scores_fn is not None:
            with torch.no_grad():
                scores = scores_fn(fp.unsqueeze(0))[0]
            n = scores.shape[-1]
            self.fp_rows = scores.reshape(-1, n)
            self.score_numel = scores.numel()
            self.pairs = _pairs_or_none(n, rq.max_pairs, generator, device)
            self.n_pairs = _n_pairs(n, self.pairs)
            # the ranking term's cost is proportional to its rows: optionally a seeded subset,
            # drawn once per layer so that every candidate is scored on the same rows
            self.rows: torch.Tensor | None = None
            if rq.max_rows is not None and rq.max_rows < self.fp_rows.shape[0]:
                keep = torch.randperm(self.fp_rows.shape[0], generator=generator)[:rq.max_rows]
                self.rows = keep.sort().values.to(device)
                self.fp_rows = self.fp_rows[self.rows]

    # -- objective
    def _score(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarity, ranking loss) of each candidate output in ``out`` [c, B, ...] (float64)."""
        c = out.shape[0]
        sim = (_pearson_per_candidate(self.ref_centered, self.ref_norm, out.reshape(c, self.n_samples, -1))
               if self.use_similarity else torch.zeros(c, dtype=torch.float64, device=out.device))
        rank = torch.zeros(c, dtype=torch.float64, device=out.device)
        if self.use_ranking:
            scores = self.scores_fn(out)  # type: ignore[misc]
            rows = scores.reshape(c, -1, scores.shape[-1])
            if self.rows is not None:
                rows = rows[:, self.rows]
            rank = _ranking_sums(self.fp_rows, rows, self.rq.theta, self.pairs, self.rq.chunk_bytes)
            rank = rank / max(1, rows.shape[1] * self.n_pairs)
        return sim, rank

    def _objective(self, sim: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        return sim - self.rq.gamma * rank

    def _chunk(self, op: _Operand) -> int:
        # one candidate costs its quantized operand, ~4 copies of the output (product,
        # centred copy, temporaries) and the score map of the ranking term
        per = 4 * (op.x.numel() + 4 * self.fp_out.numel() + 2 * self.score_numel)
        return max(1, self.rq.chunk_bytes // max(1, per))

    def _evaluate_at(self, k: int, idx: list[int], which: torch.Tensor) -> torch.Tensor:
        """Objective of the grid candidates ``which`` for operand k, the other fixed at idx."""
        ops = (self.a, self.b)
        op, other = ops[k], ops[1 - k]
        with torch.no_grad():
            other_q = other.quantized(self.grid[idx[1 - k]:idx[1 - k] + 1])
            objs = []
            step = self._chunk(op)
            mults = self.grid[which.to(self.grid.device)]
            for s in range(0, len(mults), step):
                op_q = op.quantized(mults[s:s + step])
                out = self.combine(op_q, other_q) if k == 0 else self.combine(other_q, op_q)
                objs.append(self._objective(*self._score(out)))
        return torch.cat(objs)

    def evaluate(self, k: int, idx: list[int]) -> torch.Tensor:
        """Objective of every grid candidate for operand k (0: a, 1: b), the other fixed at idx.

        Coarse-to-fine: only the coarse points, the incumbent and the neighbourhood of the best
        coarse point are evaluated; the others get −inf (never chosen by the argmax).
        """
        n, step = len(self.grid), self.rq.coarse_step()
        if step == 1:
            return self._evaluate_at(k, idx, torch.arange(n))
        obj = torch.full((n,), -math.inf, dtype=torch.float64)
        coarse = torch.unique(torch.cat([torch.arange(0, n, step), torch.tensor([n - 1, idx[k]])]))
        obj[coarse] = self._evaluate_at(k, idx, coarse).cpu()
        best = int(torch.argmax(obj))
        fine = torch.arange(max(0, best - step + 1), min(n, best + step))
        fine = fine[torch.isinf(obj[fine])]
        if fine.numel():
            obj[fine] = self._evaluate_at(k, idx, fine).cpu()
        return obj

    def score_at(self, idx: list[int]) -> dict[str, float | None]:
        with torch.no_grad():
            aq = self.a.quantized(self.grid[idx[0]:idx[0] + 1])
            bq = self.b.quantized(self.grid[idx[1]:idx[1] + 1])
            sim, rank = self._score(self.combine(aq, bq))
        return {"objective": float(self._objective(sim, rank)[0]),
                "similarity": float(sim[0]) if self.use_similarity else None,
                "ranking": float(rank[0]) if self.use_ranking else None}

    # -- the search
    def search(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        order = [k for k in (1, 0) if (self.a, self.b)[k].searchable]  # Δ_W first, then Δ_X
        start = [self.start, self.start]
        before = self.score_at(start)
        idx, rounds, calls = alternating_search(self.evaluate, start, order, self.rq.max_rounds)
        after = self.score_at(idx)
        info: dict[str, Any] = {"objective_before": before["objective"], "objective_after": after["objective"],
                                "similarity_before": before["similarity"], "similarity_after": after["similarity"],
                                "ranking_before": before["ranking"], "ranking_after": after["ranking"],
                                "rounds": rounds, "n_evaluations": calls, "n_candidates": len(self.grid),
                                "multipliers": {}, "scales": {}}
        for k in order:
            op = (self.a, self.b)[k]
            scale = op.scales(self.grid[idx[k]:idx[k] + 1])[0]
            op.apply(scale)  # type: ignore[misc]
            info["multipliers"][op.role] = float(self.grid[idx[k]])
            squeezed = scale.detach().flatten().cpu()
            info["scales"][op.role] = float(squeezed[0]) if squeezed.numel() == 1 else squeezed.tolist()
        info["search_seconds"] = time.perf_counter() - t0
        return info


# ----------------------------------------------------------------------------- operands from modules
def _weight_operand(module: QuantLinear) -> _Operand:
    w = module.weight.detach().float()
    wq = module.w_quantizer
    if wq is None:
        return _Operand("weight", w)
    # the paper's starting point: the max-based scale, whatever observer the config named
    base = symmetric_scale(tensor_absmax(w, wq.granularity), wq.qtype).reshape(wq.scale.shape)
    return _Operand("weight", w, base, 0.0, wq.qtype, module.set_weight_scale)


def _act_operand(role: str, q: ActQuantizer | None, x: torch.Tensor) -> _Operand:
    x = x.float()
    if q is None or q.mode != "quantize" or q.qtype is None:
        return _Operand(role, x)
    # max-based scale on the inputs this layer actually sees, on the grid calibration chose
    obs = make_observer("minmax", q.qtype, q.granularity, symmetric=q.resolved != "asymmetric")
    obs.update(x.detach())
    base, zp = obs.compute()
    shape = q.scale.shape

    def apply(scale: torch.Tensor) -> None:
        zero_point = zp.reshape(shape).to(q.scale.device)
        q.set_scale(scale.reshape(shape).to(q.scale.device), q.qtype)
        # set_scale zeroes the zero point; an asymmetric grid keeps its own: scaling the whole
        # range [min, max] by the multiplier leaves round(min / Δ) unchanged
        q.zero_point = zero_point.float()

    return _Operand(role, x, base, zp, q.qtype, apply)


def _linear_combine(bias: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def combine(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        # xq [ca, B, *, in], wq [cb, out, in], one of ca/cb is 1 → [c, B, *, out] in one batched matmul
        ca, lead, n_in = xq.shape[0], xq.shape[1:-1], xq.shape[-1]
        out = torch.matmul(xq.reshape(ca, -1, n_in), wq.transpose(-1, -2))
        if bias is not None:
            out.add_(bias)  # in place: out is a fresh product
        return out.reshape(out.shape[0], *lead, out.shape[-1])
    return combine


def _qkv_scores_fn(attn: QuantAttention) -> Callable[[torch.Tensor], torch.Tensor]:
    """Attention scores from a batch of qkv outputs [c, B, N, 3·dim], as QuantAttention computes them."""
    heads, hd = attn.num_heads, attn.head_dim

    def scores(out: torch.Tensor) -> torch.Tensor:
        c, b, n = out.shape[:3]
        qkv = out.reshape(c, b, n, 3, heads, hd)
        q = attn.q_norm(qkv[:, :, :, 0].transpose(2, 3)) * attn.scale
        k = attn.k_norm(qkv[:, :, :, 1].transpose(2, 3))
        return q @ k.transpose(-2, -1)
    return scores


def _finish(name: str, kind: str, unit: _Unit | None, module: QuantLinear | None, x: torch.Tensor | None,
            rq: RankingAwareConfig, objective: str | None, target: torch.Tensor | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name, "kind": kind, "objective": objective, "searched": unit is not None}
    if x is not None:
        info["n_samples"] = x.shape[0]
    if unit is not None:
        info["n_samples"] = unit.n_samples
        info.update(unit.search())
    if rq.bias_correction and module is not None and x is not None:
        created = module.bias is None
        shift = correct_bias(module, x, target)
        info["bias_correction"] = {"mean_abs_shift": float(shift.abs().mean()),
                                   "max_abs_shift": float(shift.abs().max()), "created_bias": created}
    return info


def _objective_name(similarity: bool, ranking: bool) -> str | None:
    return {(True, True): "similarity-ranking", (True, False): "similarity",
            (False, True): "ranking", (False, False): None}[(similarity, ranking)]


def refine_linear(module: QuantLinear, x: torch.Tensor, rq: RankingAwareConfig = RankingAwareConfig(),
                  attention: QuantAttention | None = None, generator: torch.Generator | None = None,
                  name: str = "", target: torch.Tensor | None = None) -> dict[str, Any]:
    """Refine one calibrated QuantLinear in place on its calibration inputs ``x`` ``[B, *, in]``.

    Searches Δ_W and Δ_X (similarity objective; minus γ·ranking loss of the attention scores
    when ``attention`` is the QuantAttention whose ``qkv`` this layer is), then folds the
    expected output error into the bias. ``target``: the float output to match (default: the
    float layer on ``x``). Returns what was chosen (a row of the report).
    """
    x = x.to(module.weight.device).float()
    name = name or module.qname
    rank = rq.ranking and attention is not None
    unit = None
    if rq.similarity or rank:
        a = _act_operand("input", module.input_quantizer, x)
        b = _weight_operand(module)
        if a.searchable or b.searchable:
            bias = None if module.bias is None else module.bias.detach().float()
            unit = _Unit(name, "linear", a, b, _linear_combine(bias), rq, rq.similarity,
                         _qkv_scores_fn(attention) if rank else None, generator, target)  # type: ignore[arg-type]
    return _finish(name, "linear", unit, module, x, rq,
                   _objective_name(rq.similarity, rank) if unit is not None else None, target)


def refine_matmul_qk(attn: QuantAttention, q: torch.Tensor, k: torch.Tensor,
                     rq: RankingAwareConfig = RankingAwareConfig(), generator: torch.Generator | None = None,
                     name: str = "", target: torch.Tensor | None = None) -> dict[str, Any]:
    """Refine the operand scales of q·kᵀ (q already multiplied by 1/√d) on ``q``, ``k`` ``[B, H, N, d]``.

    Objective: similarity of the score map − γ·ranking loss (each switchable); k plays the
    weight's part (searched first), q the input's. ``target``: the float score map to match
    (default: q·kᵀ in float).
    """
    name = name or f"{attn.qname}.matmul_qk"
    unit = None
    if rq.searches:
        a = _act_operand("q", attn.q_quantizer, q)
        b = _act_operand("k", attn.k_quantizer, k)
        if a.searchable or b.searchable:
            unit = _Unit(name, "matmul_qk", a, b, lambda x, y: x @ y.transpose(-2, -1), rq, rq.similarity,
                         (lambda s: s) if rq.ranking else None, generator, target)
    return _finish(name, "matmul_qk", unit, None, None, rq,
                   _objective_name(rq.similarity, rq.ranking) if unit is not None else None)


def refine_matmul_av(attn: QuantAttention, probs: torch.Tensor, v: torch.Tensor,
                     rq: RankingAwareConfig = RankingAwareConfig(), name: str = "",
                     target: torch.Tensor | None = None) -> dict[str, Any]:
    """Refine the operand scales of attn·v on the softmax output ``probs`` ``[B, H, N, N]`` and
    ``v`` ``[B, H, N, d]``: a linear operation, similarity objective (v plays the weight's part)."""
    name = name or f"{attn.qname}.matmul_av"
    unit = None
    if rq.similarity:
        a = _act_operand("attn", attn.attn_quantizer, probs)
        b = _act_operand("v", attn.v_quantizer, v)
        if a.searchable or b.searchable:
            unit = _Unit(name, "matmul_av", a, b, lambda x, y: x @ y, rq, True, target=target)
    return _finish(name, "matmul_av", unit, None, None, rq, "similarity" if unit is not None else None)


# ----------------------------------------------------------------------------- model-level driver
class _Stop(Exception):
    """Raised by a capture hook once a layer's inputs are recorded: the rest of the forward is skipped."""


def _as_batches(calib_data: Any) -> list[torch.Tensor]:
    if calib_data is None:
        raise ValueError("ranking-aware PTQ needs calibration data (batches of inputs)")
    if isinstance(calib_data, torch.Tensor):
        calib_data = [calib_data]
    # materialised once: quantize() and every layer's capture pass iterate it again
    out = [b[0] if isinstance(b, (tuple, list)) else b for b in calib_data]
    out = [b for b in out if b.numel() > 0]
    if not out:
        raise ValueError("the calibration set is empty: pass at least one batch of inputs")
    return out


def _float_twin(qmodel: nn.Module) -> nn.Module:
    """A copy of the quantized model computing in float: quantizers off, float weights."""
    twin = copy.deepcopy(qmodel)
    for m in twin.modules():
        if isinstance(m, ActQuantizer):
            m.mode = "off"
        if isinstance(m, (QuantLinear, QuantConv2d)):
            m.weight_q = m.weight.detach().clone()
    return twin


def _discover(qmodel: nn.Module, sample: torch.Tensor) -> list[tuple[str, str]]:
    """(name, kind) of every refinable operation, in the order one forward pass runs them."""
    order: list[str] = []
    hooks = []
    for name, m in qmodel.named_modules():
        if isinstance(m, QuantLinear):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: order.append(name) if name not in order else None))
    try:
        with torch.no_grad():
            qmodel(sample)
    finally:
        for h in hooks:
            h.remove()
    qkv_of = {id(m.qkv): n for n, m in qmodel.named_modules() if isinstance(m, QuantAttention)}
    units: list[tuple[str, str]] = []
    for name in order:
        units.append((name, "linear"))
        attn_name = qkv_of.get(id(qmodel.get_submodule(name)))
        if attn_name is not None:  # inside attention: qkv → q·kᵀ → attn·v → proj
            attn = qmodel.get_submodule(attn_name)
            if attn.q_quantizer is not None:
                units.append((attn_name + ".matmul_qk", "matmul_qk"))
            if attn.attn_quantizer is not None or attn.v_quantizer is not None:
                units.append((attn_name + ".matmul_av", "matmul_av"))
    return units


def _block_container(model: nn.Module, names: Sequence[str]) -> str | None:
    """The nn.Sequential whose children hold the most of ``names`` (a ViT's ``blocks``), if any."""
    best, best_count = None, 0
    for cname, m in model.named_modules():
        if not isinstance(m, nn.Sequential) or len(m) < 2:
            continue
        pre = f"{cname}." if cname else ""
        count = sum(1 for n in names if n.startswith(pre) and n[len(pre):].split(".", 1)[0].isdigit())
        if count > best_count:
            best, best_count = cname, count
    return best


class _Prefix:
    """One model's activations at a block boundary, advanced block by block.

    Capturing a layer's inputs by re-running the model from its input costs a prefix of the
    network per layer (quadratic in depth). Instead the inputs of block 0 of the container
    are recorded once, and block k's inputs are computed from block k−1's when the first
    layer of block k is reached: layers are refined in forward order, so every earlier
    block is final by then and the values are those a full forward pass would give.
    Only used when the model calls the container as a whole (nn.Sequential semantics:
    each block's output is the next block's only input); otherwise ``runs`` returns None.
    """

    def __init__(self, model: nn.Module, container: str, batches: list[torch.Tensor], device: torch.device) -> None:
        self.model, self.container, self.batches, self.device = model, container, batches, device
        self.seq: nn.Sequential = model.get_submodule(container)  # type: ignore[assignment]
        self.block = -1  # index of the block whose inputs self.acts holds (-1: not recorded yet)
        self.acts: list[torch.Tensor] | None = None
        self.usable = True

    def _block_of(self, name: str) -> int | None:
        pre = f"{self.container}." if self.container else ""
        if not name.startswith(pre):
            return None
        head = name[len(pre):].split(".", 1)[0]
        return int(head) if head.isdigit() and int(head) < len(self.seq) else None

    def _record(self) -> None:
        store: list[torch.Tensor] = []

        def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                return  # not plain sequential use: leave the forward alone, fall back below
            store.append(args[0].detach())
            raise _Stop
        hook = self.seq.register_forward_pre_hook(pre, with_kwargs=True)
        try:
            with torch.no_grad():
                for x in self.batches:
                    try:
                        self.model(x.to(self.device))
                    except _Stop:
                        pass
        finally:
            hook.remove()
        self.usable = len(store) == len(self.batches)
        self.acts, self.block = store, 0

    def runs(self, name: str) -> list[Callable[[], Any]] | None:
        """One callable per batch running block k (the one holding ``name``) on its inputs."""
        k = self._block_of(name)
        if k is None or not self.usable:
            return None
        if self.acts is None:
            self._record()
            if not self.usable:
                return None
        if k < self.block:  # never happens in forward order; recompute rather than guess
            self._record()
        with torch.no_grad():
            while self.block < k:
                blk = self.seq[self.block]
                self.acts = [blk(h) for h in self.acts]  # type: ignore[union-attr]
                self.block += 1
        blk = self.seq[k]
        return [lambda h=h: blk(h) for h in self.acts]  # type: ignore[union-attr]


def _capture(source: nn.Module, name: str, kind: str, batches: list[torch.Tensor],
             device: torch.device, prefix: _Prefix | None = None) -> list[torch.Tensor]:
    """Run ``source`` on the calibration batches up to operation ``name``; return its float inputs.

    ``prefix``: start from the stored activations at the boundary of the block that holds
    ``name`` instead of from the network input (the same values, one block of compute).
    """
    runs = prefix.runs(name) if prefix is not None else None
    if kind == "linear":
        module, store = source.get_submodule(name), [[]]

        def pre(_m: nn.Module, args: tuple) -> None:
            store[0].append(args[0].detach().float())
            raise _Stop
        hooks = [module.register_forward_pre_hook(pre)]
    else:
        attn: QuantAttention = source.get_submodule(name.rsplit(".", 1)[0])  # type: ignore[assignment]
        heads, hd = attn.num_heads, attn.head_dim
        store = [[], []]

        def split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            b, n = out.shape[:2]
            q, k, v = out.reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
            return attn.q_norm(q) * attn.scale, attn.k_norm(k), v  # what q_/k_/v_quantizer see

        if kind == "matmul_qk":
            def post(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
                q, k, _v = split(out)
                store[0].append(q.detach().float())
                store[1].append(k.detach().float())
                raise _Stop
            hooks = [attn.qkv.register_forward_hook(post)]
        else:  # matmul_av: softmax of the (quantized-operand) scores, and v
            def post(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
                store[1].append(split(out)[2].detach().float())

            def pre(_m: nn.Module, _args: tuple) -> None:
                store[0].append(attn.capture["scores"].softmax(dim=-1).float())  # type: ignore[index]
                raise _Stop
            hooks = [attn.qkv.register_forward_hook(post), attn.proj.register_forward_pre_hook(pre)]
        old_capture = attn.capture
        attn.capture = {}
    try:
        with torch.no_grad():
            for run in runs or [lambda x=x: source(x.to(device)) for x in batches]:
                try:
                    run()
                except _Stop:
                    pass
    finally:
        for h in hooks:
            h.remove()
        if kind != "linear":
            attn.capture = old_capture
    return [torch.cat(s, dim=0) for s in store]


def _float_output(twin: nn.Module, name: str, kind: str, batches: list[torch.Tensor],
                  device: torch.device, prefix: _Prefix | None = None) -> torch.Tensor:
    """The float model's output of operation ``name`` on the calibration set."""
    fp = _capture(twin, name, kind, batches, device, prefix)
    with torch.no_grad():
        if kind == "linear":
            return twin.get_submodule(name)(fp[0])  # the twin computes in float, with the float bias
        if kind == "matmul_qk":
            return fp[0] @ fp[1].transpose(-2, -1)
        return fp[0] @ fp[1]


@dataclass
class RankingAwareReport(QuantReport):
    """A :class:`QuantReport` plus what ranking-aware PTQ chose, layer by layer."""

    method: str = "ranking_aware_ptq"
    method_config: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    not_refined: list[str] = field(default_factory=list)
    calib_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        d = super().summary()
        d.update(method=self.method, calib_seconds=self.calib_seconds,
                 n_refined=sum(1 for row in self.layers if row.get("searched") or row.get("bias_correction")))
        return d

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d.update(method=self.method, method_config=self.method_config, layers=self.layers,
                 not_refined=self.not_refined, calib_seconds=self.calib_seconds)
        return d


def ranking_aware_quantize(model: nn.Module, config: QuantConfig, calib_data: Iterable[Any],
                           rq: RankingAwareConfig = RankingAwareConfig(), progress: bool = True) -> nn.Module:
    """A quantized copy of ``model`` with scales chosen by ranking-aware PTQ (Liu et al., 2021).

    Starts from ``quantize(model, config, calib_data)`` (min-max scales, the same grids and
    granularities), then refines every quantized linear layer and attention matmul one at a
    time in forward order: the alternating similarity(-ranking) search of Δ_W and Δ_X, then
    bias correction, each switchable in ``rq``. Each layer's inputs come from the partially
    quantized model (``rq.inputs="quantized"``, the default: earlier layers already refined)
    or from the float model (``"float"``), and are compared with the float model's output of
    that layer (``rq.reference="model"``, the default) or with the float layer on the same
    inputs (``"layer"``); see the module docstring. With every part switched off the result
    is exactly ``quantize(model, config, calib_data)``. ``model`` is never mutated.

    ``qmodel.vitquant_report`` is a :class:`RankingAwareReport`: per layer the chosen
    multipliers and scales, rounds, objective (and its similarity and ranking parts) before
    and after the search, the bias shift; and ``calib_seconds``, the whole calibration time.
    """
    if not isinstance(rq, RankingAwareConfig):
        raise TypeError(f"rq must be a RankingAwareConfig, got {type(rq).__name__}")
    t0 = time.perf_counter()
    batches = _as_batches(calib_data)
    qmodel = quantize(model, config, batches, progress=progress)
    base: QuantReport = qmodel.vitquant_report  # type: ignore[assignment]
    layers: list[dict[str, Any]] = []
    not_refined = [f"{n} (Conv2d: min-max scales kept)" for n, m in qmodel.named_modules()
                   if isinstance(m, QuantConv2d)]
    if rq.searches or rq.bias_correction:
        device = next(qmodel.parameters()).device
        twin = _float_twin(qmodel) if (rq.inputs == "float" or rq.reference == "model") else None
        source = qmodel if rq.inputs == "quantized" else twin
        # the float model's own output of each operation, when it is the reference and differs
        # from the float operation on the (partially quantized) inputs
        model_reference = rq.reference == "model" and rq.inputs == "quantized"
        generator = torch.Generator().manual_seed(rq.seed)  # ranking-loss pair subsets, in layer order
        units = _discover(qmodel, batches[0][:1].to(device))
        container = _block_container(qmodel, [n for n, _ in units]) if rq.incremental else None
        src_prefix = _Prefix(source, container, batches, device) if container is not None else None
        twin_prefix = (_Prefix(twin, container, batches, device)  # type: ignore[arg-type]
                       if container is not None and model_reference else None)
        bar = tqdm(units, desc="ranking-aware PTQ", unit="op", disable=not progress, leave=False)
        for name, kind in bar:
            bar.set_postfix_str(name, refresh=False)  # which operation the (long) search is on
            t1 = time.perf_counter()
            if (kind == "matmul_qk" and not rq.searches) or (kind == "matmul_av" and not rq.similarity):
                # nothing to refine there (bias correction concerns linear layers only): skip the pass
                layers.append({"name": name, "kind": kind, "objective": None, "searched": False})
                continue
            inputs = _capture(source, name, kind, batches, device, src_prefix)
            target = _float_output(twin, name, kind, batches, device, twin_prefix) if model_reference else None
            if kind == "linear":
                module: QuantLinear = qmodel.get_submodule(name)  # type: ignore[assignment]
                parent = name.rsplit(".", 1)[0] if "." in name else ""
                owner = qmodel.get_submodule(parent) if parent else None
                attention = owner if isinstance(owner, QuantAttention) and owner.qkv is module else None
                info = refine_linear(module, inputs[0], rq, attention, generator, name, target)
            elif kind == "matmul_qk":
                attn: QuantAttention = qmodel.get_submodule(name.rsplit(".", 1)[0])  # type: ignore[assignment]
                info = refine_matmul_qk(attn, inputs[0], inputs[1], rq, generator, name, target)
            else:
                attn = qmodel.get_submodule(name.rsplit(".", 1)[0])  # type: ignore[assignment]
                info = refine_matmul_av(attn, inputs[0], inputs[1], rq, name, target)
            del inputs, target
            info["seconds"] = time.perf_counter() - t1
            layers.append(info)
            for row in base.ops:  # the per-op rows of the report carry the layer's outcome too
                if row["name"] == name:
                    row["ranking_aware"] = {k: info.get(k) for k in (
                        "objective", "rounds", "multipliers", "objective_before", "objective_after")
                        if k in info}
                    if "bias_correction" in info:
                        row["ranking_aware"]["bias_correction"] = info["bias_correction"]
    report = RankingAwareReport(**{f.name: getattr(base, f.name) for f in fields(QuantReport)},
                                method_config=asdict(rq), layers=layers, not_refined=not_refined,
                                calib_seconds=time.perf_counter() - t0)
    qmodel.vitquant_report = report  # type: ignore[assignment]
    return qmodel
