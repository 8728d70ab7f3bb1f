"""An allocation becomes a :class:`QuantConfig` that ``quantize`` applies directly."""
from __future__ import annotations

from dataclasses import replace

from ..nn.config import FLOAT, LayerSpec, QuantConfig
from .problem import Allocation, parse_candidate

ATTENTION_PSEUDO_OPS = ("matmul_qk", "softmax", "matmul_av")


def escape_glob(name: str) -> str:
    """``name`` as an fnmatch pattern that matches exactly ``name``."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def is_attention_pseudo_op(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ATTENTION_PSEUDO_OPS


def allocation_to_config(allocation: Allocation, base: QuantConfig) -> QuantConfig:
    """``base`` with one exact-name rule per allocated operation, placed before its own rules.

    Each rule keeps the granularities, observers, signedness and percentile the base gives
    that operation (its default's when the base keeps the operation in float) and sets the
    chosen bits; "float" keeps the operation in float. The attention pseudo-operations
    (``<attn>.matmul_qk``, ``.softmax``, ``.matmul_av``) quantize only an activation, so
    their rule carries the activation bits alone. Operations outside the allocation keep
    the base's rules, its keep-float patterns included.
    """
    if not isinstance(allocation, Allocation):
        raise TypeError(f"allocation must be an Allocation (from solve_milp and the like), got {type(allocation)}")
    if not isinstance(base, QuantConfig):
        raise TypeError(f"base must be a QuantConfig, e.g. QuantConfig.uniform(8, 8), got {type(base).__name__}")
    attention = [op for op, c in allocation.choice.items() if is_attention_pseudo_op(op) and parse_candidate(c)[1]]
    if attention and not base.quantize_attention:
        raise ValueError(f"the allocation quantizes attention matmuls ({attention[:3]}) but the base config has "
                         "quantize_attention=False: pass a base that quantizes them")
    rules: list[tuple[str, LayerSpec]] = []
    for op, label in allocation.choice.items():
        w_bits, a_bits = parse_candidate(label)
        if is_attention_pseudo_op(op):
            w_bits = None
        if w_bits is None and a_bits is None:
            spec = FLOAT
        else:
            template = base.spec_for(op)
            if template.keep_float:
                template = base.default
            spec = replace(template, w_bits=w_bits, a_bits=a_bits)
        rules.append((escape_glob(op), spec))
    return base.with_rules(rules, first=True)
