"""Calibration observers: minmax, percentile and MSE scales, checked with numpy float64 arithmetic."""
import numpy as np
import pytest
import torch

from vitquant_core.quant import (
    OBSERVERS,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    PerChannel,
    PerTensor,
    affine_scale,
    make_observer,
    qint,
    qint8,
    quint,
    symmetric_scale,
)

F32_EPS = float(np.finfo(np.float32).eps)


def qgrid(bits, signed=True):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def fq_mse(x, scale, bits, signed=True, zero_point=0.0, axis=None):
    """Mean squared fake-quantization error in float64; per row of ``axis`` if given."""
    x = np.asarray(x, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zero_point, dtype=np.float64)
    qmin, qmax = qgrid(bits, signed)
    err = ((np.clip(np.rint(x / s) + z, qmin, qmax) - z) * s - x) ** 2
    if axis is None:
        return err.mean()
    return err.mean(axis=tuple(d for d in range(x.ndim) if d != axis % x.ndim))


def calibrate(name, qtype, batches, granularity=PerTensor(), symmetric=True, **kwargs):
    obs = make_observer(name, qtype, granularity, symmetric, **kwargs)
    for b in batches:
        obs.update(b)
    return obs.compute()


def laplace_with_outlier(n=20000, seed=0, outlier=60.0):
    rng = np.random.default_rng(seed)
    x = rng.laplace(0.0, 1.0, n).astype(np.float32)
    x[n // 3] = outlier
    return x


# ---------------------------------------------------------------- minmax
@pytest.mark.parametrize("bits", [2, 4, 8, 16], ids=lambda b: f"b{b}")
def test_minmax_running_absmax_across_batches(bits):
    g = torch.Generator().manual_seed(bits)
    batches = [torch.randn(16, 32, generator=g) * m for m in (1.0, 5.0, 0.5, 2.0)]
    batches[1][3, 4] = -40.0  # the global max|x| is negative and lives in an early batch
    obs = MinMaxObserver(qint(bits))
    for b in batches:
        obs.update(b)
    scale, zp = obs.compute()
    qmax = (1 << (bits - 1)) - 1
    assert scale.shape == (1, 1) and zp.shape == (1, 1)
    assert scale.item() == pytest.approx(40.0 / qmax, rel=F32_EPS)
    assert torch.equal(scale, symmetric_scale(torch.cat(batches).abs().amax().reshape(1, 1), qint(bits)))
    assert torch.count_nonzero(zp) == 0
    assert obs.n_observed == 4


def test_minmax_running_max_is_not_last_batch():
    obs = MinMaxObserver(qint8)
    obs.update(torch.tensor([[0.0, 12.7]]))
    obs.update(torch.tensor([[0.0, 1.0]]))
    assert obs.compute()[0].item() == pytest.approx(0.1, rel=F32_EPS)


def test_minmax_per_channel_activation_axis_last():
    g = torch.Generator().manual_seed(0)
    chan = torch.logspace(-2, 1, 12)
    batches = [torch.randn(4, 10, 12, generator=g) * chan for _ in range(3)]
    obs = MinMaxObserver(qint8, PerChannel(-1))
    for b in batches:
        obs.update(b)
    scale, zp = obs.compute()
    assert scale.shape == (1, 1, 12) and zp.shape == (1, 1, 12)
    expected = np.abs(torch.cat(batches).double().numpy()).max(axis=(0, 1)) / 127
    np.testing.assert_allclose(scale.flatten().numpy(), expected, rtol=F32_EPS)


def test_minmax_unsigned_and_asymmetric():
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(64, generator=g) * 3 - 0.5, torch.rand(64, generator=g) * 2 - 1.2]
    allx = torch.cat(batches)
    s_u, z_u = calibrate("minmax", quint(8), batches)
    assert s_u.item() == pytest.approx(allx.max().item() / 255, rel=F32_EPS) and z_u.item() == 0
    s_a, z_a = calibrate("minmax", quint(8), batches, symmetric=False)
    s_ref, z_ref = affine_scale(allx.min(), allx.max(), quint(8))
    assert torch.equal(s_a.flatten(), s_ref.flatten()) and torch.equal(z_a.flatten(), z_ref.flatten())
    assert s_a.item() == pytest.approx((allx.max() - allx.min()).item() / 255, rel=2 * F32_EPS)
    assert z_a.item() == round(-allx.min().item() / s_a.item())


