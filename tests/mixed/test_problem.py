import math

import pytest

from vitquant_core.mixed import (
    Problem,
    additivity_check,
    budget_of_uniform,
    budget_record,
    parameter_weighted_bits,
    parse_candidate,
    solve_milp,
    uniform_allocation,
)

CANDS = ("W4A4", "W8A8", "float")


def small(**over):
    kw = dict(
        ops=("a", "b"), candidates=CANDS,
        sensitivity={"a": {"W4A4": 2.0, "W8A8": 0.5}, "b": {"W4A4": 1.0, "W8A8": 0.25, "float": 0.0}},
        costs={"bops": {"a": {"W4A4": 16, "W8A8": 64, "float": 1024}, "b": {"W4A4": 32, "W8A8": 128, "float": 2048}}})
    kw.update(over)
    return Problem(**kw)


@pytest.mark.parametrize("label, bits", [("W4A4", (4, 4)), ("w3a3", (3, 3)), ("W8A32", (8, None)), ("W8", (8, None)),
                                         ("float", (None, None)), ("Float", (None, None)), ("W32A32", (None, None))])
def test_parse_candidate(label, bits):
    assert parse_candidate(label) == bits


def test_float_sensitivity_may_be_left_out_and_is_zero():
    p = small()
    a = uniform_allocation(p, "float")
    assert a.objective == 0.0 and a.used["bops"] == 1024 + 2048


def test_groups_merge_overlapping_ties_in_op_order():
    ops = ("x", "y", "z", "w")
    s = {o: {"W4A4": 1.0, "W8A8": 0.0} for o in ops}
    c = {"k": {o: {"W4A4": 1, "W8A8": 2} for o in ops}}
    p = Problem(ops, ("W4A4", "W8A8"), s, c, ties=[("w", "y"), ("y", "x")])
    assert p.groups == ((0, 1, 3), (2,))
    assert p.group_cost("k").tolist() == [[3, 6], [1, 2]]


def test_budget_of_uniform_is_the_sum_over_ops():
    p = small()
    assert budget_of_uniform(p, "bops", "W4A4") == 48.0
    assert budget_of_uniform(p, "bops", "W8A8") == 192.0
    with pytest.raises(ValueError, match="not a candidate"):
        budget_of_uniform(p, "bops", "W6A6")
    with pytest.raises(ValueError, match="no cost table for budget kind 'size'"):
        budget_of_uniform(p, "size", "W4A4")


def test_parameter_weighted_bits_sums_to_the_average_width():
    # 300 weights at 4 bits and 100 at 8: (300·4 + 100·8) / 400 = 5 bits per weight
    table = parameter_weighted_bits({"fc1": 300, "fc2": 100, "attn.matmul_qk": 0}, ("W4A4", "W8A8", "float"))
    assert table["fc1"]["W4A4"] + table["fc2"]["W8A8"] == pytest.approx(5.0)
    assert table["fc1"]["float"] + table["fc2"]["float"] == pytest.approx(32.0)
    assert table["attn.matmul_qk"] == {"W4A4": 0.0, "W8A8": 0.0, "float": 0.0}
    with pytest.raises(ValueError, match="at least one operation with weights"):
        parameter_weighted_bits({"a": 0}, ("W4A4",))


def test_budget_record_carries_kind_reference_limit_used():
    p = small()
    limit = budget_of_uniform(p, "bops", "W8A8")
    a = solve_milp(p, {"bops": limit})
    assert budget_record(a, "bops", "W8A8") == {"kind": "bops", "reference": "W8A8", "limit": 192.0,
                                                "used": a.used["bops"]}
    with pytest.raises(ValueError, match="not solved under a 'size' budget"):
        budget_record(a, "size")


def test_additivity_check():
    r = additivity_check(2.0, 2.4)
    assert r["holds"] and r["gap"] == pytest.approx(0.4) and r["ratio"] == pytest.approx(1.2)
    r = additivity_check(2.0, 5.0)  # 3 points more than predicted: interactions between layers
    assert not r["holds"] and r["ratio"] == pytest.approx(2.5)
    assert additivity_check(0.0, 0.05)["ratio"] is None and additivity_check(0.0, 0.05)["holds"]
    with pytest.raises(ValueError, match="NaN"):
        additivity_check(math.nan, 1.0)


@pytest.mark.parametrize("over, match", [
    (dict(sensitivity={"a": {"W4A4": 2.0, "W8A8": 0.5}}), "sensitivity has no entry for operation 'b'"),
    (dict(sensitivity={"a": {"W4A4": 2.0}, "b": {"W4A4": 1.0, "W8A8": 0.2}}),
     r"sensitivity\['a'\] has no value for candidate 'W8A8'"),
    (dict(sensitivity={"a": {"W4A4": math.nan, "W8A8": 0.5}, "b": {"W4A4": 1.0, "W8A8": 0.2}}), "finite and >= 0"),
    (dict(sensitivity={"a": {"W4A4": -1.0, "W8A8": 0.5}, "b": {"W4A4": 1.0, "W8A8": 0.2}}), "finite and >= 0"),
    (dict(sensitivity={"a": {"W4A4": 2.0, "W8A8": 0.5, "float": 0.1}, "b": {"W4A4": 1.0, "W8A8": 0.2}}),
     "0 by definition"),
    (dict(sensitivity={"a": {"W4A4": 2.0, "W8A8": 0.5, "W6A6": 1.0}, "b": {"W4A4": 1.0, "W8A8": 0.2}}),
     "unknown candidates"),
    (dict(sensitivity={"a": {"W4A4": 2.0, "W8A8": 0.5}, "b": {"W4A4": 1.0, "W8A8": 0.2}, "c": {}}),
     "not in ops"),
    (dict(costs={"bops": {"a": {"W4A4": 16, "W8A8": 64, "float": 1024}}}), r"costs\['bops'\] has no entry"),
    (dict(costs={}), "at least one budget kind"),
    (dict(ties=[("a", "c")]), r"names operations not in ops: \['c'\]"),
    (dict(candidates=("W4A4", "X8", "float")), "not understood"),
    (dict(candidates=("W4A4", "W4A4")), "repeat"),
], ids=["missing-op", "missing-candidate", "nan", "negative", "float-nonzero", "unknown-candidate", "unknown-op",
        "missing-cost", "no-costs", "tie-unknown-op", "bad-label", "duplicate"])
def test_bad_input_is_refused(over, match):
    with pytest.raises((ValueError, TypeError), match=match):
        small(**over)


def test_bad_budgets_are_refused():
    p = small()
    with pytest.raises(ValueError, match=r"no cost table for budget kind 'energy_pj'; this problem has \['bops'\]"):
        solve_milp(p, {"energy_pj": 1.0})
    with pytest.raises(ValueError, match="finite and >= 0"):
        solve_milp(p, {"bops": math.nan})
