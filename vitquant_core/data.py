"""Data sets, calibration sampling and evaluation subsets.

CIFAR-10 comes from an ImageFolder tree (``train/<class>/*.jpg``, ``test/<class>/*.jpg``:
the JPEG copy this project ships its results on) or from torchvision's binary format
(``cifar-10-batches-py``). CIFAR images are decoded once into one uint8 tensor, so that
evaluation and training are not bound by JPEG decoding.

ImageNet comes from an ImageFolder tree (``val/<wnid>/*.JPEG``) with the timm model's own
preprocessing.

Every subset (calibration, evaluation) is drawn class-balanced with a seeded generator:
the folders are sorted by class, so "the first N images" would be a few classes only.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


class DataNotFoundError(FileNotFoundError):
    """Raised with every place that was searched and how to point the project at data."""


# ---------------------------------------------------------------------------- locating


def candidate_roots(dataset: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The places searched for ``dataset``, in order."""
    sub = {"cifar10": "cifar10-jpeg", "imagenet": "imagenet"}[dataset]
    places: list[Path] = []
    if data_root is not None:
        places += [Path(data_root), Path(data_root) / sub]
    env = os.environ.get("VITQUANT_DATA")
    if env:
        places += [Path(env), Path(env) / sub]
    places += [REPO_ROOT / ".cache" / "data" / sub,
               Path.home() / ".cache" / "vitquant" / sub]
    if dataset == "cifar10":
        places.append(Path.home() / ".cache" / "vitquant" / "cifar10")
    return places


def _has_split(root: Path, split: str, dataset: str) -> bool:
    if (root / split).is_dir() and any((root / split).iterdir()):
        return True
    return dataset == "cifar10" and (root / "cifar-10-batches-py").is_dir()


def find_data_root(dataset: str, split: str, data_root: str | os.PathLike | None = None) -> Path:
    """The first candidate root holding ``split`` of ``dataset``, or a clear error."""
    if dataset not in ("cifar10", "imagenet"):
        raise ValueError(f"dataset must be 'cifar10' or 'imagenet', got {dataset!r}")
    tried = candidate_roots(dataset, data_root)
    for root in tried:
        if _has_split(root, split, dataset):
            return root
    hint = {
        "cifar10": ("run `make data` (unpacks the JPEG copy into .cache/data/cifar10-jpeg), "
                    "or set VITQUANT_DATA / data_root to a folder holding train/ and test/ "
                    "ImageFolder trees or torchvision's cifar-10-batches-py"),
        "imagenet": ("set VITQUANT_DATA or data_root to a folder holding the ImageNet "
                     "validation set as val/<wnid>/*.JPEG (and optionally train/)"),
    }[dataset]
    lines = "\n  ".join(str(p) for p in tried)
    raise DataNotFoundError(f"{dataset} split {split!r} not found. Looked in:\n  {lines}\nTo fix: {hint}.")


