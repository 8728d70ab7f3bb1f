"""The direct sensitivity sweep: one operation at a time, measured on a fixed held-out subset.

Two views per operation and candidate width (AIMET's ``QuantAnalyzer``, Qualcomm, 2023):

* **direct** — only that operation quantized, everything else in float: the top-1 drop
  against the float model and KL(p_float ‖ p_quant) of the logits' softmax. Its activation
  scales are those ``quantize(model, only_op_config(config, op), calib)`` finds (calibrated
  on the float model's activations), so the sweep equals quantizing each operation alone.
* **left_float** — everything quantized at that width except that operation: how much top-1
  and KL it recovers against the fully quantized model. As in AIMET, the quantized model is
  calibrated once (:func:`~vitquant_core.nn.quantize`) and only that operation's quantizers
  are switched off.

The "float" candidate has zero sensitivity by definition and costs nothing; so does an
operation the width's config keeps in float.

Speed: one model per width is calibrated once; per operation only its quantizers are
switched on (or off); the float activations at block boundaries are recorded once per batch
and each operation's pass re-runs the network only from its block onwards (:mod:`.replay`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ...mixed.problem import is_float
from ...nn.quantize import quantize
from ...ptq.ranking.capture import block_container
from .ops import (
    ConfigFor,
    Switches,
    check_candidates,
    check_ops,
    config_of,
    operation_names,
    prepared_float_calibrated,
    split_name,
    width_candidates,
)
from .replay import Replay

VIEWS = ("direct", "left_float")
MEASURES = ("kl", "top1_drop", "recovery_kl", "recovery_top1")


def _kl(logp_float: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_float ‖ p_quant) per image, in nats."""
    return F.kl_div(logits.float().log_softmax(-1), logp_float, log_target=True, reduction="none").sum(-1)


def _check_eval(x_eval: Any, y_eval: Any, batch_size: int) -> None:
    if not isinstance(x_eval, torch.Tensor) or x_eval.ndim < 2 or x_eval.shape[0] == 0:
        raise ValueError("x_eval must be a non-empty tensor of images (N, C, H, W), the fixed held-out subset")
    if y_eval is not None and (not isinstance(y_eval, torch.Tensor) or y_eval.shape != (x_eval.shape[0],)):
        raise ValueError(f"y_eval must be a tensor of {x_eval.shape[0]} labels, one per image of x_eval, "
                         f"or None to use the float model's predictions")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


class _Tally:
    """Correct predictions and summed KL of one (view, operation, candidate) over the batches."""

    def __init__(self) -> None:
        self.correct, self.kl, self.seconds = 0, 0.0, 0.0

    def add(self, logits: torch.Tensor, y: torch.Tensor, logp_float: torch.Tensor, seconds: float = 0.0) -> None:
        self.correct += int((logits.argmax(-1) == y).sum())
        self.kl += float(_kl(logp_float, logits).double().sum())
        self.seconds += seconds


