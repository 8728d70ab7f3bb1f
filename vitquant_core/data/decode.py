"""CIFAR images decoded once into one uint8 tensor, cached beside the folder they come from.

The cache (safetensors, no pickle) records a fingerprint of the files it was decoded from:
their relative names, sizes and modification times. A replaced, added or removed image
changes it, and the folder is decoded again.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..io import atomic_write
from .locate import DataError, DataNotFoundError

CACHE_FORMAT = "2"  # 1: no fingerprint (trusted on the image count alone)


def _visible(path: Path) -> bool:
    # hidden entries (.DS_Store, .ipynb_checkpoints) are never classes or images
    return not path.name.startswith(".")


def list_images(folder: Path, n_classes: int | None = None) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """The class names of an ImageFolder tree and its (file, label) pairs, in sorted order."""
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} is not a folder")
    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir() and _visible(d)))
    if not classes:
        loose = any(f.is_file() and _visible(f) for f in folder.iterdir())
        raise DataError(f"{folder} holds no class folders{' (its images lie directly in it)' if loose else ''}: "
                        f"expected {folder}/<class>/<image>, one folder per class")
    if n_classes is not None and len(classes) != n_classes:
        raise DataError(f"{folder} holds {len(classes)} class folders ({', '.join(classes[:12])}"
                        f"{', ...' if len(classes) > 12 else ''}), expected {n_classes}: "
                        "remove or move the folders that are not classes of this data set")
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        members = [p for p in sorted((folder / cls).iterdir()) if _visible(p)]
        if not members:
            raise DataError(f"class folder {folder / cls} holds no images")
        files += [(p, label) for p in members]
    return classes, files


def fingerprint(folder: Path, files: list[tuple[Path, int]]) -> str:
    """SHA-256 of the files' relative names, labels, sizes and modification times (not contents)."""
    h = hashlib.sha256()
    for path, label in files:
        st = path.stat()
        h.update(f"{path.relative_to(folder).as_posix()}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _size(arr) -> str:
    return f"{arr.shape[1]}x{arr.shape[0]}"


def decode_images(folder: Path, files: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image as RGB uint8, stacked; a file that does not decode, or has another size, is named."""
    import numpy as np
    from PIL import Image

    images, labels = [], []
    first = None
    for path, label in files:
        try:
            with Image.open(path) as im:
                arr = np.array(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as e:  # what PIL raises for unreadable or truncated files
            raise DataError(f"{path} cannot be decoded as an image ({e}): replace it with a good copy "
                            "or delete it") from e
        if first is None:
            first = (arr, path)
        elif arr.shape != first[0].shape:
            raise DataError(f"images in {folder} differ in size: {_size(first[0])} (e.g. {first[1]}) and "
                            f"{_size(arr)} (e.g. {path}); every image of a split must have one size")
        images.append(torch.from_numpy(arr).permute(2, 0, 1))
        labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _read_cache(cache: Path, key: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]] | None:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(cache), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != CACHE_FORMAT or meta.get("files_sha256") != key:
            return None
        t = load_file(str(cache))
    except (OSError, SafetensorError):  # missing, unreadable or half-copied: decode again
        return None
    return t["images"], t["labels"], tuple(meta["classes"].split("\n"))


def decoded_folder(root: Path, split: str, n_classes: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Decode ``root/split`` once, then reuse ``root/.decoded-<split>.safetensors`` while its files are unchanged."""
    from safetensors.torch import save_file

    folder = root / split
    classes, files = list_images(folder, n_classes)
    key = hashlib.sha256(("\n".join(classes) + "\n" + fingerprint(folder, files)).encode()).hexdigest()
    cache = root / f".decoded-{split}.safetensors"
    hit = _read_cache(cache, key)
    if hit is not None:
        return hit
    images, labels = decode_images(folder, files)
    meta = {"format": CACHE_FORMAT, "files_sha256": key, "classes": "\n".join(classes)}
    try:
        atomic_write(cache, lambda tmp: save_file({"images": images.contiguous(), "labels": labels}, str(tmp),
                                                  metadata=meta))
        (root / f".decoded-{split}.classes").unlink(missing_ok=True)  # format 1 kept the classes beside it
    except OSError:  # a read-only data folder: decode again next time
        pass
    return images, labels, classes
