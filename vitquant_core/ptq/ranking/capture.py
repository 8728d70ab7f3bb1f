"""Activation capture for ranking-aware PTQ: the inputs each operation sees on the calibration set.

Layers are refined one at a time in forward order (Liu et al., NeurIPS 2021, Algorithm 1), so
each one needs its calibration inputs from the model as it is at that moment: the partially
quantized model, or the float one. :func:`discover_operations` lists the refinable operations
in the order a forward pass runs them; :func:`capture_inputs` records an operation's float
inputs with forward hooks, stopping the forward pass there; :func:`float_output` is the float
model's own output of an operation. :class:`BlockInputCache` lets a ViT's layers start from
stored activations at the boundary of their block instead of from the network input.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from ...nn.modules import QuantAttention, QuantLinear

__all__ = ["BlockInputCache", "block_container", "capture_inputs", "discover_operations", "float_output"]


class _Stop(Exception):
    """Raised by a capture hook once a layer's inputs are recorded: the rest of the forward is skipped."""


def discover_operations(qmodel: nn.Module, sample: torch.Tensor) -> list[tuple[str, str]]:
    """(name, kind) of every refinable operation, in the order one forward pass runs them."""
    order: list[str] = []
    hooks = []
    for name, m in qmodel.named_modules():
        if isinstance(m, QuantLinear):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: order.append(name) if name not in order else None))
    try:
        with torch.no_grad():
            qmodel(sample)
    finally:
        for h in hooks:
            h.remove()
    qkv_of = {id(m.qkv): n for n, m in qmodel.named_modules() if isinstance(m, QuantAttention)}
    units: list[tuple[str, str]] = []
    for name in order:
        units.append((name, "linear"))
        attn_name = qkv_of.get(id(qmodel.get_submodule(name)))
        if attn_name is not None:  # inside attention: qkv → q·kᵀ → attn·v → proj
            attn = qmodel.get_submodule(attn_name)
            if attn.q_quantizer is not None:
                units.append((attn_name + ".matmul_qk", "matmul_qk"))
            if attn.attn_quantizer is not None or attn.v_quantizer is not None:
                units.append((attn_name + ".matmul_av", "matmul_av"))
    return units


def block_container(model: nn.Module, names: Sequence[str]) -> str | None:
    """The nn.Sequential whose children hold the most of ``names`` (a ViT's ``blocks``), if any."""
    best, best_count = None, 0
    for cname, m in model.named_modules():
        if not isinstance(m, nn.Sequential) or len(m) < 2:
            continue
        pre = f"{cname}." if cname else ""
        count = sum(1 for n in names if n.startswith(pre) and n[len(pre):].split(".", 1)[0].isdigit())
        if count > best_count:
            best, best_count = cname, count
    return best


class BlockInputCache:
    """The inputs of one block of a model's block container (a ViT's ``blocks``), one tensor
    per calibration batch, advanced block by block as the layers are refined.

    What it caches: ``acts``, the activations entering block ``block`` of the container
    ``container`` of ``model`` (the partially quantized model, or its float twin), for every
    calibration batch. Why: capturing a layer's inputs by re-running the model from its input
    costs a prefix of the network per layer (quadratic in depth). Instead the inputs of block 0
    are recorded once, and block k's inputs are computed from block k−1's when the first layer
    of block k is reached: layers are refined in forward order, so every earlier block is final
    by then and the values are those a full forward pass would give (one block of compute per
    layer). Only used when the model calls the container as a whole (nn.Sequential semantics:
    each block's output is the next block's only input); otherwise ``runs`` returns None and
    the caller runs the whole model.
    """

    def __init__(self, model: nn.Module, container: str, batches: list[torch.Tensor], device: torch.device) -> None:
        self.model, self.container, self.batches, self.device = model, container, batches, device
        self.seq: nn.Sequential = model.get_submodule(container)  # type: ignore[assignment]
        self.block = -1  # index of the block whose inputs self.acts holds (-1: not recorded yet)
        self.acts: list[torch.Tensor] | None = None
        self.usable = True

    def _block_of(self, name: str) -> int | None:
        pre = f"{self.container}." if self.container else ""
        if not name.startswith(pre):
            return None
        head = name[len(pre):].split(".", 1)[0]
        return int(head) if head.isdigit() and int(head) < len(self.seq) else None

    def _record(self) -> None:
        store: list[torch.Tensor] = []

        def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                return  # not plain sequential use: leave the forward alone, fall back below
            store.append(args[0].detach())
            raise _Stop
        hook = self.seq.register_forward_pre_hook(pre, with_kwargs=True)
        try:
            with torch.no_grad():
                for x in self.batches:
                    try:
                        self.model(x.to(self.device))
                    except _Stop:
                        pass
        finally:
            hook.remove()
        self.usable = len(store) == len(self.batches)
        self.acts, self.block = store, 0

    def runs(self, name: str) -> list[Callable[[], Any]] | None:
        """One callable per batch running block k (the one holding ``name``) on its inputs."""
        k = self._block_of(name)
        if k is None or not self.usable:
            return None
        if self.acts is None:
            self._record()
            if not self.usable:
                return None
        if k < self.block:  # never happens in forward order; recompute rather than guess
            self._record()
        with torch.no_grad():
            while self.block < k:
                blk = self.seq[self.block]
                self.acts = [blk(h) for h in self.acts]  # type: ignore[union-attr]
                self.block += 1
        blk = self.seq[k]
        return [lambda h=h: blk(h) for h in self.acts]  # type: ignore[union-attr]


