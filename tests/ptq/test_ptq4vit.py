"""PTQ4ViT (Yuan et al., ECCV 2022): the search, its gradients, its report, on a micro timm ViT."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from vitquant_core import quantize
from vitquant_core.nn.modules import QuantLinear
from vitquant_core.nn.nonuniform import TwinUniformActQuantizer
from vitquant_core.ptq.ptq4vit import (
    PTQ4ViTReport,
    SearchSettings,
    alternate,
    capture_operations,
    float_twin,
    ptq4vit_config,
    ptq4vit_quantize,
    quantized_operations,
)
from vitquant_core.ptq.ptq4vit.search import Operand
from vitquant_core.quant.qtypes import QType
from vitquant_core.quant.quantizer import fake_quantize

FAST = dict(n_candidates=20, progress=False)


def micro_vit(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5).eval()


@pytest.fixture(scope="module")
def model() -> VisionTransformer:
    return micro_vit()


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def runs(model, calib) -> dict[str, torch.nn.Module]:
    return {metric: ptq4vit_quantize(model, 4, 4, [calib], metric=metric, **FAST) for metric in ("hessian", "mse")}


# ----------------------------------------------------------------------------- the whole model
def test_every_quantized_operation_is_searched(runs) -> None:
    report = runs["hessian"].vitquant_report
    assert isinstance(report, PTQ4ViTReport) and report.method == "ptq4vit"
    names = [row["name"] for row in report.layers]
    # patch embedding, per block qkv/proj/fc1/fc2 and the two matmuls, and the head: 1 + 2*6 + 1
    assert len(names) == 14 and names[0] == "patch_embed.proj" and names[-1] == "head"
    assert {"blocks.1.attn.matmul_qk", "blocks.1.attn.matmul_av", "blocks.1.mlp.fc2"} <= set(names)
    assert report.method_config["metric"] == "hessian" and report.method_config["gradient"] == "fisher"
    assert report.method_config["n_search_images"] == 16 and report.calib_seconds > 0
    json.dumps(report.to_json())  # the report is plain JSON


@pytest.mark.parametrize("metric", ["hessian", "mse"])
def test_search_never_increases_an_objective_and_lowers_the_total(runs, metric) -> None:
    layers = runs[metric].vitquant_report.layers
    for row in layers:
        assert row["objective_after"] <= row["objective_before"] * (1 + 1e-5), row["name"]
    # at 4 bits the min-max scales are far from optimal: every operation improves, by > 10 % overall
    assert sum(r["objective_after"] / r["objective_before"] for r in layers) < 0.9 * len(layers)


def test_mse_objective_before_is_that_of_the_min_max_scales(model, calib, runs) -> None:
    """Recompute fc1's initial objective by hand: quantize() with the same config, float inputs."""
    start = quantize(model, ptq4vit_config("paper", 4, 4), [calib], progress=False)
    fc1: QuantLinear = start.get_submodule("blocks.0.mlp.fc1")  # type: ignore[assignment]
    seen = []
    hook = model.blocks[0].mlp.fc1.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        model(calib)
    hook.remove()
    x = seen[0]
    q = fc1.input_quantizer
    o = F.linear(x, fc1.weight, fc1.bias)
    o_hat = F.linear(fake_quantize(x, q.scale, q.zero_point, q.qtype), fc1.weight_q, fc1.bias)
    row = next(r for r in runs["mse"].vitquant_report.layers if r["name"] == "blocks.0.mlp.fc1")
    assert row["objective_before"] == pytest.approx(float((o - o_hat).pow(2).mean()), rel=1e-5)


def test_chosen_scales_are_installed_in_the_model(model, calib, runs) -> None:
    start = quantize(model, ptq4vit_config("paper", 4, 4), [calib], progress=False)
    q = runs["hessian"]
    for row in q.vitquant_report.layers:
        if row["kind"] != "linear":
            continue
        m0, m1 = start.get_submodule(row["name"]), q.get_submodule(row["name"])
        mult = torch.tensor(row["weight"]["multipliers"])
        assert torch.allclose(m1.w_quantizer.scale.reshape(-1), m0.w_quantizer.scale.reshape(-1) * mult, rtol=1e-3)
        if isinstance(m1.input_quantizer, TwinUniformActQuantizer):
            assert m1.input_quantizer.params["d_pos"] == row["input"]["d_pos"]
        else:
            assert float(m1.input_quantizer.scale) == pytest.approx(row["input"]["scale"])


