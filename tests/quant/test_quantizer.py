"""The uniform quantizer against an independent numpy (float64, np.rint half-to-even) reference.

Spec: q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1), s = max|x| / (2^(b-1) - 1) (signed);
q = clamp(round(x / s), 0, 2^b - 1), s = max(x) / (2^b - 1) (unsigned); an asymmetric variant
with an integer zero point; per-tensor or per-channel (any axis) scales.
"""
import math

import numpy as np
import pytest
import torch

from vitquant_core.quant import (
    PerChannel,
    PerTensor,
    QTensor,
    QType,
    affine_scale,
    check_finite,
    fake_quantize,
    qint,
    qint8,
    quantize_codes,
    quantize_tensor,
    quint,
    symmetric_scale,
)

ALL_BITS = list(range(2, 17))
BITS_IDS = [f"b{b}" for b in ALL_BITS]
F32_EPS = float(np.finfo(np.float32).eps)

GRANULARITIES = [None, 0, 1, -1]  # None = per-tensor, else the per-channel axis
GRAN_IDS = ["per_tensor", "per_channel_ax0", "per_channel_ax1", "per_channel_ax-1"]
SHAPES = [(4, 6, 10), (3, 4, 5, 6)]
SHAPE_IDS = ["3d", "4d"]


# ---------------------------------------------------------------- independent numpy reference
def ref_grid(bits, signed):
    """(qmin, qmax) by integer arithmetic, independent of QType."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def ref_storage_dtype(bits, signed):
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed else torch.int32


def ref_reduce_axes(ndim, axis):
    if axis is None:
        return tuple(range(ndim))
    return tuple(d for d in range(ndim) if d != axis % ndim)


def ref_quantize(x, bits, signed, axis):
    """float64 numpy reference: (codes, scale) with keepdims-shaped scale."""
    x = np.asarray(x, dtype=np.float64)
    qmin, qmax = ref_grid(bits, signed)
    red = ref_reduce_axes(x.ndim, axis)
    if signed:
        ref = np.abs(x).max(axis=red, keepdims=True)
    else:
        ref = np.maximum(x.max(axis=red, keepdims=True), 0.0)
    s = ref / qmax
    s = np.where(s > 0, s, 1.0)
    codes = np.clip(np.rint(x / s), qmin, qmax)
    return codes, s


def ref_asymmetric(x, bits, axis):
    x = np.asarray(x, dtype=np.float64)
    qmax = (1 << bits) - 1
    red = ref_reduce_axes(x.ndim, axis)
    lo = np.minimum(x.min(axis=red, keepdims=True), 0.0)
    hi = np.maximum(x.max(axis=red, keepdims=True), 0.0)
    s = (hi - lo) / qmax
    s = np.where(s > 0, s, 1.0)
    z = np.clip(-np.rint(lo / s), 0, qmax)
    return s, z


def granularity(axis):
    return PerTensor() if axis is None else PerChannel(axis)


def dyadic_tensor(shape, bits, signed, axis, seed):
    """Float32-exact data: x = (k + u) * 2^e with integer k, u a multiple of 1/16 in [-1/2, 1/2].

    Every row (slice along ``axis``, or the whole tensor) holds one element at ±qmax * 2^e, so the
    min-max scale is exactly 2^e and x / s is exact in float32 and float64 alike: the codes of the
    library and of the float64 reference must agree bit for bit, ties (u = ±1/2) included.
    """
    rng = np.random.default_rng(seed)
    _, qmax = ref_grid(bits, signed)
    ndim = len(shape)
    if axis is None:
        rows, rest = 1, (int(np.prod(shape)),)
    else:
        ax = axis % ndim
        rows = shape[ax]
        rest = tuple(d for i, d in enumerate(shape) if i != ax)
    n = int(np.prod(rest))
    lo = -qmax if signed else -min(qmax, 8)  # unsigned data gets a few negatives: they clamp to 0
    v = rng.integers(lo, qmax + 1, size=(rows, n)) + rng.integers(-8, 9, size=(rows, n)) / 16.0
    v = np.clip(v, lo, qmax)
    j = rng.integers(0, n, size=rows)
    v[np.arange(rows), j] = (rng.choice([-1.0, 1.0], size=rows) if signed else 1.0) * qmax
    v = v * 2.0 ** rng.integers(-6, 4, size=(rows, 1))
    if axis is None:
        out = v.reshape(shape)
    else:
        out = np.moveaxis(v.reshape((rows,) + rest), 0, axis % ndim)
    out32 = out.astype(np.float32)
    assert np.array_equal(out32.astype(np.float64), out)  # really float32-exact
    return out32


def channel_spread_tensor(shape, axis, seed, low=-3.0, high=1.0):
    """Gaussian data whose slices along ``axis`` have ranges spread over 10^low .. 10^high."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    if axis is None:
        return x
    c = shape[axis]
    view = [1] * len(shape)
    view[axis % len(shape)] = c
    return x * torch.logspace(low, high, c).reshape(view)


