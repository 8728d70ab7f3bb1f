"""Mixed-precision bit allocation under budgets, solved exactly.

Given per-operation sensitivities at each candidate setting ("W3A3" ... "W8A8", "float")
and per-operation costs of any budget kinds (BOPs, bytes, energy, average bits), choose
one candidate per operation minimising the summed sensitivity under every budget:

* :func:`solve_milp`: exact, a 0/1 integer linear program (HAWQ-V3's formulation, Yao et
  al. 2021) solved by HiGHS through :func:`scipy.optimize.milp`;
* :func:`solve_greedy`: the greedy baseline (best sensitivity per cost saved first);
* :func:`solve_bisection`: AIMET's automatic mixed precision (Pandey et al. 2023): a greedy
  Pareto curve and a bisection along it.

:func:`allocation_to_config` turns the answer into a :class:`~vitquant_core.QuantConfig`
for :func:`~vitquant_core.quantize`; :func:`budget_of_uniform` prices a uniform setting so
that mixed and uniform are compared at equal cost; :func:`additivity_check` tests the
additive model against a measured drop.
"""
from .apply import allocation_to_config, escape_glob
from .problem import (
    Allocation,
    InfeasibleBudget,
    Problem,
    additivity_check,
    budget_of_uniform,
    budget_record,
    parameter_weighted_bits,
    parse_candidate,
    uniform_allocation,
)
from .solvers import pareto_curve, solve_bisection, solve_greedy, solve_milp

__all__ = ["Allocation", "InfeasibleBudget", "Problem", "additivity_check", "allocation_to_config",
           "budget_of_uniform", "budget_record", "escape_glob", "parameter_weighted_bits", "parse_candidate",
           "pareto_curve", "solve_bisection", "solve_greedy", "solve_milp", "uniform_allocation"]
