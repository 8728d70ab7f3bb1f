"""The per-layer cost table: MACs, parameters, and the elements each operation reads and writes.

One row per quantizable operation, named as :class:`~vitquant_core.nn.QuantConfig` names it:
every ``nn.Linear`` / ``nn.Conv2d`` by module name, and in timm ViT attention blocks the two
matmuls ``<attn>.matmul_qk`` (q·kᵀ) and ``<attn>.matmul_av`` (softmax(·)·v).

MACs come from PyTorch's own flop counter (``torch.utils.flop_counter``: one MAC = 2 flops), run
on the model that :func:`~vitquant_core.nn.prepare` builds with every operation in float: BatchNorm
is folded into the convolutions (as quantization does, so a conv carries its bias) and timm's
attention, which may call a fused ``scaled_dot_product_attention`` (whose CPU kernel the counter
prices at zero), becomes :class:`~vitquant_core.nn.QuantAttention`, whose two matmuls are
explicit. Each counted aten call is attributed to the innermost Linear / Conv2d / attention
block running it; inside an attention block the first matmul is q·kᵀ and the second attn·v.
Nothing here is a formula for one architecture.

Pricing a table at a bit assignment (:func:`priced`) gives weight and activation bytes and the
bit operations (BOPs = MACs × b_w × b_a, float counted as 32 bits) that UNIQ (Baskin et al.,
2021) and HAWQ-V3 (Yao et al., ICML 2021) budget mixed precision with.
For a matmul the two operands are both activations: ``b_a`` is the left one's width (q, or the
softmax output) and ``b_w`` the right one's (k, or v).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ..nn.config import LayerSpec, QuantConfig
from ..nn.modules import QuantAttention
from ..nn.quantize import prepare

FLOAT_BITS = 32  # a tensor kept in float is priced as fp32
BIAS_BITS = 32  # biases stay 32-bit: float, or int32 in integer inference
KINDS = ("linear", "conv", "matmul")
_MATMULS = ("matmul_qk", "matmul_av")


@dataclass(frozen=True)
class OpCost:
    """The cost of one quantizable operation for one input (image); element counts, not bytes.

    ``input_elems`` is the input activation (for a matmul its left operand: q, or the softmax
    output); ``input2_elems`` a matmul's right operand (k or v), 0 for Linear / Conv2d.
    ``a_from`` / ``w_from`` name the config operations whose specs set the widths of the left
    and right operands (for Linear / Conv2d both are the operation itself: its ``a_bits`` and
    ``w_bits``; for ``matmul_av`` the left operand is ``<attn>.softmax``).
    """

    name: str
    kind: str  # "linear", "conv" or "matmul"
    macs: int
    params: int  # weight + bias elements
    weight_elems: int
    bias_elems: int
    input_elems: int
    input2_elems: int
    output_elems: int
    a_from: str
    w_from: str


def _owner_hooks(model: nn.Module, stack: list[str], io: dict[str, list[int]]) -> list:
    """Hooks keeping ``stack`` = the operations now running; ``io`` gets every operation in the order
    it first ran, with the input and output sizes of Linear / Conv2d."""
    handles = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d, QuantAttention)):
            continue

        def pre(_m, _inp, name=name):
            stack.append(name)
            io.setdefault(name, [0, 0])  # first call: fixes the row order

        def post(m, inp, out, name=name):
            stack.pop()
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                sizes = io[name]
                sizes[0] += inp[0].numel()
                sizes[1] += out.numel()

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def _recording_registry(stack: list[str], events: list[tuple[str | None, int, list[int]]]) -> dict:
    """torch's flop formulas, each also logging (running operation, flops, operand sizes, output size)."""
    mapping = {}
    for op, formula in flop_registry.items():
        def rec(*args, out_val=None, _formula=formula, **kwargs):
            flops = _formula(*args, out_val=out_val, **kwargs)
            tensors = [a.numel() for a in args if isinstance(a, torch.Tensor)]
            out = out_val.numel() if isinstance(out_val, torch.Tensor) else 0
            events.append((stack[-1] if stack else None, int(flops), tensors[-2:] + [out]))
            return flops

        rec._get_raw = True  # type: ignore[attr-defined]  # the formula receives tensors, as registered
        mapping[op] = rec
    return mapping


