import itertools

import numpy as np
import pytest

from vitquant_core.mixed import (
    InfeasibleBudget,
    Problem,
    budget_of_uniform,
    parameter_weighted_bits,
    pareto_curve,
    parse_candidate,
    solve_bisection,
    solve_greedy,
    solve_milp,
    uniform_allocation,
)

CANDS = ("W3A3", "W4A4", "W6A6", "W8A8", "float")
SOLVERS = [solve_milp, solve_greedy, solve_bisection]


def brute_force(p: Problem, budgets: dict) -> float:
    """The least summed sensitivity over every allocation that meets the budgets."""
    s = p.group_sensitivity()
    cost = {k: p.group_cost(k) for k in budgets}
    best = np.inf
    for pick in itertools.product(range(len(p.candidates)), repeat=len(p.groups)):
        rows = np.arange(len(p.groups))
        if all(cost[k][rows, pick].sum() <= lim * (1 + 1e-12) for k, lim in budgets.items()):
            best = min(best, s[rows, pick].sum())
    return best


def layer_problem(ties=()) -> Problem:
    """Four layers with made-up MACs, weights and sensitivities; four budget kinds."""
    macs = {"blocks.0.attn.qkv": 1e6, "blocks.0.attn.proj": 4e6, "blocks.0.mlp.fc1": 2e6, "blocks.0.mlp.fc2": 1e6}
    params = {"blocks.0.attn.qkv": 1e4, "blocks.0.attn.proj": 4e4, "blocks.0.mlp.fc1": 2e4, "blocks.0.mlp.fc2": 5e3}
    scale = {"blocks.0.attn.qkv": 3.0, "blocks.0.attn.proj": 0.2, "blocks.0.mlp.fc1": 1.0, "blocks.0.mlp.fc2": 0.6}
    drop = {"W3A3": 16.0, "W4A4": 4.0, "W6A6": 0.5, "W8A8": 0.1}
    ops = tuple(macs)

    def bits(c):
        w, a = parse_candidate(c)
        return (w or 32), (a or 32)

    costs = {
        "avg_bits": parameter_weighted_bits({o: int(params[o]) for o in ops}, CANDS),
        "size_bytes": {o: {c: params[o] * bits(c)[0] / 8 for c in CANDS} for o in ops},
        "bops": {o: {c: macs[o] * bits(c)[0] * bits(c)[1] for c in CANDS} for o in ops},
        # a toy energy model: a MAC costs ∝ b_w·b_a, a weight byte read costs 5 units
        "energy_pj": {o: {c: 1e-3 * macs[o] * bits(c)[0] * bits(c)[1] + 5 * params[o] * bits(c)[0] / 8
                          for c in CANDS} for o in ops},
    }
    sens = {o: {c: scale[o] * drop[c] for c in CANDS[:-1]} for o in ops}
    return Problem(ops, CANDS, sens, costs, ties=ties)