def sensitivity_sweep(model: nn.Module, config_for: ConfigFor, candidates: Sequence[str], calib: Any,
                      x_eval: torch.Tensor, y_eval: torch.Tensor | None = None, ops: Sequence[str] | None = None,
                      views: Sequence[str] = ("direct",), batch_size: int = 128, replay_depth: int | None = None,
                      progress: bool = True) -> list[dict[str, Any]]:
    """Per-operation sensitivity at each candidate width; one row per (operation, candidate).

    ``config_for``: the whole network's config at a candidate (a protocol name, a mapping or
    a callable; :func:`.ops.config_of`). ``calib``: calibration batches, as for ``quantize``.
    ``x_eval``/``y_eval``: the fixed held-out subset and its labels (None: the float model's
    own predictions, so the float top-1 is 100 and the drop is the disagreement). ``ops``:
    operation names (default: every one some candidate's config quantizes). ``views``:
    "direct" and/or "left_float" (module docstring). ``replay_depth``: how many names deep a
    block boundary may be (default: the blocks of the model's block container, e.g.
    ``blocks.7``); 0 turns the replay off and runs every pass from the input.

    Row keys: op, block, layer, candidate, quantized (whether the width's config quantizes
    the op), n_eval, float_top1; direct: top1, top1_drop (points), kl (nats per image);
    left_float: all_top1, all_kl (everything quantized), top1_left_float, kl_left_float,
    recovery_top1 = top1_left_float − all_top1, recovery_kl = all_kl − kl_left_float;
    seconds (this row's passes, calibration excluded).
    """
    cands = check_candidates(candidates)
    views = tuple(views) if not isinstance(views, str) else (views,)
    if not views or any(v not in VIEWS for v in views):
        raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {views!r}")
    _check_eval(x_eval, y_eval, batch_size)
    model = model.eval()
    widths = width_candidates(cands)
    configs = {c: config_of(config_for, c) for c in widths}
    default_ops, known = operation_names(model, configs) if configs else ([], set())
    ops = check_ops(ops, default_ops, known) if configs else list(ops or [])
    if replay_depth is None:
        container = block_container(model, ops)
        replay_depth = 2 + container.count(".") if container else 1
    n = x_eval.shape[0]
    with torch.no_grad():
        float_logits = torch.cat([model(x_eval[i:i + batch_size]) for i in range(0, n, batch_size)])
    y = float_logits.argmax(-1) if y_eval is None else y_eval
    float_top1 = 100.0 * float((float_logits.argmax(-1) == y).float().mean())

    # one calibrated model per width and view, and the operations each one quantizes
    direct: dict[str, tuple[nn.Module, Switches]] = {}
    full: dict[str, tuple[nn.Module, Switches]] = {}
    for c in widths:
        if "direct" in views:
            direct[c] = prepared_float_calibrated(model, configs[c], calib)
        if "left_float" in views:
            qa = quantize(model, configs[c], calib, progress=False)
            full[c] = (qa, Switches(qa))
    tallies: dict[tuple[str, str, str], _Tally] = {}
    work = [(v, c, op) for c in widths for v, table in (("direct", direct), ("left_float", full))
            if c in table for op in ops if op in table[c][1].ops]
    all_tally = {c: _Tally() for c in full}
    bar = tqdm(total=len(work) * ((n + batch_size - 1) // batch_size), desc="sensitivity", disable=not progress)
    for i in range(0, n, batch_size):
        x, yb = x_eval[i:i + batch_size], y[i:i + batch_size]
        logp_f = float_logits[i:i + batch_size].float().log_softmax(-1)
        for c in widths:
            for view, table in (("direct", direct), ("left_float", full)):
                if c not in table:
                    continue
                qmodel, sw = table[c]
                mine = [op for op in ops if op in sw.ops]
                replay = Replay(qmodel, max(replay_depth, 1), [sw.ops[op].module for op in mine])
                traced = replay.trace(x) if replay_depth > 0 else None
                if view == "left_float":
                    all_tally[c].add(traced if traced is not None else qmodel(x), yb, logp_f)
                for op in mine:
                    t0 = time.perf_counter()
                    s = sw.ops[op]
                    s.set(view == "direct")
                    try:
                        with torch.no_grad():
                            out = replay.run(x, s.module) if replay_depth > 0 else qmodel(x)
                    finally:
                        s.set(view != "direct")
                    tallies.setdefault((view, op, c), _Tally()).add(out, yb, logp_f, time.perf_counter() - t0)
                    bar.update(1)
    bar.close()
    return _rows(ops, cands, views, tallies, all_tally, n, float_top1)


def _rows(ops: list[str], cands: tuple[str, ...], views: tuple[str, ...], tallies: dict, all_tally: dict,
          n: int, float_top1: float) -> list[dict[str, Any]]:
    rows = []
    for op in ops:
        block, layer = split_name(op)
        for c in cands:
            d, lf = tallies.get(("direct", op, c)), tallies.get(("left_float", op, c))
            row: dict[str, Any] = {"op": op, "block": block, "layer": layer, "candidate": c,
                                   "quantized": d is not None or lf is not None, "n_eval": n,
                                   "float_top1": float_top1}
            if "direct" in views:
                top1 = float_top1 if d is None else 100.0 * d.correct / n
                row.update(top1=top1, top1_drop=float_top1 - top1, kl=0.0 if d is None else d.kl / n)
            if "left_float" in views:
                a = all_tally.get(c)
                all_top1 = float_top1 if a is None else 100.0 * a.correct / n
                all_kl = 0.0 if a is None else a.kl / n
                top1_lf = all_top1 if lf is None else 100.0 * lf.correct / n
                kl_lf = all_kl if lf is None else lf.kl / n
                row.update(all_top1=all_top1, all_kl=all_kl, top1_left_float=top1_lf, kl_left_float=kl_lf,
                           recovery_top1=top1_lf - all_top1, recovery_kl=all_kl - kl_lf)
            row["seconds"] = sum(t.seconds for t in (d, lf) if t is not None)
            if is_float(c):
                row["quantized"] = False
            rows.append(row)
    return rows


def sensitivity_table(rows: Sequence[dict[str, Any]], measure: str = "kl",
                      clip_negative: bool = True) -> dict[str, dict[str, float]]:
    """sensitivity[op][candidate] from sweep rows, as :class:`vitquant_core.mixed.Problem` takes it.

    ``measure``: "kl", "top1_drop", "recovery_kl" or "recovery_top1". Top-1 drops can be
    negative on a finite subset (a quantized operation that happens to fix a few images);
    the allocation problem needs sensitivities >= 0, so they are clipped at 0 unless
    ``clip_negative`` is False.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        if measure not in r:
            raise ValueError(f"the rows have no {measure!r}: run sensitivity_sweep with the view that measures it "
                             "('direct' for kl / top1_drop, 'left_float' for the recovery measures)")
        v = float(r[measure])
        if r["op"] in table and r["candidate"] in table[r["op"]]:
            raise ValueError(f"two rows for ({r['op']!r}, {r['candidate']!r}): pass one sweep's rows")
        table.setdefault(r["op"], {})[r["candidate"]] = max(v, 0.0) if clip_negative else v
    return table


def scores_at(rows: Sequence[dict[str, Any]], candidate: str, measure: str = "kl") -> dict[str, float]:
    """op → the ``measure`` of every row at ``candidate`` (one column, e.g. for :func:`rank_agreement`)."""
    out = {r["op"]: float(r[measure]) for r in rows if r["candidate"] == candidate and measure in r}
    if not out:
        raise ValueError(f"no row at candidate {candidate!r} with {measure!r}; the rows' candidates are "
                         f"{sorted({r['candidate'] for r in rows})}")
    return out
