import math

import pytest
import torch

from vitquant_core.analysis.significance import paired_comparison


def test_ten_images_only_a_gets_right():
    a = torch.ones(100, dtype=torch.bool)
    b = a.clone()
    b[:10] = False
    r = paired_comparison(a, b)
    assert (r["only_a"], r["only_b"], r["n"]) == (10, 0, 100)
    assert r["top1_a"] == 100.0 and r["top1_b"] == 90.0
    assert r["difference"] == pytest.approx(-10.0)
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 10)  # exact binomial, two-sided
    # Wald interval of the paired difference: -0.1 ± 1.96·sqrt((0.1 − 0.01)/100)
    half = 100 * 1.96 * math.sqrt(0.09 / 100)
    assert r["ci95"] == pytest.approx((-10.0 - half, -10.0 + half))


def test_even_split_is_no_difference():
    a = torch.tensor([True, False, True, False, True, True])
    b = torch.tensor([False, True, True, False, True, True])
    r = paired_comparison(a, b)
    assert r["difference"] == 0.0 and r["p_value"] == pytest.approx(1.0)
    assert r["ci95"][0] < 0.0 < r["ci95"][1]


def test_identical_predictions():
    a = torch.tensor([True, False, True])
    r = paired_comparison(a, a.clone())
    assert r["p_value"] == 1.0 and r["ci95"] == (0.0, 0.0) and r["only_a"] == r["only_b"] == 0


def test_bad_input():
    with pytest.raises(TypeError, match="boolean"):
        paired_comparison(torch.tensor([1, 0]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(torch.ones(0, dtype=torch.bool), torch.ones(0, dtype=torch.bool))
