"""Operations, candidates and their quantizers: what the sensitivity measures switch on and off.

A candidate is a label ("W4A4", "W8A8", "float", read by
:func:`vitquant_core.mixed.parse_candidate`); ``config_for`` turns it into the
:class:`~vitquant_core.nn.QuantConfig` of the whole network at that width. One model per
width is prepared with every operation's quantizers in place; :class:`Switches` then turns
the quantizers of single operations on or off (activation quantizers by mode, weights by
swapping the cached fake-quantized copy for the float weight), which is exactly what
quantizing that operation alone, or leaving it alone in float, computes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ...mixed.apply import escape_glob
from ...mixed.problem import is_float, parse_candidate
from ...nn.config import FLOAT, QuantConfig
from ...nn.modules import QuantAttention, QuantConv2d, QuantLinear
from ...nn.protocols import PROTOCOLS, protocol_config
from ...nn.quantize import act_quantizers, calibrate, prepare

ConfigFor = str | Callable[[str], QuantConfig] | Mapping[str, QuantConfig]
# the attention pseudo-operations and the QuantAttention quantizers each one owns
PSEUDO_OPS = {"matmul_qk": ("q_quantizer", "k_quantizer"), "softmax": ("attn_quantizer",),
              "matmul_av": ("v_quantizer",)}


def check_candidates(candidates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(candidates, str) or not isinstance(candidates, Iterable):
        raise TypeError(f"candidates must be a sequence of labels such as ('W4A4', 'W8A8', 'float'), got "
                        f"{candidates!r}")
    cands = tuple(candidates)
    if not cands:
        raise ValueError("candidates is empty: give at least one label such as 'W4A4'")
    for c in cands:
        parse_candidate(c)  # raises on a label it cannot read
    dup = sorted({c for c in cands if cands.count(c) > 1})
    if dup:
        raise ValueError(f"candidates repeat {dup}: list each once")
    return cands


def config_of(config_for: ConfigFor, candidate: str) -> QuantConfig:
    """The whole network's config at ``candidate``.

    ``config_for`` is a protocol name ("default", "paper": :func:`protocol_config` at the
    label's bits), a mapping label → QuantConfig, or a callable label → QuantConfig.
    """
    if isinstance(config_for, str):
        if config_for not in PROTOCOLS:
            raise ValueError(f"config_for {config_for!r} is not a protocol {PROTOCOLS}: pass a protocol name, a "
                             "mapping candidate -> QuantConfig or a callable candidate -> QuantConfig")
        return protocol_config(config_for, *parse_candidate(candidate))
    if isinstance(config_for, Mapping):
        if candidate not in config_for:
            raise ValueError(f"config_for has no QuantConfig for candidate {candidate!r}; it has {list(config_for)}")
        cfg = config_for[candidate]
    elif callable(config_for):
        cfg = config_for(candidate)
    else:
        raise TypeError("config_for must be a protocol name, a mapping candidate -> QuantConfig or a callable "
                        f"candidate -> QuantConfig, got {type(config_for).__name__}")
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"config_for({candidate!r}) returned {type(cfg).__name__}, not a QuantConfig")
    return cfg


def only_op_config(config: QuantConfig, op: str) -> QuantConfig:
    """``config`` restricted to ``op``: that operation as ``config`` quantizes it, all else in float."""
    return QuantConfig(FLOAT, ((escape_glob(op), config.spec_for(op)),), config.quantize_attention, config.fold_bn)


def all_but_op_config(config: QuantConfig, op: str) -> QuantConfig:
    """``config`` with ``op`` alone kept in float."""
    return config.with_rules([(escape_glob(op), FLOAT)], first=True)


def split_name(op: str) -> tuple[str | None, str]:
    """(block, layer) of an operation name, split after its first all-digit part:
    "blocks.8.mlp.fc2" → ("blocks.8", "mlp.fc2"), "layer1.0.conv1" → ("layer1.0", "conv1"), "head" → (None, "head")."""
    parts = op.split(".")
    for i, p in enumerate(parts[:-1]):
        if p.isdigit():
            return ".".join(parts[:i + 1]), ".".join(parts[i + 1:])
    return None, op


@dataclass
class OpSwitch:
    """The quantizers of one operation in a prepared model, and the module whose call starts it."""

    module: nn.Module  # a QuantLinear / QuantConv2d, or the QuantAttention of a pseudo-operation
    quantizers: list[nn.Module] = field(default_factory=list)
    w_quant: torch.Tensor | None = None  # the fake-quantized weight (None: weights stay in float)
    kind: str = "linear"

    def set(self, on: bool) -> None:
        for q in self.quantizers:
            q.mode = "quantize" if on else "off"
        if self.w_quant is not None:
            self.module.weight_q = self.w_quant if on else self.module.weight.detach()


class Switches:
    """Every quantized operation of a prepared model, by name, switchable one at a time."""

    def __init__(self, qmodel: nn.Module) -> None:
        self.ops: dict[str, OpSwitch] = {}
        for name, m in qmodel.named_modules():
            if isinstance(m, (QuantLinear, QuantConv2d)):
                qs = [m.input_quantizer] if m.input_quantizer is not None else []
                wq = m.weight_q.detach().clone() if m.w_quantizer is not None else None
                if qs or wq is not None:
                    self.ops[name] = OpSwitch(m, qs, wq, "linear" if isinstance(m, QuantLinear) else "conv")
            elif isinstance(m, QuantAttention):
                for op, attrs in PSEUDO_OPS.items():
                    qs = [getattr(m, a) for a in attrs if getattr(m, a) is not None]
                    if qs:
                        self.ops[f"{name}.{op}"] = OpSwitch(m, qs, None, op)

    def set_all(self, on: bool) -> None:
        for s in self.ops.values():
            s.set(on)


def prepared_float_calibrated(model: nn.Module, config: QuantConfig, calib: Any) -> tuple[nn.Module, Switches]:
    """The whole network prepared at ``config``, each activation quantizer calibrated on the
    *float* model's activations, then every quantizer switched off.

    Calibrating with float weights and pass-through quantizers gives every operation the
    scales it gets when it alone is quantized (``quantize(model, only_op_config(config, op))``
    calibrates it on the float inputs too), so one calibration per width serves every
    operation of the direct measure.
    """
    qmodel, _ = prepare(model, config)
    switches = Switches(qmodel)
    for s in switches.ops.values():
        if s.w_quant is not None:
            s.module.weight_q = s.module.weight.detach()
    if act_quantizers(qmodel):
        if calib is None:
            raise ValueError("the configs quantize activations: pass calib (batches of calibration images)")
        calibrate(qmodel, calib, progress=False)
    switches.set_all(False)
    return qmodel, switches


def _forward_order(qmodel: nn.Module) -> list[str]:
    """Operation names in the order a forward pass runs them (attention matmuls after ``qkv``)."""
    order: list[str] = []
    for name, m in qmodel.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, QuantLinear, QuantConv2d)):
            order.append(name)
            parent, _, leaf = name.rpartition(".")
            if leaf == "qkv" and isinstance(qmodel.get_submodule(parent), QuantAttention):
                order += [f"{parent}.{op}" for op in PSEUDO_OPS]
    return order


def operation_names(model: nn.Module, configs: Mapping[str, QuantConfig]) -> tuple[list[str], set[str]]:
    """(operations some config quantizes, in forward order; every operation name the model has)."""
    quantized: set[str] = set()
    known: set[str] = set()
    order: list[str] = []
    for cfg in configs.values():
        qmodel, report = prepare(model, cfg)
        order = order or _forward_order(qmodel)
        quantized |= {r["name"] for r in report.ops}
        known |= {r["name"] for r in report.ops} | set(report.float_ops)
    return [op for op in order if op in quantized], known


def check_ops(ops: Sequence[str] | None, default: list[str], known: set[str]) -> list[str]:
    if ops is None:
        return default
    if isinstance(ops, str):
        raise TypeError(f"ops must be a sequence of operation names, got the string {ops!r}")
    ops = list(ops)
    unknown = [op for op in ops if op not in known]
    if unknown:
        raise ValueError(f"operations {unknown[:5]} are not quantizable operations of this model; its operations "
                         f"are named like {sorted(known)[:4]} (Linear / Conv2d module names, and "
                         "'<attn>.matmul_qk' / '.softmax' / '.matmul_av' for timm attention)")
    dup = sorted({op for op in ops if ops.count(op) > 1})
    if dup:
        raise ValueError(f"ops repeat {dup}: list each once")
    return ops


def width_candidates(cands: Sequence[str]) -> list[str]:
    """The candidates that quantize something (every one but "float")."""
    return [c for c in cands if not is_float(c)]