def cost_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[OpCost]:
    """The per-operation cost of ``model`` on one input of ``input_shape`` (no batch dimension,
    e.g. ``(3, 32, 32)``; :func:`vitquant_core.models.get_entry` gives a registry model's).

    Rows come in execution order. The model is not modified. A warning names the MACs that
    ran outside every quantizable operation (e.g. a functional matmul), which no row carries.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be the shape of one input without the batch dimension, "
                         f"e.g. (3, 32, 32), got {input_shape!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a model with nothing to quantize just gives an empty table
        fmodel, _ = prepare(model, QuantConfig.uniform(None, None, keep_float=()))
    param = next(fmodel.parameters(), None)
    x = torch.zeros((1, *shape), dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    stack: list[str] = []
    io: dict[str, list[int]] = {}
    events: list[tuple[str | None, int, list[int]]] = []
    handles = _owner_hooks(fmodel, stack, io)
    try:
        counter = FlopCounterMode(display=False, custom_mapping=_recording_registry(stack, events))
        with torch.no_grad(), counter:
            fmodel(x)
    finally:
        for h in handles:
            h.remove()
    return _rows(fmodel, events, io, counter.get_total_flops())


def _rows(fmodel: nn.Module, events: list, io: dict[str, list[int]], total_flops: int) -> list[OpCost]:
    modules = dict(fmodel.named_modules())
    macs: dict[str, int] = {}  # row name -> MACs, in the order rows first counted a flop
    matmul_io: dict[str, list[int]] = {}  # matmul row -> [left, right, output] elements
    n_attn_calls: dict[str, int] = {}
    attributed = 0
    for owner, flops, sizes in events:
        m = modules.get(owner) if owner is not None else None
        if m is None:
            continue
        key = owner
        if isinstance(m, QuantAttention):  # its own matmuls, outside qkv and proj: q·kᵀ then attn·v
            i = n_attn_calls[owner] = n_attn_calls.get(owner, 0) + 1
            key = f"{owner}.{_MATMULS[(i - 1) % 2]}"
            acc = matmul_io.setdefault(key, [0, 0, 0])
            for j, n in enumerate(sizes):
                acc[j] += n
        macs[key] = macs.get(key, 0) + flops // 2
        attributed += flops
    for name, n in n_attn_calls.items():
        if n % 2:
            raise RuntimeError(f"{name}: expected the attention block's matmuls in pairs (q·kᵀ, then attn·v), "
                               f"the flop counter saw {n}")
    unattributed = total_flops - attributed
    if unattributed:
        warnings.warn(f"{unattributed // 2:,} MACs ran outside every Linear, Conv2d and timm attention block "
                      "(e.g. a functional matmul): the cost table does not carry them", UserWarning, stacklevel=3)
    rows: list[OpCost] = []
    # execution order; a Linear / Conv2d that counted no flop (an empty input) still gets its row
    for key in dict.fromkeys(list(macs) + [n for n in io if not isinstance(modules[n], QuantAttention)]):
        if key in matmul_io:
            left, right, out = matmul_io[key]
            attn, _, op = key.rpartition(".")
            a_from = f"{attn}.softmax" if op == "matmul_av" else key
            rows.append(OpCost(key, "matmul", macs[key], 0, 0, 0, left, right, out, a_from, key))
            continue
        m = modules[key]
        w = m.weight.numel()
        b = m.bias.numel() if m.bias is not None else 0
        n_in, n_out = io[key]
        rows.append(OpCost(key, "linear" if isinstance(m, nn.Linear) else "conv", macs.get(key, 0), w + b, w, b,
                           n_in, 0, n_out, key, key))
    return rows


def as_dataframe(table: Iterable[OpCost]) -> pd.DataFrame:
    """The table as a DataFrame, one column per :class:`OpCost` field, in that order."""
    cols = [f.name for f in fields(OpCost)]
    return pd.DataFrame([asdict(r) for r in table], columns=cols)


def _bits(b: int | None) -> int:
    return FLOAT_BITS if b is None else b


def as_config(config: QuantConfig | str | None) -> QuantConfig:
    """A QuantConfig from a config, a label such as "W4A4", or None (every operation in float)."""
    if config is None:
        return QuantConfig.uniform(None, None, keep_float=())
    if isinstance(config, str):
        return QuantConfig.from_label(config)
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, a label such as 'W4A4', or None (all float), "
                        f"got {type(config).__name__}")
    return config


def operand_bits(op: OpCost, config: QuantConfig | str | None) -> tuple[int | None, int | None]:
    """(b_a, b_w) of ``op`` under ``config``; None is float.

    Linear / Conv2d: the spec's ``a_bits`` and ``w_bits``. Matmuls: the left and right operands'
    ``a_bits`` (q and k both from ``matmul_qk``; the softmax output from ``<attn>.softmax`` and v
    from ``matmul_av``), both float when the config does not quantize attention.
    """
    cfg = as_config(config)
    if op.kind != "matmul":
        spec: LayerSpec = cfg.spec_for(op.name)
        return spec.a_bits, spec.w_bits
    if not cfg.quantize_attention:
        return None, None
    return cfg.spec_for(op.a_from).a_bits, cfg.spec_for(op.w_from).a_bits


def weight_bits(op: OpCost, b_w: int | None) -> int:
    """Bits of the operation's parameters: weights at ``b_w``, biases at 32."""
    return 0 if op.kind == "matmul" else op.weight_elems * _bits(b_w) + op.bias_elems * BIAS_BITS


