"""Notebooks 01 and 02 run unchanged on timm's ``deit_tiny_patch16_224`` with an ImageNet
validation folder and the user's own weights, offline, through papermill's command line:
the same command a user runs on a real ImageNet folder (only the paths and sizes differ).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.data import ImageNetInfo

from vitquant_core.results import public_paths

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
MODEL = "deit_tiny_patch16_224"
# ImageNet-1k classes 0, 1 and 3: a subset that is not the first synsets, so the labels must
# follow ImageNet-1k's numbering (the model's), not the folder's
WNIDS = ("n01440764", "n01443537", "n01491361")
CLASS_INDEX = (0, 1, 3)
# ImageNet validation images come in many sizes, and a few are grayscale or CMYK
SIZES = ((300, 200), (256, 341), (500, 375), (224, 224), (341, 256))
N_EVAL, N_CALIB = 3, 2  # one evaluation image per class: DeiT at 224 px is slow on 2 cores
PREDICTED = 3  # the checkpoint's classifier answers this class (n01491361) for every image


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    """``val/<wnid>/*.JPEG`` with real JPEG files of varied sizes and colour modes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(WNIDS):
        folder = root / "val" / wnid
        folder.mkdir(parents=True)
        for i, (w, h) in enumerate(SIZES):
            # a smooth colour gradient plus noise: a photograph-like JPEG, not a flat block
            ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0, 1, h)[:, None, None]
            pixels = 255 * ramp * np.array([c + 1, 3 - c, 2]) / 3 + rng.normal(0, 20, (h, w, 3))
            im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
            im = {1: im.convert("L"), 2: im.convert("CMYK")}.get(i, im)
            im.save(folder / f"ILSVRC2012_val_{c * len(SIZES) + i + 1:08d}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Seeded DeiT-Tiny weights saved as safetensors, as a user brings their own.

    The classifier's weights are zeroed and its bias ranks classes 3 > 0 > 1 > the rest: every
    image is answered with class ``PREDICTED``, so top-1 and top-5 are known in advance, which
    proves these weights, not timm's random ones, were evaluated, against ImageNet-1k labels.
    """
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[[PREDICTED, 0, 1]] = torch.tensor([1.0, 0.5, 0.25])
    path = tmp_path_factory.mktemp("weights") / f"{MODEL}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


def papermill(name: str, out: Path, **params: object) -> list[str]:
    """The user's command line: ``papermill notebooks/NAME.ipynb OUT --cwd notebooks -p ...``."""
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / f"{name}.ipynb"), str(out),
           "--cwd", str(NOTEBOOKS)]
    for key, value in params.items():
        cmd += ["-p", key, str(value)]
    return cmd


def run(name: str, tmp: Path, imagenet_root: Path, checkpoint: Path, results_dir: Path, *extra: str) -> dict:
    cmd = papermill(name, tmp / f"{name}.ipynb", model=MODEL, dataset="imagenet", data_root=imagenet_root,
                    checkpoint=checkpoint, n_calib=N_CALIB, n_eval=N_EVAL, results_dir=results_dir) + list(extra)
    # offline, with an empty hub cache: any attempt to fetch published weights fails here
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), "TORCH_HOME": str(tmp / "torch"),
           "VITQUANT_DATA": str(tmp / "nowhere")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    return json.loads((results_dir / f"{name}.json").read_text())


def check_provenance(doc: dict, name: str, checkpoint: Path, imagenet_root: Path) -> None:
    from vitquant_core.models import sha256_file

    prov = doc["provenance"]
    assert doc["notebook"] == name
    # a checkpoint outside the repository is named by role, never by the machine's path
    assert prov["model"] == MODEL and prov["checkpoint"] == public_paths(str(checkpoint))
    assert prov["checkpoint"] == f"<outside the repository>/{checkpoint.name}"
    assert prov["checkpoint_sha256"] == sha256_file(checkpoint)
    assert prov["dataset"]["dataset"] == "imagenet" and prov["dataset"]["split"] == "val"
    assert prov["dataset"]["root"] == f"<outside the repository>/{imagenet_root.name}"
    assert prov["dataset"]["n_images"] == len(WNIDS) * len(SIZES)
    assert prov["n_eval"] == N_EVAL and prov["n_calib"] == N_CALIB
    # no train/ folder: calibration images are validation images outside the evaluation subset
    assert "outside the evaluation subset" in prov["calibration_data"]["note"]


def check_fp_row(row: dict) -> None:
    assert row["model"] == MODEL and row["method"] == "fp32"
    assert row["w_bits"] == 32 and row["a_bits"] == 32
    assert row["n_eval"] == N_EVAL
    assert math.isfinite(row["top1"]) and 0.0 <= row["top1"] <= 100.0
    # a class-balanced subset holds N_EVAL / 3 images of the one class the weights answer
    assert row["top1"] == pytest.approx(100.0 / len(WNIDS), abs=1e-3)
    assert row["top5"] == pytest.approx(100.0, abs=1e-3)  # classes 3, 0, 1 lead the logits


def test_01_baseline_on_imagenet(imagenet_root, checkpoint, results_dir, tmp_path):
    doc = run("01_baseline", tmp_path, imagenet_root, checkpoint, results_dir)
    check_provenance(doc, "01_baseline", checkpoint, imagenet_root)
    (fp,) = doc["rows"]
    check_fp_row(fp)
    # a subset of the synsets is scored against all 1000 of the model's classes
    assert fp["classes"] == list(ImageNetInfo("imagenet-1k").label_names())
    assert fp["per_class_top1"] == [(100.0 if c == PREDICTED else 0.0) if c in CLASS_INDEX else None
                                    for c in range(1000)]
    # DeiT-Tiny: patch embedding, 12 blocks of qkv / proj / fc1 / fc2, and the classifier
    assert len(doc["weight_ranges"]) == len(doc["activation_ranges"]) == 1 + 12 * 4 + 1


def test_02_ptq_on_imagenet(imagenet_root, checkpoint, results_dir, tmp_path):
    # one bit width and one observer keep DeiT at 224 px within a test's time: 4 grid points
    doc = run("02_ptq", tmp_path, imagenet_root, checkpoint, results_dir, "-y", "bits: [4]", "-y",
              "observers: [minmax]")
    check_provenance(doc, "02_ptq", checkpoint, imagenet_root)
    rows = doc["rows"]
    check_fp_row(rows[0])
    quantized = rows[1:]
    assert sorted((r["method"], r["w_bits"], r["a_bits"], r["granularity"]) for r in quantized) == [
        ("ptq", 4, 4, "per_channel"), ("ptq", 4, 4, "per_tensor"),
        ("ptq_weights_only", 4, 32, "per_channel"), ("ptq_weights_only", 4, 32, "per_tensor")]
    for r in quantized:
        assert r["model"] == MODEL and r["n_eval"] == N_EVAL
        assert r["config"]["default"]["w_bits"] == r["w_bits"]
        assert r["quantized"]  # the timm ViT's layers were found and wrapped
        # the classifier stays in float, so its constant answer survives quantization
        assert r["top1"] == pytest.approx(rows[0]["top1"]) and r["agreement"] == pytest.approx(100.0)

