"""Energy constants: the cost of one arithmetic operation and of one memory access, with their source.

The shipped file, ``data/horowitz_45nm.json``, holds the figures of M. Horowitz, "Computing's
energy problem (and what we can do about it)", ISSCC 2014 (45 nm, 0.9 V): int8 add 0.03 pJ and
multiply 0.2 pJ, int32 add 0.1 pJ and multiply 3.1 pJ, fp32 add 0.9 pJ and multiply 3.7 pJ, a
64-bit SRAM (cache) read 10-100 pJ and a 64-bit DRAM access 1.3-2.6 nJ. A user replaces them
by writing a file of the same shape (any process node, their own measurements) and passing its
path to :func:`load_constants`.

The file is a JSON object::

    {"name": ..., "citation": ...,
     "compute": {"int8_add": {"value": 0.03, "unit": "pJ"}, ... six entries},
     "memory": {"sram_read_64bit": {"low": 10, "high": 100, "unit": "pJ"},
                "dram_access_64bit": {"low": 1.3, "high": 2.6, "unit": "nJ"}}}

Every figure carries its unit (fJ, pJ, nJ or uJ; converted to pJ on loading); a missing key,
an unknown unit, a negative or non-finite value, or a low end above the high end raises
:class:`ConstantsError` naming the file and the entry.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONSTANTS = Path(__file__).parent / "data" / "horowitz_45nm.json"
UNITS_PJ = {"fJ": 1e-3, "pJ": 1.0, "nJ": 1e3, "uJ": 1e6, "µJ": 1e6}
COMPUTE_KEYS = ("int8_add", "int8_mult", "int32_add", "int32_mult", "fp32_add", "fp32_mult")
MEMORY_KEYS = ("sram_read_64bit", "dram_access_64bit")


class ConstantsError(ValueError):
    """An energy constants file that cannot be used as it is."""


@dataclass(frozen=True)
class EnergyConstants:
    """Energies in pJ: one operation (``compute``) and one 64-bit access, low and high end (``memory``)."""

    name: str
    citation: str
    compute: dict[str, float]
    memory: dict[str, tuple[float, float]]
    source: str = ""

    def memory_pj_per_bit(self, which: str, end: str = "low") -> float:
        """Energy per bit moved: a 64-bit access's energy / 64, at the ``low`` or ``high`` end."""
        if which not in self.memory:
            raise ValueError(f"memory must be one of {list(self.memory)}, got {which!r}")
        if end not in ("low", "high"):
            raise ValueError(f"end must be 'low' or 'high', got {end!r}")
        low, high = self.memory[which]
        return (low if end == "low" else high) / 64


def _energy_pj(entry: Any, where: str, fields: tuple[str, ...]) -> list[float]:
    if not isinstance(entry, dict):
        raise ConstantsError(f"{where} must be an object such as {{{', '.join(f'{f!r}: ...' for f in fields)}, "
                             f"'unit': 'pJ'}}, got {entry!r}")
    missing = [k for k in (*fields, "unit") if k not in entry]
    if missing:
        raise ConstantsError(f"{where} lacks {missing}: every figure needs {list(fields)} and a 'unit'")
    unit = entry["unit"]
    if unit not in UNITS_PJ:
        raise ConstantsError(f"{where}: unknown unit {unit!r}; write one of {list(UNITS_PJ)}")
    out = []
    for f in fields:
        v = entry[f]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConstantsError(f"{where}.{f} must be a finite number, got {v!r}")
        if v < 0:
            raise ConstantsError(f"{where}.{f} is negative ({v} {unit}): an energy cannot be negative")
        out.append(float(v) * UNITS_PJ[unit])
    return out


def constants_from_json(d: dict[str, Any], source: str = "<dict>") -> EnergyConstants:
    """Validate a constants object (the file's content) and convert every figure to pJ."""
    if not isinstance(d, dict):
        raise ConstantsError(f"{source}: the constants must be a JSON object, got {type(d).__name__}")
    missing = [k for k in ("citation", "compute", "memory") if k not in d]
    if missing:
        raise ConstantsError(f"{source}: missing {missing}; the file needs a 'citation' (where the figures "
                             "come from), 'compute' and 'memory'")
    if not isinstance(d["citation"], str) or not d["citation"].strip():
        raise ConstantsError(f"{source}: 'citation' must say where the figures come from, got {d['citation']!r}")
    compute, memory = {}, {}
    for section, keys in (("compute", COMPUTE_KEYS), ("memory", MEMORY_KEYS)):
        if not isinstance(d[section], dict):
            raise ConstantsError(f"{source}: {section!r} must be an object keyed by {list(keys)}")
        absent = [k for k in keys if k not in d[section]]
        if absent:
            raise ConstantsError(f"{source}: {section!r} lacks {absent}; it needs all of {list(keys)}")
        for k in keys:
            where = f"{source}: {section}.{k}"
            if section == "compute":
                (compute[k],) = _energy_pj(d[section][k], where, ("value",))
            else:
                low, high = _energy_pj(d[section][k], where, ("low", "high"))
                if low > high:
                    raise ConstantsError(f"{where}: low ({low} pJ) is above high ({high} pJ)")
                memory[k] = (low, high)
    return EnergyConstants(str(d.get("name", Path(source).stem)), d["citation"], compute, memory, source)


def load_constants(path: str | Path | None = None) -> EnergyConstants:
    """Read and validate an energy constants file; None: the shipped Horowitz (ISSCC 2014) figures."""
    p = Path(path) if path is not None else DEFAULT_CONSTANTS
    if not p.is_file():
        raise FileNotFoundError(f"no energy constants file at {p}: pass the path of a JSON file shaped like "
                                f"{DEFAULT_CONSTANTS.name} (see vitquant_core.energy.constants)")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConstantsError(f"{p}: not valid JSON ({e})") from None
    return constants_from_json(d, str(p))
