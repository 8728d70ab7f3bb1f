"""Per-layer costs: MACs (torch's flop counter), parameters, bytes and BOPs at a bit assignment."""
from .table import (
    BIAS_BITS,
    FLOAT_BITS,
    OpCost,
    activation_bits,
    as_config,
    as_dataframe,
    bops,
    cost_table,
    cost_totals,
    operand_bits,
    priced,
    weight_bits,
)

__all__ = ["BIAS_BITS", "FLOAT_BITS", "OpCost", "activation_bits", "as_config", "as_dataframe", "bops", "cost_table",
           "cost_totals", "operand_bits", "priced", "weight_bits"]