# ---------------------------------------------------------------- codes vs the reference
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("axis", GRANULARITIES, ids=GRAN_IDS)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("bits", ALL_BITS, ids=BITS_IDS)
def test_codes_match_integer_reference_exactly(bits, signed, axis, shape):
    x = dyadic_tensor(shape, bits, signed, axis, seed=1000 * bits + 10 * (axis or 0) + len(shape) + signed)
    codes_ref, s_ref = ref_quantize(x, bits, signed, axis)
    qmin, qmax = ref_grid(bits, signed)

    qt = quantize_tensor(torch.from_numpy(x), QType(bits, signed), granularity(axis))

    assert isinstance(qt, QTensor) and qt.shape == torch.Size(shape)
    assert qt.int_repr.dtype == ref_storage_dtype(bits, signed)
    codes = qt.int_repr.to(torch.int64).numpy()
    assert codes.min() >= qmin and codes.max() <= qmax
    np.testing.assert_array_equal(codes, codes_ref.astype(np.int64))
    # the row maximum hits the end of the grid: signed ±qmax, unsigned qmax
    assert np.abs(codes).max() == qmax
    # scale: exactly the reference's, one per row, broadcastable against x
    assert tuple(qt.scale.shape) == s_ref.shape
    np.testing.assert_array_equal(qt.scale.numpy().astype(np.float64), s_ref)
    assert torch.count_nonzero(qt.zero_point) == 0
    # dequantized values are exactly codes * s
    np.testing.assert_array_equal(qt.dequantize().numpy().astype(np.float64), codes_ref * s_ref)


def test_reference_data_contains_ties():
    """Guard for the test above: the dyadic data really exercises round-half-to-even."""
    x = dyadic_tensor((4, 6, 10), 8, True, None, seed=3)
    _, s = ref_quantize(x, 8, True, None)
    frac = np.abs(x / s) % 1.0
    assert np.count_nonzero(frac == 0.5) >= 5


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_round_half_to_even(signed):
    # scale 1: max = qmax = 127 (signed) / 255 (unsigned)
    top = 127.0 if signed else 255.0
    x = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 126.5, -0.5, -1.5, -2.5, top])
    qt = quantize_tensor(x, QType(8, signed))
    assert qt.scale.item() == 1.0
    expected = [0, 2, 2, 4, 4, 126, 0, -2, -2, top] if signed else [0, 2, 2, 4, 4, 126, 0, 0, 0, top]
    assert qt.int_repr.tolist() == expected


