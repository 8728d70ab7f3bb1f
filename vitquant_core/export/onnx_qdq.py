"""ONNX export of a quantized model as QuantizeLinear / DequantizeLinear (QDQ) pairs.

The QDQ format (ONNX operators QuantizeLinear and DequantizeLinear, opset >= 13; ONNX
Runtime's "QDQ format", https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html)
marks each quantized tensor by a Q → DQ pair carrying its scale and zero point; ONNX
Runtime's graph optimizer then fuses DQ → op → Q groups into integer kernels
(QLinearConv, QLinearMatMul, MatMulIntegerToFloat ...). The pairs here carry the scales
*our* calibration found, never ONNX Runtime's:

* weights: int8 initializers, per output channel (axis 0 of a conv weight; axis 1 of a
  Linear weight stored transposed as MatMul's right operand), zero point 0;
* every quantized input activation (conv / linear inputs, and the q, k, softmax and v
  operands of the attention matmuls): one Q → DQ pair, int8 or uint8 as our grid is
  signed or unsigned, with our zero point.

Route, and why: the quantized model is copied and each quantizer is replaced by
``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine`` with our scale, which
the TorchScript exporter writes as Q → DQ at exactly the place our quantizer sits in the
forward pass (inside attention too, where module names say nothing about tensor names).
A small ONNX pass then folds each weight's Q into an int8 initializer, the form ONNX
Runtime expects. Inserting nodes by tensor name into a float export, or letting ONNX
Runtime's ``quantize_static`` place them, would have to rediscover where each of our
quantizers sits; this route cannot place one anywhere else.

ONNX Runtime's integer kernels are 8-bit, so only 8-bit uniform quantizers are exported;
lower widths, and non-uniform quantizers (log2, twin-uniform), are simulated only.
Operations our model keeps in float (LayerNorm, GELU, residual adds, the float stem and
classifier) stay float in the graph, except where :func:`export_qdq` is asked for
calibrated conv outputs: ONNX Runtime's int8 convs need a quantized output, and the
residual adds of a CNN then run in int8 too (a deviation from the simulation, measured
against it).
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

from ..nn.modules import ActQuantizer, QuantAttention, QuantConv2d, QuantLinear, WeightQuantizer, _QuantWeighted
from ..nn.quantize import fold_batchnorm
from ..quant.granularity import PerChannel, PerTensor
from .graph import (
    drop_redundant_requantization,
    fold_weight_quantize,
    inline_identities,
    name_zero_points,
    quantized_residuals,
)

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(ValueError):
    """The model holds something that ONNX Runtime's integer kernels cannot run."""


def _simulated_only(what: str) -> ExportError:
    return ExportError(f"{what}: ONNX Runtime's integer kernels are 8-bit uniform, so only 8-bit uniform "
                       "quantizers are exported; lower widths and non-uniform quantizers are simulated only "
                       "(evaluate them with the PyTorch model instead)")


class _QDQ(nn.Module):
    """One activation Q → DQ pair with our per-tensor scale and zero point."""

    def __init__(self, q: ActQuantizer, name: str) -> None:
        super().__init__()
        if type(q) is not ActQuantizer:
            raise _simulated_only(f"{name} is a {type(q).__name__}")
        if q.mode == "observe" or q.qtype is None:
            raise ExportError(f"{name} is not calibrated: export the model quantize() returned")
        if q.qtype.bits != 8:
            raise _simulated_only(f"{name} quantizes to {q.qtype.bits} bits")
        if not isinstance(q.granularity, PerTensor) or q.scale.numel() != 1:
            raise ExportError(f"{name} has a {q.granularity} scale; ONNX Runtime fuses per-tensor "
                              "activation scales only: export a model calibrated with PerTensor() activations")
        self.qmin, self.qmax = q.qtype.qmin, q.qtype.qmax
        # buffers become initializers named <quantizer>.scale / .zero_point in the graph
        self.register_buffer("scale", q.scale.detach().float().reshape(()).clone())
        self.register_buffer("zero_point", q.zero_point.detach().round().to(torch.int32).reshape(()).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)


def _act(q: nn.Module | None, name: str) -> nn.Module:
    if q is None or (isinstance(q, ActQuantizer) and type(q) is ActQuantizer and q.mode == "off"):
        return nn.Identity()
    if not isinstance(q, ActQuantizer):
        raise _simulated_only(f"{name} is a {type(q).__name__}")
    return _QDQ(q, name)


