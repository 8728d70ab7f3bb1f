"""Notebook 06's study: mixed precision against uniform precision at equal cost.

For one model: the direct sensitivity of every quantizable operation at each candidate width
(:func:`~vitquant_core.analysis.sensitivity.sensitivity_sweep`, measured on training images
held out from calibration, against the float model's own predictions), the per-operation
costs from the cost table (BOPs and weight bytes, each operation priced as the uniform
configuration of that width prices it under the protocol), and then, for a BOPs budget equal
to a uniform setting's with a size budget no larger than its weight bytes, the allocations of
the exact MILP (HAWQ-V3, Yao et al. 2021), the greedy baseline and AIMET's bisection. Each
allocation becomes a :class:`~vitquant_core.nn.QuantConfig`, is calibrated with the chosen
method and evaluated through the row store, and is compared with the uniform configuration
of the same budget by McNemar's test (Dietterich, 1998).

Calibration: ``repq+adalog`` (notebook 04's best) works per operation because RepQ-ViT's
reparameterization is per LayerNorm → Linear pair: each pair is reparameterized at the
activation width its Linear was given (:func:`mixed_repq_quantize`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..analysis.sensitivity import sensitivity_sweep, sensitivity_table
from ..cost import OpCost, cost_table, operand_bits, priced, weight_bits
from ..cost import bops as op_bops
from ..data import balanced_indices, load_split
from ..nn.config import FLOAT, LayerSpec, QuantConfig
from ..nn.protocols import check_protocol, protocol_config
from ..nn.quantize import quantize
from ..ptq.repq import norm_linear_pairs, reparameterize, repq_config, set_targets
from .apply import escape_glob, is_attention_pseudo_op
from .problem import Allocation, Problem, budget_record, is_float, parse_candidate
from .solvers import solve_bisection, solve_greedy, solve_milp

if TYPE_CHECKING:
    from ..experiment import Experiment
    from ..rowstore import Record

METHODS = ("min-max", "percentile", "mse", "repq-vit", "repq+adalog")
SOLVERS: dict[str, Callable[..., Allocation]] = {"milp": solve_milp, "greedy": solve_greedy,
                                                 "bisection": solve_bisection}
KIND, SIZE = "bops", "size_bytes"  # the budget, and the constraint that comes with it
PROFILE_DEFAULTS: dict[str, dict[str, int]] = {
    "quick": {"n_calib": 32, "n_eval": 500, "n_sens": 128},
    "full": {"n_calib": 64, "n_eval": 0, "n_sens": 1000},
}


def study_parameters(profile: str, **given: Any) -> dict[str, Any]:
    """The study's parameters with each None replaced by the profile's default."""
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"parameter profile must be one of {sorted(PROFILE_DEFAULTS)}, got {profile!r}")
    return {k: PROFILE_DEFAULTS[profile][k] if v is None else v for k, v in given.items()}


def _labels(name: str, value: Any, example: str, empty: bool = False) -> list[tuple[int | None, int | None]]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not (value or empty):
        raise TypeError(f"parameter {name} must be a non-empty list such as {example}, got {value!r}")
    return [parse_candidate(v) for v in value]  # raises, naming the label


def check_study_parameters(candidates: Any, references: Any, sweep: Any, methods: Any, protocols: Any,
                           measure: Any) -> None:
    """Notebook 06's own parameters, checked before anything is computed."""
    _labels("candidates", candidates, "['W3A3', 'W4A4', 'W6A6', 'W8A8', 'float']")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"parameter candidates repeats a label: {candidates}")
    for name, value in (("references", references), ("sweep", sweep)):
        if any(None in b for b in _labels(name, value, "['W4A4', 'W6A6']", empty=name == "sweep")):
            raise ValueError(f"parameter {name}: {value} keeps a tensor in float; give settings such as 'W4A4'")
    for name, value in (("methods", methods), ("protocols", protocols)):
        if not isinstance(value, dict):
            raise TypeError(f"parameter {name} must map a model name to its {name[:-1]}, got {value!r}")
    bad = {m: v for m, v in methods.items() if v not in METHODS}
    if bad:
        raise ValueError(f"parameter methods: {bad} not known; choose from {list(METHODS)}")
    for p in protocols.values():
        check_protocol(p)
    if measure not in ("kl", "top1_drop"):
        raise ValueError(f"parameter measure must be 'kl' or 'top1_drop', got {measure!r}")


# -- configurations -------------------------------------------------------------------------

