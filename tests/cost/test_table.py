import warnings

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from vitquant_core import FLOAT, LayerSpec, QuantConfig
from vitquant_core.cost import as_dataframe, cost_table, cost_totals, operand_bits, priced
from vitquant_core.models import create_model, get_entry


def _rows(table):
    return {r.name: r for r in table}


@pytest.fixture
def vit16():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    # 16x16 input, 4x4 patches: 16 patches + class token = 17 tokens; dim 24, 2 heads of 12
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=2, mlp_ratio=2.0,
                             num_classes=5).eval()


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.down(x))


class _TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = _Block(4, 8, 2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_linear_by_hand():
    (row,) = cost_table(nn.Sequential(nn.Linear(10, 7)), (5, 10))  # 5 tokens of 10 features
    assert (row.name, row.kind) == ("0", "linear")
    assert row.macs == 5 * 10 * 7
    assert (row.params, row.weight_elems, row.bias_elems) == (77, 70, 7)
    assert (row.input_elems, row.input2_elems, row.output_elems) == (50, 0, 35)


def test_conv_with_stride_padding_groups_by_hand():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    (row,) = cost_table(nn.Sequential(conv), (4, 9, 9))
    # output 6 x 5 x 5 (floor((9 + 2 - 3) / 2) + 1 = 5); each output reads 4/2 channels x 3 x 3
    assert row.kind == "conv"
    assert row.macs == 6 * 5 * 5 * 2 * 3 * 3 == 2700
    assert (row.weight_elems, row.bias_elems) == (6 * 2 * 3 * 3, 6)
    assert (row.input_elems, row.output_elems) == (4 * 81, 150)


def test_attention_block_by_hand(vit16):
    table = cost_table(vit16, (3, 16, 16))
    n, c, h, d = 17, 24, 2, 12
    expected = {
        "patch_embed.proj": 16 * c * 3 * 4 * 4,
        "blocks.0.attn.qkv": n * c * 3 * c,
        "blocks.0.attn.matmul_qk": h * n * n * d,
        "blocks.0.attn.matmul_av": h * n * n * d,
        "blocks.0.attn.proj": n * c * c,
        "blocks.0.mlp.fc1": n * c * 2 * c,
        "blocks.0.mlp.fc2": n * 2 * c * c,
        "head": c * 5,  # the class token only
    }
    assert [r.name for r in table] == list(expected)  # execution order
    assert {r.name: r.macs for r in table} == expected
    rows = _rows(table)
    qk, av = rows["blocks.0.attn.matmul_qk"], rows["blocks.0.attn.matmul_av"]
    assert (qk.kind, qk.params) == ("matmul", 0)
    assert (qk.input_elems, qk.input2_elems, qk.output_elems) == (h * n * d, h * n * d, h * n * n)
    assert (av.input_elems, av.input2_elems, av.output_elems) == (h * n * n, h * n * d, n * c)
    assert (qk.a_from, qk.w_from) == ("blocks.0.attn.matmul_qk",) * 2
    assert (av.a_from, av.w_from) == ("blocks.0.attn.softmax", "blocks.0.attn.matmul_av")


def test_model_untouched(vit16):
    from timm.models.vision_transformer import Attention

    cost_table(vit16, (3, 16, 16))
    assert type(vit16.blocks[0].attn) is Attention


def test_tiny_resnet_folds_batchnorm_by_hand():
    model = _TinyResNet().eval()
    table = cost_table(model, (3, 8, 8))
    assert {r.name: r.macs for r in table} == {
        "conv1": 4 * 8 * 8 * 3 * 9,
        "layer1.conv1": 8 * 4 * 4 * 4 * 9,
        "layer1.conv2": 8 * 4 * 4 * 8 * 9,
        "layer1.down.0": 8 * 4 * 4 * 4,
        "fc": 8 * 3,
    }
    rows = _rows(table)
    # BatchNorm folded: each conv now carries a bias of one value per output channel
    assert (rows["conv1"].bias_elems, rows["layer1.conv2"].bias_elems, rows["layer1.down.0"].bias_elems) == (4, 8, 8)
    assert isinstance(model.bn1, nn.BatchNorm2d)  # on a copy


def test_priced_by_hand(vit16):
    table = cost_table(vit16, (3, 16, 16))
    # W4A8 everywhere, except the defaults kept in float: patch embedding, head, softmax output
    df = priced(table, QuantConfig.uniform(4, 8)).set_index("name")
    qkv = df.loc["blocks.0.attn.qkv"]
    assert (qkv.b_a, qkv.b_w) == (8, 4)
    assert qkv.bops == 17 * 24 * 72 * 4 * 8
    assert qkv.weight_bytes == (24 * 72 * 4 + 72 * 32) / 8  # biases stay 32-bit
    assert qkv.act_bytes == 17 * 24
    qk = df.loc["blocks.0.attn.matmul_qk"]
    assert (qk.b_a, qk.b_w, qk.bops, qk.weight_bytes) == (8, 8, 2 * 17 * 17 * 12 * 64, 0)
    assert qk.act_bytes == 2 * (2 * 17 * 12)  # q and k at one byte each
    av = df.loc["blocks.0.attn.matmul_av"]
    assert (av.b_a, av.b_w) == (32, 8)  # float softmax output times 8-bit v
    assert av.act_bytes == (2 * 17 * 17 * 32 + 2 * 17 * 12 * 8) / 8
    head = df.loc["head"]
    assert (head.b_a, head.b_w, head.bops) == (32, 32, 24 * 5 * 32 * 32)
    assert head.weight_bytes == (120 + 5) * 4
    assert cost_totals(df)["bops"] == df.bops.sum()


def test_priced_rules_and_float_attention(vit16):
    table = cost_table(vit16, (3, 16, 16))
    cfg = QuantConfig(LayerSpec(8, 8), (("*.fc2", LayerSpec(3, 6)), ("*.softmax", LayerSpec(None, 4))))
    rows = _rows(table)
    assert operand_bits(rows["blocks.0.mlp.fc2"], cfg) == (6, 3)
    assert operand_bits(rows["blocks.0.attn.matmul_av"], cfg) == (4, 8)
    no_attn = QuantConfig(LayerSpec(8, 8), quantize_attention=False)
    assert operand_bits(rows["blocks.0.attn.matmul_qk"], no_attn) == (None, None)
    assert operand_bits(rows["head"], QuantConfig(LayerSpec(8, 8), (("head", FLOAT),))) == (None, None)
    fp = priced(table, None)
    assert set(fp.b_a) == set(fp.b_w) == {32}
    assert fp.weight_bytes.sum() == 4 * fp.params.sum()
    assert (priced(table, "W8A8").bops == priced(table, QuantConfig.uniform(8, 8)).bops).all()


def test_total_matches_flop_counter_on_a_cnn():
    model = create_model("resnet20_cifar").eval()
    table = cost_table(model, (3, 32, 32))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert sum(r.macs for r in table) == counter.get_total_flops() // 2
    assert as_dataframe(table).macs.sum() == sum(r.macs for r in table)


def test_registry_models():
    n, c, h, d = 65, 192, 3, 64  # deit_tiny_cifar: 64 patches + class token, 3 heads of 64
    table = cost_table(create_model("deit_tiny_cifar"), get_entry("deit_tiny_cifar").input_size)
    assert len(table) == 12 * 6 + 2
    block = n * c * 3 * c + 2 * h * n * n * d + n * c * c + 2 * n * c * 4 * c
    assert sum(r.macs for r in table) == 12 * block + 64 * c * 48 + c * 10
    resnet = create_model("resnet18_cifar")
    table = cost_table(resnet, get_entry("resnet18_cifar").input_size)
    assert len(table) == 21  # 17 convs in the trunk, 3 downsampling convs, the fc
    # every BatchNorm folded: the convs' biases are exactly its channels
    n_bn = sum(m.num_features for m in resnet.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(r.bias_elems for r in table if r.kind == "conv") == n_bn


def test_unattributed_macs_warn():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.w = nn.Parameter(torch.ones(4, 3))

        def forward(self, x):
            return self.fc(x) @ self.w

    with pytest.warns(UserWarning, match="12 MACs ran outside"):
        table = cost_table(Functional(), (1, 4))
    assert [(r.name, r.macs) for r in table] == [("fc", 16)]


@pytest.mark.parametrize("shape", [(), (3, 0, 8), (3.0, 8, 8)], ids=["empty", "zero", "float"])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="without the batch dimension"):
        cost_table(nn.Linear(2, 2), shape)


def test_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        cost_table("resnet18", (3, 32, 32))
    with pytest.raises(TypeError, match="label such as 'W4A4'"):
        priced([], 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cost_table(nn.ReLU(), (3,)) == []
