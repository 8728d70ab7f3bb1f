"""Log and twin-uniform grids against slow scalar reference implementations, edges included."""
import math

import pytest
import torch

from vitquant_core.quant import nonuniform as NU


def ref_log(x: float, delta: float, bits: int, base: float) -> float:
    """One value at a time, straight from the definition: code 2^b - 1 (and x = 0) is zero."""
    if x <= 0:
        return 0.0
    q = round(-math.log(x / delta) / math.log(base))
    q = max(q, 0)
    if q >= 2 ** bits - 1:
        return 0.0
    return delta * base ** (-q)


def ref_twin_softmax(x: float, split: float, bits: int) -> float:
    half = 2 ** (bits - 1)
    if x < split:
        d = split / (half - 1)
    else:
        d = 1.0 / (half - 1)
    return min(max(round(x / d), 0), half - 1) * d


def ref_twin_gelu(x: float, d_neg: float, d_pos: float, bits: int) -> float:
    half = 2 ** (bits - 1)
    if x < 0:
        return min(max(round(x / d_neg), -half), 0) * d_neg
    return min(max(round(x / d_pos), 0), half - 1) * d_pos


def _values() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, generator=g, dtype=torch.float64) ** 6  # softmax-like: many tiny values
    edges = torch.tensor([0.0, 1e-200, 1.0, 0.5, 0.25, 2 ** -7.5, 0.7, 0.999], dtype=torch.float64)
    return torch.cat([x, edges])


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("base", [math.sqrt(2), 2.0, 2 ** (1 / 3)], ids=["sqrt2", "2", "cbrt2"])
def test_log_grid_matches_reference(bits, base):
    x, delta = _values(), 0.8
    got = NU.log_fake_quantize(x, delta, bits, base)
    want = torch.tensor([ref_log(float(v), delta, bits, base) for v in x], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12, atol=0)
    # values above Δ saturate at Δ; zero and the far tail map to the zero code
    codes = NU.log_codes(torch.tensor([2.0, 0.0, 1e-200], dtype=torch.float64), delta, bits, base)
    assert codes.tolist() == [0.0, 2 ** bits - 1, 2 ** bits - 1]


def test_log_sqrt2_is_repq_formula():
    # RepQ-ViT: x̂ = 2^(-ceil(q/2)) · (√2 if q odd else 1) · Δ equals Δ · 2^(-q/2)
    codes = torch.arange(0, 15, dtype=torch.float64)
    repq = 2 ** (-torch.ceil(codes / 2)) * torch.where(codes % 2 == 1, math.sqrt(2), 1.0) * 0.5
    assert torch.allclose(NU.log_dequantize(codes, 0.5, 4), repq, rtol=1e-12)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("split", [1.0, 0.5, 2 ** -3, 2 ** -10])
def test_twin_softmax_matches_reference(bits, split):
    x = _values()
    got = NU.twin_softmax_fake_quantize(x, split, bits)
    want = torch.tensor([ref_twin_softmax(float(v), split, bits) for v in x], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)


def test_twin_softmax_ranges_add_up_exactly():
    """Each value is coded once: no value gets both ranges' outputs (the published sum does)."""
    bits, split = 4, 0.25
    x = torch.tensor([0.1, 0.6, 0.9], dtype=torch.float64)
    ours = NU.twin_softmax_fake_quantize(x, split, bits)
    half = 2 ** (bits - 1)
    published = ((x.clamp(split, 1) * (half - 1)).round().clamp(0, half - 1) / (half - 1)
                 + (x.clamp(0, split) / (split / (half - 1))).round().clamp(0, half - 1) * (split / (half - 1)))
    assert (ours - x).abs().max() < 1 / (half - 1)  # within one step of R2
    assert (published - x).abs().min() > 0.2  # every value off by about the split
    # one b-bit code: 0 .. 2^(b-1) - 1 in R1 (all used below the split), 2^(b-1) .. 2^b - 1 in R2
    codes = NU.twin_softmax_codes(torch.linspace(0, 1, 10001, dtype=torch.float64), split, bits)
    assert codes.min() == 0 and codes.max() == 2 ** bits - 1
    assert set(range(half)) <= set(codes.unique().tolist()) <= set(range(2 ** bits))


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("m", [0, 2, 5])
def test_twin_gelu_matches_reference(bits, m):
    d_neg, d_pos = NU.twin_gelu_scales(bits, m)
    assert d_pos == d_neg * 2 ** m and d_neg * 2 ** (bits - 1) == pytest.approx(NU.GELU_MIN)
    x = torch.cat([torch.nn.functional.gelu(torch.linspace(-6, 8, 301, dtype=torch.float64)),
                   torch.tensor([0.0, -NU.GELU_MIN, -1.0, 100.0], dtype=torch.float64)])
    got = NU.twin_gelu_fake_quantize(x, d_neg, d_pos, bits)
    want = torch.tensor([ref_twin_gelu(float(v), d_neg, d_pos, bits) for v in x], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)
    codes = NU.twin_gelu_codes(x, d_neg, d_pos, bits)
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1  # one signed b-bit code


@pytest.mark.parametrize("kind", ["log", "twin_softmax", "twin_gelu"])
def test_integer_form_dequantizes_exactly(kind):
    """Integer codes stored in the narrowest integer type and dequantized give the fake-quantized tensor."""
    x = _values().float()
    bits = 4
    if kind == "log":
        codes, fq = NU.log_codes(x, 0.9, bits), NU.log_fake_quantize(x, 0.9, bits)
        back = NU.log_dequantize(codes.to(torch.uint8).float(), 0.9, bits)
    elif kind == "twin_softmax":
        codes, fq = NU.twin_softmax_codes(x, 2 ** -4, bits), NU.twin_softmax_fake_quantize(x, 2 ** -4, bits)
        back = NU.twin_softmax_dequantize(codes.to(torch.uint8).float(), 2 ** -4, bits)
    else:
        x = x * 8 - 0.17
        d_neg, d_pos = NU.twin_gelu_scales(bits, 4)
        codes, fq = NU.twin_gelu_codes(x, d_neg, d_pos, bits), NU.twin_gelu_fake_quantize(x, d_neg, d_pos, bits)
        back = NU.twin_gelu_dequantize(codes.to(torch.int8).float(), d_neg, d_pos)
    assert torch.equal(codes, codes.round()) and codes.min() >= -(2 ** (bits - 1)) and codes.max() < 2 ** bits
    assert torch.equal(back, fq)


def test_bad_input():
    with pytest.raises(ValueError, match="bits"):
        NU.log_codes(torch.ones(2), 1.0, 1)
    with pytest.raises(ValueError, match="base"):
        NU.log_codes(torch.ones(2), 1.0, 4, base=1.0)
