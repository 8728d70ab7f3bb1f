"""setup_experiment checks every notebook parameter before computing anything, and measures
each configuration once through the row store."""
from __future__ import annotations

import pytest

from vitquant_core import QuantConfig, quantize
from vitquant_core.experiment import setup_experiment

GOOD = dict(model="resnet20_cifar", n_calib=8, n_eval=20, seed=0, profile="quick")


@pytest.mark.parametrize("bad, message", [
    (dict(n_eval=-5), r"parameter n_eval must be >= 0, got -5"),
    (dict(n_calib=0), r"parameter n_calib must be >= 1"),
    (dict(seed="0"), r"parameter seed must be an integer, got '0' \(str\)"),
    (dict(n_eval=True), r"parameter n_eval must be an integer"),
    (dict(profile="fast"), r"parameter profile must be one of \['full', 'quick'\]"),
    (dict(dataset="cifar100"), r"parameter dataset must be one of \('cifar10', 'imagenet'\)"),
    (dict(checkpoint="/no/such/weights.safetensors"), r"parameter checkpoint='/no/such/weights.safetensors': "
                                                        "no such file"),
], ids=["negative n_eval", "zero n_calib", "string seed", "bool n_eval", "unknown profile", "unknown dataset",
        "missing checkpoint"])
def test_a_bad_parameter_is_named_before_anything_is_computed(tmp_path, bad, message):
    with pytest.raises((TypeError, ValueError, FileNotFoundError), match=message):
        setup_experiment("01_baseline", **{**GOOD, "results_dir": tmp_path, **bad})


def test_an_unwritable_results_dir_fails_first(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=r"parameter results_dir=.*a_file/out.* is not writable"):
        setup_experiment("01_baseline", **GOOD, results_dir=blocker / "out")


def test_a_configuration_is_calibrated_and_evaluated_once(tmp_path, cifar_root):
    exp = setup_experiment("02_ptq", **GOOD, results_dir=tmp_path)
    config = QuantConfig.uniform(8, 8)
    builds = []

    def build():
        builds.append(1)
        return quantize(exp.model, config, exp.calib, progress=False)

    first = exp.measure({"config": config.to_json()}, build, "ptq", 8, 8, "per_channel")
    again = exp.measure({"config": config.to_json()}, build, "ptq", 8, 8, "per_channel")
    assert len(builds) == 1 and again.cached and again.row == first.row
    assert first.row["n_eval"] == 20 and 0.0 <= first.row["top1"] <= 100.0 and first.row["agreement"] >= 80.0
    assert exp.correct(again).float().mean().item() * 100 == pytest.approx(first.row["top1"], abs=1e-3)
    # a fresh experiment on the same inputs finds the float model's evaluation stored too
    exp2 = setup_experiment("02_ptq", **GOOD, results_dir=tmp_path)
    assert exp2.fp().top1 == exp.fp().top1 and exp2.store.key({"kind": "fp32"}) == exp.store.key({"kind": "fp32"})
    other = setup_experiment("02_ptq", **{**GOOD, "seed": 1}, results_dir=tmp_path)
    assert other.store.key({"kind": "fp32"}) != exp.store.key({"kind": "fp32"})  # another subset, another key