def unpack_cifar10_jpeg(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack ``train.tar.gz`` and ``test.tar.gz`` from ``source`` into ``dest`` (idempotent)."""
    source, dest = Path(source), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("test", "train"):
        marker = dest / f".{split}.complete"
        if marker.exists():
            continue
        archive = source / f"{split}.tar.gz"
        if not archive.exists():
            raise DataNotFoundError(f"{archive} not found: point --from at the folder holding "
                                    "the CIFAR-10 JPEG archives (train.tar.gz, test.tar.gz)")
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        marker.touch()
    return dest


# ---------------------------------------------------------------------------- splits


@dataclass
class ImageSplit:
    """One split of a data set: labels always in memory, images in memory or on disk."""

    dataset: str
    split: str
    root: Path
    labels: torch.Tensor
    classes: tuple[str, ...]
    images: torch.Tensor | None = None  # uint8 N x 3 x H x W (CIFAR)
    folder: Any = None  # torchvision ImageFolder (ImageNet)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __len__(self) -> int:
        return len(self.labels)

    def describe(self) -> dict[str, Any]:
        copy = "cifar10-jpeg (quality 75)" if self.dataset == "cifar10" and \
            not (self.root / "cifar-10-batches-py").is_dir() else self.dataset
        return {"dataset": self.dataset, "split": self.split, "root": str(self.root),
                "copy": copy, "n_images": len(self)}

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        # on the batch's own device, so that a GPU run normalises there
        mean = torch.tensor(self.mean, device=x_uint8.device).view(1, -1, 1, 1) * 255.0
        std = torch.tensor(self.std, device=x_uint8.device).view(1, -1, 1, 1) * 255.0
        return (x_uint8.float() - mean) / std

    def loader(self, indices: Sequence[int] | torch.Tensor | None = None,
               batch_size: int = 256, num_workers: int = 2) -> "BatchLoader":
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices)
        return BatchLoader(self, idx, batch_size, num_workers)


class BatchLoader:
    """Normalised (x, y) batches over a subset, in a fixed order."""

    def __init__(self, split: ImageSplit, indices: torch.Tensor, batch_size: int,
                 num_workers: int = 2) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split, self.indices, self.batch_size = split, indices, batch_size
        self.num_workers = num_workers

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size

    @property
    def n_images(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.split
        if s.images is not None:
            for i in range(0, len(self.indices), self.batch_size):
                idx = self.indices[i:i + self.batch_size]
                yield s.normalize(s.images[idx]), s.labels[idx]
            return
        subset = torch.utils.data.Subset(s.folder, self.indices.tolist())
        yield from torch.utils.data.DataLoader(subset, batch_size=self.batch_size,
                                               num_workers=self.num_workers, shuffle=False)


def _decode_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    import numpy as np
    from PIL import Image

    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
    if not classes:
        raise DataNotFoundError(f"{folder} holds no class folders")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((folder / cls).iterdir()):
            with Image.open(path) as im:
                images.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes


def _decode_cifar_binary(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    import torchvision

    ds = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=False)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.int64), tuple(ds.classes)


def _decoded_folder(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Decode ``root/split`` once, then reuse a uint8 tensor file beside it (safetensors, no pickle)."""
    from safetensors.torch import load_file, save_file

    cache = root / f".decoded-{split}.safetensors"
    classes_file = root / f".decoded-{split}.classes"
    n_files = sum(1 for d in (root / split).iterdir() if d.is_dir() for _ in d.iterdir())
    if cache.exists() and classes_file.exists():
        t = load_file(str(cache))
        if len(t["labels"]) == n_files:  # a changed folder invalidates the cache
            return t["images"], t["labels"], tuple(classes_file.read_text().split())
    images, labels, classes = _decode_folder(root / split)
    try:
        tmp = cache.with_suffix(".tmp")
        save_file({"images": images.contiguous(), "labels": labels}, str(tmp))
        tmp.replace(cache)
        classes_file.write_text("\n".join(classes) + "\n")
    except OSError:  # a read-only data folder: decode again next time
        pass
    return images, labels, classes


_CACHE: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]] = {}


def load_cifar10(split: str = "test", data_root: str | os.PathLike | None = None,
                 download: bool = False) -> ImageSplit:
    """CIFAR-10 ``split`` ("train" or "test") as decoded uint8 tensors."""
    from .models import CIFAR10_MEAN, CIFAR10_STD

    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    try:
        root = find_data_root("cifar10", split, data_root)
    except DataNotFoundError:
        if not download:
            raise
        import torchvision

        root = candidate_roots("cifar10", data_root)[-1]
        torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=True)
    key = (str(root.resolve()), split)
    if key not in _CACHE:
        if (root / split).is_dir():
            _CACHE[key] = _decoded_folder(root, split)
        else:
            _CACHE[key] = _decode_cifar_binary(root, split)
    images, labels, classes = _CACHE[key]
    return ImageSplit("cifar10", split, root, labels, classes, images=images,
                      mean=CIFAR10_MEAN, std=CIFAR10_STD)