@pytest.mark.parametrize("axis", [None, 0, -1], ids=["per_tensor", "per_channel_ax0", "per_channel_ax-1"])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("bits", ALL_BITS, ids=BITS_IDS)
def test_codes_match_reference_on_random_data(bits, signed, axis):
    """Arbitrary float32 data: exact agreement except within float32 rounding of a .5 tie."""
    x = channel_spread_tensor((6, 7, 24), axis, seed=bits)
    if not signed:
        x = x.abs() * torch.where(torch.arange(x.numel()).reshape(x.shape) % 10 == 0, -1.0, 1.0)
    x64 = x.double().numpy()
    codes_ref, s_ref = ref_quantize(x64, bits, signed, axis)
    qt = quantize_tensor(x, QType(bits, signed), granularity(axis))
    codes = qt.int_repr.to(torch.int64).numpy()

    np.testing.assert_allclose(qt.scale.numpy(), s_ref, rtol=2 * F32_EPS, atol=0)
    q64 = x64 / s_ref
    near_tie = np.abs(np.abs(q64 - np.floor(q64)) - 0.5) <= 2 * F32_EPS * np.maximum(1.0, np.abs(q64))
    assert near_tie.mean() < 0.02
    np.testing.assert_array_equal(codes[~near_tie], codes_ref[~near_tie].astype(np.int64))
    assert np.abs(codes - codes_ref).max() <= 1


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("bits", ALL_BITS, ids=BITS_IDS)
def test_int_repr_dtype(bits, signed):
    qt = quantize_tensor(torch.linspace(-1, 1, 11), QType(bits, signed))
    assert qt.int_repr.dtype == ref_storage_dtype(bits, signed)
    assert qt.qtype == QType(bits, signed)


# ---------------------------------------------------------------- integer form == fake quant
MODES = [("signed", True, True), ("unsigned", False, True), ("asymmetric", False, False)]


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1], ids=GRAN_IDS)
@pytest.mark.parametrize("mode", MODES, ids=[m[0] for m in MODES])
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 9, 12, 16], ids=lambda b: f"b{b}")
def test_dequantize_bit_identical_to_fake_quantize(bits, mode, axis, requires_grad):
    _, signed, symmetric = mode
    x = channel_spread_tensor((5, 6, 8), axis, seed=7 * bits) + 0.1
    x.requires_grad_(requires_grad)
    qt = quantize_tensor(x, QType(bits, signed), granularity(axis), symmetric=symmetric)
    fq = fake_quantize(x, qt.scale, qt.zero_point, qt.qtype)
    deq = qt.dequantize()
    assert fq.requires_grad == requires_grad
    assert fq.dtype == deq.dtype == torch.float32 and fq.shape == deq.shape == x.shape
    assert torch.equal(deq, fq.detach())
    # and the integer codes are the ones quantize_codes gives
    assert torch.equal(qt.int_repr.float(), quantize_codes(x.detach(), qt.scale, qt.zero_point, qt.qtype))


# ---------------------------------------------------------------- reconstruction error
@pytest.mark.parametrize("axis", [None, 0, -1], ids=["per_tensor", "per_channel_ax0", "per_channel_ax-1"])
@pytest.mark.parametrize("bits", ALL_BITS, ids=BITS_IDS)
def test_signed_absmax_maps_to_qmax_and_error_within_half_step(bits, axis):
    x = channel_spread_tensor((8, 5, 16), axis, seed=100 + bits)
    qt = quantize_tensor(x, qint(bits), granularity(axis))
    qmax = (1 << (bits - 1)) - 1
    x64 = x.double().numpy()
    codes = qt.int_repr.to(torch.int64).numpy()
    s = qt.scale.double().numpy()

    # the max-|x| element of each row maps exactly to ±qmax with the sign of x
    red = ref_reduce_axes(x.ndim, axis)
    absmax = np.abs(x64).max(axis=red, keepdims=True)
    at_max = np.abs(x64) == absmax
    assert at_max.sum() >= (1 if axis is None else x.shape[axis])
    np.testing.assert_array_equal(codes[at_max], (np.sign(x64) * qmax)[at_max].astype(np.int64))
    assert codes.min() >= -qmax  # the symmetric-restricted grid never uses -2^(b-1)
    np.testing.assert_allclose(s, absmax / qmax, rtol=2 * F32_EPS)

    err = np.abs(qt.dequantize().double().numpy() - x64)
    bound = s / 2 * (1 + 1e-6) + 2 * F32_EPS * np.abs(x64)
    assert np.all(err <= bound)
    assert err.max() > 0.25 * s.min()  # not trivially exact


