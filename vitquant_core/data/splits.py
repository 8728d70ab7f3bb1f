"""One split of a data set, and fixed-order batches over a subset of it."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .decode import decoded_folder
from .locate import DataNotFoundError, candidate_roots, check_split, find_data_root, named_location

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


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
               batch_size: int = 256, num_workers: int = 2) -> BatchLoader:
        idx = torch.arange(len(self)) if indices is None else torch.as_tensor(indices)
        if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"indices must be a 1-D sequence of integers, got {idx.dtype} of shape "
                             f"{tuple(idx.shape)}")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices must lie in 0..{len(self) - 1} ({self.dataset} {self.split!r} holds "
                             f"{len(self)} images), got min {int(idx.min())}, max {int(idx.max())}")
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


def _decode_cifar_binary(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    import torchvision

    ds = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=False)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.int64), tuple(ds.classes)


_CACHE: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]] = {}


def load_cifar10(split: str = "test", data_root: str | os.PathLike | None = None,
                 download: bool = False) -> ImageSplit:
    """CIFAR-10 ``split`` ("train" or "test") as decoded uint8 tensors."""
    from ..models import CIFAR10_MEAN, CIFAR10_STD

    check_split("cifar10", split)
    try:
        root = find_data_root("cifar10", split, data_root)
    except DataNotFoundError:
        if not download:
            raise
        import torchvision

        # into the location the user named, else the user's cache
        named = named_location(data_root)
        root = named[1] if named else candidate_roots("cifar10")[-1]
        torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=True)
    key = (str(root.resolve()), split)
    if key not in _CACHE:
        if (root / split).is_dir():
            _CACHE[key] = decoded_folder(root, split, n_classes=len(CIFAR10_CLASSES))
        else:
            _CACHE[key] = _decode_cifar_binary(root, split)
    images, labels, classes = _CACHE[key]
    return ImageSplit("cifar10", split, root, labels, classes, images=images,
                      mean=CIFAR10_MEAN, std=CIFAR10_STD)


def load_imagenet(split: str = "val", data_root: str | os.PathLike | None = None,
                  model_name: str = "deit_tiny_patch16_224", model: Any = None) -> ImageSplit:
    """ImageNet ``split`` ("val" or "train") from an ImageFolder tree with the timm model's preprocessing."""
    import timm.data

    from ..models import data_config
    from .imagenet import imagenet_folder

    check_split("imagenet", split)
    root = find_data_root("imagenet", split, data_root)
    cfg = data_config(model_name, model)
    transform = timm.data.create_transform(**{k: cfg[k] for k in (
        "input_size", "interpolation", "mean", "std", "crop_pct") if k in cfg})
    folder = imagenet_folder(root / split, transform)
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
    raise ValueError(f"unknown dataset {dataset!r}: choose one of 'cifar10', 'imagenet'")
