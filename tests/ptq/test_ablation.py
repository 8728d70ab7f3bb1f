"""Notebook 03's study: parameter checks, profile defaults, the paired tests and the verdicts."""
from __future__ import annotations

import pytest
import torch

from vitquant_core.ptq.ablation import (
    PROFILE_DEFAULTS,
    check_study_parameters,
    compare_with_standard,
    search_check,
    study_parameters,
    verdicts,
)
from vitquant_core.rowstore import Record


class Labels:
    """What compare_with_standard needs of an experiment: per-image correctness of a record."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = torch.tensor(labels)

    def correct(self, record: Record) -> torch.Tensor:
        return torch.tensor(record.predictions) == self.labels


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(settings="W8A8"), TypeError, r"parameter settings must be a non-empty list"),
    (dict(settings=["8A8"]), ValueError, r"'W4A8'"),
    (dict(ablation="standard"), TypeError, r"parameter ablation must be a non-empty list"),
    (dict(ablation=["standard", "ranking"]), ValueError, r"unknown variants \['ranking'\]"),
    (dict(n_attention_images=0), ValueError, r"parameter n_attention_images must be an integer >= 1"),
    (dict(sampling_check="yes"), TypeError, r"parameter sampling_check must be True or False"),
], ids=["settings as a string", "malformed setting", "ablation as a string", "unknown variant",
        "no attention images", "flag as a string"])
def test_bad_study_parameters_are_named(kwargs, error, message):
    good = dict(settings=["W8A8", "W4A8"], ablation=["standard", "ranking-aware"], n_attention_images=4,
                check_setting="W4A4", sampling_check=True)
    with pytest.raises(error, match=message):
        check_study_parameters(**{**good, **kwargs})


def test_none_takes_the_profiles_value_and_a_given_value_wins():
    assert study_parameters("full", n_calib=None, n_candidates=None, max_rounds=7) == {
        "n_calib": 64, "n_candidates": 100, "max_rounds": 7}
    assert study_parameters("quick", n_eval=None)["n_eval"] == PROFILE_DEFAULTS["quick"]["n_eval"] == 500
    with pytest.raises(ValueError, match="parameter profile must be one of"):
        study_parameters("fast", n_calib=None)


def test_variants_are_tested_against_standard_on_the_same_images():
    labels = [0] * 20
    std = Record("a", {"top1": 50.0}, [0] * 10 + [1] * 10)   # right on the first 10
    ra = Record("b", {"top1": 95.0}, [0] * 19 + [1])         # right on 19: 9 more, none fewer
    records = {("W4A4", "standard"): std, ("W4A4", "ranking-aware"): ra}
    (c,) = compare_with_standard(Labels(labels), records)
    assert c["only standard right"] == 0 and c["only variant right"] == 9
    assert c["difference (points)"] == pytest.approx(45.0)
    assert c["McNemar p"] == pytest.approx(2 * 0.5 ** 9)  # exact binomial, 9 of 9 discordant one way
    assert ra.row["vs_standard"]["difference"] == 45.0 and ra.row["vs_standard"]["mcnemar_p"] == round(2 * 0.5 ** 9, 5)
    (line,) = verdicts(records, ["W4A4"])
    assert line.startswith("W4A4: standard 50.00 %, ranking-aware 95.00 % (+45.00 points")
    assert "at least as accurate" in line and "best variant: 'ranking-aware' (+45.00)" in line


def test_the_search_check_says_when_the_faster_search_costs_accuracy():
    labels = [0] * 100
    used = Record("a", {"top1": 80.0, "calib_seconds": 10.0}, [0] * 80 + [1] * 20,
                  data={"multipliers": {"l1": {"w": 1.0}, "l2": {"w": 0.9}}})
    exhaustive = Record("b", {"top1": 95.0, "calib_seconds": 40.0}, [0] * 95 + [1] * 5,
                        data={"multipliers": {"l1": {"w": 1.0}, "l2": {"w": 0.8}}})
    check = search_check(Labels(labels), used, exhaustive, "coarse-to-fine")
    assert check["table"][0]["same multipliers as exhaustive"] == "1/2"
    assert check["difference"] == pytest.approx(15.0) and check["ci95"][0] > 0
    assert check["verdict"] == ("the exhaustive search is more accurate by more than this test split can "
                                "resolve: 15.00 points at this setting")
    same = search_check(Labels(labels), used, used, "coarse-to-fine")
    assert same["verdict"] == "the two searches differ by less than this test split can resolve"
