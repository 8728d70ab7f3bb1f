"""What notebook 00 reads of the reference models: cards, tables, logs, the data-copy probe,
and the configs that retrain them."""
from __future__ import annotations

import json

import pytest

from vitquant_core import models as M
from vitquant_core.training.report import (
    card_notes,
    card_recipes,
    card_rows,
    card_table,
    data_copy_report,
    data_copy_runs,
    data_copy_summary,
    load_cards,
    missing_message,
    retrain_config,
    teacher_label,
    training_logs,
)

SHA = "0123456789abcdef" * 4
CARD = {"architecture": "ResNet-20", "epochs": 64, "epochs_in_total": 184, "train_seconds": 3960.0,
        "test_top1": 91.5, "hardware": "x86_64, 2 threads, cpu", "n_parameters": 272_474, "size_bytes": 1_100_000,
        "sha256": SHA, "recipe": {"teacher": None, "lr": 0.1}, "note": "two runs"}
PROBE = {"published": {"tta_top1": 94.01, "n_runs": 1000, "data": "original files", "source": "Jordan 2024"},
         "provenance": {"dataset": {"copy": "cifar10-jpeg"}, "precision": "bf16"},
         "rows": [{"seed": 0, "top1": 92.0, "tta_top1": 93.0, "steps": 9, "train_seconds": 1.0},
                  {"seed": 1, "top1": 92.5, "tta_top1": 93.5, "steps": 9, "train_seconds": 1.1}]}


def test_load_cards_puts_the_chosen_model_first_and_names_the_missing():
    cards, missing = load_cards("deit_tiny_cifar")
    assert list(cards) == ["deit_tiny_cifar", "resnet18_cifar", "resnet20_cifar"] and missing == []
    assert cards["resnet20_cifar"]["sha256"] == M.read_card(M.get_entry("resnet20_cifar").default_checkpoint)["sha256"]
    assert load_cards("resnet20_cifar", pattern="no_such*") == ({}, [])
    assert missing_message(["vit_x"]) == ("vit_x: no shipped checkpoint yet; train it with "
                                          "`python -m vitquant_core.training.train --model vit_x` (see the README)")
    assert missing_message([]) == ""


def test_teacher_label_names_the_teacher_by_hash_or_by_name_for_older_cards():
    distilled = {"teacher": {"model": "resnet18_cifar", "test_top1": 89.83, "sha256": SHA}, "recipe": {}}
    assert teacher_label(distilled) == "resnet18_cifar (89.83 %, 0123456789ab...)"
    assert teacher_label({"recipe": {"teacher": "resnet18_cifar"}}) == "resnet18_cifar"
    assert teacher_label(CARD) == ""


def test_card_table_rounds_hours_millions_and_megabytes():
    (row,) = card_table({"resnet20_cifar": CARD}).to_dict("records")
    assert row == {"model": "resnet20_cifar", "architecture": "ResNet-20", "epochs": 184, "last run: epochs": 64,
                   "last run: time (h)": 1.1, "test top-1 (%)": 91.5, "hardware": "x86_64, 2 threads, cpu",
                   "parameters (M)": 0.27, "file (MB)": 1.1, "sha256": "0123456789ab...", "distilled from": ""}
    assert card_notes({"a": CARD, "b": {"test_top1": 80.0}}) == ("- **a** (91.50 %): two runs\n"
                                                                  "- **b** (80.00 %): no note in the card")
    assert card_recipes({"a": CARD}) == 'a: recipe\n{\n "teacher": null,\n "lr": 0.1\n}'


def test_training_logs_hold_every_epoch_of_each_shipped_model():
    cards, _ = load_cards("resnet20_cifar")
    logs = training_logs(cards)
    assert set(logs["model"]) == set(cards)
    for name, card in cards.items():
        rows = logs[logs["model"] == name]
        # every epoch behind the weights, counted on across restarts, the last run's last
        assert rows["epoch"].tolist() == list(range(1, len(rows) + 1))
        assert rows["run"].min() == 0 and rows["epoch"].max() == card.get("epochs_in_total", card["epochs"])


def test_retrain_config_repeats_the_card_or_trains_the_recipe_from_scratch():
    card = M.read_card(M.get_entry("resnet20_cifar").default_checkpoint)
    assert card["initialised_from"] is not None  # the shipped ResNet-20 is a warm restart
    scratch = retrain_config("resnet20_cifar", seed=1, data_root=None, device="cpu",
                             init_from={"resnet20_cifar": None})
    assert (scratch.init_from, scratch.epochs, scratch.seed) == (None, card["epochs_in_total"], 1)
    short = retrain_config("resnet20_cifar", seed=0, data_root=None, device="cpu", epochs=2,
                           init_from={"resnet20_cifar": None})
    assert (short.epochs, short.stop_after) == (2, None)
    with pytest.raises(ValueError, match="retrain_models entry 'resnet20' is not a registered model: "
                                         "did you mean resnet20_cifar"):
        retrain_config("resnet20", seed=0, data_root=None, device="cpu")


def test_data_copy_probe_summary_report_and_runs():
    assert data_copy_summary(PROBE) == {"tta_top1_mean": 93.25, "n_runs": 2, "published_tta_top1": 94.01,
                                        "difference": -0.76}
    assert data_copy_summary(None) == {}
    assert data_copy_report(PROBE) == ("cifar10-jpeg, bf16: 93.25 % with TTA (mean of 2 runs); original files: "
                                       "94.01 % (n=1000, Jordan 2024); difference -0.76 point")
    assert "vitquant_core/training/benchmarks/data_copy_probe.py --seeds 0 1" in data_copy_report(None)
    assert data_copy_runs(PROBE).columns.tolist() == ["seed", "test top-1 (%)", "with TTA (%)", "steps",
                                                      "train time (s)"]
    json.dumps(data_copy_summary(PROBE))  # goes into the results file as it is


def test_card_rows_carry_each_cards_figure_without_re_evaluating():
    rows = card_rows({"resnet20_cifar": CARD}, n_eval=0, seed=0, data_root=None, profile="quick")
    assert rows == [{"model": "resnet20_cifar", "method": "fp32", "w_bits": 32, "a_bits": 32, "granularity": "none",
                     "top1": 91.5, "source": "model card", "checkpoint_sha256": SHA, "epochs": 64,
                     "epochs_in_total": 184, "train_seconds": 3960.0}]
