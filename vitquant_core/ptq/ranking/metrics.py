"""The measures of ranking-aware PTQ (Liu et al., NeurIPS 2021, §3.2–3.3).

* :func:`pearson_similarity`: the paper's similarity Γ(O, Ô), the Pearson correlation of the
  float and quantized output of each image, averaged over images (§3.2).
* :func:`ranking_loss`: the pairwise hinge loss L_ranking = Σ_{i<j} Φ((Â_i − Â_j)·sign(A_i − A_j)),
  Φ(p) = max(θ − p, 0), over the keys of each query row of a float and a quantized attention-score
  map (§3.3). The search uses its mean over images, heads, rows and key pairs (see
  :mod:`vitquant_core.ptq.ranking`); the paper's sum is ``reduction="sum"``.
* :func:`kendall_tau`: Kendall's τ between the float and quantized order of the keys, the
  measure notebook 03 reports.

:func:`ranking_sums` and :func:`pearson_per_candidate` are the batched kernels the search
scores many candidate scales with at once.
"""
from __future__ import annotations

import torch

__all__ = ["count_pairs", "kendall_tau", "pair_indices", "pairs_or_none", "pearson_per_candidate",
           "pearson_similarity", "ranking_loss", "ranking_sums"]


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


def ranking_sums(a_fp: torch.Tensor, a_q: torch.Tensor, theta: float,
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
    pairs = pairs_or_none(n, max_pairs, generator, f.device)
    total = ranking_sums(f, q, float(theta), pairs)[0]
    if reduction == "mean":
        total = total / max(1, f.shape[0] * count_pairs(n, pairs))
    return total.to(out_dtype)


def pairs_or_none(n: int, max_pairs: int | None, generator: torch.Generator | None,
                  device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """None (all pairs: the dense path) unless a strict subset of the pairs is asked for."""
    if max_pairs is None or max_pairs >= n * (n - 1) // 2:
        return None
    return pair_indices(n, max_pairs, generator, device)


def count_pairs(n: int, pairs: tuple[torch.Tensor, torch.Tensor] | None) -> int:
    """How many key pairs the ranking term covers: all n(n−1)/2 when ``pairs`` is None."""
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


def pearson_per_candidate(ref_centered: torch.Tensor, ref_norm: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
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
    return pearson_per_candidate(ref, ref.norm(dim=-1), o_q.reshape(1, o_q.shape[0], -1).float())[0].float()
