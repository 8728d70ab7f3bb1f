"""``quantize(model, config, calib_data)``: the one verb that makes a quantized model.

The float model is never mutated: a deep copy is taken, BatchNorm is folded into the
preceding convolutions, every Linear / Conv2d (and timm attention block) is replaced by its
quantized counterpart according to the per-layer config, activation ranges are calibrated
on ``calib_data`` through the quantizers' observers, and the copy is returned with a
report (``model.vitquant_report``) saying exactly what was quantized and how.
"""
from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from .config import DEFAULT_KEEP_FLOAT, FLOAT, QuantConfig
from .modules import ActQuantizer, QuantAttention, QuantConv2d, QuantLinear


@dataclass
class QuantReport:
    """What a quantized model quantized: one row per operation, and what stayed in float."""

    config: dict[str, Any]
    ops: list[dict[str, Any]] = field(default_factory=list)
    float_ops: list[str] = field(default_factory=list)
    folded_bn: list[str] = field(default_factory=list)
    n_calib_batches: int = 0
    n_calib_images: int = 0

    def summary(self) -> dict[str, Any]:
        n_w = sum(1 for o in self.ops if o.get("w_bits") is not None)
        n_a = sum(1 for o in self.ops if o.get("a_bits") is not None)
        return {"n_ops": len(self.ops), "n_weight_quantized": n_w, "n_activation_quantized": n_a,
                "float_ops": self.float_ops, "folded_bn": len(self.folded_bn),
                "n_calib_images": self.n_calib_images}

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "ops": self.ops, "float_ops": self.float_ops,
                "folded_bn": self.folded_bn, "n_calib_images": self.n_calib_images}


def _is_timm_attention(m: nn.Module) -> bool:
    try:
        from timm.models.vision_transformer import Attention
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return type(m) is Attention


def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold every BatchNorm2d that directly follows a Conv2d into it (eval-mode statistics).

    Finds conv → bn pairs with torch.fx; models fx cannot trace keep their BatchNorms.
    Returns the names of the folded convs.
    """
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models simply keep their BatchNorms
        return []
    modules = dict(model.named_modules())
    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        conv = modules.get(prev.target)
        if not isinstance(conv, nn.Conv2d):
            continue
        bn = modules[node.target]
        _set_module(model, prev.target, fuse_conv_bn_eval(conv, bn))
        _set_module(model, node.target, nn.Identity())
        folded.append(prev.target)
    return folded


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _batches(calib_data: Any) -> Iterator[torch.Tensor]:
    if isinstance(calib_data, torch.Tensor):
        calib_data = [calib_data]
    for batch in calib_data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def act_quantizers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every activation quantizer: uniform (:class:`ActQuantizer`) or on a non-uniform grid."""
    from .nonuniform import _SampledQuantizer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, (ActQuantizer, _SampledQuantizer))]


@contextmanager
def calibration(model: nn.Module) -> Iterator[None]:
    """Within the context, activation quantizers observe (pass-through) instead of quantizing;
    on leaving it, each fixes its scale from what it saw and starts quantizing."""
    qs = act_quantizers(model)
    for _, q in qs:
        q.mode = "observe"
    yield
    for name, q in qs:
        try:
            q.finalize()
        except RuntimeError as e:
            raise RuntimeError(f"{name}: {e}") from None


def calibrate(model: nn.Module, calib_data: Iterable[Any], progress: bool = True) -> tuple[int, int]:
    """Observe activation ranges on ``calib_data`` and fix every activation scale."""
    qs = act_quantizers(model)
    if not qs:
        return 0, 0
    if calib_data is None:
        raise ValueError("this config quantizes activations: pass calib_data (batches of inputs)")
    n_batches = n_images = 0
    with calibration(model):
        with torch.inference_mode():
            for x in tqdm(_batches(calib_data), desc="calibrating", disable=not progress, leave=False):
                if x.numel() == 0:
                    continue
                model(x)
                n_batches += 1
                n_images += x.shape[0]
        if n_images == 0:
            raise ValueError("the calibration set is empty: pass at least one batch of inputs "
                             "(e.g. vitquant_core.data.calibration_batches(split, n_calib=128))")
    return n_batches, n_images


def _refuse_quantized(model: nn.Module) -> None:
    """Quantizing twice would wrap the quantized modules' float internals again."""
    done = [n or "<the model itself>" for n, m in model.named_modules()
            if isinstance(m, (QuantLinear, QuantConv2d, QuantAttention))]
    if done or act_quantizers(model) or hasattr(model, "vitquant_report"):
        raise ValueError(
            f"the model is already quantized ({len(done)} quantized operations, e.g. {done[:3]}): quantize "
            "the float model instead; quantize() returns a new model and never mutates the float one")


