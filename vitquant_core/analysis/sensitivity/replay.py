"""Re-run a model only from a given operation onwards, re-using the outputs computed before it.

In eager PyTorch a module whose call has returned before operation X starts cannot depend on
X: changing X's quantizers leaves its output unchanged. :meth:`Replay.trace` runs the model
once, recording when each *boundary* module (every module at most ``depth`` names deep: the
blocks of a ViT's ``blocks``, the stages' blocks of a ResNet, the stem and the head) starts
and ends and what it returns; :meth:`Replay.run` then makes each boundary module that ended
before X started return its recorded output without computing (the outermost such modules
only), so a pass costs only the blocks from X's onwards. The result is the full forward's,
bit for bit, because the skipped modules would compute exactly what was recorded.

Outputs are cloned on the way in and out, because downstream modules may write in place
(``ReLU(inplace=True)``, ``out += identity``). Modules called more than once per forward,
or returning something other than a tensor, are never replayed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class Replay:
    """Boundary modules of ``model`` and, after :meth:`trace`, their recorded outputs."""

    def __init__(self, model: nn.Module, depth: int, targets: Sequence[nn.Module]) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"replay depth must be an integer >= 1 (how many names deep a boundary module may be), "
                             f"got {depth!r}")
        self.model = model
        self.boundary = {name: m for name, m in model.named_modules() if name and name.count(".") < depth}
        self.targets = list({id(t): t for t in targets}.values())
        self.start: dict[int, int] = {}  # id(target) -> event index at which it started
        self.span: dict[str, tuple[int, int]] = {}  # boundary name -> (start, end) event indices
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self._plans: dict[int, list[str]] = {}

    def trace(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on ``x``, recording the boundary outputs; returns its output."""
        clock = [0]
        self.start, self.span, self.outputs, self.calls, self._plans = {}, {}, {}, {}, {}
        opened: dict[str, int] = {}
        hooks = []

        def tick() -> int:
            clock[0] += 1
            return clock[0]

        def started(m: nn.Module, _a: tuple) -> None:  # a pre-hook's return value would replace the input
            if id(m) not in self.start:
                self.start[id(m)] = tick()

        for t in self.targets:
            hooks.append(t.register_forward_pre_hook(started))
        for name, m in self.boundary.items():
            def pre(_m: nn.Module, _a: tuple, name: str = name) -> None:
                opened[name] = tick()
                self.calls[name] = self.calls.get(name, 0) + 1

            def post(_m: nn.Module, _a: tuple, out: object, name: str = name) -> None:
                self.span[name] = (opened[name], tick())
                if isinstance(out, torch.Tensor):
                    self.outputs[name] = out.detach().clone()
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        try:
            with torch.no_grad():
                out = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        return out

    def plan(self, target: nn.Module) -> list[str]:
        """The outermost boundary modules that ended before ``target`` started."""
        key = id(target)
        if key not in self._plans:
            if key not in self.start:
                raise RuntimeError("the operation's module did not run in the traced forward pass: is it on the "
                                   "path from the input to the output?")
            t0 = self.start[key]
            done = sorted((n for n, (_s, e) in self.span.items()
                           if e < t0 and self.calls.get(n) == 1 and n in self.outputs), key=lambda n: n.count("."))
            chosen: list[str] = []
            for n in done:
                if not any(n.startswith(c + ".") for c in chosen):
                    chosen.append(n)
            self._plans[key] = chosen
        return self._plans[key]

    def run(self, x: torch.Tensor, target: nn.Module) -> torch.Tensor:
        """The model's output on ``x`` (the traced input), computed from ``target`` onwards."""
        patched = []
        try:
            for name in self.plan(target):
                m = self.boundary[name]
                out = self.outputs[name]
                patched.append((m, m.__dict__.get("forward")))
                m.forward = lambda *_a, out=out, **_k: out.clone()  # type: ignore[method-assign]
            with torch.no_grad():
                return self.model(x)
        finally:
            for m, old in patched:
                if old is None:
                    del m.forward
                else:
                    m.forward = old  # type: ignore[method-assign]
