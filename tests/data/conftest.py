"""Small synthetic ImageFolder trees of real JPEG files, made in tmp_path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_jpeg(path: Path, value: int = 0, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """A real JPEG: a flat colour ``value`` plus seeded noise, ``size`` = (width, height)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(value + rng.integers(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def make_tree(root: Path, splits: tuple[str, ...] = ("train", "test"), classes: tuple[str, ...] | None = None,
              per_class: int = 2, ext: str = "jpg") -> Path:
    """``root/<split>/<class>/<i>.<ext>``, each class with its own mean colour."""
    classes = classes or tuple(f"class{c}" for c in range(10))
    for split in splits:
        for c, cls in enumerate(classes):
            for i in range(per_class):
                write_jpeg(root / split / cls / f"{i}.{ext}", value=20 * c, seed=c * 100 + i)
    return root


@pytest.fixture(name="make_tree")
def make_tree_fixture():
    return make_tree


@pytest.fixture(name="write_jpeg")
def write_jpeg_fixture():
    return write_jpeg


@pytest.fixture
def tree(tmp_path):
    """Builds a synthetic tree under tmp_path: ``tree("name", splits=...)``."""
    return lambda name="data", **kw: make_tree(tmp_path / name, **kw)


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    """No VITQUANT_DATA, and the default cache folders moved into tmp_path (returned: repo, home)."""
    monkeypatch.delenv("VITQUANT_DATA", raising=False)
    monkeypatch.setattr("vitquant_core.data.locate.REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path / "home")
    return tmp_path / "repo", tmp_path / "home"
