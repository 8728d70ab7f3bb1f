import json

import pytest

from vitquant_core.nn.config import DEFAULT_KEEP_FLOAT, FLOAT, LayerSpec, QuantConfig
from vitquant_core.quant import PerChannel, PerTensor


@pytest.mark.parametrize("cfg", [
    QuantConfig.uniform(8, 8),
    QuantConfig.uniform(4, None, w_granularity=PerTensor()),
    QuantConfig.uniform(6, 6, a_observer="mse", a_granularity=PerChannel(-1), keep_float=()),
    QuantConfig.uniform(8, 8).with_rules({"blocks.8.mlp.fc2": LayerSpec(w_bits=4, a_bits=8, a_observer="percentile",
                                                                        percentile=99.9)}),
], ids=["w8a8", "w4-per-tensor", "w6a6-mse-per-channel-acts", "mixed"])
def test_json_round_trip(cfg):
    text = json.dumps(cfg.to_json())
    back = QuantConfig.from_json(text)
    assert back == cfg
    assert back.to_json() == cfg.to_json()


def test_first_matching_rule_wins():
    cfg = QuantConfig(LayerSpec(8, 8), (("blocks.0.*", LayerSpec(4, 4)), ("blocks.*", LayerSpec(6, 6))))
    assert cfg.spec_for("blocks.0.attn.qkv").w_bits == 4
    assert cfg.spec_for("blocks.3.mlp.fc1").w_bits == 6
    assert cfg.spec_for("head").w_bits == 8


def test_default_keep_float_is_explicit():
    cfg = QuantConfig.uniform(8, 8)
    for name in ("patch_embed.proj", "head", "conv1", "fc", "blocks.3.attn.softmax"):
        assert cfg.spec_for(name).keep_float, name
    for name in ("layer1.0.conv1", "blocks.3.attn.qkv", "blocks.3.attn.matmul_qk"):
        assert not cfg.spec_for(name).keep_float, name
    assert set(DEFAULT_KEEP_FLOAT) == {p for p, s in cfg.rules if s == FLOAT}
    assert "LayerNorm" in cfg.to_json()["never_quantized"]


@pytest.mark.parametrize("kwargs, err", [
    ({"w_bits": 1}, ValueError), ({"a_bits": 17}, ValueError), ({"w_bits": 32}, ValueError),
    ({"w_bits": 8.0}, TypeError), ({"w_observer": "absmax"}, ValueError), ({"a_signedness": "both"}, ValueError),
    ({"w_granularity": "per_channel"}, TypeError), ({"percentile": 20.0}, ValueError),
], ids=["w1", "a17", "w32", "float-bits", "bad-observer", "bad-sign", "string-granularity", "bad-percentile"])
def test_bad_spec_is_a_clear_error(kwargs, err):
    with pytest.raises(err):
        LayerSpec(**kwargs)


def test_from_json_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown"):
        QuantConfig.from_json({"default": {"w_bits": 8, "bits": 4}})
    with pytest.raises(ValueError, match="default"):
        QuantConfig.from_json({"rules": []})


def test_save_load(tmp_path):
    cfg = QuantConfig.uniform(6, 8)
    cfg.save(tmp_path / "c.json")
    assert QuantConfig.load(tmp_path / "c.json") == cfg


def test_describe_names_float_layers():
    text = QuantConfig.uniform(4, 4).describe()
    assert "4-bit per_channel weights" in text and "head: float" in text and "LayerNorm" in text
