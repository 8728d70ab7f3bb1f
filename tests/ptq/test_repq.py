"""RepQ-ViT: the reparameterization is exact in float and turns per-channel into per-tensor quantization."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vitquant_core.nn.modules import ActQuantizer, QuantLinear
from vitquant_core.nn.nonuniform import LogActQuantizer
from vitquant_core.ptq.repq import (
    norm_linear_pairs,
    post_ln_ranges,
    reparameterize,
    reparameterize_norm_linear,
    repq_quantize,
)
from vitquant_core.quant.quantizer import fake_quantize


def _vit(seed=0):
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2).eval()
    with torch.no_grad():  # LayerNorms with uneven channels, as trained ViTs have
        for _, norm, _, _ in norm_linear_pairs(vit):
            norm.weight.mul_(torch.rand(32) * 4 + 0.1)
            norm.bias.add_(torch.randn(32))
    return vit


def _calib(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]


def test_norm_linear_pairs_finds_every_block():
    names = [(n, lin) for n, _, lin, _ in norm_linear_pairs(_vit())]
    assert names == [("blocks.0.norm1", "blocks.0.attn.qkv"), ("blocks.0.norm2", "blocks.0.mlp.fc1"),
                     ("blocks.1.norm1", "blocks.1.attn.qkv"), ("blocks.1.norm2", "blocks.1.mlp.fc1")]


def test_reparameterization_leaves_float_output_unchanged():
    vit, calib = _vit(), _calib()
    x = torch.randn(4, 3, 16, 16)
    reparam, targets = reparameterize(vit, calib, 4)
    with torch.no_grad():
        assert torch.allclose(reparam(x), vit(x), atol=1e-4, rtol=1e-4)
        # the LayerNorm and Linear really changed
        assert not torch.allclose(reparam.blocks[0].norm1.weight, vit.blocks[0].norm1.weight)
    assert set(targets) == {"blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.1.attn.qkv", "blocks.1.mlp.fc1"}
    assert all(t["zero_point"] == round(t["zero_point"]) for t in targets.values())


def test_reparameterize_norm_linear_by_hand():
    norm, lin = torch.nn.LayerNorm(3), torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0, -1.0]))
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    r, b = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([0.25, 0.0, -1.0])
    x = torch.randn(5, 3)
    before = lin(norm(x)).detach()
    reparameterize_norm_linear(norm, lin, r, b)
    assert torch.equal(norm.weight.detach(), torch.tensor([0.5, 2.0, 6.0]))
    assert torch.equal(norm.bias.detach(), torch.tensor([0.0, 0.0, -1.0]))  # β/r − b
    assert torch.equal(lin.weight.detach(), torch.tensor([[2.0, 0.0, 0.5], [0.0, 1.0, 0.0]]))
    assert torch.equal(lin.bias.detach(), torch.tensor([0.5 - 0.5, 0.0]))  # W_new·b
    assert torch.allclose(lin(norm(x)), before, atol=1e-6)


def test_per_tensor_after_reparam_equals_per_channel_before():
    """Quantizing the new post-LN activation with (Δ̃, z̃) is quantizing the old one with (Δ_c, z_c)."""
    vit, calib = _vit(), _calib()
    ranges = post_ln_ranges(vit, calib, 4)
    reparam, targets = reparameterize(vit, calib, 4)
    from vitquant_core.quant.qtypes import quint
    x = torch.randn(2, 3, 16, 16)
    seen = {}
    for model, key in ((vit, "old"), (reparam, "new")):
        h = model.blocks[0].attn.qkv.register_forward_pre_hook(lambda _m, a, k=key: seen.__setitem__(k, a[0]))
        with torch.no_grad():
            model(x)
        h.remove()
    delta, zp = ranges["blocks.0.attn.qkv"]
    t = targets["blocks.0.attn.qkv"]
    old_codes = torch.clamp(torch.round(seen["old"] / delta) + zp, 0, 15)
    new_codes = torch.clamp(torch.round(seen["new"] / t["scale"]) + t["zero_point"], 0, 15)
    assert (old_codes != new_codes).float().mean() < 0.01  # equal but for float rounding at .5 ties
    assert quint(4).qmax == 15


def test_repq_quantize_applies_its_quantizers():
    vit, calib = _vit(), _calib()
    q = repq_quantize(vit, 4, 4, calib, progress=False)
    qkv = q.blocks[0].attn.qkv
    assert isinstance(qkv, QuantLinear) and isinstance(qkv.input_quantizer, ActQuantizer)
    assert qkv.input_quantizer.scale.ndim == 0  # per tensor after reparameterization
    assert float(qkv.input_quantizer.zero_point) == round(float(qkv.input_quantizer.zero_point))
    assert isinstance(q.blocks[0].attn.attn_quantizer, LogActQuantizer)
    assert qkv.w_quantizer.zero_point.abs().sum() > 0  # asymmetric weights
    assert q.vitquant_report.config["method"]["name"] == "repq-vit"
    # the head and the patch embedding are quantized under protocol "paper"
    assert isinstance(q.head, QuantLinear) and q.patch_embed.proj.input_quantizer.bits == 8
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        out = q(x)
    assert torch.isfinite(out).all()
    # the stored weight is exactly the fake-quantized reparameterized weight
    wq = qkv.w_quantizer
    assert torch.equal(qkv.weight_q, fake_quantize(qkv.weight, wq.scale, wq.zero_point, wq.qtype))


def test_repq_refuses_models_without_blocks():
    with pytest.raises(ValueError, match="timm-style blocks"):
        reparameterize(torch.nn.Sequential(torch.nn.Linear(3, 3)), [torch.randn(2, 3)], 4)
    with pytest.raises(ValueError, match="softmax quantizer"):
        repq_quantize(_vit(), 4, 4, _calib(), softmax="cubic")
