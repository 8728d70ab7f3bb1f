"""Three ways to choose one candidate per operation under budgets.

* :func:`solve_milp` — exact: a 0/1 integer linear program (the formulation of HAWQ-V3,
  Yao et al. 2021, with any number of budget kinds) solved to optimality by HiGHS through
  :func:`scipy.optimize.milp`.
* :func:`solve_greedy` — the common baseline: start every operation at the highest
  precision and repeatedly make the move with the smallest sensitivity increase per unit
  of cost saved, until every budget holds.
* :func:`solve_bisection` — after AIMET's automatic mixed precision (Pandey et al. 2023,
  "A Practical Mixed Precision Algorithm for Post-Training Quantization"): a greedy
  accuracy–cost curve that lowers one operation at a time, least sensitive candidate
  first, then a bisection along the curve for the first point within budget.

All three read a :class:`~vitquant_core.mixed.problem.Problem` and return an
:class:`~vitquant_core.mixed.problem.Allocation`; ties are broken deterministically.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from .problem import Allocation, InfeasibleBudget, Problem

_TOL = 1e-9  # relative slack on a budget, for sums of floats


def _within(used: float, limit: float) -> bool:
    return used <= limit + _TOL * max(1.0, abs(limit))


def _infeasible(problem: Problem, budgets: Mapping[str, float], method: str) -> InfeasibleBudget:
    minimum = {k: problem.minimum_cost(k) for k in budgets}
    below = {k: v for k, v in budgets.items() if not _within(minimum[k], v)}
    if below:
        what = "; ".join(f"{k}: limit {v:.6g} < smallest achievable {minimum[k]:.6g}" for k, v in below.items())
        msg = f"no allocation meets the budgets ({what}): raise those limits"
    else:
        msg = (f"each budget alone can be met (smallest achievable: {minimum}) but not all of them together "
               f"({dict(budgets)}): raise one of them")
    if method != "milp":
        msg += f" ({method} stopped there; solve_milp says whether any allocation meets them)"
    return InfeasibleBudget(msg, minimum)


def solve_milp(problem: Problem, budgets: Mapping[str, float], time_limit: float = 60.0) -> Allocation:
    """The allocation of least summed sensitivity that meets every budget, exactly.

    One binary x[g, c] per tied group g and candidate c; Σ_c x[g, c] = 1; for each budget
    kind, Σ cost·x ≤ limit; minimise Σ sensitivity·x. HiGHS runs with a zero optimality gap.
    Among allocations of equal sensitivity, the cheaper one wins (a second solve minimises
    the summed costs, each relative to its limit, at the optimal sensitivity). Raises
    :class:`InfeasibleBudget` with the smallest achievable cost of each kind.
    """
    budgets = problem.check_budgets(budgets)
    t0 = time.perf_counter()
    s = problem.group_sensitivity()
    n_groups, n_cands = s.shape
    n = n_groups * n_cands
    one_each = LinearConstraint(np.kron(np.eye(n_groups), np.ones(n_cands)), 1, 1)
    rows, scales = [], {}
    for kind, limit in budgets.items():
        cost = problem.group_cost(kind).ravel()
        # rows scaled to O(1) so that HiGHS' absolute feasibility tolerance means the same for bytes and BOPs
        scales[kind] = max(limit, float(cost.max()), 1e-30)
        rows.append((cost / scales[kind], limit / scales[kind]))
    cons = [one_each] + [LinearConstraint(c[None, :], -np.inf, u) for c, u in rows]
    options = {"disp": False, "time_limit": float(time_limit), "mip_rel_gap": 0.0}
    kw: dict[str, Any] = {"integrality": np.ones(n), "bounds": Bounds(0, 1), "options": options}

    res = milp(s.ravel(), constraints=cons, **kw)
    if res.status == 2:
        raise _infeasible(problem, budgets, "milp")
    if res.x is None or res.status != 0:
        raise RuntimeError(f"HiGHS did not solve the allocation problem: {res.message} (status {res.status})")
    best = float(s.ravel() @ np.round(res.x))
    # tie-break: the cheapest allocation among those of optimal sensitivity
    kinds = list(budgets) or list(problem.kinds)
    cheap = sum(problem.group_cost(k).ravel() / (scales.get(k) or max(float(problem.group_cost(k).max()), 1e-30))
                for k in kinds)
    at_best = LinearConstraint(s.ravel()[None, :], -np.inf, best + _TOL * max(1.0, float(s.sum())))
    res2 = milp(cheap, constraints=cons + [at_best], **kw)
    if res2.status == 0 and res2.x is not None:
        res = res2
    choice = np.round(res.x).reshape(n_groups, n_cands).argmax(1)
    alloc = problem.allocation(choice, "milp", budgets, "optimal", time.perf_counter() - t0)
    for kind, limit in budgets.items():  # a guard on HiGHS' tolerances, not expected to fire
        if not _within(alloc.used[kind], limit):
            raise RuntimeError(f"the MILP solution uses {alloc.used[kind]:.9g} of the {kind!r} budget {limit:.9g}")
    return alloc


def _budget_arrays(problem: Problem, budgets: Mapping[str, float]) -> dict[str, np.ndarray]:
    return {k: problem.group_cost(k) for k in budgets}


def _cheaper(cost: dict[str, np.ndarray], g: int, frm: int, to: int) -> bool:
    """``to`` costs no more than ``frm`` in every budget kind and less in at least one."""
    d = [c[g, frm] - c[g, to] for c in cost.values()]
    return all(x >= 0 for x in d) and any(x > 0 for x in d)


def solve_greedy(problem: Problem, budgets: Mapping[str, float]) -> Allocation:
    """The common greedy baseline: from highest precision down, best ratio first.

    Every group starts at the highest-precision candidate (float, else the most bits). While
    a budget is exceeded, over every group and every candidate that costs no more in any
    budget kind, take the move with the smallest Δsensitivity / saving, where saving sums,
    over the budgets still exceeded, the cost saved relative to that budget's limit. Ties:
    the earlier group, then the earlier candidate. It stops as soon as every budget holds,
    and never raises an operation back, so it can overshoot: it is not optimal.
    """
    budgets = problem.check_budgets(budgets)
    t0 = time.perf_counter()
    s, cost = problem.group_sensitivity(), _budget_arrays(problem, budgets)
    n_groups, n_cands = s.shape
    cur = np.full(n_groups, problem.top_candidate())
    steps = 0
    while True:
        rows = np.arange(n_groups)
        over = [k for k, lim in budgets.items() if not _within(float(cost[k][rows, cur].sum()), lim)]
        if not over:
            break
        best: tuple[float, int, int] | None = None
        for g in range(n_groups):
            for c in range(n_cands):
                if not _cheaper(cost, g, cur[g], c):
                    continue
                saving = sum((cost[k][g, cur[g]] - cost[k][g, c]) / max(budgets[k], 1e-30) for k in over)
                if saving <= 0:
                    continue
                key = ((s[g, c] - s[g, cur[g]]) / saving, g, c)
                if best is None or key < best:
                    best = key
        if best is None:
            raise _infeasible(problem, budgets, "greedy")
        cur[best[1]] = best[2]
        steps += 1
    return problem.allocation(cur, "greedy", budgets, "within budget", time.perf_counter() - t0, steps=steps)


def pareto_curve(problem: Problem, kinds: list[str] | tuple[str, ...] | None = None) -> list[Allocation]:
    """AIMET's greedy accuracy–cost curve under the additive model.

    Starts with every group at the highest-precision candidate; goes once through every
    (group, candidate) pair in order of increasing sensitivity (ties: group, then candidate
    order) and lowers that group to the candidate whenever it is cheaper than the group's
    current one in every kind of ``kinds`` (default: all the problem's kinds), so costs
    never rise along the curve. Returns one allocation per point, the start first.
    """
    kinds = list(problem.kinds if kinds is None else kinds)
    for k in kinds:
        problem.check_kind(k)
    s, cost = problem.group_sensitivity(), {k: problem.group_cost(k) for k in kinds}
    n_groups, n_cands = s.shape
    cur = np.full(n_groups, problem.top_candidate())
    points = [problem.allocation(cur, "pareto", {}, "point", 0.0, step=0)]
    order = sorted((s[g, c], g, c) for g in range(n_groups) for c in range(n_cands))
    for _, g, c in order:
        if _cheaper(cost, g, cur[g], c):
            cur[g] = c
            points.append(problem.allocation(cur, "pareto", {}, "point", 0.0, step=len(points)))
    return points


def solve_bisection(problem: Problem, budgets: Mapping[str, float]) -> Allocation:
    """AIMET-style allocation: the first point of :func:`pareto_curve` within every budget.

    Costs fall along the curve, so "within budget" is monotone in the step and a bisection
    finds the first such point in O(log n) checks. (AIMET bisects because it measures each
    point's accuracy on data; here the points are scored by the additive model, and a
    notebook may evaluate the curve's points itself.) Raises :class:`InfeasibleBudget` when
    even the curve's cheapest end exceeds a budget.
    """
    budgets = problem.check_budgets(budgets)
    t0 = time.perf_counter()
    curve = pareto_curve(problem, list(budgets) or None)

    def ok(i: int) -> bool:
        return all(_within(curve[i].used[k], lim) for k, lim in budgets.items())

    if not ok(len(curve) - 1):
        raise _infeasible(problem, budgets, "bisection")
    lo, hi, checks = 0, len(curve) - 1, 0  # invariant: ok(hi); every index below lo fails
    while lo < hi:
        mid = (lo + hi) // 2
        checks += 1
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    point = curve[hi]
    groups_choice = [problem.candidates.index(point.choice[problem.ops[g[0]]]) for g in problem.groups]
    return problem.allocation(groups_choice, "bisection", budgets, "within budget", time.perf_counter() - t0,
                              step=hi, n_points=len(curve), checks=checks)
