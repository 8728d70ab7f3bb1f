"""The energy of one inference: E = Σ N_MAC · E_MAC(b_w, b_a) + Σ N_bits · E_mem per bit.

Priced on the per-layer cost table (:mod:`vitquant_core.cost`) with the constants of
:mod:`vitquant_core.energy.constants` (Horowitz, ISSCC 2014, 45 nm, unless replaced).

**Compute.** An integer MAC is one multiply and one add into the accumulator:

* multiply energy ∝ b_w · b_a, from the int8 figure: E_mult = E_mult,int8 · b_w·b_a / 64
  (the law gives 3.2 pJ at 32×32 bits; Horowitz measured 3.1 pJ);
* add energy ∝ accumulator width, from the int32 figure: E_add = E_add,int32 · acc / 32, where
  integer MACs accumulate in ``accumulator_bits`` = 32 bits by default (as int8 kernels do), so
  the add costs 0.1 pJ whatever the operand widths;
* an operation with a float operand (weights or activation kept in float) computes in float,
  as does the FP32 baseline: E_MAC = E_mult,fp32 + E_add,fp32 = 4.6 pJ.

**Memory.** Energy ∝ bits moved: a 64-bit access's energy / 64 per bit. Each operation reads its
parameters (weights at b_w, biases at 32 bits) and its input activations (both operands of a
matmul) once per inference; an output is counted when its consumer reads it. Where the data
lives (``placement``):

* ``"weights_dram"`` (the default): the weights stream from DRAM once per inference, the
  activations stay in on-chip SRAM — the usual accelerator picture for a model too large to keep
  on chip;
* ``"all_dram"``: weights and activations both go through DRAM (no on-chip reuse);
* ``"all_sram"``: the weights are held on chip too (a model small enough, or a batch large
  enough that the DRAM traffic is amortised away).

Knobs for how conclusions move with the constants: ``sram`` and ``dram`` pick the low or high
end of each range (default: low), ``dram_scale`` multiplies the DRAM energy (e.g. ×0.5, ×2).

:func:`headline_energy` is the earlier study's formula, as it was stated, for checking its
claims: E = Σ N_MAC·E_MAC(b) + Σ N_mem·E_DRAM(b) with E_MAC ∝ b² and all memory in DRAM.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ..cost.table import OpCost, activation_bits, as_config, operand_bits, weight_bits
from ..nn.config import QuantConfig
from .constants import EnergyConstants, load_constants

PLACEMENTS: dict[str, str] = {
    "weights_dram": "weights and biases read once per inference from DRAM; activations read from on-chip SRAM",
    "all_dram": "weights, biases and activations all read from DRAM",
    "all_sram": "weights held on chip: weights, biases and activations all read from SRAM",
}
DEFAULT_PLACEMENT = "weights_dram"
ENERGY_COLUMNS = ("name", "kind", "macs", "b_a", "b_w", "e_mac_pj", "compute_pj", "weight_memory_pj",
                  "act_memory_pj", "memory_pj", "total_pj")


def _constants(constants: EnergyConstants | str | None) -> EnergyConstants:
    if constants is None or isinstance(constants, str):
        return load_constants(constants)
    if not isinstance(constants, EnergyConstants):
        raise TypeError(f"constants must be EnergyConstants (load_constants(path)), a path or None, "
                        f"got {type(constants).__name__}")
    return constants


def mac_energy_pj(b_a: int | None, b_w: int | None, constants: EnergyConstants | None = None,
                  accumulator_bits: int = 32) -> float:
    """Energy of one MAC (pJ) with operands of ``b_a`` and ``b_w`` bits; None is float (fp32 MAC)."""
    c = _constants(constants).compute
    if isinstance(accumulator_bits, bool) or not (isinstance(accumulator_bits, int) and accumulator_bits > 0):
        raise ValueError(f"accumulator_bits must be a positive int (32 for int32 accumulators), "
                         f"got {accumulator_bits!r}")
    if b_a is None or b_w is None:
        return c["fp32_mult"] + c["fp32_add"]
    return c["int8_mult"] * b_a * b_w / 64 + c["int32_add"] * accumulator_bits / 32


def _memory_pj_per_bit(c: EnergyConstants, placement: str, sram: str, dram: str,
                       dram_scale: float) -> tuple[float, float]:
    """(weights, activations) energy per bit under ``placement``."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    if isinstance(dram_scale, bool) or not isinstance(dram_scale, (int, float)) or not (
            math.isfinite(dram_scale) and dram_scale > 0):
        raise ValueError(f"dram_scale must be a positive number (e.g. 0.5 or 2), got {dram_scale!r}")
    e_sram = c.memory_pj_per_bit("sram_read_64bit", sram)
    e_dram = c.memory_pj_per_bit("dram_access_64bit", dram) * dram_scale
    return (e_sram if placement == "all_sram" else e_dram), (e_dram if placement == "all_dram" else e_sram)


def op_energy_pj(op: OpCost, b_a: int | None, b_w: int | None, constants: EnergyConstants | None = None, *,
                 placement: str = DEFAULT_PLACEMENT, sram: str = "low", dram: str = "low",
                 dram_scale: float = 1.0, accumulator_bits: int = 32) -> dict[str, float]:
    """One operation's energy (pJ) at operand widths ``b_a``, ``b_w`` (None: float): compute,
    weight memory and activation memory. Mixed-precision solvers price candidates with it."""
    c = _constants(constants)
    e_w, e_a = _memory_pj_per_bit(c, placement, sram, dram, dram_scale)
    e_mac = mac_energy_pj(b_a, b_w, c, accumulator_bits)
    return {"e_mac_pj": e_mac, "compute_pj": op.macs * e_mac, "weight_memory_pj": weight_bits(op, b_w) * e_w,
            "act_memory_pj": activation_bits(op, b_a, b_w) * e_a}