@pytest.mark.parametrize("bits", ALL_BITS, ids=BITS_IDS)
def test_unsigned_max_maps_to_qmax_and_error_within_half_step(bits):
    g = torch.Generator().manual_seed(bits)
    x = torch.softmax(torch.randn(4, 64, generator=g) * 3, dim=-1)  # non-negative, like attention
    qt = quantize_tensor(x, quint(bits))
    qmax = (1 << bits) - 1
    codes = qt.int_repr.to(torch.int64)
    assert codes.min().item() >= 0 and codes.max().item() == qmax
    assert codes.flatten()[x.argmax()].item() == qmax
    s = qt.scale.item()
    assert s == pytest.approx(x.max().item() / qmax, rel=2 * F32_EPS)
    err = (qt.dequantize().double() - x.double()).abs()
    assert err.max().item() <= s / 2 * (1 + 1e-6) + 2 * F32_EPS * x.max().item()


def test_per_channel_beats_per_tensor_on_spread_channels():
    w = channel_spread_tensor((16, 64), 0, seed=5, low=-3.0, high=0.0)  # ranges 1e-3 .. 1
    per_tensor = quantize_tensor(w, qint(8), PerTensor())
    per_channel = quantize_tensor(w, qint(8), PerChannel(0))
    assert per_tensor.scale.shape == (1, 1) and per_channel.scale.shape == (16, 1)
    assert torch.all(per_channel.scale <= per_tensor.scale)
    err_t = (per_tensor.dequantize() - w).pow(2).sum(dim=1)
    err_c = (per_channel.dequantize() - w).pow(2).sum(dim=1)
    assert torch.all(err_c <= err_t)
    assert err_c.sum() < 0.5 * err_t.sum()
    # the small channels are all-zero per tensor but well resolved per channel
    assert torch.count_nonzero(per_tensor.int_repr[0]) == 0
    assert torch.count_nonzero(per_channel.int_repr[0]) > 32
    rel_c = (err_c / w.pow(2).sum(dim=1))
    assert rel_c.max() < 1e-3


@pytest.mark.parametrize("axis", [0, 1, -1], ids=["ax0", "ax1", "ax-1"])
def test_per_channel_scale_shape_any_axis(axis):
    x = channel_spread_tensor((2, 3, 4, 5), axis, seed=9)
    qt = quantize_tensor(x, qint8, PerChannel(axis))
    expected = [1, 1, 1, 1]
    expected[axis % 4] = x.shape[axis]
    assert list(qt.scale.shape) == expected
    red = ref_reduce_axes(4, axis)
    np.testing.assert_allclose(qt.scale.numpy(), np.abs(x.numpy()).max(axis=red, keepdims=True) / 127,
                               rtol=2 * F32_EPS)


# ---------------------------------------------------------------- asymmetric
ASYM_BITS = [2, 3, 4, 8, 12, 16]


