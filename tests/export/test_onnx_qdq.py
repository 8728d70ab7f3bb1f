"""QDQ export: our scales in the graph, ONNX Runtime's int8 engine against our simulation."""
import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from vitquant_core import QuantConfig, quantize
from vitquant_core.export import ExportError, export_qdq, kernel_counts, ort_session, qdq_params, run
from vitquant_core.models import create_model
from vitquant_core.nn import ActQuantizer, QuantAttention, QuantConv2d, QuantLinear

# The engine and the simulation compute the same integer codes except where ONNX Runtime's
# fused kernels round a requantized value (int32 accumulator × combined scale) to the other
# side of a .5 boundary than float conv + round(x / s) does: a one-code step on a few
# activations. Tolerance: relative L2 error of the logits <= 2 % (measured: 0.2 % on the CNN,
# 0.6 % on the ViT), and >= 95 % top-1 agreement on random inputs.
REL_TOL = 0.02
AGREE_MIN = 0.95


def _resnet20():
    torch.manual_seed(0)
    m = create_model("resnet20_cifar")
    for mod in m.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def cnn():
    m = _resnet20()
    calib = [torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))]
    return m, quantize(m, QuantConfig.uniform(8, 8), calib, progress=False), calib


@pytest.fixture(scope="module")
def vit():
    import timm

    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                          num_classes=10).eval()
    calib = [torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))]
    # the softmax output quantized too (uint8), so that all four attention quantizers are exported
    cfg = QuantConfig.uniform(8, 8, keep_float=("patch_embed.*", "head"))
    return m, quantize(m, cfg, calib, progress=False), calib