def energy_table(table: Iterable[OpCost], config: QuantConfig | str | None,
                 constants: EnergyConstants | str | None = None, *, placement: str = DEFAULT_PLACEMENT,
                 sram: str = "low", dram: str = "low", dram_scale: float = 1.0,
                 accumulator_bits: int = 32) -> pd.DataFrame:
    """Per-operation energy of one inference (pJ) under ``config`` (None: FP32).

    Columns: ``name, kind, macs, b_a, b_w`` (32 for float), ``e_mac_pj``, ``compute_pj``,
    ``weight_memory_pj``, ``act_memory_pj``, ``memory_pj`` and ``total_pj``.
    """
    c, cfg = _constants(constants), as_config(config)
    rows = []
    for op in table:
        b_a, b_w = operand_bits(op, cfg)
        e = op_energy_pj(op, b_a, b_w, c, placement=placement, sram=sram, dram=dram, dram_scale=dram_scale,
                         accumulator_bits=accumulator_bits)
        memory = e["weight_memory_pj"] + e["act_memory_pj"]
        rows.append((op.name, op.kind, op.macs, 32 if b_a is None else b_a, 32 if b_w is None else b_w,
                     e["e_mac_pj"], e["compute_pj"], e["weight_memory_pj"], e["act_memory_pj"], memory,
                     e["compute_pj"] + memory))
    return pd.DataFrame(rows, columns=list(ENERGY_COLUMNS))


def energy_summary(table: Iterable[OpCost], config: QuantConfig | str | None,
                   constants: EnergyConstants | str | None = None, **settings: Any) -> dict[str, Any]:
    """Total energy of one inference under ``config``, split into compute and memory, and its
    reduction against the FP32 model under the same placement and constants.

    ``settings``: ``placement``, ``sram``, ``dram``, ``dram_scale``, ``accumulator_bits`` as in
    :func:`energy_table`. Returns ``total_pj, compute_pj, memory_pj, weight_memory_pj,
    act_memory_pj, fp32_total_pj, reduction_vs_fp32`` (a fraction) and the settings used.
    """
    table, c = list(table), _constants(constants)
    df = energy_table(table, config, c, **settings)
    fp32 = energy_table(table, None, c, **settings)
    total, fp32_total = float(df.total_pj.sum()), float(fp32.total_pj.sum())
    used = {"placement": DEFAULT_PLACEMENT, "sram": "low", "dram": "low", "dram_scale": 1.0,
            "accumulator_bits": 32, **settings}
    return {"total_pj": total, "compute_pj": float(df.compute_pj.sum()), "memory_pj": float(df.memory_pj.sum()),
            "weight_memory_pj": float(df.weight_memory_pj.sum()), "act_memory_pj": float(df.act_memory_pj.sum()),
            "fp32_total_pj": fp32_total, "reduction_vs_fp32": 1.0 - total / fp32_total if fp32_total else 0.0,
            "constants": c.name, **used}


def headline_energy(table: Iterable[OpCost], bits: int, constants: EnergyConstants | str | None = None, *,
                    dram: str = "low", dram_scale: float = 1.0) -> dict[str, float]:
    """The earlier study's formula, exactly as stated, at ``bits`` for every operand:
    E(b) = Σ N_MAC·E_MAC(b) + Σ N_mem·E_DRAM(b), with every access in DRAM and

    * E_MAC(b) = (E_mult,int8 + E_add,int8) · (b/8)²  (∝ b², anchored on the int8 MAC);
    * E_DRAM(b) = E_DRAM,64-bit · b/64, N_mem = every parameter and input activation element.

    Returns ``total_pj, compute_pj, memory_pj`` at ``bits``; the reduction against the same
    formula at 32 bits (``reduction_vs_formula32``, the study's reading) and against FP32 priced
    with the float operations and 32-bit DRAM traffic (``reduction_vs_fp32``).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an int between 1 and 32, got {bits!r}")
    table, c = list(table), _constants(constants)
    n_mac = sum(op.macs for op in table)
    n_mem = sum(op.params + op.input_elems + op.input2_elems for op in table)
    e_dram_bit = c.memory_pj_per_bit("dram_access_64bit", dram) * dram_scale
    e_mac8 = c.compute["int8_mult"] + c.compute["int8_add"]

    def formula(b: int) -> tuple[float, float]:
        return n_mac * e_mac8 * (b / 8) ** 2, n_mem * b * e_dram_bit

    compute, memory = formula(bits)
    total = compute + memory
    f32 = sum(formula(32))
    fp32 = n_mac * (c.compute["fp32_mult"] + c.compute["fp32_add"]) + n_mem * 32 * e_dram_bit
    return {"bits": bits, "total_pj": total, "compute_pj": compute, "memory_pj": memory,
            "formula32_total_pj": f32, "reduction_vs_formula32": 1.0 - total / f32,
            "fp32_total_pj": fp32, "reduction_vs_fp32": 1.0 - total / fp32}