@pytest.mark.parametrize("axis", [None, 1], ids=["per_tensor", "per_channel_ax1"])
@pytest.mark.parametrize("bits", ASYM_BITS, ids=lambda b: f"b{b}")
def test_asymmetric_zero_exact_and_range_within_half_step(bits, axis):
    g = torch.Generator().manual_seed(bits)
    x = torch.rand(8, 6, 32, generator=g) * 2.3 - 0.3  # skewed range [-0.3, 2.0]
    if axis is not None:
        x = x * torch.linspace(0.2, 3.0, 6).reshape(1, 6, 1)
    x[0, :, 0] = 0.0  # exact zeros in every channel
    qt = quantize_tensor(x, quint(bits), granularity(axis), symmetric=False)
    qmax = (1 << bits) - 1
    s, z = qt.scale, qt.zero_point

    s_ref, z_ref = ref_asymmetric(x.double().numpy(), bits, axis)
    np.testing.assert_allclose(s.numpy(), s_ref, rtol=4 * F32_EPS)
    np.testing.assert_array_equal(z.numpy(), z_ref)
    assert torch.all(z == torch.round(z)) and z.min() >= 0 and z.max() <= qmax
    if bits >= 3:
        assert torch.all(z > 0)  # negative data: zero sits inside the grid

    codes = qt.int_repr.to(torch.int64)
    assert qt.int_repr.dtype == ref_storage_dtype(bits, False)
    assert codes.min().item() == 0 and codes.max().item() >= qmax - 1
    # zero is exactly representable: zeros quantize to code z and come back as exactly 0.0
    deq = qt.dequantize()
    assert torch.equal(codes[0, :, 0].float(), z.flatten() * torch.ones(6))
    assert torch.count_nonzero(deq[0, :, 0]) == 0
    zeros = torch.zeros_like(x)
    assert torch.count_nonzero(fake_quantize(zeros, s, z, qt.qtype)) == 0
    # every value of [min, max] reconstructs within s/2
    err = (deq.double() - x.double()).abs()
    bound = s.double() / 2 * (1 + 1e-5) + 4 * F32_EPS * x.double().abs()
    assert torch.all(err <= bound)


def test_asymmetric_widens_range_to_hold_zero():
    x = torch.linspace(0.5, 2.0, 31)  # min > 0: the range becomes [0, 2]
    qt = quantize_tensor(x, quint(8), symmetric=False)
    assert qt.zero_point.item() == 0.0
    assert qt.scale.item() == pytest.approx(2.0 / 255, rel=2 * F32_EPS)
    x = -torch.linspace(0.5, 2.0, 31)  # max < 0: the range becomes [-2, 0]
    qt = quantize_tensor(x, quint(8), symmetric=False)
    assert qt.zero_point.item() == 255.0
    assert torch.count_nonzero(fake_quantize(torch.zeros(3), qt.scale, qt.zero_point, qt.qtype)) == 0


def test_asymmetric_beats_symmetric_on_skewed_data():
    x = torch.rand(4096, generator=torch.Generator().manual_seed(0)) * 2.2 - 0.2
    asym = quantize_tensor(x, quint(4), symmetric=False)
    sym = quantize_tensor(x, qint(4))
    mse_a = (asym.dequantize() - x).pow(2).mean().item()
    mse_s = (sym.dequantize() - x).pow(2).mean().item()
    # grid step 2.2/15 vs 2.0/7: uniform-noise MSE ratio (2.2/15)^2 / (2/7)^2 ≈ 0.26
    assert mse_a < 0.4 * mse_s


def test_affine_scale_matches_formula():
    s, z = affine_scale(torch.tensor([-1.0, -0.2, 0.5]), torch.tensor([3.0, 0.4, 1.5]), quint(8))
    np.testing.assert_allclose(s.numpy(), np.array([4.0, 0.6, 1.5]) / 255, rtol=2 * F32_EPS)
    assert z.tolist() == [np.rint(1 / (4 / 255)), np.rint(0.2 / (0.6 / 255)), 0.0]


