"""Standard PTQ's grid: what it holds, what it refuses, and the comparison with the earlier study."""
from __future__ import annotations

import pytest

from vitquant_core.ptq.standard import EARLIER_STUDY_RESNET18, compare_with_earlier_study, standard_grid


def test_the_grid_holds_weights_only_and_wa_rows_at_each_width():
    grid = standard_grid(bits=[8, 4], observers=["minmax", "mse"])
    keys = [(p.method, p.w_bits, p.a_bits, p.granularity, p.a_observer) for p in grid]
    assert keys == [("ptq_weights_only", 8, None, "per_tensor", "none"),
                    ("ptq_weights_only", 8, None, "per_channel", "none"),
                    ("ptq_weights_only", 4, None, "per_tensor", "none"),
                    ("ptq_weights_only", 4, None, "per_channel", "none"),
                    ("ptq", 8, 8, "per_tensor", "minmax"), ("ptq", 8, 8, "per_channel", "minmax"),
                    ("ptq", 8, 8, "per_channel", "mse"),
                    ("ptq", 4, 4, "per_tensor", "minmax"), ("ptq", 4, 4, "per_channel", "minmax"),
                    ("ptq", 4, 4, "per_channel", "mse")]
    assert all(p.config.default.w_bits == p.w_bits for p in grid)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=[]), r"parameter bits must be a non-empty list of integers from 2 to 16, got \[\]"),
    (dict(bits=["8"]), r"parameter bits must be .* got \['8'\]"),
    (dict(bits=[1]), r"parameter bits must be"),
    (dict(observers=["minmax", "kl"]), r"parameter observers: unknown \['kl'\]; choose from"),
], ids=["empty", "string", "one bit", "unknown observer"])
def test_a_bad_grid_parameter_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        standard_grid(**kwargs)


def test_the_earlier_study_sits_beside_the_matching_rows_only():
    rows = [{"method": "fp32", "w_bits": 32, "a_bits": 32, "granularity": "none", "top1": 89.3},
            {"method": "ptq_weights_only", "w_bits": 8, "a_bits": 32, "granularity": "per_channel",
             "a_observer": "none", "top1": 89.33},
            {"method": "ptq", "w_bits": 8, "a_bits": 8, "granularity": "per_tensor", "a_observer": "minmax",
             "top1": 1.0},
            {"method": "ptq", "w_bits": 8, "a_bits": 8, "granularity": "per_channel", "a_observer": "mse", "top1": 2.0},
            {"method": "ptq", "w_bits": 8, "a_bits": 8, "granularity": "per_channel", "a_observer": "minmax",
             "top1": 89.27}]
    table = compare_with_earlier_study(rows, "m")
    assert [r["bits"] for r in table] == [32, 8]  # widths not measured are left out, not filled with None
    assert table[0] == {"bits": 32, "earlier study (ResNet-18)": EARLIER_STUDY_RESNET18[32], "m, weights only": 89.3,
                        "m, weights + activations": 89.3}
    assert table[1]["m, weights only"] == 89.33 and table[1]["m, weights + activations"] == 89.27