def load_imagenet(split: str = "val", data_root: str | os.PathLike | None = None,
                  model_name: str = "deit_tiny_patch16_224", model: Any = None) -> ImageSplit:
    """ImageNet ``split`` from an ImageFolder tree with the timm model's preprocessing."""
    import timm.data
    import torchvision

    from .models import data_config

    root = find_data_root("imagenet", split, data_root)
    cfg = data_config(model_name, model)
    transform = timm.data.create_transform(**{k: cfg[k] for k in (
        "input_size", "interpolation", "mean", "std", "crop_pct") if k in cfg})
    folder = torchvision.datasets.ImageFolder(str(root / split), transform=transform)
    labels = torch.tensor(folder.targets, dtype=torch.int64)
    return ImageSplit("imagenet", split, root, labels, tuple(folder.classes), folder=folder,
                      mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def load_split(dataset: str, split: str, data_root: str | os.PathLike | None = None,
               model_name: str | None = None, model: Any = None) -> ImageSplit:
    """Evaluation ("test"/"val") or calibration ("train") split of ``dataset``."""
    if dataset == "cifar10":
        return load_cifar10({"val": "test"}.get(split, split), data_root)
    if dataset == "imagenet":
        return load_imagenet({"test": "val"}.get(split, split), data_root,
                             model_name or "deit_tiny_patch16_224", model)
    raise ValueError(f"dataset must be 'cifar10' or 'imagenet', got {dataset!r}")


# ---------------------------------------------------------------------------- sampling


def balanced_indices(labels: torch.Tensor, n: int, seed: int,
                     exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` indices drawn class-balanced (as equal per class as ``n`` allows), seeded.

    ``n = 0`` means every index. The result is sorted by a seeded shuffle, not by class,
    so any prefix of it is itself close to balanced.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0 (0 = all), got {n}")
    pool = torch.arange(len(labels))
    if exclude is not None and len(exclude):
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[exclude] = False
        pool = pool[keep]
    if n == 0 or n >= len(pool):
        if n > len(pool):
            raise ValueError(f"asked for {n} images but only {len(pool)} are available")
        chosen = pool
    else:
        g = torch.Generator().manual_seed(seed)
        classes = labels[pool].unique()
        per_class = [pool[labels[pool] == c] for c in classes]
        per_class = [p[torch.randperm(len(p), generator=g)] for p in per_class]
        base, extra = divmod(n, len(classes))
        order = torch.randperm(len(classes), generator=g)
        counts = {int(c): base + (1 if rank < extra else 0) for rank, c in enumerate(order)}
        parts = [p[:counts[i]] for i, p in enumerate(per_class)]
        if sum(len(p) for p in parts) < n:
            raise ValueError(f"cannot draw {n} class-balanced images: some classes are too small")
        chosen = torch.cat(parts)
    g = torch.Generator().manual_seed(seed + 1)
    return chosen[torch.randperm(len(chosen), generator=g)]


def calibration_batches(split: ImageSplit, n_calib: int, seed: int = 0,
                        batch_size: int = 64) -> list[torch.Tensor]:
    """A seeded, class-balanced calibration set as a list of input batches (no labels)."""
    if n_calib < 1:
        raise ValueError(f"n_calib must be >= 1 to calibrate, got {n_calib}")
    idx = balanced_indices(split.labels, n_calib, seed)
    return [x for x, _ in split.loader(idx, batch_size=batch_size)]


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vitquant_core.data", description="Prepare data sets.")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("unpack", help="unpack the CIFAR-10 JPEG archives (train.tar.gz, test.tar.gz)")
    u.add_argument("--from", dest="source", required=True, help="folder holding the archives")
    u.add_argument("--to", dest="dest", default=str(REPO_ROOT / ".cache" / "data" / "cifar10-jpeg"))
    args = p.parse_args(argv)
    dest = unpack_cifar10_jpeg(args.source, args.dest)
    print(f"CIFAR-10 JPEG copy ready in {dest}")


if __name__ == "__main__":
    main()