def test_twin_uniform_parameters_are_powers_of_two(runs) -> None:
    for q in runs.values():
        for row in q.vitquant_report.layers:
            if row["kind"] == "matmul_av":
                split = row["attn"]["split"]
                assert split in [2.0 ** -i for i in range(20)] and split == 2.0 ** row["attn"]["split_log2"]
                attn = q.get_submodule(row["name"].rsplit(".", 1)[0]).attn_quantizer
                assert attn.params == {"split": split}
            if row["name"].endswith("fc2"):
                d = row["input"]
                assert d["d_pos"] / d["d_neg"] == 2.0 ** d["m"] and d["m"] >= 0
                assert d["d_neg"] == pytest.approx(0.16997124254703522 / 8)  # GELU's minimum over 2^(b-1)


def test_deterministic_for_a_fixed_seed(model, calib, runs) -> None:
    again = ptq4vit_quantize(model, 4, 4, [calib], metric="hessian", **FAST)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in again.vitquant_report.layers]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in runs["hessian"].vitquant_report.layers]
    with torch.no_grad():
        assert torch.equal(again(calib), runs["hessian"](calib))


def test_float_model_untouched_and_outputs_finite(model, calib, runs) -> None:
    before = copy.deepcopy(model.state_dict())
    ptq4vit_quantize(model, 6, 6, [calib], metric="mse", search_rounds=1, **FAST)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.isfinite(runs["mse"](calib)).all()


# ----------------------------------------------------------------------------- gradients
def test_fisher_gradients_carry_signal_where_the_published_ones_vanish(model, calib) -> None:
    qmodel = quantize(model, ptq4vit_config("paper", 4, 4), [calib], progress=False)
    ops = quantized_operations(qmodel)
    fisher = capture_operations(float_twin(qmodel), ops, calib, "fisher", seed=0)
    published = capture_operations(float_twin(qmodel), ops, calib, "published", seed=0)
    for name, _kind in ops:
        gf, gp = fisher[name].grad(), published[name].grad()
        assert gf.shape == gp.shape
        rms_f, max_p = float(gf.pow(2).mean().sqrt()), float(gp.abs().max())
        assert rms_f > 1e-4, name  # the Fisher gradients are O(0.01) on this model
        assert max_p < 1e-3 * rms_f, name  # KL against its own output: p - p, rounding only
    # the head's output gradient is softmax(z) - onehot(y): each row sums to zero, |.| <= 1
    g = fisher["head"].grad()
    assert torch.allclose(g.sum(1), torch.zeros(16), atol=1e-6) and float(g.abs().max()) <= 1.0


