"""benchmarks/train_step.py runs the real trainer's step and prints a figure for every setting."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from vitquant_core.train import bf16_supported

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_prints_each_setting(monkeypatch, capsys):
    bench = load_benchmark("train_step")
    monkeypatch.setattr(sys, "argv", ["train_step.py", "--model", "resnet20_cifar", "--batch-size", "8",
                                      "--warmup", "1", "--steps", "2", "--no-compile"])
    bench.main()
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\s+(\w+, \w+)\s+([0-9.]+) s/step", out, flags=re.M))
    assert set(rows) == ({"fp32, eager", "bf16, eager"} if bf16_supported("cpu") else {"fp32, eager"})
    assert all(float(s) > 0 for s in rows.values())
    assert re.search(r"fp32, eager .* 1\.00x fp32 eager", out)


def test_train_step_refuses_a_missing_gpu(monkeypatch):
    bench = load_benchmark("train_step")
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["train_step.py", "--device", "cuda"])
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.main()


def test_synthetic_split_is_cifar_shaped():
    split = load_benchmark("train_step").synthetic_split(16)
    assert split.images.shape == (16, 3, 32, 32) and split.images.dtype.is_floating_point is False
    assert len(split) == 16 and int(split.labels.max()) < 10
