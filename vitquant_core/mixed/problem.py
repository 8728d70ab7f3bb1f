"""The mixed-precision allocation problem as plain data, and what a solver returns.

Every quantizable operation gets one candidate setting ("W4A4", "W8A8", "float" ...) so that
the summed per-operation sensitivity is smallest while every budget holds. Sensitivities
are additive: the model's predicted drop is the sum of the drops measured with one
operation at a time quantized (the assumption of HAWQ-V3, Yao et al. 2021, and of
ModelOpt's ``auto_quantize``; :func:`additivity_check` says when it breaks). Costs are
additive too, one table per budget kind (BOPs, bytes, energy, average bits ...).

An *average* is a ratio, not a sum, but with a fixed denominator it is linear: the
parameter-weighted average weight width Σ_op n_op·b_op / Σ_op n_op is the sum of the
per-operation terms n_op·b_op / N, which :func:`parameter_weighted_bits` tabulates. A
budget "average bits ≤ 4" is then an ordinary linear constraint.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..nn.config import QuantConfig

FLOAT_LABEL = "float"


def parse_candidate(label: str) -> tuple[int | None, int | None]:
    """(weight bits, activation bits) of a candidate; None keeps that tensor in float.

    "float" (or "W32A32") keeps the operation in float; other labels are read by
    :meth:`QuantConfig.from_label` ("W4A4", "W8A32" ...).
    """
    if not isinstance(label, str):
        raise TypeError(f"a candidate is a label such as 'W4A4' or 'float', got {label!r}")
    if label.strip().lower() == FLOAT_LABEL:
        return None, None
    spec = QuantConfig.from_label(label).default
    return spec.w_bits, spec.a_bits


def is_float(label: str) -> bool:
    return parse_candidate(label) == (None, None)


def precision_key(label: str) -> tuple[int, int]:
    """Orders candidates from low to high precision: total bits, then weight bits (float = 32)."""
    w, a = parse_candidate(label)
    w, a = 32 if w is None else w, 32 if a is None else a
    return w + a, w


class InfeasibleBudget(ValueError):
    """No allocation meets the budgets; ``minimum`` is the smallest cost of each kind alone."""

    def __init__(self, message: str, minimum: dict[str, float]) -> None:
        super().__init__(message)
        self.minimum = minimum


def _finite_nonneg(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, got {x!r}")
    x = float(x)
    if math.isnan(x) or math.isinf(x) or x < 0:
        raise ValueError(f"{what} must be finite and >= 0, got {x}")
    return x


@dataclass(frozen=True, eq=False)  # equal only to itself: it holds arrays and dicts
class Problem:
    """Operations, candidates, sensitivity[op][cand], costs[kind][op][cand] and tied groups.

    ``ops`` are operation names as :class:`QuantConfig` uses them ("blocks.3.mlp.fc1",
    "blocks.3.attn.matmul_qk"). ``sensitivity`` is >= 0, smaller is better; the "float"
    candidate's is 0 by definition and may be left out. ``ties`` lists operations that
    must share one candidate (residual partners, q/k/v of one ``qkv``); overlapping ties
    merge. Every operation must have every candidate in every table.
    """

    ops: tuple[str, ...]
    candidates: tuple[str, ...]
    sensitivity: Mapping[str, Mapping[str, float]]
    costs: Mapping[str, Mapping[str, Mapping[str, float]]]
    ties: tuple[tuple[str, ...], ...] = ()
    # derived in __post_init__: groups of op indices, and the tables as arrays [op, cand]
    groups: tuple[tuple[int, ...], ...] = field(init=False, repr=False)
    _s: np.ndarray = field(init=False, repr=False, compare=False)
    _c: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ops, cands = tuple(self.ops), tuple(self.candidates)
        if isinstance(self.ops, str) or not ops:
            raise ValueError("ops must be a non-empty sequence of operation names")
        if isinstance(self.candidates, str) or not cands:
            raise ValueError("candidates must be a non-empty sequence of labels such as ('W4A4', 'W8A8', 'float')")
        for what, seq in (("ops", ops), ("candidates", cands)):
            dup = sorted({x for x in seq if seq.count(x) > 1})
            if dup:
                raise ValueError(f"{what} repeat {dup}: list each once")
        for c in cands:
            parse_candidate(c)  # raises on a label it cannot read
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "candidates", cands)
        object.__setattr__(self, "_s", self._sensitivity_table(ops, cands))
        if not isinstance(self.costs, Mapping) or not self.costs:
            raise ValueError("costs must map at least one budget kind ('bops', 'size_bytes' ...) to a table "
                             "costs[kind][op][candidate]")
        object.__setattr__(self, "_c", {str(k): self._table(t, ops, cands, f"costs[{k!r}]")
                                        for k, t in self.costs.items()})
        object.__setattr__(self, "ties", tuple(tuple(t) for t in self.ties))
        object.__setattr__(self, "groups", self._groups(ops, self.ties))

    # -- validation
    @staticmethod
    def _table(table: Any, ops: Sequence[str], cands: Sequence[str], what: str) -> np.ndarray:
        if not isinstance(table, Mapping):
            raise TypeError(f"{what} must map each operation to {{candidate: value}}, got {type(table).__name__}")
        unknown = sorted(set(table) - set(ops))
        if unknown:
            raise ValueError(f"{what} names operations not in ops: {unknown[:5]}; add them to ops or drop them")
        out = np.zeros((len(ops), len(cands)))
        for i, op in enumerate(ops):
            row = table.get(op)
            if not isinstance(row, Mapping):
                raise ValueError(f"{what} has no entry for operation {op!r}: give {{candidate: value}} for each of "
                                 f"{list(cands)}")
            extra = sorted(set(row) - set(cands))
            if extra:
                raise ValueError(f"{what}[{op!r}] names unknown candidates {extra}; the candidates are {list(cands)}")
            for j, c in enumerate(cands):
                if c not in row:
                    raise ValueError(f"{what}[{op!r}] has no value for candidate {c!r}")
                out[i, j] = _finite_nonneg(row[c], f"{what}[{op!r}][{c!r}]")
        return out

    def _sensitivity_table(self, ops: Sequence[str], cands: Sequence[str]) -> np.ndarray:
        sens = self.sensitivity
        if not isinstance(sens, Mapping):
            raise TypeError("sensitivity must map each operation to {candidate: value}")
        float_cands = [c for c in cands if is_float(c)]
        filled = {}
        for op, row in sens.items():
            if not isinstance(row, Mapping):
                raise TypeError(f"sensitivity[{op!r}] must map each candidate to a number, got {row!r}")
            row = dict(row)
            for c in float_cands:
                v = row.setdefault(c, 0.0)
                if v != 0:
                    raise ValueError(f"sensitivity[{op!r}][{c!r}] is {v}: keeping an operation in float changes "
                                     "nothing, so its sensitivity is 0 by definition")
            filled[op] = row
        return self._table(filled, ops, cands, "sensitivity")

    @staticmethod
    def _groups(ops: Sequence[str], ties: Iterable[Sequence[str]]) -> tuple[tuple[int, ...], ...]:
        index = {op: i for i, op in enumerate(ops)}
        parent = list(range(len(ops)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for tie in ties:
            if isinstance(tie, str):
                raise TypeError(f"each tie is a list of operation names, got the string {tie!r}")
            unknown = [op for op in tie if op not in index]
            if unknown:
                raise ValueError(f"tie {list(tie)} names operations not in ops: {unknown}")
            for op in tie[1:]:
                a, b = sorted((root(index[tie[0]]), root(index[op])))
                parent[b] = a  # the smaller index is the root, so groups keep the ops' order
        members: dict[int, list[int]] = {}
        for i in range(len(ops)):
            members.setdefault(root(i), []).append(i)
        return tuple(tuple(m) for _, m in sorted(members.items()))

    # -- views the solvers use: one row per group (tied ops summed), one column per candidate
    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._c)

    def group_sensitivity(self) -> np.ndarray:
        return np.stack([self._s[list(g)].sum(0) for g in self.groups])

    def group_cost(self, kind: str) -> np.ndarray:
        self.check_kind(kind)
        return np.stack([self._c[kind][list(g)].sum(0) for g in self.groups])

    def check_kind(self, kind: str) -> None:
        if kind not in self._c:
            raise ValueError(f"no cost table for budget kind {kind!r}; this problem has {list(self._c)}")

    def check_budgets(self, budgets: Mapping[str, float]) -> dict[str, float]:
        if not isinstance(budgets, Mapping):
            raise TypeError("budgets must map a budget kind to its limit, e.g. {'bops': 1.2e9}")
        out = {}
        for kind, limit in budgets.items():
            self.check_kind(kind)
            out[kind] = _finite_nonneg(limit, f"the {kind!r} budget")
        return out

    def minimum_cost(self, kind: str) -> float:
        """The smallest ``kind`` cost any allocation reaches (every group at its cheapest)."""
        return float(self.group_cost(kind).min(1).sum())

    def top_candidate(self) -> int:
        """Index of the highest-precision candidate (ties: the first listed)."""
        keys = [precision_key(c) for c in self.candidates]
        return max(range(len(keys)), key=lambda j: (keys[j], -j))

    def allocation(self, choice_by_group: Sequence[int], method: str, budgets: Mapping[str, float],
                   status: str, seconds: float, **extra: Any) -> Allocation:
        """An :class:`Allocation` from one candidate index per group."""
        per_op = np.empty(len(self.ops), dtype=int)
        for g, j in zip(self.groups, choice_by_group, strict=True):
            per_op[list(g)] = j
        rows = np.arange(len(self.ops))
        return Allocation(
            method=method, choice={op: self.candidates[j] for op, j in zip(self.ops, per_op, strict=True)},
            objective=float(self._s[rows, per_op].sum()),
            used={k: float(t[rows, per_op].sum()) for k, t in self._c.items()},
            budgets=dict(budgets), status=status, seconds=float(seconds), extra=dict(extra))


@dataclass(frozen=True)
class Allocation:
    """One candidate per operation, and what it costs and is predicted to lose.

    ``objective``: the summed sensitivity (the additive model's predicted drop); ``used``:
    the cost of every kind the problem tabulates; ``budgets``: the limits it was solved
    under; ``status``: the solver's word; ``seconds``: wall time of the solve.
    """

    method: str
    choice: dict[str, str]
    objective: float
    used: dict[str, float]
    budgets: dict[str, float]
    status: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many operations got each candidate."""
        out: dict[str, int] = {}
        for c in self.choice.values():
            out[c] = out.get(c, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "choice": dict(self.choice), "objective": self.objective,
                "used": dict(self.used), "budgets": dict(self.budgets), "status": self.status,
                "seconds": self.seconds, **({"extra": self.extra} if self.extra else {})}


def parameter_weighted_bits(n_params: Mapping[str, int], candidates: Sequence[str]) -> dict[str, dict[str, float]]:
    """The cost table whose sum is the parameter-weighted average weight width.

    cost[op][cand] = n_op · b_w(cand) / Σ n, with float weights counted as 32 bits;
    operations without weights (the attention matmuls) cost 0. A limit of 4.0 on this
    table is "at most 4 bits per weight on average".
    """
    total = sum(int(n) for n in n_params.values())
    if total <= 0:
        raise ValueError("n_params must hold at least one operation with weights (a positive count)")
    out = {}
    for op, n in n_params.items():
        if int(n) < 0:
            raise ValueError(f"n_params[{op!r}] is negative: {n}")
        out[op] = {c: int(n) * (32 if parse_candidate(c)[0] is None else parse_candidate(c)[0]) / total
                   for c in candidates}
    return out


def budget_of_uniform(problem: Problem, kind: str, label: str) -> float:
    """The ``kind`` cost of giving every operation of the problem the candidate ``label``."""
    problem.check_kind(kind)
    if label not in problem.candidates:
        raise ValueError(f"{label!r} is not a candidate of this problem; the candidates are {list(problem.candidates)}")
    return float(problem._c[kind][:, problem.candidates.index(label)].sum())


def uniform_allocation(problem: Problem, label: str) -> Allocation:
    """The uniform setting as an :class:`Allocation`, to set beside a solver's on one row."""
    if label not in problem.candidates:
        raise ValueError(f"{label!r} is not a candidate of this problem; the candidates are {list(problem.candidates)}")
    j = problem.candidates.index(label)
    return problem.allocation([j] * len(problem.groups), "uniform", {}, "uniform", 0.0)


def budget_record(allocation: Allocation, kind: str, reference: str | None = None) -> dict[str, Any]:
    """``{kind, reference, limit, used}``: what a mixed-precision results row carries.

    ``reference`` names the uniform setting whose cost the limit matches ("W4A4"), or
    None when the limit was set by hand.
    """
    if kind not in allocation.budgets:
        raise ValueError(f"the allocation was not solved under a {kind!r} budget; its budgets are "
                         f"{list(allocation.budgets)}")
    return {"kind": kind, "reference": reference, "limit": allocation.budgets[kind], "used": allocation.used[kind]}


def additivity_check(predicted: float, measured: float, rtol: float = 0.25, atol: float = 0.1) -> dict[str, Any]:
    """Does the additive model hold? The summed per-operation drops against the measured drop.

    ``predicted``: the allocation's objective (sum of one-at-a-time drops); ``measured``:
    the drop of the whole chosen configuration, in the same unit (top-1 points, say). It
    holds when ``|measured − predicted| <= atol + rtol·|predicted|``. ``ratio`` is
    measured / predicted (None when nothing was predicted).
    """
    p, m = float(predicted), float(measured)
    if math.isnan(p) or math.isnan(m):
        raise ValueError("predicted and measured must be numbers, not NaN")
    gap = m - p
    return {"predicted": p, "measured": m, "gap": gap, "ratio": m / p if p != 0 else None,
            "holds": abs(gap) <= atol + rtol * abs(p)}