# ---------------------------------------------------------------- percentile
@pytest.mark.parametrize("gran", [PerTensor(), PerChannel(0), PerChannel(-1)], ids=["per_tensor", "ax0", "ax-1"])
@pytest.mark.parametrize("qtype", [qint(4), qint(8), quint(8)], ids=["qint4", "qint8", "quint8"])
def test_percentile_100_equals_minmax(qtype, gran):
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(6, 50, generator=g).abs() ** 3 - 0.1 for _ in range(3)]
    s_p, z_p = calibrate("percentile", qtype, batches, gran, percentile=100.0)
    s_m, z_m = calibrate("minmax", qtype, batches, gran)
    assert s_p.shape == s_m.shape
    assert torch.equal(s_p, s_m) and torch.equal(z_p, z_m)


@pytest.mark.parametrize("bits", [4, 8], ids=lambda b: f"b{b}")
def test_percentile_99_clips_heavy_tail(bits):
    rng = np.random.default_rng(3)
    x = rng.standard_t(2, size=(4, 5000)).astype(np.float32)  # heavy tailed
    batches = [torch.from_numpy(r.copy()) for r in x]
    s_99, _ = calibrate("percentile", qint(bits), batches, percentile=99.0)
    s_max, _ = calibrate("minmax", qint(bits), batches)
    qmax = (1 << (bits - 1)) - 1
    a = np.sort(np.abs(x.astype(np.float64)).ravel())
    p99 = a[int(round(0.99 * (a.size - 1)))]
    assert s_99.item() == pytest.approx(p99 / qmax, rel=2 * F32_EPS)
    assert s_max.item() == pytest.approx(a[-1] / qmax, rel=2 * F32_EPS)
    assert s_99.item() < 0.2 * s_max.item()  # far below the max on a t(2) tail
    # exactly ~1 % of the values saturate
    assert np.mean(np.abs(x) > p99) == pytest.approx(0.01, abs=5e-4)


@pytest.mark.parametrize("p", [97.0, 99.5, 80.0, 100.0], ids=lambda p: f"p{p}")
def test_percentile_is_nearest_rank(p):
    x = torch.arange(11, dtype=torch.float32) * 12.7  # |x| = 0, 12.7, ..., 127
    s, _ = calibrate("percentile", qint8, [x], percentile=p)
    expected = np.percentile(x.double().numpy(), p, method="nearest")
    assert s.item() == pytest.approx(expected / 127, rel=F32_EPS)


def test_percentile_bounds():
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(qint8, percentile=50.0)
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(qint8, percentile=100.5)


# ---------------------------------------------------------------- MSE
@pytest.mark.parametrize("bits", [3, 4, 6, 8], ids=lambda b: f"b{b}")
def test_mse_beats_minmax_and_percentile_on_laplace_with_outlier(bits):
    x = laplace_with_outlier(seed=bits)
    batches = [torch.from_numpy(x[:10000].copy()), torch.from_numpy(x[10000:].copy())]
    s_mse = calibrate("mse", qint(bits), batches)[0].item()
    others = {"minmax": calibrate("minmax", qint(bits), batches)[0].item()}
    for p in (99.0, 99.9, 99.99):
        others[f"p{p}"] = calibrate("percentile", qint(bits), batches, percentile=p)[0].item()
    e_mse = fq_mse(x, s_mse, bits)
    errs = {k: fq_mse(x, s, bits) for k, s in others.items()}
    for k, e in errs.items():
        assert e_mse <= e * (1 + 1e-6), f"mse observer worse than {k}: {e_mse} > {e}"
    assert e_mse < errs["minmax"] and s_mse < others["minmax"]
    if bits <= 4:  # at low bits the outlier-stretched grid costs minmax a lot
        assert e_mse < 0.5 * errs["minmax"]
    else:  # at high bits clipping the outlier costs more than it saves: percentiles lose
        assert e_mse < 0.9 * min(errs["p99.0"], errs["p99.9"], errs["p99.99"])


