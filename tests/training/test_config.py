"""A run's configuration: validated where it is made, and rebuilt from a model card."""
from __future__ import annotations

import warnings

import pytest

from vitquant_core import models as M
from vitquant_core.training.config import TrainConfig


def test_from_card_warns_when_the_default_teacher_is_not_the_one_distilled_from():
    shipped = M.read_card(M.get_entry("resnet18_cifar").default_checkpoint)
    recipe = {"model": "deit_tiny_cifar", "teacher": "resnet18_cifar", "teacher_checkpoint": None}
    same = {"file": "deit.safetensors", "epochs": 1, "recipe": recipe,
            "teacher": {"model": "resnet18_cifar", "file": "resnet18_cifar.safetensors",
                        "sha256": shipped["sha256"], "test_top1": shipped["test_top1"]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TrainConfig.from_card(same).teacher == "resnet18_cifar"
        # cards written before teachers were recorded, and runs without a teacher, say nothing
        TrainConfig.from_card({k: v for k, v in same.items() if k != "teacher"})
    other = same | {"teacher": same["teacher"] | {"sha256": "0" * 64, "test_top1": 80.0}}
    with pytest.warns(UserWarning, match=r"distilled from resnet18_cifar.safetensors \(80.0 %.*teacher_checkpoint"):
        cfg = TrainConfig.from_card(other)
    assert cfg.teacher_checkpoint is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit teacher checkpoint is the user's choice
        TrainConfig.from_card(other, teacher_checkpoint="runs/old_teacher.safetensors")


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="vit_augment"):
        TrainConfig(vit_augment="gpu")
    with pytest.raises(ValueError, match="registered CIFAR model"):
        TrainConfig(model="resnet1000")
    with pytest.raises(ValueError, match="store_dtype"):
        TrainConfig(store_dtype="int8")
    with pytest.raises(ValueError, match="time_budget"):
        TrainConfig(time_budget=0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0)
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)


def test_learning_rate_device_and_teacher_are_checked_where_a_config_is_made():
    # the same checks as the command line's, for a config built in Python (a notebook)
    for bad in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"lr must be a positive finite number \(e.g. 0.1\), got"):
            TrainConfig(lr=bad)
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda', 'cuda:N' \(N a GPU index\) or 'mps', "
                                         r"got 'cuda1'"):
        TrainConfig(device="cuda1")
    with pytest.raises(ValueError, match=r"teacher 'resnet20' is not a registered model: did you mean "
                                         r"resnet20_cifar.*choose one of \["):
        TrainConfig(model="deit_tiny_cifar", teacher="resnet20")
    assert TrainConfig(lr=None, device="cuda:0", teacher="resnet18_cifar").teacher == "resnet18_cifar"