def activation_bits(op: OpCost, b_a: int | None, b_w: int | None) -> int:
    """Bits of the activations the operation reads: its input (both operands of a matmul)."""
    return op.input_elems * _bits(b_a) + (op.input2_elems * _bits(b_w) if op.kind == "matmul" else 0)


def bops(op: OpCost, b_a: int | None, b_w: int | None) -> int:
    """Bit operations: MACs × b_w × b_a, a float operand counted as 32 bits."""
    return op.macs * _bits(b_a) * _bits(b_w)


PRICED_COLUMNS = ("b_a", "b_w", "weight_bytes", "act_bytes", "bops")


def priced(table: Iterable[OpCost], config: QuantConfig | str | None) -> pd.DataFrame:
    """The table priced at ``config`` (a QuantConfig, a label such as "W4A4", or None: all float).

    Adds ``b_a`` and ``b_w`` (operand widths, 32 for float), ``weight_bytes`` (weights at
    ``b_w``, biases at 32 bits), ``act_bytes`` (the input activations read, at their widths) and
    ``bops``. :func:`cost_totals` sums it.
    """
    cfg = as_config(config)
    table = list(table)
    df = as_dataframe(table)
    extra = []
    for op in table:
        b_a, b_w = operand_bits(op, cfg)
        extra.append((_bits(b_a), _bits(b_w), weight_bits(op, b_w) / 8, activation_bits(op, b_a, b_w) / 8,
                      bops(op, b_a, b_w)))
    return pd.concat([df, pd.DataFrame(extra, columns=list(PRICED_COLUMNS), index=df.index)], axis=1)


def cost_totals(df: pd.DataFrame) -> dict[str, float]:
    """Totals of a :func:`priced` (or :func:`as_dataframe`) frame: MACs, parameters, bytes, BOPs."""
    cols = [c for c in ("macs", "params", "weight_elems", "input_elems", "input2_elems", "output_elems",
                        "weight_bytes", "act_bytes", "bops") if c in df.columns]
    return {c: float(df[c].sum()) for c in cols}
