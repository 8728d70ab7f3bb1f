"""Each protocol quantizes exactly the operations its table lists."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vitquant_core.nn.config import LayerSpec, QuantConfig
from vitquant_core.nn.protocols import PROTOCOLS, protocol_config, protocol_table
from vitquant_core.nn.quantize import quantize


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2).eval()


def _ops(vit, protocol):
    q = quantize(vit, protocol_config(protocol, 4, 6), [torch.randn(4, 3, 16, 16)], progress=False)
    rep = q.vitquant_report
    return {o["name"]: o for o in rep.ops}, set(rep.float_ops)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_protocol_quantizes_what_its_table_says(vit, protocol):
    ops, floats = _ops(vit, protocol)
    table = {r["operation"]: r[protocol] for r in protocol_table(protocol)}
    paper = protocol == "paper"
    # patch embedding
    assert table["patch embedding (conv)"] == ("W bits, input 8 bits" if paper else "float")
    if paper:
        assert ops["patch_embed.proj"]["w_bits"] == 4 and ops["patch_embed.proj"]["a_bits"] == 8
    else:
        assert "patch_embed.proj" in floats
    # every block Linear: W bits, input A bits
    for b in range(2):
        for lin in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            o = ops[f"blocks.{b}.{lin}"]
            assert (o["w_bits"], o["a_bits"]) == (4, 6)
        for mm in ("matmul_qk", "matmul_av"):
            assert ops[f"blocks.{b}.attn.{mm}"]["a_bits"] == 6
        soft = f"blocks.{b}.attn.softmax"
        assert (ops[soft]["a_bits"] == 6) if paper else (soft in floats)
    assert (ops["head"]["w_bits"], ops["head"]["a_bits"]) == (4, 6) if paper else "head" in floats
    assert table["classifier head (Linear)"] == ("W bits, input A bits" if paper else "float")
    assert table["post-softmax attention (operand of attn·v)"] == ("A bits" if paper else "float")
    # nothing else is quantized, nothing else is float
    expected = 1 + 2 * (4 + 3) + 1 if paper else 2 * (4 + 2)
    assert len(ops) == expected


def test_default_protocol_is_the_books_uniform_config():
    for w, a in ((8, 8), (4, 4), (3, 3)):
        assert protocol_config("default", w, a).to_json() == QuantConfig.uniform(w, a).to_json()


def test_method_rules_get_the_settings_bits():
    cfg = protocol_config("paper", 3, 5, rules={"*.softmax": LayerSpec(None, 8, a_quantizer="log_sqrt2")})
    spec = cfg.spec_for("blocks.0.attn.softmax")
    assert spec.a_bits == 5 and spec.w_bits is None and spec.a_quantizer == "log_sqrt2"
    embed = cfg.spec_for("patch_embed.proj")
    assert embed.w_bits == 3 and embed.a_bits == 8 and embed.a_quantizer == "uniform"
    # under the default protocol the softmax stays float, whatever a method's rules say
    assert protocol_config("default", 3, 5, rules={"*.softmax": LayerSpec(None, 8)}).spec_for(
        "blocks.0.attn.softmax").keep_float


def test_unknown_protocol():
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocol_config("papers", 4, 4)
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocol_table("fp")
