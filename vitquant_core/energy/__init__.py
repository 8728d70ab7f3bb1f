"""The energy model: per-layer compute and memory energy of one inference, from replaceable constants."""
from .constants import DEFAULT_CONSTANTS, ConstantsError, EnergyConstants, constants_from_json, load_constants
from .model import (
    DEFAULT_PLACEMENT,
    PLACEMENTS,
    energy_summary,
    energy_table,
    headline_energy,
    mac_energy_pj,
    op_energy_pj,
)

__all__ = ["DEFAULT_CONSTANTS", "ConstantsError", "EnergyConstants", "constants_from_json", "load_constants",
           "DEFAULT_PLACEMENT", "PLACEMENTS", "energy_summary", "energy_table", "headline_energy", "mac_energy_pj",
           "op_energy_pj"]
