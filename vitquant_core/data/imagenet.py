"""ImageNet validation (and training) folders: checked layout, labels in ImageNet-1k's order.

A model's class ``i`` is ImageNet-1k's ``i``-th synset in sorted order. ImageFolder numbers the
folders it finds, so a folder holding only some synsets would be labelled wrongly unless
they are the first ones; such a subset is labelled by each synset's ImageNet-1k index here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torchvision

from .locate import LAYOUT, DataError


def load_rgb(path: str) -> Any:
    """torchvision's image loader, with the file named when it cannot be decoded."""
    try:
        return torchvision.datasets.folder.default_loader(path)
    except (OSError, SyntaxError, ValueError) as e:  # what PIL raises for unreadable or truncated files
        raise DataError(f"{path} cannot be decoded as an image ({e}): replace it with a good copy "
                        "or delete it") from e


class SynsetFolder(torchvision.datasets.ImageFolder):
    """ImageFolder that ignores hidden folders (.ipynb_checkpoints) instead of taking them for classes."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        return classes, {c: i for i, c in enumerate(classes)}


def synsets_1k() -> list[str]:
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def imagenet_folder(folder: Path, transform: Any) -> SynsetFolder:
    """``folder`` (``val/`` or ``train/``) as a dataset whose targets are ImageNet-1k class indices."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    classes = sorted(p.name for p in entries if p.is_dir())
    if not classes:
        raise DataError(f"{folder} holds no class folders ({len(entries)} files lie directly in it): expected "
                        f"{LAYOUT['imagenet']}. ImageNet's validation archive unpacks flat: sort its images "
                        "into one folder per synset (e.g. with the widely used valprep.sh)")
    synsets = synsets_1k()
    index = {s: i for i, s in enumerate(synsets)}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise DataError(f"{folder} holds {len(unknown)} folders that are not ImageNet-1k synset ids "
                        f"(e.g. {', '.join(unknown[:3])}): expected {LAYOUT['imagenet']}")
    try:
        ds = SynsetFolder(str(folder), transform=transform, loader=load_rgb)
    except FileNotFoundError as e:  # a class folder without images: not a missing split
        raise DataError(f"{folder}: {e}. Every synset folder must hold images (.JPEG)") from e
    if classes != synsets[:len(classes)]:  # not the first N synsets: number them as the model does
        ds.samples = [(path, index[classes[t]]) for path, t in ds.samples]
        ds.imgs, ds.targets = ds.samples, [t for _, t in ds.samples]
        ds.classes, ds.class_to_idx = synsets, index
    return ds
