"""The training command line: each option's type, its help, and bad values refused as parsed."""
from __future__ import annotations

import dataclasses

import pytest

from vitquant_core.training.cli import parse_args
from vitquant_core.training.config import TrainConfig


def test_command_line_gives_each_option_its_type_and_refuses_bad_values(capsys):
    assert parse_args([]) == TrainConfig()
    cfg = parse_args(["--model", "deit_tiny_cifar", "--lr", "5e-2", "--bf16", "auto", "--compile", "yes",
                      "--max-steps", "3", "--time-budget", "60", "--teacher", "resnet18_cifar"])
    assert (cfg.model, cfg.lr, cfg.bf16, cfg.compile, cfg.max_steps, cfg.time_budget, cfg.teacher) == (
        "deit_tiny_cifar", 0.05, None, True, 3, 60.0, "resnet18_cifar")
    assert type(cfg.lr) is float and type(cfg.max_steps) is int and type(cfg.time_budget) is float
    assert parse_args(["--bf16", "False", "--compile", "0"]).bf16 is False
    for argv, message in [(["--compile", "maybe"], "'maybe' is not true or false"),
                          (["--bf16", "sometimes"], "'sometimes' is not true or false"),
                          (["--epochs", "ten"], "invalid int value: 'ten'"),
                          (["--eval-every", "0"], "eval_every must be >= 1"),
                          (["--init-from", "nowhere.safetensors"], "no checkpoint at nowhere.safetensors")]:
        with pytest.raises(SystemExit) as exit_:
            parse_args(argv)
        assert exit_.value.code == 2  # argparse's usage error, not a traceback
        assert message in capsys.readouterr().err


def test_command_line_help_describes_every_option(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # one line per option, so each help text appears whole
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            assert f"--{f.name.replace('_', '-')}" in out and f.metadata["help"] in out
    assert "(default: 128)" in out and "(default: resnet20_cifar)" in out


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-1"], "argument --lr: lr must be a positive finite number (e.g. 0.1), got -1.0"),
    (["--lr", "0"], "argument --lr: lr must be a positive finite number (e.g. 0.1), got 0.0"),
    (["--lr", "nan"], "argument --lr: lr must be a positive finite number (e.g. 0.1), got nan"),
    (["--lr", "inf"], "argument --lr: lr must be a positive finite number (e.g. 0.1), got inf"),
    (["--lr", "fast"], "argument --lr: 'fast' is not a number"),
    (["--device", "tpu"], "argument --device: device must be 'cpu', 'cuda', 'cuda:N' (N a GPU index) or 'mps', "
                          "got 'tpu'"),
    (["--device", "cuda:"], "got 'cuda:'"),
    (["--teacher", "no_such"], "argument --teacher: teacher 'no_such' is not a registered model: choose one of ["),
    (["--teacher", "resnet18"], "argument --teacher: teacher 'resnet18' is not a registered model: "
                                "did you mean resnet18_cifar"),
], ids=["lr-negative", "lr-zero", "lr-nan", "lr-inf", "lr-word", "device-tpu", "device-no-index",
        "teacher-unknown", "teacher-close"])
def test_bad_values_are_refused_as_parsed_naming_the_flag_and_what_it_takes(argv, message, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # argparse wraps its message at the terminal's width
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_devices_torch_trains_on_are_accepted():
    assert [parse_args(["--device", d]).device for d in ("cpu", "cuda", "cuda:1", "mps")] == [
        "cpu", "cuda", "cuda:1", "mps"]
    assert parse_args(["--lr", "1e-3"]).lr == 1e-3
