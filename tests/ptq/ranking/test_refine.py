"""Ranking-aware PTQ of one layer (Liu et al., NeurIPS 2021): the search finds the scales that
quantize exactly, ends coordinate-wise optimal, keeps asymmetric zero points, and bias
correction is switchable."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from vitquant_core import QuantConfig, quantize
from vitquant_core.ptq import RankingAwareConfig, correct_bias, pearson_similarity, refine_linear


def exact_grid_case():
    """W = Δ_W·k and X = Δ_X·k with integer codes |k| ≤ 6 at 4 bits (qmax 7): the max-based scales
    are 6Δ/7 and the exact ones Δ = (7/6)·max-based, a grid point of linspace(0.5, 1.2, 22)."""
    g = torch.Generator().manual_seed(0)
    k_w = torch.randint(-6, 7, (8, 16), generator=g).float()
    k_w[:, 0] = 6.0  # every output channel reaches code 6: per-channel max-based scales are 6Δ_W/7
    k_x = torch.randint(-6, 7, (4, 5, 16), generator=g).float()
    k_x[0, 0, 0] = -6.0
    lin = nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.copy_(0.05 * k_w)
        # a seeded bias: nn.Linear's own draws from the global RNG, whose state depends on test order
        lin.bias.copy_(0.1 * torch.randn(8, generator=g))
    return lin, 0.1 * k_x


@pytest.mark.parametrize("w_bits, a_bits, role", [(4, None, "weight"), (None, 4, "input")])
def test_search_finds_the_scale_that_quantizes_exactly(w_bits, a_bits, role):
    """One operand quantized: only Δ = (7/6)·max-based gives Ô = X·Wᵀ (Pearson 1), and the
    search must return exactly that grid point."""
    lin, x = exact_grid_case()
    qlin = quantize(nn.Sequential(lin), QuantConfig.uniform(w_bits, a_bits, keep_float=()), [x],
                    progress=False)[0]
    info = refine_linear(qlin, x, RankingAwareConfig(n_candidates=22, bias_correction=False))
    assert info["searched"] and info["objective"] == "similarity" and list(info["multipliers"]) == [role]
    assert info["multipliers"][role] == pytest.approx(7 / 6, rel=1e-6)
    assert info["similarity_before"] < 0.999 and info["similarity_after"] > 1 - 1e-6
    assert info["rounds"] == 1  # a single operand needs no second round
    with torch.no_grad():  # the chosen scale is written back into the quantized layer
        torch.testing.assert_close(qlin(x), lin(x), rtol=1e-4, atol=1e-5)


def test_joint_search_ends_coordinate_wise_optimal():
    """Both operands: the alternating search is coordinate ascent, so it ends where neither
    scale alone can improve the objective, never below its start. (Here that is not the joint
    optimum (7/6, 7/6), which coordinate ascent can miss: the paper's algorithm, kept as is.)"""
    lin, x = exact_grid_case()
    qlin = quantize(nn.Sequential(lin), QuantConfig.uniform(4, 4, keep_float=()), [x], progress=False)[0]
    rq = RankingAwareConfig(n_candidates=22, bias_correction=False)
    info = refine_linear(copy.deepcopy(qlin), x, rq)
    assert info["objective_after"] > info["objective_before"]
    base_w = lin.weight.detach().abs().amax(dim=1, keepdim=True) / 7  # max-based, per channel
    base_x = x.abs().max() / 7
    chosen = {"weight": info["multipliers"]["weight"], "input": info["multipliers"]["input"]}
    for role in ("weight", "input"):  # brute force along each coordinate, the other fixed
        for m in rq.multipliers().tolist():
            mult = dict(chosen, **{role: m})
            trial = copy.deepcopy(qlin)
            trial.set_weight_scale(base_w * mult["weight"])
            trial.input_quantizer.set_scale(base_x * mult["input"])
            with torch.no_grad():
                assert float(pearson_similarity(lin(x), trial(x))) <= info["objective_after"] + 1e-6, (role, m)


def test_search_keeps_asymmetric_zero_points_and_per_tensor_weights():
    """Scaling an asymmetric range [min, max] by a multiplier leaves its zero point unchanged:
    the search moves the scale only, and writes it back without resetting the zero point."""
    from vitquant_core import PerTensor

    torch.manual_seed(0)
    lin = nn.Linear(12, 6)
    x = torch.rand(4, 7, 12) * 3 - 0.5  # mostly positive: a zero point well above 0
    cfg = QuantConfig.uniform(4, 4, w_granularity=PerTensor(), a_signedness="asymmetric", keep_float=())
    qlin = quantize(nn.Sequential(lin), cfg, [x], progress=False)[0]
    zp = qlin.input_quantizer.zero_point.clone()
    assert float(zp) > 0 and qlin.w_quantizer.scale.numel() == 1
    info = refine_linear(qlin, x, RankingAwareConfig(n_candidates=30, bias_correction=False))
    assert info["objective_after"] >= info["objective_before"]
    assert torch.equal(qlin.input_quantizer.zero_point, zp)
    assert isinstance(info["scales"]["weight"], float) and isinstance(info["scales"]["input"], float)
    with torch.no_grad():
        assert float(pearson_similarity(lin(x), qlin(x))) == pytest.approx(info["similarity_after"], abs=1e-6)


def test_bias_correction_zeroes_the_mean_error_and_is_switchable():
    torch.manual_seed(1)
    lin = nn.Linear(10, 7)
    x = torch.randn(6, 9, 10) + 0.5
    base = quantize(nn.Sequential(lin), QuantConfig.uniform(4, 4, keep_float=()), [x], progress=False)[0]
    for rq, corrected in [(RankingAwareConfig(similarity=False, ranking=False), True),
                          (RankingAwareConfig(similarity=False, ranking=False, bias_correction=False), False)]:
        qlin = copy.deepcopy(base)
        info = refine_linear(qlin, x, rq)
        assert not info["searched"] and ("bias_correction" in info) == corrected
        with torch.no_grad():
            mean_err = (qlin(x) - lin(x)).reshape(-1, 7).mean(0)
        assert (float(mean_err.abs().max()) < 1e-5) == corrected
    # against an explicit target (the float model's output): the mean error to it vanishes
    qlin = copy.deepcopy(base)
    target = lin(x).detach() + 0.25
    correct_bias(qlin, x, target)
    with torch.no_grad():
        assert float((qlin(x) - target).reshape(-1, 7).mean(0).abs().max()) < 1e-5