def capture_inputs(source: nn.Module, name: str, kind: str, batches: list[torch.Tensor],
                   device: torch.device, cache: BlockInputCache | None = None) -> list[torch.Tensor]:
    """Run ``source`` on the calibration batches up to operation ``name``; return its float inputs.

    ``cache``: start from the stored activations at the boundary of the block that holds
    ``name`` instead of from the network input (the same values, one block of compute).
    """
    runs = cache.runs(name) if cache is not None else None
    if kind == "linear":
        module, store = source.get_submodule(name), [[]]

        def pre(_m: nn.Module, args: tuple) -> None:
            store[0].append(args[0].detach().float())
            raise _Stop
        hooks = [module.register_forward_pre_hook(pre)]
    else:
        attn: QuantAttention = source.get_submodule(name.rsplit(".", 1)[0])  # type: ignore[assignment]
        heads, hd = attn.num_heads, attn.head_dim
        store = [[], []]

        def split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            b, n = out.shape[:2]
            q, k, v = out.reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
            return attn.q_norm(q) * attn.scale, attn.k_norm(k), v  # what q_/k_/v_quantizer see

        if kind == "matmul_qk":
            def post(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
                q, k, _v = split(out)
                store[0].append(q.detach().float())
                store[1].append(k.detach().float())
                raise _Stop
            hooks = [attn.qkv.register_forward_hook(post)]
        else:  # matmul_av: softmax of the (quantized-operand) scores, and v
            def post(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
                store[1].append(split(out)[2].detach().float())

            def pre(_m: nn.Module, _args: tuple) -> None:
                store[0].append(attn.capture["scores"].softmax(dim=-1).float())  # type: ignore[index]
                raise _Stop
            hooks = [attn.qkv.register_forward_hook(post), attn.proj.register_forward_pre_hook(pre)]
        old_capture = attn.capture
        attn.capture = {}
    try:
        with torch.no_grad():
            for run in runs or [lambda x=x: source(x.to(device)) for x in batches]:
                try:
                    run()
                except _Stop:
                    pass
    finally:
        for h in hooks:
            h.remove()
        if kind != "linear":
            attn.capture = old_capture
    return [torch.cat(s, dim=0) for s in store]


def float_output(twin: nn.Module, name: str, kind: str, batches: list[torch.Tensor],
                 device: torch.device, cache: BlockInputCache | None = None) -> torch.Tensor:
    """The float model's output of operation ``name`` on the calibration set."""
    fp = capture_inputs(twin, name, kind, batches, device, cache)
    with torch.no_grad():
        if kind == "linear":
            return twin.get_submodule(name)(fp[0])  # the twin computes in float, with the float bias
        if kind == "matmul_qk":
            return fp[0] @ fp[1].transpose(-2, -1)
        return fp[0] @ fp[1]

