"""Passes over an exported QDQ graph that leave what it computes unchanged but let ONNX Runtime
fuse more of it into integer kernels: identities inlined, zero points named, redundant
requantization dropped, residual additions quantized, weights stored as int8 initializers.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHT_SUFFIX = ".weight_qdq"  # a quantized weight's initializer: <module>.weight_qdq (int8)

def inline_identities(g: onnx.GraphProto) -> None:
    """Drop the Identity nodes the exporter puts on shared initializers (equal zero points)."""
    inits = {i.name for i in g.initializer}
    for node in [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]:
        for consumer in g.node:
            for i, inp in enumerate(consumer.input):
                if inp == node.output[0]:
                    consumer.input[i] = node.input[0]
        g.node.remove(node)


def name_zero_points(g: onnx.GraphProto) -> None:
    """Give every Q / DQ its own zero point named after its scale: ``<name>.zero_point``,
    ``<module>.weight_zero_point`` (the exporter shares equal ones under generated names)."""
    inits = {i.name: i for i in g.initializer}
    made: set[str] = set()
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = node.input[1]
        if not scale.endswith(".scale") and not scale.endswith("_scale"):
            raise RuntimeError(f"{node.name}: scale {scale!r} is not one of ours; the exporter renamed it")
        zp_name = scale.removesuffix("scale") + "zero_point"
        if zp_name not in made:
            zp = numpy_helper.to_array(inits[node.input[2]])
            g.initializer.append(numpy_helper.from_array(zp.copy(), zp_name))
            made.add(zp_name)
        node.input[2] = zp_name
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)


def drop_redundant_requantization(g: onnx.GraphProto) -> int:
    """Remove an output Q → DQ pair whose value is quantized again at once (after at most a
    Relu) by the next layer's input quantizer: Conv → Relu → Q fuses into QLinearConv anyway,
    and the next quantizer already sets the grid; returns how many were removed."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    removed = 0
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and ".output_quantizer." in n.input[1]]:
        dq = consumers.get(q.output[0], [])
        if len(dq) != 1 or dq[0].op_type != "DequantizeLinear":
            continue
        nxt = consumers.get(dq[0].output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Relu":
            nxt = consumers.get(nxt[0].output[0], [])
        if not nxt or any(n.op_type != "QuantizeLinear" for n in nxt):
            continue
        for n in consumers.get(dq[0].output[0], []):
            for i, inp in enumerate(n.input):
                if inp == dq[0].output[0]:
                    n.input[i] = q.input[0]
        g.node.remove(q)
        g.node.remove(dq[0])
        removed += 1
    return removed


def consumers(g: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def quantized_residuals(g: onnx.GraphProto) -> int:
    """Let a residual Add read its float shortcut through the Q → DQ pair the same tensor
    already passes on its way into the next conv, and merge that tensor's equal Q nodes.

    With both Add inputs dequantized and a Q after it (through the ReLU), ONNX Runtime runs the
    Add as QLinearAdd and stays in int8 from block to block; the shortcut then carries the
    8-bit value the next conv reads instead of the float one. Returns how many Adds changed.
    """
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}

    def same_grid(a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
        return all(np.array_equal(inits[a.input[k]], inits[b.input[k]]) and
                   inits[a.input[k]].dtype == inits[b.input[k]].dtype for k in (1, 2))

    cons = consumers(g)
    for users in list(cons.values()):  # one Q per tensor and grid: a conv and its shortcut conv
        qs = [n for n in users if n.op_type == "QuantizeLinear"]
        for dup in [q for q in qs[1:] if same_grid(q, qs[0])]:
            for n in cons.get(dup.output[0], []):
                n.input[list(n.input).index(dup.output[0])] = qs[0].output[0]
            g.node.remove(dup)
    cons = consumers(g)
    producer = {o: n for n in g.node for o in n.output}
    changed = 0
    for add in [n for n in g.node if n.op_type == "Add"]:
        if not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in add.input):
            continue
        for k, inp in enumerate(add.input):
            q = next((n for n in cons.get(inp, []) if n.op_type == "QuantizeLinear"), None)
            if q is None or (producer.get(inp) is not None and producer[inp].op_type == "DequantizeLinear"):
                continue
            dq = next(n for n in cons[q.output[0]] if n.op_type == "DequantizeLinear")
            add.input[k] = dq.output[0]
            changed += 1
    return changed


def fold_weight_quantize(g: onnx.GraphProto) -> int:
    """Replace Q(float weight initializer) by the int8 initializer it computes; returns how many.

    Codes follow ONNX QuantizeLinear: saturate(round_half_even(w / scale) + zero_point),
    in float32 like our WeightQuantizer.
    """
    inits = {i.name: i for i in g.initializer}
    n_folded = 0
    for node in list(g.node):
        if node.op_type != "QuantizeLinear" or not node.input[0].endswith(WEIGHT_SUFFIX) \
                or node.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.int32)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        shape[axis] = -1
        codes = np.clip(np.round(w / scale.reshape(shape)) + zp.reshape(shape), -128, 127).astype(np.int8)
        g.initializer.remove(inits.pop(node.input[0]))
        g.initializer.append(numpy_helper.from_array(codes, node.input[0]))
        for consumer in g.node:
            for i, inp in enumerate(consumer.input):
                if inp == node.output[0]:
                    consumer.input[i] = node.input[0]
        g.node.remove(node)
        n_folded += 1
    return n_folded
