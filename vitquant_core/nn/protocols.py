"""Protocols: which operations a "WbAb" setting quantizes.

Papers on ViT quantization write "W4A4" for more than this book's default did, so every
results row names its protocol:

* ``"default"`` — the book's convention since notebook 01 (common PTQ practice for CNNs):
  every Linear / Conv2d and the attention matmul operands q, k and v at the setting's bits;
  the patch embedding (or CNN stem), the classifier head and the post-softmax attention
  stay in float.
* ``"paper"`` — the field's convention as RepQ-ViT's official code applies it (Li et al.,
  ICCV 2023; PTQ4ViT and AdaLog quantize the same operations): every Linear, the head
  included, at W bits with its input at A bits; the patch embedding's weights at W bits with
  its input (the image) at 8 bits; every matmul operand, q, k, v and the post-softmax
  attention, at A bits.

Under both, LayerNorm, softmax, GELU, residual additions and the q·kᵀ scores are computed in
float (:data:`~.config.NEVER_QUANTIZED`). :func:`protocol_table` lists what each quantizes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .config import DEFAULT_KEEP_FLOAT, FLOAT, LayerSpec, QuantConfig

PROTOCOLS = ("default", "paper")
PATCH_EMBED = "patch_embed.*"
PAPER_INPUT_BITS = 8  # the image entering the patch embedding, under "paper"


def check_protocol(protocol: Any) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}: 'default' keeps the patch "
                         "embedding, head and softmax output in float; 'paper' quantizes them as RepQ-ViT does")
    return protocol


def protocol_config(protocol: str, w_bits: int | None, a_bits: int | None, spec: LayerSpec | None = None,
                    rules: dict[str, LayerSpec] | None = None, **kwargs: Any) -> QuantConfig:
    """A config for the setting WbAb under ``protocol``.

    ``spec`` gives the quantizers of every operation (its bits are replaced by ``w_bits`` and
    ``a_bits``; default: per-channel min-max weights, per-tensor min-max activations);
    ``rules`` (pattern → LayerSpec, their bits likewise replaced) choose other quantizers for
    some operations, e.g. a log quantizer on ``*.softmax``. ``kwargs`` go to QuantConfig.
    """
    check_protocol(protocol)
    base = replace(spec or LayerSpec(), w_bits=w_bits, a_bits=a_bits)
    method_rules = [(p, replace(s, w_bits=w_bits if s.w_bits is not None else None,
                                a_bits=a_bits if s.a_bits is not None else None))
                    for p, s in (rules or {}).items()]
    if protocol == "default":
        keep = [(p, FLOAT) for p in DEFAULT_KEEP_FLOAT]
        return QuantConfig(base, tuple(keep + method_rules), **kwargs)
    embed = replace(base, a_bits=PAPER_INPUT_BITS if a_bits is not None else None, a_quantizer="uniform",
                    a_granularity=LayerSpec().a_granularity)
    return QuantConfig(base, tuple([(PATCH_EMBED, embed)] + method_rules), **kwargs)


def protocol_table(protocol: str) -> list[dict[str, str]]:
    """What the protocol quantizes, operation by operation (for the methods page and notebooks)."""
    check_protocol(protocol)
    paper = protocol == "paper"
    rows = [
        ("patch embedding (conv)", "W bits, input 8 bits" if paper else "float"),
        ("qkv, proj, fc1, fc2 (Linear)", "W bits, input A bits"),
        ("classifier head (Linear)", "W bits, input A bits" if paper else "float"),
        ("q, k (operands of q·kᵀ)", "A bits"),
        ("post-softmax attention (operand of attn·v)", "A bits" if paper else "float"),
        ("v (operand of attn·v)", "A bits"),
        ("LayerNorm, softmax, GELU, residual adds, q·kᵀ scores", "float"),
    ]
    return [{"operation": op, protocol: what} for op, what in rows]


def setting_bits(setting: str) -> tuple[int, int]:
    """(w_bits, a_bits) of a W/A label such as "W4A4"; both must be quantized."""
    d = QuantConfig.from_label(setting).default
    if d.w_bits is None or d.a_bits is None:
        raise ValueError(f"setting {setting!r} keeps weights or activations in float: write it like 'W4A4'")
    return d.w_bits, d.a_bits


def setting_config(setting: str, protocol: str) -> QuantConfig:
    """The min-max config a W/A label names under ``protocol``."""
    return protocol_config(protocol, *setting_bits(setting))
