"""What PTQ4ViT's search needs from the float model: each operation's inputs and ∂L/∂O.

One pass over the search images of a float twin of the quantized model (quantizers off, float
weights) records, for every quantized operation, its float inputs (PTQ4ViT's parallel mode:
each operation is calibrated on the float model's activations, independently of the others)
and, for the Hessian-guided metric, the gradient of a loss with respect to its output O:

* ``"fisher"`` (used by the search): labels y are drawn, seeded, from the float model's own
  softmax and L = cross-entropy(logits, y), summed over the images so that each image's
  gradient is its own. E_y[(∂L/∂O)²] is the diagonal of the Fisher information of the output,
  which equals the Gauss–Newton Hessian of KL(p_float ‖ p_quant) at the float model.
* ``"published"`` (kept for comparison only): the KL divergence of the float model's output
  against itself, as the published parallel mode computes it; its gradient, p − p, is zero up
  to rounding, so it carries no signal.

Attention blocks of the twin run a float copy of :class:`~vitquant_core.nn.modules.QuantAttention`'s
forward that also records q (times the attention scale), k, the softmax probabilities, v, and the
gradients of the scores q·kᵀ and of attn·v.
"""
from __future__ import annotations

import copy
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.modules import ActQuantizer, QuantAttention, QuantConv2d, QuantLinear
from ...nn.nonuniform import _SampledQuantizer

GRADIENTS = ("fisher", "published")


@dataclass
class OpRecord:
    """One operation: its kind ("linear", "conv", "matmul_qk", "matmul_av"), float inputs and ∂L/∂O."""

    kind: str
    inputs: list[list[torch.Tensor]] = field(default_factory=list)  # per operand, per chunk
    grads: list[torch.Tensor] = field(default_factory=list)

    def operands(self) -> list[torch.Tensor]:
        return [torch.cat(parts, dim=0) for parts in self.inputs]

    def grad(self) -> torch.Tensor | None:
        return torch.cat(self.grads, dim=0) if self.grads else None


def quantized_operations(qmodel: nn.Module) -> list[tuple[str, str]]:
    """(name, kind) of every operation with something quantized, in module order."""
    ops: list[tuple[str, str]] = []
    for name, m in qmodel.named_modules():
        if isinstance(m, (QuantLinear, QuantConv2d)) and (m.w_quantizer is not None or m.input_quantizer is not None):
            ops.append((name, "linear" if isinstance(m, QuantLinear) else "conv"))
        elif isinstance(m, QuantAttention):
            if m.q_quantizer is not None:
                ops.append((f"{name}.matmul_qk", "matmul_qk"))
            if m.attn_quantizer is not None or m.v_quantizer is not None:
                ops.append((f"{name}.matmul_av", "matmul_av"))
    return ops


def float_twin(qmodel: nn.Module) -> nn.Module:
    """A copy of the quantized model computing in float: every quantizer off, float weights."""
    twin = copy.deepcopy(qmodel)
    for m in twin.modules():
        if isinstance(m, (ActQuantizer, _SampledQuantizer)):
            m.mode = "off"
        if isinstance(m, (QuantLinear, QuantConv2d)):
            m.weight_q = m.weight.detach().clone()
    return twin


def _traced_attention(attn: QuantAttention, records: dict[str, OpRecord]) -> Callable[..., torch.Tensor]:
    """A float forward for ``attn`` (same computation as QuantAttention's, quantizers skipped)
    that records the matmul operands and registers gradient hooks on the matmul outputs."""
    qk, av = records.get(f"{attn.qname}.matmul_qk"), records.get(f"{attn.qname}.matmul_av")

    def forward(self: QuantAttention, x: torch.Tensor, attn_mask: torch.Tensor | None = None, **_: Any):
        B, N, _c = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        scores = q @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = (scores + attn_mask if attn_mask.dtype != torch.bool
                      else scores.masked_fill(~attn_mask, float("-inf")))
        probs = scores.softmax(dim=-1)
        out = probs @ v
        if qk is not None:
            qk.inputs[0].append(q.detach())
            qk.inputs[1].append(k.detach())
            if scores.requires_grad:
                scores.register_hook(lambda g: qk.grads.append(g.detach()))
        if av is not None:
            av.inputs[0].append(probs.detach())
            av.inputs[1].append(v.detach())
            if out.requires_grad:
                out.register_hook(lambda g: av.grads.append(g.detach()))
        out = self.norm(out.transpose(1, 2).reshape(B, N, self.attn_dim))
        return self.proj_drop(self.proj(out))  # attention dropout: identity in eval mode

    return types.MethodType(forward, attn)


def _loss(logits: torch.Tensor, gradient: str, generator: torch.Generator) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("PTQ4ViT's Hessian metric needs a classifier whose output is a (batch, classes) "
                         f"tensor of logits, got {type(logits).__name__} {getattr(logits, 'shape', '')}")
    if gradient == "fisher":
        with torch.no_grad():
            y = torch.multinomial(logits.float().softmax(-1), 1, generator=generator).squeeze(1)
        return F.cross_entropy(logits, y, reduction="sum")  # per-image gradients, unscaled by the batch
    # the published parallel mode: KL of the float output against itself (gradient p - p)
    return F.kl_div(logits.log_softmax(-1), logits.detach().softmax(-1), reduction="sum")


def capture_operations(twin: nn.Module, ops: list[tuple[str, str]], images: torch.Tensor,
                       gradient: str | None = "fisher", seed: int = 0, chunk: int = 8) -> dict[str, OpRecord]:
    """Inputs (and, unless ``gradient`` is None, ∂L/∂O) of every operation in ``ops`` on ``images``.

    ``twin`` is a float twin (:func:`float_twin`); its attention blocks' forwards are replaced.
    ``gradient``: "fisher" or "published" (module docstring); None records inputs only (MSE metric).
    """
    if gradient is not None and gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS} or None, got {gradient!r}")
    records = {name: OpRecord(kind) for name, kind in ops}
    hooks = []
    for name, kind in ops:
        if kind in ("linear", "conv"):
            rec, module = records[name], twin.get_submodule(name)
            rec.inputs = [[]]

            def pre(_m: nn.Module, args: tuple, rec: OpRecord = rec) -> None:
                rec.inputs[0].append(args[0].detach())

            def post(_m: nn.Module, _args: tuple, out: torch.Tensor, rec: OpRecord = rec) -> None:
                if out.requires_grad:
                    out.register_hook(lambda g: rec.grads.append(g.detach()))
            hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        else:
            records[name].inputs = [[], []]
    for m in twin.modules():
        if isinstance(m, QuantAttention):
            m.forward = _traced_attention(m, records)  # type: ignore[method-assign]
    generator = torch.Generator().manual_seed(seed)
    try:
        for start in range(0, images.shape[0], chunk):
            x = images[start:start + chunk]
            if gradient is None:
                with torch.no_grad():
                    twin(x)
                continue
            with torch.enable_grad():
                x = x.detach().clone().requires_grad_(True)  # builds the graph through frozen weights
                _loss(twin(x), gradient, generator).backward()
    finally:
        for h in hooks:
            h.remove()
    for rec in records.values():  # hooks fire in backward order; each op's grads are one per chunk
        if gradient is not None and len(rec.grads) != len(rec.inputs[0]):
            raise RuntimeError("an operation's output received no gradient: is every quantized operation "
                               "on the path from the input to the logits?")
    return records
