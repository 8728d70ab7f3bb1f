"""Non-uniform activation quantizers inside quantized models: calibration, search, errors."""
import math

import pytest
import torch
import torch.nn as nn

from vitquant_core.nn.config import LayerSpec, QuantConfig
from vitquant_core.nn.nonuniform import LogActQuantizer, TwinUniformActQuantizer
from vitquant_core.nn.quantize import quantize
from vitquant_core.quant import nonuniform as NU


def _probs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, 4, 16, 16, generator=g) * 3, dim=-1)


def test_log_quantizer_picks_repq_quantile_by_mse():
    x = _probs()
    q = LogActQuantizer(4, "sqrt2")
    q(x)
    q.finalize()
    flat = x.reshape(-1)
    cands = [float(torch.quantile(flat, p)) for p in (0.999, 0.9999, 0.99999)]
    errs = [float((NU.log_fake_quantize(flat, d, 4) - flat).pow(2).mean()) for d in cands]
    assert q.params["delta"] == pytest.approx(cands[errs.index(min(errs))])
    assert q.params["base"] == pytest.approx(math.sqrt(2))
    assert torch.equal(q(x), NU.log_fake_quantize(x, q.params["delta"], 4, math.sqrt(2)))


def test_adaptive_base_is_no_worse_than_sqrt2():
    x = _probs(seed=1)
    errs = {}
    for base in ("sqrt2", "adaptive"):
        q = LogActQuantizer(3, base)
        q(x)
        q.finalize()
        errs[base] = float((q(x) - x).pow(2).mean())
    assert errs["adaptive"] <= errs["sqrt2"]


def test_log_quantizer_refuses_negative_inputs():
    q = LogActQuantizer(4)
    q(torch.randn(4, 8))
    with pytest.raises(ValueError, match="non-negative"):
        q.finalize()


def test_twin_quantizers_search():
    x = _probs(seed=2)
    q = TwinUniformActQuantizer(4, "softmax")
    q(x)
    q.finalize()
    assert math.log2(q.params["split"]) == round(math.log2(q.params["split"]))  # a power of two
    g = nn.functional.gelu(torch.randn(64, 100) * 3)
    t = TwinUniformActQuantizer(4, "gelu")
    t(g)
    t.finalize()
    ratio = t.params["d_pos"] / t.params["d_neg"]
    assert t.params["d_neg"] * 8 == pytest.approx(NU.GELU_MIN) and ratio == 2 ** round(math.log2(ratio))
    errs = [float((NU.twin_gelu_fake_quantize(g, **c, bits=4) - g).pow(2).mean()) for c in t.candidates(g)]
    assert float((t(g) - g).pow(2).mean()) == pytest.approx(min(errs))


def test_config_places_quantizers():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2).eval()
    cfg = QuantConfig.uniform(4, 4, keep_float=()).with_rules({
        "*.softmax": LayerSpec(None, 4, a_quantizer="log_sqrt2"),
        "*.mlp.fc2": LayerSpec(4, 4, a_quantizer="twin_uniform"),
    })
    x = torch.randn(8, 3, 16, 16)
    q = quantize(vit, cfg, [x], progress=False)
    attn = q.blocks[0].attn
    assert isinstance(attn.attn_quantizer, LogActQuantizer) and attn.attn_quantizer.kind == "log_sqrt2"
    assert isinstance(q.blocks[1].mlp.fc2.input_quantizer, TwinUniformActQuantizer)
    assert q.blocks[1].mlp.fc2.input_quantizer.form == "gelu"
    out = q(x)
    assert torch.isfinite(out).all() and not torch.equal(out, vit(x))
    grids = {r["name"]: r.get("a_grid") for r in q.vitquant_report.ops}
    assert grids["blocks.0.attn.softmax"]["attn_quantizer"] == "log_sqrt2"
    # the new fields are in the JSON only when they differ from the default (stored keys stay put)
    assert "a_quantizer" not in LayerSpec().to_json() and LayerSpec.from_json(
        LayerSpec(a_quantizer="adalog").to_json()).a_quantizer == "adalog"
    with pytest.raises(ValueError, match="a_quantizer"):
        LayerSpec(a_quantizer="log3")


def test_asymmetric_weights_and_quantile_observer():
    lin = nn.Linear(16, 8)
    torch.manual_seed(0)
    with torch.no_grad():
        lin.weight.add_(0.3)  # shift: an asymmetric grid fits better
    spec = LayerSpec(3, None, w_signedness="asymmetric", w_observer="quantile_mse")
    sym = LayerSpec(3, None, w_observer="quantile_mse")
    errs = {}
    for name, s in (("asym", spec), ("sym", sym)):
        q = quantize(nn.Sequential(lin), QuantConfig(s), progress=False)
        errs[name] = float((q[0].weight_q - lin.weight.detach()).pow(2).mean())
        qt = q[0].quantized_weight()
        assert torch.equal(qt.dequantize(), q[0].weight_q)  # the integer form dequantizes exactly
    assert errs["asym"] < errs["sym"]