@pytest.mark.parametrize("bits", [4, 8], ids=lambda b: f"b{b}")
def test_mse_is_argmin_over_its_candidate_grid(bits):
    """Brute force in float64: the chosen scale is the best of the candidate fractions of max|x|."""
    x = laplace_with_outlier(n=8000, seed=10 + bits, outlier=25.0)
    obs = MSEObserver(qint(bits), n_candidates=100, min_fraction=0.05)
    obs.update(torch.from_numpy(x))
    s_mse = obs.compute()[0].item()
    qmax = (1 << (bits - 1)) - 1
    amax = float(np.abs(x).max())
    fractions = torch.linspace(0.05, 1.0, 100).double().numpy()
    cand = [fq_mse(x, np.float32(np.float32(amax * f) / qmax), bits) for f in fractions]
    best = min(cand)
    assert fq_mse(x, s_mse, bits) <= best * (1 + 1e-6)
    f_chosen = s_mse * qmax / amax
    assert 0.05 - 1e-6 <= f_chosen <= 1.0 + 1e-6
    assert np.min(np.abs(fractions - f_chosen)) < 1e-5  # lands on a candidate


@pytest.mark.parametrize("bits, min_frac", [(4, 0.9), (6, 0.95), (8, 0.97)], ids=["b4", "b6", "b8"])
def test_mse_picks_nearly_full_range_on_uniform(bits, min_frac):
    rng = np.random.default_rng(bits)
    x = torch.from_numpy(rng.uniform(-1.0, 1.0, 20000).astype(np.float32))
    s_mse = calibrate("mse", qint(bits), [x])[0].item()
    s_max = calibrate("minmax", qint(bits), [x])[0].item()
    assert min_frac <= s_mse / s_max <= 1.0 + 1e-6
    assert fq_mse(x.numpy(), s_mse, bits) <= fq_mse(x.numpy(), s_max, bits) * (1 + 1e-6)


@pytest.mark.parametrize("axis", [0, -1], ids=["ax0", "ax-1"])
def test_mse_per_channel_weights(axis):
    rng = np.random.default_rng(4)
    shape = (16, 8, 3, 3)
    c = shape[axis]
    view = [1, 1, 1, 1]
    view[axis % 4] = c
    w = torch.from_numpy(rng.laplace(0.0, 1.0, shape).astype(np.float32)) * torch.logspace(-2, 0, c).reshape(view)
    obs = make_observer("mse", qint(4), PerChannel(axis))
    obs.update(w)
    s_mse, zp = obs.compute()
    s_max = calibrate("minmax", qint(4), [w], PerChannel(axis))[0]
    assert list(s_mse.shape) == view and list(zp.shape) == view
    assert torch.count_nonzero(zp) == 0
    assert torch.all(s_mse > 0) and torch.all(s_mse <= s_max * (1 + 1e-6))
    # one scale per channel, in each channel no worse than min-max, and better overall
    e_mse = fq_mse(w.numpy(), s_mse.numpy(), 4, axis=axis)
    e_max = fq_mse(w.numpy(), s_max.numpy(), 4, axis=axis)
    assert e_mse.shape == (c,)
    assert np.all(e_mse <= e_max * (1 + 1e-6))
    assert e_mse.sum() < e_max.sum()
    # channels keep their own ranges: scales follow the channel spread
    assert s_mse.flatten()[-1] > 10 * s_mse.flatten()[0]


