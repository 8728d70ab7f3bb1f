"""vitquant_core/training/scripts/train_reference_models.sh: which runs it starts, with which options
(nothing is trained).

A stub interpreter records each command line; every training command is then parsed by
``vitquant_core.training.train``'s own command line into a validated ``TrainConfig``.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from vitquant_core.training import train as T

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "vitquant_core" / "training" / "scripts" / "train_reference_models.sh"


def run_script(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    # the script starts runs in parallel: each call is one write of its whole line (an O_APPEND
    # write of a short line is atomic), so two calls' lines cannot interleave
    stub.write_text("#!/usr/bin/env bash\n"
                    'printf -v line "%q " "$@"\n'
                    f"printf '%s\\n' \"$line\" >> {shlex.quote(str(calls))}\n")
    stub.chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(stub), "RUNS": str(tmp_path / "runs"), **env})
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, [shlex.split(line) for line in lines]


def configs(calls: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> dict[str, T.TrainConfig]:
    """The TrainConfig each `python -m vitquant_core.training.train ...` call would train."""
    seen: list[T.TrainConfig] = []
    monkeypatch.setattr(T, "train", seen.append)
    for argv in calls:
        if argv[:2] == ["-m", "vitquant_core.training.train"]:
            T.main(argv[2:])
    return {c.model: c for c in seen}


def test_default_trains_all_three_with_budgets_and_deit_distilled_from_resnet18(tmp_path, monkeypatch):
    proc, calls = run_script(tmp_path, "cuda", "150", "300")
    assert proc.returncode == 0, proc.stderr
    cfgs = configs(calls, monkeypatch)
    assert set(cfgs) == {"resnet20_cifar", "resnet18_cifar", "deit_tiny_cifar"}
    assert all(c.device == "cuda" for c in cfgs.values())
    assert cfgs["resnet18_cifar"].time_budget == cfgs["resnet20_cifar"].time_budget == 150.0
    assert cfgs["deit_tiny_cifar"].time_budget == 300.0
    assert cfgs["deit_tiny_cifar"].teacher == "resnet18_cifar"
    assert cfgs["resnet18_cifar"].store_dtype == "float16"
    # the decode step comes first, DeiT (which needs the new ResNet-18) last
    assert calls[0][0] == "-c" and calls[-1][calls[-1].index("--model") + 1] == "deit_tiny_cifar"


def test_models_selects_runs(tmp_path, monkeypatch):
    proc, calls = run_script(tmp_path, "cpu", MODELS="resnet18_cifar deit_tiny_cifar")
    assert proc.returncode == 0, proc.stderr
    assert set(configs(calls, monkeypatch)) == {"resnet18_cifar", "deit_tiny_cifar"}


def test_unknown_model_is_refused_before_anything_runs(tmp_path):
    proc, calls = run_script(tmp_path, MODELS="resnet18")
    assert proc.returncode == 2 and calls == []
    assert "unknown model 'resnet18'" in proc.stderr