# ---------------------------------------------------------------- straight-through estimator
@pytest.mark.parametrize("mode", MODES, ids=[m[0] for m in MODES])
@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"b{b}")
def test_ste_gradient_identity_inside_zero_outside(bits, mode):
    _, signed, symmetric = mode
    qt_type = QType(bits, signed)
    x = torch.linspace(-3.0, 3.0, 1201, requires_grad=True)
    # a power-of-two scale far smaller than min-max, to force clipping; bounds exact in float32
    scale = torch.tensor(2.0 ** -math.ceil(math.log2(qt_type.qmax)))  # qmax * s in (0.5, 1]
    zp = torch.tensor(float((qt_type.qmax + 1) // 2)) if not symmetric else torch.tensor(0.0)
    y = fake_quantize(x, scale, zp, qt_type)
    assert y.requires_grad
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(bits))
    y.backward(upstream)

    lo = (qt_type.qmin - zp.item()) * scale.item()
    hi = (qt_type.qmax - zp.item()) * scale.item()
    x64 = x.detach().double()
    inside = (x64 >= lo) & (x64 <= hi)
    assert 10 < inside.sum() < x.numel() - 10  # both regimes present
    assert torch.equal(x.grad[inside], upstream[inside])  # identity, bit for bit
    assert torch.count_nonzero(x.grad[~inside]) == 0
    # clipped values saturate at the grid ends; the forward matches the no-grad path
    assert y[~inside & (x64 > hi)].detach().unique().tolist() == [hi]
    assert y[~inside & (x64 < lo)].detach().unique().tolist() == [lo]
    with torch.no_grad():
        assert torch.equal(fake_quantize(x, scale, zp, qt_type), y.detach())


def test_ste_per_channel_scale():
    x = torch.tensor([[0.5, 1.5, -2.5], [0.05, 0.15, -0.25]], requires_grad=True)
    scale = torch.tensor([[1.0 / 127], [0.1 / 127]])  # clip at ±1 and ±0.1
    y = fake_quantize(x, scale, 0.0, qint8)
    y.sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_quantize_tensor_with_given_scale_clips():
    x = torch.tensor([-4.0, -1.0, -0.26, 0.0, 0.24, 1.0, 4.0])
    qt = quantize_tensor(x, qint(4), scale=torch.tensor(0.5))
    assert qt.int_repr.tolist() == [-8, -2, -1, 0, 0, 2, 7]
    assert qt.dequantize().tolist() == [-4.0, -1.0, -0.5, 0.0, 0.0, 1.0, 3.5]


# ---------------------------------------------------------------- edge cases
@pytest.mark.parametrize("axis", [None, 0, -1], ids=["per_tensor", "per_channel_ax0", "per_channel_ax-1"])
@pytest.mark.parametrize("mode", MODES, ids=[m[0] for m in MODES])
@pytest.mark.parametrize("bits", [2, 8, 16], ids=lambda b: f"b{b}")
def test_all_zero_tensor(bits, mode, axis):
    _, signed, symmetric = mode
    x = torch.zeros(3, 4, 5)
    qt = quantize_tensor(x, QType(bits, signed), granularity(axis), symmetric=symmetric)
    assert torch.isfinite(qt.scale).all() and torch.all(qt.scale > 0)
    assert torch.count_nonzero(qt.int_repr) == 0
    deq = qt.dequantize()
    assert not torch.isnan(deq).any() and torch.count_nonzero(deq) == 0
    fq = fake_quantize(x, qt.scale, qt.zero_point, qt.qtype)
    assert not torch.isnan(fq).any() and torch.count_nonzero(fq) == 0


@pytest.mark.parametrize("mode", MODES, ids=[m[0] for m in MODES])
def test_all_zero_channel_per_channel(mode):
    _, signed, symmetric = mode
    w = torch.rand(4, 3, 5, generator=torch.Generator().manual_seed(0)) + 0.1
    w[2] = 0.0
    qt = quantize_tensor(w, QType(8, signed), PerChannel(0), symmetric=symmetric)
    assert torch.isfinite(qt.scale).all() and torch.all(qt.scale > 0)
    assert torch.count_nonzero(qt.int_repr[2] - qt.zero_point[2]) == 0
    deq = qt.dequantize()
    assert not torch.isnan(deq).any()
    assert torch.count_nonzero(deq[2]) == 0
    # other channels are untouched by the zero one: their max still lands on qmax
    for c in (0, 1, 3):
        assert qt.int_repr[c].max().item() == qt.qtype.qmax
        assert qt.scale[c].item() == pytest.approx(
            (w[c].max().item() - (0 if symmetric else min(w[c].min().item(), 0))) / qt.qtype.qmax, rel=1e-6)


def test_one_huge_outlier_sets_scale_and_collapses_the_rest():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1000, generator=g) * 2 - 1  # |x| < 1
    x[123] = 1.0e4
    qt = quantize_tensor(x, qint8)
    assert qt.scale.item() == pytest.approx(1.0e4 / 127, rel=2 * F32_EPS)
    codes = qt.int_repr
    assert codes[123].item() == 127
    assert qt.dequantize()[123].item() == pytest.approx(1.0e4, rel=1e-6)
    rest = torch.cat([codes[:123], codes[124:]])
    assert torch.count_nonzero(rest) == 0  # everything else collapses to code 0 ...
    deq = qt.dequantize()
    assert torch.count_nonzero(torch.cat([deq[:123], deq[124:]])) == 0  # ... and to exactly 0.0
    # per channel confines the damage to the outlier's channel
    x2 = torch.stack([x, torch.rand(1000, generator=g) * 2 - 1])
    qc = quantize_tensor(x2, qint8, PerChannel(0))
    assert torch.count_nonzero(qc.int_repr[0]) == 1
    assert torch.count_nonzero(qc.int_repr[1]) > 900


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("mode", MODES, ids=[m[0] for m in MODES])
def test_non_finite_input_is_value_error(bad, mode):
    _, signed, symmetric = mode
    x = torch.randn(4, 5)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"NaN.*Inf"):
        quantize_tensor(x, QType(8, signed), symmetric=symmetric)
    with pytest.raises(ValueError, match=r"NaN.*Inf"):
        quantize_tensor(x, QType(8, signed), PerChannel(0), symmetric=symmetric)