@pytest.mark.parametrize("budget", [
    {"avg_bits": "W4A4"}, {"size_bytes": "W4A4"}, {"bops": "W4A4"}, {"energy_pj": "W4A4"},
    {"bops": "W6A6", "size_bytes": "W4A4"},
    {"avg_bits": "W6A6", "size_bytes": "W6A6", "bops": "W4A4", "energy_pj": "W6A6"},
], ids=["avg-bits", "size", "bops", "energy", "bops+size", "all-four"])
def test_milp_meets_every_budget_at_the_optimum(budget):
    p = layer_problem()
    limits = {k: budget_of_uniform(p, k, ref) for k, ref in budget.items()}
    a = solve_milp(p, limits)
    assert a.status == "optimal" and a.seconds > 0
    for k, lim in limits.items():
        assert a.used[k] <= lim * (1 + 1e-9)
    assert a.objective == pytest.approx(brute_force(p, limits), rel=1e-12)
    # mixed beats every uniform setting within the budgets (sensitivities differ 15-fold here)
    uniform = [uniform_allocation(p, c) for c in CANDS]
    fits = [u.objective for u in uniform if all(u.used[k] <= lim * (1 + 1e-9) for k, lim in limits.items())]
    assert fits and a.objective < min(fits)
    for solve in (solve_greedy, solve_bisection):
        h = solve(p, limits)
        assert all(h.used[k] <= lim * (1 + 1e-9) for k, lim in limits.items())
        assert h.objective >= a.objective - 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_milp_matches_brute_force_on_random_problems_with_ties(seed):
    rng = np.random.default_rng(seed)
    ops = [f"op{i}" for i in range(6)]
    cands = ("W4A4", "W6A6", "W8A8")
    sens = {o: dict(zip(cands, sorted(rng.uniform(0, 3, 3), reverse=True), strict=True)) for o in ops}
    costs = {k: {o: dict(zip(cands, sorted(rng.uniform(1, 10, 3)), strict=True)) for o in ops} for k in ("k1", "k2")}
    p = Problem(ops, cands, sens, costs, ties=[("op0", "op3"), ("op4", "op5")])
    limits = {"k1": 0.8 * budget_of_uniform(p, "k1", "W6A6"), "k2": budget_of_uniform(p, "k2", "W6A6")}
    a = solve_milp(p, limits)
    assert a.objective == pytest.approx(brute_force(p, limits), rel=1e-12)
    assert a.choice["op0"] == a.choice["op3"] and a.choice["op4"] == a.choice["op5"]


def knapsack() -> Problem:
    # lowering a saves 10 BOPs for +6, b saves 6 for +3, c saves 5 for +4; the budget asks for 10 saved
    ops = ("a", "b", "c")
    sens = {"a": {"W4A4": 6.0, "W8A8": 0.0}, "b": {"W4A4": 3.0, "W8A8": 0.0}, "c": {"W4A4": 4.0, "W8A8": 0.0}}
    bops = {"a": {"W4A4": 10, "W8A8": 20}, "b": {"W4A4": 6, "W8A8": 12}, "c": {"W4A4": 5, "W8A8": 10}}
    return Problem(ops, ("W4A4", "W8A8"), sens, {"bops": bops})


def test_milp_finds_the_optimum_where_greedy_and_bisection_do_not():
    p = knapsack()
    exact = solve_milp(p, {"bops": 32})
    assert exact.choice == {"a": "W4A4", "b": "W8A8", "c": "W8A8"} and exact.objective == 6.0
    assert exact.used["bops"] == 32.0
    # greedy takes b (ratio 0.5), still 4 over, then a (0.6): 9, strictly worse
    greedy = solve_greedy(p, {"bops": 32})
    assert greedy.choice == {"a": "W4A4", "b": "W4A4", "c": "W8A8"} and greedy.objective == 9.0
    assert greedy.objective > exact.objective
    # AIMET's curve lowers the least sensitive first: b (36 BOPs), then c (31): 7
    bis = solve_bisection(p, {"bops": 32})
    assert bis.choice == {"a": "W8A8", "b": "W4A4", "c": "W4A4"} and bis.objective == 7.0
    assert bis.extra["step"] == 2 and bis.extra["n_points"] == 4


def test_pareto_curve_lowers_costs_step_by_step():
    curve = pareto_curve(knapsack())
    assert [pt.used["bops"] for pt in curve] == [42.0, 36.0, 31.0, 21.0]
    assert [pt.objective for pt in curve] == [0.0, 3.0, 7.0, 13.0]


def test_tied_operations_get_one_width():
    ops = ("blocks.0.attn.proj", "blocks.0.mlp.fc2")  # residual partners, say
    sens = {ops[0]: {"W4A4": 0.1, "W8A8": 0.0}, ops[1]: {"W4A4": 5.0, "W8A8": 0.0}}
    bops = {ops[0]: {"W4A4": 10, "W8A8": 40}, ops[1]: {"W4A4": 1, "W8A8": 4}}
    free = Problem(ops, ("W4A4", "W8A8"), sens, {"bops": bops})
    assert solve_milp(free, {"bops": 14}).choice == {ops[0]: "W4A4", ops[1]: "W8A8"}
    tied = Problem(ops, ("W4A4", "W8A8"), sens, {"bops": bops}, ties=[ops])
    for solve in SOLVERS:
        a = solve(tied, {"bops": 14})
        assert a.choice == {ops[0]: "W4A4", ops[1]: "W4A4"} and a.objective == pytest.approx(5.1)
    # with room for both at 8 bits, the tie lifts both together
    assert set(solve_milp(tied, {"bops": 44}).choice.values()) == {"W8A8"}


