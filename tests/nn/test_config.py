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


@pytest.mark.parametrize("key", ["rule", "fold_BN", "quantise_attention"])
def test_from_json_rejects_unknown_top_level_keys(key):
    d = QuantConfig.uniform(8, 8).to_json() | {key: False}
    with pytest.raises(ValueError, match=rf"unknown QuantConfig keys \['{key}'\]: the known ones are \['default', "
                                         r"'rules', 'quantize_attention', 'fold_bn'"):
        QuantConfig.from_json(json.dumps(d))


@pytest.mark.parametrize("value", ["false", "no", 0, 1, None], ids=["false-str", "no-str", "zero", "one", "null"])
@pytest.mark.parametrize("key", ["fold_bn", "quantize_attention"])
def test_from_json_accepts_only_json_booleans(key, value):
    d = QuantConfig.uniform(8, 8).to_json() | {key: value}
    with pytest.raises(TypeError, match=f"{key} must be True or False"):
        QuantConfig.from_json(json.dumps(d))
    back = QuantConfig.from_json(json.dumps(d | {key: False}))  # a real boolean is read as written
    assert getattr(back, key) is False


def test_from_json_rejects_malformed_rules():
    d = QuantConfig.uniform(8, 8).to_json()
    with pytest.raises(ValueError, match=r"'rules' must be a list of \[pattern, LayerSpec\] pairs"):
        QuantConfig.from_json(d | {"rules": {"head": {"w_bits": None, "a_bits": None}}})
    with pytest.raises(ValueError, match="a LayerSpec in JSON is an object"):
        QuantConfig.from_json(d | {"rules": [["head", 8]]})


def test_uniform_keep_float_string_is_one_pattern():
    cfg = QuantConfig.uniform(8, 8, keep_float="fc")
    assert cfg.rules == (("fc", FLOAT),)
    assert cfg.spec_for("fc").keep_float and not cfg.spec_for("f").keep_float
    assert not cfg.spec_for("c").keep_float


@pytest.mark.parametrize("label, w_bits, a_bits, back", [
    ("W4A8", 4, 8, "W4A8"), ("W8A8", 8, 8, "W8A8"), ("w6a6", 6, 6, "W6A6"), ("W2A16", 2, 16, "W2A16"),
    ("W8A32", 8, None, "W8A32"), ("W4", 4, None, "W4A32"), ("W32A8", None, 8, "W32A8"),
], ids=["w4a8", "w8a8", "lower-case", "limits", "float-acts", "weights-only", "float-weights"])
def test_from_label(label, w_bits, a_bits, back):
    cfg = QuantConfig.from_label(label)
    assert (cfg.default.w_bits, cfg.default.a_bits) == (w_bits, a_bits)
    assert cfg.label() == back and QuantConfig.from_label(back) == cfg
    assert cfg == QuantConfig.uniform(w_bits, a_bits)  # the uniform config, keep-float defaults included


def test_from_label_passes_uniform_options():
    cfg = QuantConfig.from_label("W4A8", w_granularity=PerTensor(), keep_float=())
    assert cfg.rules == () and cfg.default.w_granularity == PerTensor()


@pytest.mark.parametrize("label", ["W4A", "A8W4", "4/8", "W4A8A8", "", "int8", "W4 A8"],
                         ids=["no-a-bits", "swapped", "slash", "twice", "empty", "name", "space"])
def test_from_label_rejects_other_notations(label):
    with pytest.raises(ValueError, match=rf"setting '{label}' is not understood: settings are written like 'W4A8'"):
        QuantConfig.from_label(label)


@pytest.mark.parametrize("label", ["W1A8", "W4A64", "W17A8"])
def test_from_label_rejects_bits_out_of_range(label):
    with pytest.raises(ValueError, match=rf"setting '{label}': bits must be between 2 and 16, or 32"):
        QuantConfig.from_label(label)


def test_from_label_needs_a_string():
    with pytest.raises(TypeError, match="written like 'W4A8', got 4"):
        QuantConfig.from_label(4)


@pytest.mark.parametrize("gran", [PerChannel(0), PerChannel()], ids=["axis0", "default-axis"])
def test_activation_per_channel_on_batch_axis_is_refused(gran):
    with pytest.raises(ValueError, match=r"axis 0 of an activation is the batch axis.*PerChannel\(-1\)"):
        LayerSpec(a_granularity=gran)
    with pytest.raises(ValueError, match="batch axis"):
        QuantConfig.from_json({"default": {"a_granularity": {"kind": "per_channel", "axis": 0}}})
    assert LayerSpec(a_granularity=PerChannel(-1)).a_granularity == PerChannel(-1)