def test_check_finite_counts():
    x = torch.tensor([1.0, float("nan"), float("nan"), float("inf")])
    with pytest.raises(ValueError, match=r"weights holds 2 NaN and 1 Inf"):
        check_finite(x, "weights")
    check_finite(torch.randn(10))  # finite: no error


@pytest.mark.parametrize("bits", [0, 1, 17], ids=lambda b: f"b{b}")
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError):
        quantize_tensor(torch.randn(8), QType(bits))


@pytest.mark.parametrize("bits", [8.0, "8"], ids=["float", "str"])
def test_non_int_bits(bits):
    with pytest.raises(TypeError):
        quantize_tensor(torch.randn(8), QType(bits))


@pytest.mark.parametrize("bits", [2, 8, 16], ids=lambda b: f"b{b}")
def test_asymmetric_with_signed_qtype_is_value_error(bits):
    with pytest.raises(ValueError, match="unsigned"):
        quantize_tensor(torch.randn(8), qint(bits), symmetric=False)


@pytest.mark.parametrize("axis", [3, 4, -4, -7], ids=lambda a: f"ax{a}")
def test_per_channel_axis_out_of_range(axis):
    with pytest.raises(ValueError, match="out of range"):
        quantize_tensor(torch.randn(2, 3, 4), qint8, PerChannel(axis))


def test_per_channel_on_scalar_is_error():
    with pytest.raises(ValueError):
        quantize_tensor(torch.tensor(1.5), qint8, PerChannel(0))


def test_symmetric_scale_formula():
    s = symmetric_scale(torch.tensor([127.0, 0.0, 2.54]), qint8)
    assert s.tolist() == [1.0, 1.0, pytest.approx(0.02, rel=1e-6)]  # zero range -> safe scale 1
    assert symmetric_scale(torch.tensor(255.0), quint(8)).item() == 1.0
    assert symmetric_scale(torch.tensor(3.0), qint(2)).item() == 3.0  # qmax of 2-bit signed is 1