def config_for(method: str, protocol: str) -> Callable[[str], QuantConfig]:
    """candidate label → the whole network's uniform config at that width, under ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_protocol(protocol)

    def make(label: str) -> QuantConfig:
        w, a = parse_candidate(label)
        if method.startswith("repq"):
            return repq_config(protocol, w, a, "adalog" if method == "repq+adalog" else "log_sqrt2")
        return protocol_config(protocol, w, a, LayerSpec(a_observer={"min-max": "minmax"}.get(method, method)))
    return make


def allocation_config(choice: dict[str, str], make: Callable[[str], QuantConfig], top: str) -> QuantConfig:
    """The config of an allocation: each operation gets the spec the uniform config of its
    candidate gives it (so the protocol's fixed parts hold, e.g. the image at 8 bits under
    "paper"); "float" keeps it in float; operations outside ``choice`` follow ``make(top)``."""
    rules = []
    for op, label in choice.items():
        if is_float(label):
            rules.append((escape_glob(op), FLOAT))
            continue
        spec = make(label).spec_for(op)
        rules.append((escape_glob(op), replace(spec, w_bits=None) if is_attention_pseudo_op(op) else spec))
    return make(top).with_rules(rules, first=True)


def mixed_repq_quantize(model: nn.Module, config: QuantConfig, calib: list[torch.Tensor]) -> nn.Module:
    """RepQ-ViT with per-operation widths: each LayerNorm → Linear pair is reparameterized with
    the scales found at its Linear's activation width, then ``config`` is calibrated and each
    reparameterized input gets its per-tensor target (:mod:`vitquant_core.ptq.repq`)."""
    out = copy.deepcopy(model).eval()
    mine = {lin: config.spec_for(lin).a_bits for _, _, lin, _ in norm_linear_pairs(out)}
    targets: dict[int, dict[str, Any]] = {}
    for bits in sorted({b for b in mine.values() if b is not None}):
        reparam, found = reparameterize(model, calib, bits)  # the float function is unchanged: pairs are independent
        for norm_name, _, lin, _ in norm_linear_pairs(reparam):
            if mine[lin] == bits:
                for name in (norm_name, lin):
                    out.get_submodule(name).load_state_dict(reparam.get_submodule(name).state_dict())
                targets.setdefault(bits, {})[lin] = found[lin]
    qmodel = quantize(out, config, calib, progress=False)
    for bits, t in targets.items():
        set_targets(qmodel, t, bits)
    return qmodel


def quantize_with(method: str, model: nn.Module, config: QuantConfig, calib: list[torch.Tensor]) -> nn.Module:
    if method.startswith("repq"):
        return mixed_repq_quantize(model, config, calib)
    return quantize(model, config, calib, progress=False)


# -- the allocation problem -----------------------------------------------------------------

def problem_costs(table: Sequence[OpCost], ops: Sequence[str], candidates: Sequence[str],
                  make: Callable[[str], QuantConfig]) -> dict[str, dict[str, dict[str, float]]]:
    """costs[kind][op][candidate] for BOPs and weight bytes: each cost-table row is priced as the
    uniform config of the candidate prices it and charged to the operation that sets its
    right operand (a matmul's ``w_from``); tie ``softmax`` to ``matmul_av`` so that the
    product of their widths is one choice."""
    out: dict[str, dict[str, dict[str, float]]] = {KIND: {}, SIZE: {}}
    for op in ops:
        for kind in out:
            out[kind][op] = dict.fromkeys(candidates, 0.0)
    for row in table:
        if row.w_from not in out[KIND]:
            continue
        for c in candidates:
            b_a, b_w = operand_bits(row, None if is_float(c) else make(c))
            out[KIND][row.w_from][c] += float(op_bops(row, b_a, b_w))
            out[SIZE][row.w_from][c] += weight_bits(row, b_w) / 8
    return out


def attention_ties(ops: Sequence[str]) -> list[tuple[str, str]]:
    return [(op, op[:-len("softmax")] + "matmul_av") for op in ops
            if op.endswith(".softmax") and op[:-len("softmax")] + "matmul_av" in ops]


def build_problem(sens_rows: Sequence[dict[str, Any]], table: Sequence[OpCost], candidates: Sequence[str],
                  make: Callable[[str], QuantConfig], measure: str = "kl") -> Problem:
    sens = sensitivity_table(sens_rows, measure)
    ops = tuple(dict.fromkeys(r["op"] for r in sens_rows))
    for op in ops:
        for c in candidates:
            sens[op].setdefault(c, 0.0)  # "float", and widths the sweep was not asked for
    return Problem(ops, tuple(candidates), sens, problem_costs(table, ops, candidates, make), attention_ties(ops))


def uniform_costs(table: Sequence[OpCost], ops: Sequence[str], config: QuantConfig) -> dict[str, float]:
    """BOPs and weight bytes of ``ops`` under ``config``: the limits a uniform setting sets."""
    df = priced([r for r in table if r.w_from in set(ops)], config)
    return {KIND: float(df.bops.sum()), SIZE: float(df.weight_bytes.sum())}


# -- measurements through the row store -----------------------------------------------------

def sensitivity_images(exp: Experiment, n_sens: int) -> torch.Tensor:
    """Training images held out from calibration (same draw as ``setup_experiment``'s), seeded."""
    train = load_split(exp.eval_split.dataset, "train", model_name=exp.model_name, model=exp.model)
    calib_idx = balanced_indices(train.labels, exp.n_calib, exp.seed)
    idx = balanced_indices(train.labels, n_sens, exp.seed + 1000, exclude=calib_idx)
    return torch.cat([x for x, _ in train.loader(idx, batch_size=250)])


def sensitivities(exp: Experiment, method: str, protocol: str, candidates: Sequence[str], n_sens: int,
                  progress: bool = False) -> list[dict[str, Any]]:
    """Direct per-operation sensitivity rows at every width, one stored record per width."""
    make, rows, x = config_for(method, protocol), [], None
    for c in [c for c in candidates if not is_float(c)]:
        spec = {"kind": "sensitivity", "method": method, "protocol": protocol, "candidate": c, "n_sens": n_sens,
                "sens_seed": exp.seed + 1000, "labels": "float predictions", "views": ["direct"]}

        def compute(c: str = c) -> tuple[dict[str, Any], None, dict[str, Any]]:
            nonlocal x
            x = sensitivity_images(exp, n_sens) if x is None else x
            model = reparameterize(exp.model, exp.calib, parse_candidate(c)[1])[0] if method.startswith("repq") \
                else exp.model
            got = sensitivity_sweep(model, make, [c], exp.calib, x, None, progress=progress)
            return {"candidate": c, "seconds": round(sum(r["seconds"] for r in got), 2)}, None, {"rows": got}
        rows += exp.store.get_or_compute(spec, compute).data["rows"]
    return rows


def measure_allocation(exp: Experiment, method: str, protocol: str, name: str, choice: dict[str, str],
                       make: Callable[[str], QuantConfig], top: str, **extra: Any) -> Record:
    """Calibrate and evaluate one allocation through the row store (keyed by its config, so an
    allocation two solvers agree on, or a sweep point equal to a compared one, is measured once)."""
    config = allocation_config(choice, make, top)
    spec = {"study": "06_mixed_precision", "method": method, "protocol": protocol, "config": config.to_json()}
    w, a = parse_candidate(extra["setting"]) if name == "uniform" else (None, None)
    rec = exp.measure(spec, lambda: quantize_with(method, exp.model, config, exp.calib), name, w, a,
                      "per_channel", protocol=protocol, calibration=method, **extra)
    w, a = (w, a) if name == "uniform" else ("mixed", "mixed")
    rec.row.update(method=name, w_bits=w, a_bits=a, **extra)  # a record read back may be another solver's
    return rec


def study_model(exp: Experiment, method: str, protocol: str, candidates: Sequence[str],
                references: Sequence[str], sweep: Sequence[str], n_sens: int, measure: str = "kl",
                solvers: Sequence[str] = tuple(SOLVERS), progress: bool = False) -> dict[str, Any]:
    """Everything the page shows for one model (see the module docstring)."""
    from ..models import get_entry

    make = config_for(method, protocol)
    entry = get_entry(exp.model_name)
    table = cost_table(exp.model, entry.input_size if entry else tuple(exp.calib[0].shape[1:]))
    sens_rows = sensitivities(exp, method, protocol, candidates, n_sens, progress)
    problem = build_problem(sens_rows, table, candidates, make, measure)
    top = max((c for c in candidates if not is_float(c)), key=lambda c: sum(parse_candidate(c)))
    drop = {(r["op"], r["candidate"]): r["top1_drop"] for r in sens_rows}
    records: dict[tuple[str, str], Any] = {}
    allocations: dict[tuple[str, str], Allocation] = {}
    for ref in dict.fromkeys([*references, *sweep]):
        limits = uniform_costs(table, problem.ops, make(ref))
        uni = {op: ref for op in problem.ops}
        records["uniform", ref] = measure_allocation(
            exp, method, protocol, "uniform", uni, make, top, setting=ref,
            budget={"kind": KIND, "reference": ref, "limit": limits[KIND], "used": limits[KIND]})
        for solver in (solvers if ref in references else ("milp",)):
            alloc = SOLVERS[solver](problem, limits)
            allocations[solver, ref] = alloc
            predicted = sum(drop.get((op, c), 0.0) for op, c in alloc.choice.items())
            records[solver, ref] = measure_allocation(
                exp, method, protocol, f"mixed-{solver}", alloc.choice, make, top, setting=ref,
                budget=budget_record(alloc, KIND, ref), size_budget=budget_record(alloc, SIZE, ref),
                allocation=alloc.choice, counts=alloc.counts(), objective=alloc.objective,
                predicted_top1_drop=predicted, solver_seconds=round(alloc.seconds, 4))
    return {"model": exp.model_name, "method": method, "protocol": protocol, "table": table, "problem": problem,
            "sens_rows": sens_rows, "records": records, "allocations": allocations, "fp_top1": exp.fp().top1,
            "references": list(references), "sweep": list(sweep), "exp": exp,
            "sweep_seconds": sum(r["seconds"] for r in sens_rows)}