class _QDQWeighted(nn.Module):
    """A QuantConv2d / QuantLinear for export: input Q → DQ, then the op on a DQ'd int8 weight."""

    def __init__(self, m: _QuantWeighted, name: str, output_quantizer: ActQuantizer | None = None) -> None:
        super().__init__()
        self.input_quantizer = _act(m.input_quantizer, f"{name}.input_quantizer")
        self.output_quantizer = _act(output_quantizer, f"{name}.output_quantizer")
        self.conv = m.conv if isinstance(m, QuantConv2d) else None
        w = m.weight.detach().float()
        # MatMul's right operand is Wᵀ: stored transposed so that DQ feeds MatMul directly
        w = w if self.conv is not None else w.t().contiguous()
        self.axis = 0 if self.conv is not None else 1
        self.quantized = m.w_quantizer is not None
        self.register_buffer("weight_qdq", w.clone())
        self.bias = None if m.bias is None else nn.Parameter(m.bias.detach().clone(), requires_grad=False)
        if self.quantized:
            wq = m.w_quantizer
            if type(wq) is not WeightQuantizer:
                raise _simulated_only(f"{name} has a {type(wq).__name__} weight quantizer")
            if wq.qtype.bits != 8:
                raise _simulated_only(f"{name} quantizes its weights to {wq.qtype.bits} bits")
            if not isinstance(wq.granularity, PerChannel) or wq.granularity.axis != 0:
                raise ExportError(f"{name}: only per-output-channel weight scales (PerChannel(0)) are exported")
            self.register_buffer("weight_scale", wq.scale.detach().float().reshape(-1).clone())
            self.register_buffer("weight_zero_point", torch.zeros(w.shape[self.axis], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        w = self.weight_qdq
        if self.quantized:
            w = torch.fake_quantize_per_channel_affine(w, self.weight_scale, self.weight_zero_point,
                                                       self.axis, -128, 127)
        if self.conv is not None:
            return self.output_quantizer(self.conv._conv_forward(x, w, self.bias))
        y = x @ w
        return self.output_quantizer(y if self.bias is None else y + self.bias)


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def calibrate_conv_outputs(qmodel: nn.Module, calib: Iterable[Any]) -> dict[str, ActQuantizer]:
    """8-bit min-max quantizers for the outputs of the quantized convs, observed on the
    fake-quantized model over ``calib`` (our observer; signed or unsigned grid as seen)."""
    quantizers: dict[str, ActQuantizer] = {}
    hooks = []
    for name, m in qmodel.named_modules():
        if isinstance(m, QuantConv2d) and m.w_quantizer is not None and m.input_quantizer is not None:
            q = quantizers[name] = ActQuantizer(8)
            hooks.append(m.register_forward_hook(lambda _m, _i, out, q=q: q(out)))
    try:
        n = 0
        with torch.inference_mode():
            for batch in calib:
                qmodel(batch[0] if isinstance(batch, (tuple, list)) else batch)
                n += 1
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError("output calibration needs at least one batch of inputs")
    for q in quantizers.values():
        q.finalize()
    return quantizers


def qdq_twin(qmodel: nn.Module, output_quantizers: dict[str, ActQuantizer] | None = None) -> nn.Module:
    """A copy of ``qmodel`` whose quantizers are torch's fake-quantize ops (exported as Q → DQ).

    ``output_quantizers``: extra quantizers on the outputs of the named layers
    (:func:`calibrate_conv_outputs`). Raises :class:`ExportError` for anything but 8-bit
    uniform per-tensor activation and per-channel weight quantizers.
    """
    twin = copy.deepcopy(qmodel).eval()
    outs = output_quantizers or {}
    for name, m in list(twin.named_modules()):
        if isinstance(m, (QuantConv2d, QuantLinear)):
            _set(twin, name, _QDQWeighted(m, name, outs.get(name)))
        elif isinstance(m, QuantAttention):
            for attr in ("q_quantizer", "k_quantizer", "attn_quantizer", "v_quantizer"):
                setattr(m, attr, _act(getattr(m, attr), f"{name}.{attr}"))
            m.capture = None
    # a quantizer anywhere else (a project or user class the export does not know) is refused
    for name, m in twin.named_modules():
        if isinstance(m, ActQuantizer) or type(m).__name__.endswith("Quantizer"):
            raise _simulated_only(f"{name} is a {type(m).__name__} the ONNX export does not know")
    return twin


def _export(model: nn.Module, example_input: torch.Tensor, path: Path) -> onnx.ModelProto:
    """TorchScript export (the dynamo exporter needs onnxscript, not a dependency here)."""
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        with torch.no_grad():
            # initializers as inputs: this keeps the exporter from merging equal scales of two
            # quantizers (a block's conv1 and its shortcut see the same tensor) under one name
            torch.onnx.export(model, (example_input,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              keep_initializers_as_inputs=True)
    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name for i in g.initializer}
    # as graph inputs they could be overridden at run time, which stops ONNX Runtime's
    # constant folding and QDQ fusions: keep them constants
    for inp in [i for i in g.input if i.name in inits]:
        g.input.remove(inp)
    inline_identities(g)
    return model


def export_qdq(qmodel: nn.Module, example_input: torch.Tensor, path: str | Path,
               output_calib: Iterable[Any] | None = None) -> Path:
    """Write ``qmodel`` (from :func:`vitquant_core.quantize`) as a QDQ ONNX model with our scales.

    ``example_input``: one input batch (its batch size is dynamic in the graph).

    ``output_calib``: None exports exactly our simulation. ONNX Runtime runs a conv in
    integers (QLinearConv) only when its output is quantized too, which our simulation does
    not do where a conv feeds a residual add; matmuls need no output quantizer
    (MatMulIntegerToFloat). Given calibration batches, the export adds, for CNNs:

    * an 8-bit min-max scale on every quantized conv's output, observed by our observer on
      the fake-quantized model (a pair the next layer requantizes at once, conv → ReLU →
      conv, is dropped as redundant);
    * a residual Add reads its shortcut through the 8-bit pair the same tensor already
      passes into the next conv, so that the Add runs as QLinearAdd.

    Every quantized conv and every residual add but the last then runs in int8; this adds
    one requantization per residual branch and an 8-bit shortcut, which the simulation
    lacks (compare the two exports' top-1).

    Weight initializers are ``<module>.weight_qdq`` (int8) with ``<module>.weight_scale``; the
    activation pairs carry ``<quantizer>.scale`` and ``<quantizer>.zero_point``
    (:func:`qdq_params` reads them back). Raises :class:`ExportError` for a model with
    quantizers other than 8-bit uniform ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outs = None if output_calib is None else calibrate_conv_outputs(qmodel, output_calib)
    twin = qdq_twin(qmodel, outs)
    model = _export(twin, example_input, path)
    name_zero_points(model.graph)
    if outs is not None:
        drop_redundant_requantization(model.graph)
        quantized_residuals(model.graph)
    n_weights = sum(isinstance(m, _QDQWeighted) and m.quantized for m in twin.modules())
    if fold_weight_quantize(model.graph) != n_weights:
        raise RuntimeError(f"expected {n_weights} quantized weights in the exported graph; the exporter "
                           "renamed or folded some of them")
    onnx.helper.set_model_props(model, {"quantization": "vitquant QDQ: our calibrated scales, 8-bit"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def export_fp32(model: nn.Module, example_input: torch.Tensor, path: str | Path) -> Path:
    """Write the float model with BatchNorm folded into its convs, the QDQ model's FP32 twin."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).eval()
    fold_batchnorm(m)
    onnx.save(_export(m, example_input, path), str(path))
    return path


@dataclass(frozen=True)
class QDQParam:
    """A Q → DQ pair read back from a graph: scale, zero point and integer type."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: np.dtype
    axis: int | None


def qdq_params(path: str | Path) -> dict[str, QDQParam]:
    """The scales of every DequantizeLinear in ``path``, keyed by the scale initializer's
    name with its ``.scale`` / ``.weight_scale`` suffix dropped (our module or quantizer name)."""
    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    out: dict[str, QDQParam] = {}
    for node in g.node:
        if node.op_type != "DequantizeLinear" or node.input[1] not in inits:
            continue
        name = node.input[1].removesuffix(".weight_scale").removesuffix(".scale")
        zp = inits[node.input[2]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), None) if inits[node.input[1]].ndim else None
        out[name] = QDQParam(inits[node.input[1]], zp, zp.dtype, axis)
    return out
