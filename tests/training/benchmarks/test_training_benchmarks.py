"""The training and data-copy benchmarks (vitquant_core/training/benchmarks/): train_step.py runs the
real trainer's step and prints a figure for every setting; data_copy_probe.py and airbench_reference.py."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from vitquant_core.training.trainer import bf16_supported

ROOT = Path(__file__).resolve().parents[3]
BENCHMARKS = ROOT / "vitquant_core" / "training" / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
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


def test_data_copy_probe_whitening_layer_whitens_patches():
    probe = load_benchmark("data_copy_probe")
    g = torch.Generator().manual_seed(0)
    # correlated channels and neighbouring pixels, as in images
    x = torch.randn(64, 1, 16, 16, generator=g).repeat(1, 3, 1, 1) + 0.3 * torch.randn(64, 3, 16, 16, generator=g)
    x = x + 0.8 * x.roll(1, dims=-1)
    net = probe.build_net()
    probe.init_whitening(net[0], x, eps=0.0)
    with torch.no_grad():
        z = torch.nn.functional.conv2d(x, net[0].weight[:12])  # the 12 eigen-filters, without their negatives
    z = z.permute(1, 0, 2, 3).reshape(12, -1)
    cov = z @ z.T / z.shape[1]
    assert torch.allclose(cov, torch.eye(12), atol=1e-3)
    assert torch.equal(net[0].weight[12:], -net[0].weight[:12]) and not net[0].weight.requires_grad


def test_data_copy_probe_schedule_and_decoupled_hyperparameters():
    probe = load_benchmark("data_copy_probe")
    total = 100
    lrs = [probe._triangle(s, total) for s in range(total + 1)]
    assert lrs[0] == pytest.approx(0.2) and lrs[23] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.07)
    assert max(lrs) == lrs[23]
    opt = probe.optimizer(probe.build_net(), batch_size=1024)
    bn, rest = opt.param_groups
    scale = 1024 * (1 + 1 / 0.15)
    # the decay applied per step (lr x weight_decay) is the paper's 0.0153 per 1024 examples, in both groups
    for group in (bn, rest):
        assert group["lr"] * group["weight_decay"] == pytest.approx(0.0153 * 1024 / scale)
    assert rest["lr"] == pytest.approx(11.5 / scale) and bn["lr"] == pytest.approx(64 * rest["lr"])
    assert all(p.dim() == 1 for p in bn["params"]) and len(bn["params"]) == 6  # BN shifts only


def test_data_copy_probe_augmentation_flips_alternately_and_translates_within_two_pixels():
    probe = load_benchmark("data_copy_probe")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32, generator=g)
    preflip = torch.tensor([True, False] * 4)
    shifted = probe._translate(x, 2, g)
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for i in range(8):
        assert any(torch.equal(shifted[i], padded[i, :, sy:sy + 32, sx:sx + 32]) for sy in range(5) for sx in range(5))
    y = torch.arange(8)  # labels name the source image

    def mirrored(xb: torch.Tensor, yb: torch.Tensor) -> list[bool]:
        """Whether each output is a shift of its source image mirrored (True) or as is (False)."""
        out = []
        for img, i in zip(xb, yb.tolist()):
            for flip in (False, True):
                src = torch.nn.functional.pad(x[i].flip(-1) if flip else x[i], (2,) * 4, mode="reflect")
                if any(torch.equal(img, src[:, sy:sy + 32, sx:sx + 32]) for sy in range(5) for sx in range(5)):
                    out.append(flip)
        assert len(out) == len(yb)
        return out

    for epoch in (0, 1, 2, 3):
        (xb, yb), = probe.train_batches(x, y, epoch, 8, g, preflip)
        assert sorted(yb.tolist()) == list(range(8))
        assert mirrored(xb, yb) == [bool(preflip[i]) ^ bool(epoch % 2) for i in yb.tolist()]


def test_data_copy_probe_runs_reports_top1_and_writes_its_results(monkeypatch, capsys, tmp_path):
    probe = load_benchmark("data_copy_probe")
    split = load_benchmark("train_step").synthetic_split(1024)
    monkeypatch.setattr(probe, "load_cifar10", lambda name, root=None: split)
    monkeypatch.setattr(sys, "argv", ["data_copy_probe.py", "--max-steps", "2", "--out", str(tmp_path)])
    probe.main()
    out = capsys.readouterr().out
    m = re.search(r"seed 0: top-1 ([0-9.]+) %, with TTA ([0-9.]+) %  \(2 steps", out)
    assert m and all(0.0 <= float(v) <= 100.0 for v in m.groups())
    assert re.search(r"published on the original files: 94\.01 % .* difference [+-][0-9.]+ point", out)
    doc = json.loads((tmp_path / "data_copy_probe.json").read_text())
    (row,) = doc["rows"]
    assert (row["seed"], row["steps"]) == (0, 2) and row["tta_top1"] == round(float(m.group(2)), 2)
    assert doc["published"]["tta_top1"] == 94.01 and doc["provenance"]["max_steps"] == 2
    assert doc["provenance"]["precision"] == "fp32" and doc["provenance"]["hyperparameters"]["batch_size"] == 1024


def test_data_copy_probe_refuses_a_split_smaller_than_a_batch():
    probe = load_benchmark("data_copy_probe")
    split = load_benchmark("train_step").synthetic_split(100)
    with pytest.raises(ValueError, match="fewer than one batch of 1024"):
        probe.run(split, split, seed=0, bf16=False, max_steps=1)


def test_airbench_reference_patches_only_the_released_source(tmp_path):
    ref = load_benchmark("airbench_reference")
    (tmp_path / "lib_airbench94.py").write_text("    net = net.half().cuda()\n")
    (tmp_path / "utils.py").write_text(
        "import torchvision.transforms as T\n"
        "data = torch.load(p, map_location=torch.device(gpu))\nx = self.images.half()\n"
        "starter = torch.cuda.Event(enable_timing=True)\ntorch.cuda.synchronize()\n")
    ref.patch(tmp_path)
    utils = (tmp_path / "utils.py").read_text()
    assert "cuda" not in utils + (tmp_path / "lib_airbench94.py").read_text()
    assert "half" not in utils and 'map_location="cpu"' in utils and "class _Timer" in utils
    (tmp_path / "utils.py").write_text("something else\n")
    with pytest.raises(SystemExit, match="not the released airbench"):
        ref.patch(tmp_path)


def test_airbench_reference_writes_the_copy_shuffled_in_the_package_format(monkeypatch, tmp_path):
    ref = load_benchmark("airbench_reference")
    split = load_benchmark("train_step").synthetic_split(64)
    monkeypatch.setattr(ref, "load_cifar10", lambda name, root=None: split)
    ref.write_data(tmp_path, None, seed=0)
    data = torch.load(tmp_path / "train.pt")
    assert data["images"].shape == (64, 32, 32, 3) and data["images"].dtype == torch.uint8
    assert not torch.equal(data["labels"], split.labels)  # shuffled, with images and labels kept together
    for img, label in zip(data["images"][:8], data["labels"][:8]):
        i = next(i for i in range(64) if torch.equal(split.images[i].permute(1, 2, 0), img))
        assert split.labels[i] == label
