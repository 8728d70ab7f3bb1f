"""Non-uniform grids for the two activations a uniform grid serves worst in a ViT.

* **Log quantizer** for the post-softmax attention (RepQ-ViT, Li et al., ICCV 2023; AdaLog,
  Wu et al., ECCV 2024). With a scale Δ (the largest value kept) and a base β > 1:

      q = clamp(round(-log_β(x / Δ)), 0, 2^b - 1),     x̂ = Δ · β^(-q)

  log√2 is β = √2 (q = round(-2·log2(x/Δ))); log2 is β = 2. The last code 2^b - 1 stands
  for 0: codes at or past the end of the grid, and x = 0, dequantize to 0 (as RepQ-ViT's
  code maps them). With β = 2^(1/k) the product x̂·v needs only shifts (k = 1) or shifts
  and one multiplier per parity of q (k = 2: √2 for odd codes).

* **Twin-uniform quantizer** (PTQ4ViT, Yuan et al., ECCV 2022): two uniform ranges of
  2^(b-1) levels each, whose scales differ by a power of two, so one b-bit code holds a
  range bit and a (b-1)-bit level.
  - ``softmax`` form, for values in [0, 1]: R1 has Δ1 = split / (2^(b-1) - 1) for values
    below ``split``; R2 has Δ2 = 1 / (2^(b-1) - 1) for the rest. Each value is coded in
    exactly one range. (The published code adds the two ranges' outputs, which counts
    ``split`` twice for every value; harmless only when the split is tiny.)
  - ``gelu`` form: negative values on Δ_neg (fixed by GELU's minimum, -0.17) with codes
    -2^(b-1) .. 0, positive values on Δ_pos = Δ_neg · 2^m with codes 0 .. 2^(b-1) - 1: a
    signed b-bit code whose sign picks the scale.

Each quantizer has ``codes`` (integers as float values), ``dequantize`` and ``fake_quantize``;
fake quantization is exactly ``dequantize(codes(x))``.
"""
from __future__ import annotations

import math

import torch

SQRT2 = math.sqrt(2.0)
GELU_MIN = 0.16997124254703522  # -min_x GELU(x), PTQ4ViT's fixed negative range


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")


# -- log grids ---------------------------------------------------------------------------------

def log_codes(x: torch.Tensor, delta: torch.Tensor | float, bits: int, base: float = SQRT2) -> torch.Tensor:
    """Codes of non-negative ``x`` on the log grid; 2^b - 1 is the code of 0."""
    _check_bits(bits)
    if base <= 1.0:
        raise ValueError(f"the log base must be > 1, got {base}")
    with torch.no_grad():
        q = torch.div(x, delta)
        # in place, for evaluation speed: log2(0) = -inf becomes +inf, clamped to the zero code
        q.clamp_(min=0.0).log2_().mul_(-1.0 / math.log2(base)).round_()
        return q.clamp_(0.0, float(2 ** bits - 1))


def log_dequantize(codes: torch.Tensor, delta: torch.Tensor | float, bits: int, base: float = SQRT2) -> torch.Tensor:
    """Δ · β^(-q), and 0 for the zero code 2^b - 1."""
    values = codes * -math.log2(base)
    values.exp2_().mul_(delta)
    return values.mul_(codes != float(2 ** bits - 1))


def log_fake_quantize(x: torch.Tensor, delta: torch.Tensor | float, bits: int, base: float = SQRT2) -> torch.Tensor:
    return log_dequantize(log_codes(x, delta, bits, base), delta, bits, base)


# -- twin-uniform grids ------------------------------------------------------------------------

def twin_softmax_codes(x: torch.Tensor, split: torch.Tensor | float, bits: int) -> torch.Tensor:
    """Codes 0 .. 2^(b-1) - 1 (range R1, below ``split``) and 2^(b-1) .. 2^b - 1 (range R2)."""
    _check_bits(bits)
    half = 2 ** (bits - 1)
    d1, d2 = split / (half - 1), 1.0 / (half - 1)
    low = torch.clamp(torch.round(x / d1), 0, half - 1)
    high = torch.clamp(torch.round(x / d2), 0, half - 1) + half
    return torch.where(x < split, low, high)


def twin_softmax_dequantize(codes: torch.Tensor, split: torch.Tensor | float, bits: int) -> torch.Tensor:
    half = 2 ** (bits - 1)
    d1, d2 = split / (half - 1), 1.0 / (half - 1)
    return torch.where(codes < half, codes * d1, (codes - half) * d2)


def twin_softmax_fake_quantize(x: torch.Tensor, split: torch.Tensor | float, bits: int) -> torch.Tensor:
    """``twin_softmax_dequantize(twin_softmax_codes(x))``, computed in place (evaluation speed)."""
    _check_bits(bits)
    half = 2 ** (bits - 1)
    d1, d2 = split / (half - 1), 1.0 / (half - 1)
    with torch.no_grad():
        low = torch.div(x, d1).round_().clamp_(0, half - 1).mul_(d1)
        high = torch.div(x, d2).round_().clamp_(0, half - 1).mul_(d2)
        return torch.where(x < split, low, high, out=low)


def twin_gelu_scales(bits: int, m: int) -> tuple[float, float]:
    """(Δ_neg, Δ_pos): the negative scale covers [GELU_MIN·(-1), 0]; Δ_pos = Δ_neg · 2^m."""
    _check_bits(bits)
    d_neg = GELU_MIN / 2 ** (bits - 1)
    return d_neg, d_neg * 2.0 ** m


def twin_gelu_codes(x: torch.Tensor, d_neg: torch.Tensor | float, d_pos: torch.Tensor | float,
                    bits: int) -> torch.Tensor:
    """Signed codes: -2^(b-1) .. 0 on Δ_neg for x < 0, 0 .. 2^(b-1) - 1 on Δ_pos for x >= 0."""
    _check_bits(bits)
    half = 2 ** (bits - 1)
    neg = torch.clamp(torch.round(x / d_neg), -half, 0)
    pos = torch.clamp(torch.round(x / d_pos), 0, half - 1)
    return torch.where(x < 0, neg, pos)


def twin_gelu_dequantize(codes: torch.Tensor, d_neg: torch.Tensor | float, d_pos: torch.Tensor | float) -> torch.Tensor:
    return torch.where(codes < 0, codes * d_neg, codes * d_pos)


def twin_gelu_fake_quantize(x: torch.Tensor, d_neg: torch.Tensor | float, d_pos: torch.Tensor | float,
                            bits: int) -> torch.Tensor:
    """``twin_gelu_dequantize(twin_gelu_codes(x))``, computed in place (evaluation speed)."""
    _check_bits(bits)
    half = 2 ** (bits - 1)
    with torch.no_grad():
        neg = torch.div(x, d_neg).round_().clamp_(-half, 0).mul_(d_neg)
        pos = torch.div(x, d_pos).round_().clamp_(0, half - 1).mul_(d_pos)
        return torch.where(x < 0, neg, pos, out=neg)
