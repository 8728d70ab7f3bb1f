import math

import numpy as np
import pytest
import torch

from vitquant_core.analysis.significance import compare_to_reference, paired_comparison, vs_reference


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


def ablation_correctness() -> dict[str, np.ndarray | torch.Tensor]:
    """20 images; the reference gets the first 10 right. "ranking-aware" loses image 0 and gains
    images 10-15 (1 vs 6 discordant), "same" agrees everywhere, "bias" gains images 10-18 (0 vs 9),
    given as a numpy array."""
    standard = torch.zeros(20, dtype=torch.bool)
    standard[:10] = True
    ranking = standard.clone()
    ranking[0] = False
    ranking[10:16] = True
    bias = standard.numpy().copy()
    bias[10:19] = True
    return {"ranking-aware": ranking, "standard": standard, "same": standard.clone(), "bias": bias}


def test_compare_to_reference_tests_every_other_model_in_order():
    rows = compare_to_reference(ablation_correctness(), "standard")
    assert [r["name"] for r in rows] == ["ranking-aware", "same", "bias"]
    ranking, same, bias = rows
    assert (ranking["only_a"], ranking["only_b"], ranking["n"]) == (1, 6, 20)
    assert (ranking["top1_a"], ranking["top1_b"]) == (50.0, 75.0)
    assert ranking["difference"] == pytest.approx(25.0)
    # McNemar's exact test: 6 of 7 discordant images one way, 2·P(X ≤ 1), X ~ Binomial(7, 1/2)
    assert ranking["p_value"] == pytest.approx(2 * (1 + 7) / 2 ** 7) == 0.125
    # Wald: 0.25 ± 1.96·sqrt((7/20 − 0.25²)/20)
    assert ranking["ci95"] == pytest.approx((1.5004255, 48.4995745))
    assert (same["only_a"], same["only_b"], same["p_value"], same["ci95"]) == (0, 0, 1.0, (0.0, 0.0))
    assert (bias["only_a"], bias["only_b"], bias["difference"]) == (0, 9, pytest.approx(45.0))
    assert bias["p_value"] == pytest.approx(2 * 0.5 ** 9)


def test_vs_reference_rounds_to_3_3_and_5_digits():
    ranking, _, bias = compare_to_reference(ablation_correctness(), "standard")
    assert vs_reference(ranking) == {"difference": 25.0, "ci95": [1.5, 48.5], "mcnemar_p": 0.125}
    # ci95 (23.19638, 66.80362), p = 2/512 = 0.00390625
    assert vs_reference(bias) == {"difference": 45.0, "ci95": [23.196, 66.804], "mcnemar_p": 0.00391}


def test_compare_to_reference_alone_has_nothing_to_compare():
    assert compare_to_reference({"standard": np.array([True, False])}, "standard") == []


@pytest.mark.parametrize("correct, reference, error, message", [
    ([("standard", np.ones(3, dtype=bool))], "standard", TypeError, r"correct must be a mapping"),
    ({"standard": np.ones(3, dtype=bool)}, "fp32", ValueError, r"reference 'fp32' is not a key of correct"),
    ({"standard": np.ones(3, dtype=bool), "a": np.array([1, 0, 1])}, "standard", TypeError,
     r"correct\['a'\] must be boolean"),
    ({"standard": np.ones(3, dtype=bool), "a": np.ones(4, dtype=bool)}, "standard", ValueError,
     r"correct\['a'\] has 4 images and correct\['standard'\] 3: evaluate every model on the same images"),
    ({"standard": np.ones((2, 3), dtype=bool), "a": np.ones(6, dtype=bool)}, "standard", ValueError,
     r"correct\['standard'\] must be a non-empty 1-D array, got shape \(2, 3\)"),
], ids=["not a mapping", "unknown reference", "not boolean", "different images", "not 1-D"])
def test_compare_to_reference_names_bad_input(correct, reference, error, message):
    with pytest.raises(error, match=message):
        compare_to_reference(correct, reference)
