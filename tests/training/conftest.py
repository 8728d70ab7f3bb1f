"""Fixtures of the training tests: a tiny CIFAR-shaped ImageFolder (a few PNGs per class), so
every case trains for real in seconds."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_cifar")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("test", 4)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                # class-dependent mean colour, so a few steps can learn something
                img = rng.integers(0, 60, (32, 32, 3)) + 19 * c
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return root