def test_captured_inputs_are_the_float_models(model, calib) -> None:
    qmodel = quantize(model, ptq4vit_config("paper", 4, 4), [calib], progress=False)
    rec = capture_operations(float_twin(qmodel), quantized_operations(qmodel), calib, None)
    seen = {}
    hook = model.blocks[1].attn.proj.register_forward_pre_hook(lambda _m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(calib)
    hook.remove()
    assert torch.allclose(rec["blocks.1.attn.proj"].operands()[0], seen["x"], atol=1e-6)
    probs, v = rec["blocks.1.attn.matmul_av"].operands()
    assert probs.shape == (16, 2, 17, 17) and torch.allclose(probs.sum(-1), torch.ones(16, 2, 17), atol=1e-5)
    b, h, n, d = v.shape
    assert torch.allclose((probs @ v).transpose(1, 2).reshape(b, n, h * d), seen["x"], atol=1e-5)


# ----------------------------------------------------------------------------- one search
def test_per_channel_weight_search_equals_brute_force_per_channel() -> None:
    """The objective separates by output channel: each channel gets its own best multiplier."""
    g = torch.Generator().manual_seed(3)
    x, weight = torch.randn(64, 8, generator=g), torch.randn(3, 8, generator=g) * torch.tensor([[1.0], [5.0], [0.2]])
    qtype = QType(3)
    s0 = weight.abs().amax(1, keepdim=True) / qtype.qmax
    mults = SearchSettings(0.3, 1.2, 10).multipliers()

    def fq(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return fake_quantize(t, s, 0.0, qtype)
    w = Operand("weight", weight, fq, [s0 * m for m in mults], s0.clone(), lambda s: None, lambda s: None, True)
    a = Operand("float", x, lambda t, _c: t, [], None, lambda _c: None, lambda _c: None)
    target = x @ weight.T
    before, after = alternate(lambda xa, wb: xa @ wb.T, a, w, target, None, 1, 1)
    for c in range(3):
        errs = [float((target[:, c] - x @ fq(weight[c], s0[c] * m)).pow(2).mean()) for m in mults]
        best = mults[min(range(len(mults)), key=errs.__getitem__)]
        assert float(w.current[c] / s0[c]) == pytest.approx(best, rel=1e-6)
    assert after < before


def test_weights_of_the_hessian_metric_steer_the_choice() -> None:
    """With w = 0 on every output but one, the per-tensor scale is that output's own optimum."""
    x = torch.tensor([[0.3], [1.0]])
    qtype = QType(2, signed=False)
    mults = SearchSettings(0.1, 1.2, 100).multipliers()
    s0 = torch.tensor(1.0 / qtype.qmax)

    def fq(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return fake_quantize(t, s, 0.0, qtype)
    ident = torch.ones(1, 1)
    a = Operand("input", x, fq, [s0 * m for m in mults], s0.clone(), lambda s: None, lambda s: None)
    b = Operand("float", ident, lambda t, _c: t, [], None, lambda _c: None, lambda _c: None)
    w = torch.tensor([[1.0], [0.0]])  # only the 0.3 matters: a scale that puts 0.3 on the grid wins
    _before, after = alternate(lambda xa, wb: xa @ wb, a, b, x, w, 1, 0)
    assert after == pytest.approx(0.0, abs=1e-6)
    assert any(abs(float(a.current) * k - 0.3) < 1e-4 for k in range(1, 4))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(w_bits=1), ValueError, r"w_bits must be an integer from 2 to 16, got 1"),
    (dict(a_bits=17), ValueError, r"a_bits must be an integer from 2 to 16, got 17"),
    (dict(w_bits=4.0), ValueError, r"w_bits must be an integer from 2 to 16, got 4.0"),
    (dict(metric="kl"), ValueError, r"metric must be one of \('hessian', 'mse'\), got 'kl'"),
    (dict(alpha=1.5), ValueError, r"need 0 < alpha < beta"),
    (dict(n_candidates=1), ValueError, r"n_candidates must be an int >= 2, got 1"),
    (dict(search_rounds=0), ValueError, r"search_rounds must be an int >= 1, got 0"),
    (dict(n_search_images=0), ValueError, r"n_search_images must be None .* got 0"),
    (dict(protocol="papers"), ValueError, r"protocol must be one of"),
    (dict(calib=[]), ValueError, r"the calibration set is empty"),
    (dict(calib=[torch.empty(0, 3, 16, 16)]), ValueError, r"the calibration set is empty"),
    (dict(calib=None), ValueError, r"PTQ4ViT needs calibration data"),
])
def test_bad_input_is_refused_where_it_enters(model, calib, kwargs, error, match) -> None:
    args = dict(w_bits=4, a_bits=4, calib=[calib])
    args.update(kwargs)
    w_bits, a_bits, data = args.pop("w_bits"), args.pop("a_bits"), args.pop("calib")
    with pytest.raises(error, match=match):
        ptq4vit_quantize(model, w_bits, a_bits, data, progress=False, **args)


def test_unknown_gradient_is_refused(model, calib) -> None:
    qmodel = quantize(model, ptq4vit_config("paper", 4, 4), [calib], progress=False)
    with pytest.raises(ValueError, match=r"gradient must be one of \('fisher', 'published'\) or None"):
        capture_operations(float_twin(qmodel), quantized_operations(qmodel), calib, "kl")


def test_default_protocol_keeps_the_softmax_and_head_in_float(model, calib) -> None:
    q = ptq4vit_quantize(model, 4, 4, [calib], protocol="default", search_rounds=1, **FAST)
    names = [r["name"] for r in q.vitquant_report.layers]
    assert "head" not in names and "patch_embed.proj" not in names
    av = next(r for r in q.vitquant_report.layers if r["kind"] == "matmul_av")
    assert "attn" not in av and "v" in av  # only v is quantized at attn·v
    assert math.isfinite(av["objective_after"])