def _inputs(n=64, seed=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _compare(qmodel, path):
    x = _inputs()
    with torch.no_grad():
        ref = qmodel(x).numpy()
    out = run(ort_session(path, threads=1), x)
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    agree = (out.argmax(1) == ref.argmax(1)).mean()
    return rel, agree


@pytest.mark.parametrize("which", ["cnn", "vit"])
def test_int8_engine_matches_simulation(which, request, tmp_path):
    _, qmodel, _ = request.getfixturevalue(which)
    path = export_qdq(qmodel, _inputs(2), tmp_path / "q.onnx")
    rel, agree = _compare(qmodel, path)
    assert rel <= REL_TOL, f"relative logit error {rel:.4f}"
    assert agree >= AGREE_MIN
    # the engine really runs integer kernels, not float ops on dequantized tensors
    counts = kernel_counts(path)
    n_int = sum(v for k, v in counts.items() if k in ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat"))
    assert n_int >= (6 if which == "cnn" else 8), counts


def _expected_quantizers(qmodel):
    out = {}
    for name, m in qmodel.named_modules():
        if isinstance(m, (QuantConv2d, QuantLinear)) and m.input_quantizer is not None:
            out[f"{name}.input_quantizer"] = m.input_quantizer
        if isinstance(m, QuantAttention):
            for attr in ("q_quantizer", "k_quantizer", "attn_quantizer", "v_quantizer"):
                if getattr(m, attr) is not None:
                    out[f"{name}.{attr}"] = getattr(m, attr)
    return out


@pytest.mark.parametrize("which", ["cnn", "vit"])
def test_graph_carries_exactly_our_scales(which, request, tmp_path):
    _, qmodel, _ = request.getfixturevalue(which)
    path = export_qdq(qmodel, _inputs(2), tmp_path / "q.onnx")
    params = qdq_params(path)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    weighted = {n: m for n, m in qmodel.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    assert weighted
    for name, m in weighted.items():
        p = params[name]
        assert np.array_equal(p.scale, m.w_quantizer.scale.reshape(-1).numpy())
        assert p.dtype == np.int8 and not p.zero_point.any()
        assert p.axis == (0 if isinstance(m, QuantConv2d) else 1)  # Linear weights are stored as Wᵀ
        codes = m.quantized_weight().int_repr.numpy()
        stored = inits[f"{name}.weight_qdq"]
        assert np.array_equal(stored, codes if isinstance(m, QuantConv2d) else codes.T)
    acts = _expected_quantizers(qmodel)
    if which == "vit":
        assert sum(k.endswith("attn_quantizer") for k in acts) == 2
    for name, q in acts.items():
        p = params[name]
        assert p.scale.dtype == np.float32 and float(p.scale) == float(q.scale)
        assert int(p.zero_point) == int(q.zero_point)
        assert p.dtype == (np.int8 if q.qtype.signed else np.uint8)
    # one Q → DQ pair per activation quantizer, and nothing else quantized
    assert set(params) == set(weighted) | set(acts)
    n_q = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    assert n_q == len(acts)


def test_unsigned_grid_for_post_relu_inputs(cnn, tmp_path):
    _, qmodel, _ = cnn
    params = qdq_params(export_qdq(qmodel, _inputs(2), tmp_path / "q.onnx"))
    # every conv input of a ResNet follows a ReLU: our calibration picks the uint8 grid
    assert params["layer1.0.conv1.input_quantizer"].dtype == np.uint8


def test_output_calibration_runs_every_quantized_conv_in_integers(cnn, tmp_path):
    _, qmodel, calib = cnn
    path = export_qdq(qmodel, _inputs(2), tmp_path / "int.onnx", output_calib=calib)
    counts = kernel_counts(path)
    n_quantized_convs = sum(isinstance(m, QuantConv2d) for m in qmodel.modules())  # 21, the stem stays float
    assert counts.get("QLinearConv") == n_quantized_convs
    assert counts.get("Conv", 0) + counts.get("FusedConv", 0) == 1
    # the residual adds of the 9 blocks run in int8, but the last one, which feeds float pooling
    assert counts.get("QLinearAdd") == 8 and counts.get("Add") == 1
    # one extra requantization per residual branch and 8-bit shortcuts: looser than the
    # faithful export (measured 0.7 %)
    rel, agree = _compare(qmodel, path)
    assert rel <= 0.03 and agree >= AGREE_MIN


@pytest.mark.parametrize("label", ["W4A4", "W8A4", "W4A8"])
def test_lower_widths_are_refused(cnn, label, tmp_path):
    m, _, calib = cnn
    q = quantize(m, QuantConfig.from_label(label), calib, progress=False)
    with pytest.raises(ExportError, match="simulated only"):
        export_qdq(q, _inputs(2), tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_non_uniform_quantizers_are_refused(vit, tmp_path):
    from vitquant_core.nn.nonuniform import LogActQuantizer

    _, qmodel, _ = vit
    q = copy.deepcopy(qmodel)
    attn = next(m for m in q.modules() if isinstance(m, QuantAttention))
    attn.attn_quantizer = LogActQuantizer(8)
    with pytest.raises(ExportError, match="LogActQuantizer.*simulated only"):
        export_qdq(q, _inputs(2), tmp_path / "q.onnx")

    class OtherGrid(ActQuantizer):  # a subclass changes the grid; only the plain class maps onto int8
        pass

    q = copy.deepcopy(qmodel)
    lin = next(m for m in q.modules() if isinstance(m, QuantLinear))
    old = lin.input_quantizer
    lin.input_quantizer = OtherGrid(8)
    lin.input_quantizer.load_state_dict(old.state_dict())
    with pytest.raises(ExportError, match="OtherGrid"):
        export_qdq(q, _inputs(2), tmp_path / "q.onnx")


def test_uncalibrated_model_is_refused(cnn, tmp_path):
    from vitquant_core.nn import prepare

    q, _ = prepare(cnn[0], QuantConfig.uniform(8, 8))
    with pytest.raises(ExportError, match="not calibrated"):
        export_qdq(q, _inputs(2), tmp_path / "q.onnx")


def test_asymmetric_grid_keeps_our_zero_points(vit, tmp_path):
    m, _, calib = vit
    q = quantize(m, QuantConfig.uniform(8, 8, a_signedness="asymmetric"), calib, progress=False)
    path = export_qdq(q, _inputs(2), tmp_path / "q.onnx")
    params = qdq_params(path)
    fc1 = q.get_submodule("blocks.0.mlp.fc1").input_quantizer  # a LayerNorm output: negative values
    p = params["blocks.0.mlp.fc1.input_quantizer"]
    assert p.dtype == np.uint8 and int(p.zero_point) == int(fc1.zero_point) > 0
    rel, agree = _compare(q, path)
    assert rel <= REL_TOL and agree >= AGREE_MIN