def _warn_unused(config: QuantConfig, names: list[str]) -> None:
    """Warn about rules that match no operation, and about a model with nothing to quantize."""
    if not names:
        warnings.warn("nothing was quantized: the model has no nn.Linear, nn.Conv2d or timm attention "
                      "block, so the quantized copy computes exactly as the float model", UserWarning, stacklevel=4)
        return
    for pattern, spec in config.rules:
        # the uniform configs' keep-float defaults cover both families; unused ones are expected
        if spec == FLOAT and pattern in DEFAULT_KEEP_FLOAT:
            continue
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            warnings.warn(
                f"rule {pattern!r} of the QuantConfig matches no quantizable operation of this model: "
                f"patterns are matched against full operation names such as {names[:3]} "
                "(a block's name alone matches none of them: write 'block.*')", UserWarning, stacklevel=4)


def prepare(model: nn.Module, config: QuantConfig) -> tuple[nn.Module, QuantReport]:
    """A copy of ``model`` with quantized modules in place, not yet calibrated."""
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    _refuse_quantized(model)
    qmodel = copy.deepcopy(model).eval()
    for p in qmodel.parameters():
        p.requires_grad_(False)
    report = QuantReport(config.to_json())
    if config.fold_bn:
        report.folded_bn = fold_batchnorm(qmodel)
    names: list[str] = []  # every operation the config was asked about

    for name, module in list(qmodel.named_modules()):
        if not name:
            continue
        if config.quantize_attention and _is_timm_attention(module):
            specs = {op: config.spec_for(f"{name}.{op}") for op in ("matmul_qk", "softmax", "matmul_av")}
            names += [f"{name}.{op}" for op in specs]
            new = QuantAttention(module, specs, name)
            _set_module(qmodel, name, new)
            for op, spec in specs.items():
                if spec.a_bits is None:
                    report.float_ops.append(f"{name}.{op}")
                else:
                    report.ops.append({"name": f"{name}.{op}", "type": "attention." + op, "w_bits": None,
                                       "a_bits": spec.a_bits, "a_observer": spec.a_observer,
                                       "a_granularity": "per_tensor"})
    for name, module in list(qmodel.named_modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not isinstance(module, (QuantLinear, QuantConv2d)):
            spec = config.spec_for(name)
            names.append(name)
            if spec.keep_float:
                report.float_ops.append(name)
                continue
            cls = QuantLinear if isinstance(module, nn.Linear) else QuantConv2d
            _set_module(qmodel, name, cls(module, spec, name))
            report.ops.append({
                "name": name, "type": type(module).__name__, "w_bits": spec.w_bits, "a_bits": spec.a_bits,
                "w_granularity": str(spec.w_granularity) if spec.w_bits else None,
                "a_granularity": str(spec.a_granularity) if spec.a_bits else None,
                "w_observer": spec.w_observer if spec.w_bits else None,
                "a_observer": spec.a_observer if spec.a_bits else None,
                "n_weights": module.weight.numel()})
    _warn_unused(config, names)
    return qmodel, report


def quantize(model: nn.Module, config: QuantConfig, calib_data: Iterable[Any] | None = None,
             progress: bool = True) -> nn.Module:
    """Return a quantized copy of ``model`` calibrated on ``calib_data``; ``model`` is untouched.

    ``calib_data``: an iterable of input batches (tensors, or (x, y) pairs), e.g. from
    :func:`vitquant_core.data.calibration_batches`. It may be None only when the config
    quantizes no activation.
    """
    qmodel, report = prepare(model, config)
    report.n_calib_batches, report.n_calib_images = calibrate(qmodel, calib_data, progress)
    for name, q in act_quantizers(qmodel):
        op = name.rsplit(".", 1)[0]
        for row in report.ops:
            if row["name"] == op or (row["type"].startswith("attention") and row["name"].rsplit(".", 1)[0] == op):
                grid = q.qtype.name if getattr(q, "qtype", None) else getattr(q, "kind", None)
                row.setdefault("a_grid", {})[name.rsplit(".", 1)[1]] = grid
    qmodel.vitquant_report = report  # type: ignore[assignment]
    return qmodel


def quant_report(model: nn.Module) -> QuantReport | None:
    return getattr(model, "vitquant_report", None)