@pytest.mark.parametrize("limit, expected", [(16, {"x": "W8A8", "y": "W8A8"}), (40, {"x": "W8A8", "y": "float"}),
                                             (64, {"x": "float", "y": "float"})], ids=["none", "one", "both"])
def test_float_costs_nothing_in_sensitivity_and_is_chosen_when_affordable(limit, expected):
    sens = {"x": {"W8A8": 1.0}, "y": {"W8A8": 5.0}}  # float left out: 0 by definition
    size = {o: {"W8A8": 8, "float": 32} for o in ("x", "y")}
    p = Problem(("x", "y"), ("W8A8", "float"), sens, {"size_bytes": size})
    a = solve_milp(p, {"size_bytes": limit})
    assert a.choice == expected
    assert a.objective == sum(sens[o]["W8A8"] for o, c in expected.items() if c == "W8A8")


def test_infeasible_budget_says_the_smallest_achievable_cost():
    p = knapsack()
    for solve in SOLVERS:
        with pytest.raises(InfeasibleBudget, match="bops: limit 20 < smallest achievable 21") as e:
            solve(p, {"bops": 20})
        assert e.value.minimum == {"bops": 21.0}


def test_budgets_that_only_conflict_together_are_infeasible():
    # W4A4 is small but slow here, W8A8 fast but large: one budget alone is met, not both
    p = Problem(("a",), ("W4A4", "W8A8"), {"a": {"W4A4": 1.0, "W8A8": 0.0}},
                {"size": {"a": {"W4A4": 1, "W8A8": 2}}, "latency": {"a": {"W4A4": 2, "W8A8": 1}}})
    assert solve_milp(p, {"size": 1}).choice == {"a": "W4A4"}
    with pytest.raises(InfeasibleBudget, match="not all of them together"):
        solve_milp(p, {"size": 1, "latency": 1})


def test_equally_sensitive_allocations_resolve_to_the_cheaper():
    sens = {"a": {"W6A6": 0.0, "W8A8": 0.0}}  # 6 bits lose nothing more than 8 or float
    cost = {"bops": {"a": {"W6A6": 36, "W8A8": 64, "float": 1024}}}
    p = Problem(("a",), ("W6A6", "W8A8", "float"), sens, cost)
    assert solve_milp(p, {"bops": 2048}).choice == {"a": "W6A6"}
    assert solve_milp(p, {}).choice == {"a": "W6A6"}  # no budget at all


def test_results_are_deterministic():
    # four identical operations, room for two at 8 bits: six optima of equal sensitivity and cost
    ops = ("q", "k", "v", "o")
    sens = {o: {"W4A4": 1.0, "W8A8": 0.0} for o in ops}
    bops = {"bops": {o: {"W4A4": 1, "W8A8": 4} for o in ops}}
    runs = {solve.__name__: [solve(Problem(ops, ("W4A4", "W8A8"), sens, bops), {"bops": 10}).choice
                             for _ in range(3)] for solve in SOLVERS}
    for name, choices in runs.items():
        assert choices[0] == choices[1] == choices[2], name
        assert sorted(choices[0].values()) == ["W4A4", "W4A4", "W8A8", "W8A8"], name
    # greedy and the curve break ties by operation order: the first ones are lowered first
    assert runs["solve_greedy"][0] == {"q": "W4A4", "k": "W4A4", "v": "W8A8", "o": "W8A8"}
    assert runs["solve_bisection"][0] == runs["solve_greedy"][0]