def test_mse_asymmetric_no_worse_than_minmax():
    rng = np.random.default_rng(5)
    x = np.maximum(rng.laplace(0.5, 1.0, 20000), -0.3).astype(np.float32)  # GELU-like skew
    x[7] = 40.0
    t = torch.from_numpy(x)
    s_m, z_m = calibrate("mse", quint(4), [t], symmetric=False)
    s_x, z_x = calibrate("minmax", quint(4), [t], symmetric=False)
    e_m = fq_mse(x, s_m.item(), 4, signed=False, zero_point=z_m.item())
    e_x = fq_mse(x, s_x.item(), 4, signed=False, zero_point=z_x.item())
    assert e_m < 0.5 * e_x
    assert z_m.item() == round(z_m.item()) and 0 <= z_m.item() <= 15


# ---------------------------------------------------------------- errors, edge cases, determinism
@pytest.mark.parametrize("name", OBSERVERS)
def test_no_data_is_runtime_error(name):
    obs = make_observer(name, qint8)
    with pytest.raises(RuntimeError, match="calibrat"):
        obs.compute()
    obs.update(torch.empty(0, 4))  # an empty batch is still no data
    with pytest.raises(RuntimeError, match="calibrat"):
        obs.compute()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", OBSERVERS)
def test_non_finite_observation_is_value_error(name, bad):
    obs = make_observer(name, qint8)
    x = torch.randn(3, 4)
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN.*Inf"):
        obs.update(x)
    assert obs.n_observed == 0


@pytest.mark.parametrize("name", OBSERVERS)
def test_all_zero_observation_gives_finite_scale(name):
    obs = make_observer(name, qint8, PerChannel(0))
    w = torch.randn(3, 8)
    w[1] = 0.0
    obs.update(w)
    scale, zp = obs.compute()
    assert torch.isfinite(scale).all() and torch.all(scale > 0) and torch.count_nonzero(zp) == 0


@pytest.mark.parametrize("name", ["percentile", "mse"])
def test_same_seed_same_scales(name):
    rng = np.random.default_rng(6)
    batches = [torch.from_numpy(rng.standard_t(3.0, (4, 5000)).astype(np.float32)) for _ in range(3)]
    kw = {"percentile": 99.9} if name == "percentile" else {}
    results = []
    for _ in range(2):
        obs = make_observer(name, qint(4), PerChannel(0), max_samples=2000, seed=123, **kw)
        for b in batches:
            obs.update(b)
        assert obs.samples.shape == (4, 500)  # the bounded sample really subsampled
        results.append(obs.compute()[0])
    assert torch.equal(results[0], results[1])


def test_make_observer():
    assert isinstance(make_observer("minmax", qint8), MinMaxObserver)
    p = make_observer("percentile", qint8, percentile=99.5, n_candidates=7)  # irrelevant kwargs dropped
    assert isinstance(p, PercentileObserver) and p.percentile == 99.5
    m = make_observer("mse", qint8, PerChannel(1), n_candidates=17, percentile=1.0)
    assert isinstance(m, MSEObserver) and m.n_candidates == 17 and m.granularity == PerChannel(1)
    assert m.describe() == {"observer": "mse", "n_candidates": 17}
    assert set(OBSERVERS) == {"minmax", "percentile", "mse", "quantile_mse"}
    with pytest.raises(ValueError, match="bogus"):
        make_observer("bogus", qint8)


@pytest.mark.parametrize("name", OBSERVERS)
def test_asymmetric_observer_needs_unsigned(name):
    with pytest.raises(ValueError, match="unsigned"):
        make_observer(name, qint8, symmetric=False)


def test_observer_rejects_rank_change():
    obs = MinMaxObserver(qint8)
    obs.update(torch.randn(2, 3))
    with pytest.raises(ValueError, match="3-d"):
        obs.update(torch.randn(2, 3, 4))


@pytest.mark.parametrize("axis", [3, -4], ids=["ax3", "ax-4"])
def test_observer_per_channel_axis_out_of_range(axis):
    obs = MinMaxObserver(qint8, PerChannel(axis))
    with pytest.raises((ValueError, IndexError)):
        obs.update(torch.randn(2, 3, 4))
