"""The cheap proxies against hand computations: ModelOpt's Fisher-weighted error on one Linear,
the Hutchinson trace against the exact Hessian of a two-layer model, HAWQ's Ω."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitquant_core.analysis.sensitivity import fisher_proxy, hawq_proxy, hutchinson_trace, rademacher
from vitquant_core.nn import QuantConfig, quantize

W4A4 = QuantConfig.uniform(4, 4, keep_float=())


def one_linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, 4))
    with torch.no_grad():
        m[0].weight.mul_(3.0)
    return m.eval()


def test_fisher_proxy_by_hand():
    model = one_linear()
    g = torch.Generator().manual_seed(3)
    calib = [torch.randn(8, 6, generator=g)]
    x = torch.randn(5, 6, generator=g)
    r = fisher_proxy(model, {"W4A4": W4A4}, ["W4A4", "float"], calib, images=x, seed=7, chunk=16)
    # the labels: drawn from the float softmax with seed 7 (one chunk); ∂CE_sum/∂logits = p − onehot(y)
    with torch.no_grad():
        logits = model(x)
        p = logits.softmax(-1)
        y = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(7)).squeeze(1)
        grad = p - F.one_hot(y, 4).float()
        err = quantize(model, W4A4, calib, progress=False)(x) - logits  # the only operation: Ŷ − Y
    expected = float((grad.double() ** 2 * err.double() ** 2).sum())
    assert r.scores["0"]["W4A4"] == pytest.approx(expected, rel=1e-5)
    assert r.scores["0"]["float"] == 0.0 and r.seconds > 0 and expected > 0


def test_fisher_proxy_scores_every_vit_operation_and_is_deterministic(vit, data16):
    calib, _, _ = data16
    a = fisher_proxy(vit, "paper", ["W4A4", "W8A8", "float"], calib[:1], seed=1)
    b = fisher_proxy(vit, "paper", ["W4A4", "W8A8", "float"], calib[:1], seed=1)
    assert a.scores == b.scores
    assert len(a.scores) == 16 and "blocks.1.attn.softmax" in a.scores and "blocks.0.attn.matmul_qk" in a.scores
    for op, row in a.scores.items():
        assert row["float"] == 0.0 and row["W4A4"] > row["W8A8"] > 0, op  # 8 bits err far less than 4


def two_layer() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=g)
    return model, [(x[:6], y[:6]), (x[6:], y[6:])]


def exact_hessian(model: nn.Module, batches) -> torch.Tensor:
    """The Hessian of the mean cross-entropy over both weights, flattened (12 + 6 entries)."""
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    b1, b2 = model[0].bias.detach(), model[2].bias.detach()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        w1, w2 = flat[:12].reshape(3, 4), flat[12:].reshape(2, 3)
        return F.cross_entropy(F.linear(torch.tanh(F.linear(x, w1, b1)), w2, b2), y)
    flat = torch.cat([model[0].weight.detach().reshape(-1), model[2].weight.detach().reshape(-1)])
    return torch.autograd.functional.hessian(loss, flat)


def test_hutchinson_equals_its_formula_with_the_exact_hessian():
    model, batches = two_layer()
    h = exact_hessian(model, batches)
    r = hutchinson_trace(model, batches, n_samples=5, seed=2, chunk=4)  # several chunks per batch
    params = [model[0].weight, model[2].weight]
    est = torch.zeros(2, dtype=torch.float64)
    for s in range(5):  # the same vectors: vᵀ(Hv) restricted to each layer, cross terms included
        v = torch.cat([t.reshape(-1) for t in rademacher(params, 2, s)])
        hv = h @ v
        est += torch.stack([v[:12] @ hv[:12], v[12:] @ hv[12:]]) / 5
    assert [r.scores["0"]["trace"], r.scores["2"]["trace"]] == pytest.approx(est.tolist(), rel=1e-9, abs=1e-12)


def test_hutchinson_converges_to_the_exact_trace():
    model, batches = two_layer()
    h = exact_hessian(model, batches)
    exact = [float(h[:12, :12].trace()), float(h[12:, 12:].trace())]
    r = hutchinson_trace(model, batches, n_samples=400, seed=0, chunk=16)
    for op, t in zip(("0", "2"), exact):
        # stated tolerance: 4 standard errors of the 400-sample mean (and the error is measured)
        assert abs(r.scores[op]["trace"] - t) <= 4 * r.extra["stderr"][op], (op, r.scores[op], t)
        assert r.extra["trace_per_param"][op] == pytest.approx(r.scores[op]["trace"] / r.extra["n_params"][op])
    assert r.extra["stderr"]["2"] < 0.1 * abs(exact[1])  # 400 samples pin the larger block within 10 %


def test_hawq_is_trace_per_parameter_times_weight_error():
    model = one_linear()
    calib = [torch.randn(8, 6, generator=torch.Generator().manual_seed(1))]
    tr = hutchinson_trace(model, calib, n_samples=4)
    r = hawq_proxy(model, {"W4A4": W4A4}, ["W4A4", "float"], calib, trace=tr)
    qm = quantize(model, W4A4, calib, progress=False)
    werr = float(((qm[0].weight_q - model[0].weight).double() ** 2).sum())
    assert r.scores["0"]["W4A4"] == pytest.approx(tr.extra["trace_per_param"]["0"] * werr, rel=1e-6)
    assert r.scores["0"]["float"] == 0.0 and werr > 0


def test_proxies_refuse_bad_input(vit, data16):
    calib, _, _ = data16
    with pytest.raises(ValueError, match="n_samples"):
        hutchinson_trace(one_linear(), calib, n_samples=0)
    with pytest.raises(ValueError, match="not quantizable operations"):
        hutchinson_trace(vit, calib, ops=["blocks.0.attn.matmul_qk"])
    with pytest.raises(ValueError, match="no images"):
        fisher_proxy(vit, "paper", ["W4A4"], calib, images=[])
