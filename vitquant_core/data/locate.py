"""Where a data set lives: the places searched, and errors that say what is missing.

A location the user names (``data_root``, else the ``VITQUANT_DATA`` environment variable)
is authoritative: only it is searched, so that a split never comes silently from another
copy. Without one, the project's cache folders are searched, and the first that holds the
data set at all must hold the split asked for.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# dataset -> (its sub-folder name in a shared data folder, its splits)
DATASETS = {"cifar10": ("cifar10-jpeg", ("train", "test")), "imagenet": ("imagenet", ("train", "val"))}
LAYOUT = {
    "cifar10": ("train/<class>/*.jpg and test/<class>/*.jpg (ImageFolder layout, as "
                "`python -m vitquant_core.data unpack` makes it), or torchvision's cifar-10-batches-py/"),
    "imagenet": "val/<wnid>/*.JPEG (and optionally train/<wnid>/*.JPEG), one folder per ImageNet-1k synset",
}


class DataNotFoundError(FileNotFoundError):
    """A data set or one of its splits is not where it was looked for; says where and what to do."""


class DataError(ValueError):
    """Data that is there but unusable (a corrupt image, mixed sizes, a wrong layout); names the file."""


def check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(map(repr, DATASETS))}")


def check_split(dataset: str, split: str) -> None:
    check_dataset(dataset)
    splits = DATASETS[dataset][1]
    if split not in splits:
        raise ValueError(f"{dataset} has no split {split!r}: choose one of {', '.join(map(repr, splits))}")


def named_location(data_root: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """The location the user named, as ("data_root" or "VITQUANT_DATA", path), or None."""
    if data_root is not None:
        if not isinstance(data_root, (str, os.PathLike)):
            raise TypeError(f"data_root must be a folder path or None, got {data_root!r}")
        return "data_root", Path(data_root).expanduser()
    env = os.environ.get("VITQUANT_DATA")
    return ("VITQUANT_DATA", Path(env).expanduser()) if env else None


def candidate_roots(dataset: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The places searched for ``dataset``, in order: the named location only, if there is one."""
    check_dataset(dataset)
    sub = DATASETS[dataset][0]
    named = named_location(data_root)
    if named is not None:
        return [named[1], named[1] / sub]
    places = [REPO_ROOT / ".cache" / "data" / sub, Path.home() / ".cache" / "vitquant" / sub]
    if dataset == "cifar10":
        places.append(Path.home() / ".cache" / "vitquant" / "cifar10")
    return places


def _non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir())


def _jpeg_splits(root: Path, dataset: str) -> list[str]:
    return [s for s in DATASETS[dataset][1] if _non_empty_dir(root / s)]


def holds_dataset(root: Path, dataset: str) -> bool:
    """Whether ``root`` holds any split of ``dataset``."""
    return bool(_jpeg_splits(root, dataset)) or (dataset == "cifar10" and (root / "cifar-10-batches-py").is_dir())


def has_split(root: Path, split: str, dataset: str) -> bool:
    # a folder with JPEG splits is a JPEG copy: its binary batches (if any) never stand in for a split
    if _jpeg_splits(root, dataset):
        return _non_empty_dir(root / split)
    return dataset == "cifar10" and (root / "cifar-10-batches-py").is_dir()


def _what_is_wrong(place: Path, dataset: str) -> str:
    """Why ``place`` holds no ``dataset``, with the likeliest fix."""
    if not place.exists():
        return f"{place} does not exist"
    if not place.is_dir():
        return f"{place} is a file, not a folder"
    archives = sorted(p.name for p in place.glob("*.tar.gz"))
    if archives:
        return (f"{place} holds archives ({', '.join(archives)}), not unpacked folders: run "
                f"`python -m vitquant_core.data unpack --from {place} --to <folder>` and name that folder")
    subdirs = sorted(p for p in place.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(f.is_file() for d in subdirs[:3] for f in d.iterdir()):
        return (f"{place} looks like a split folder itself (its sub-folders {', '.join(d.name for d in subdirs[:3])}"
                f"{', ...' if len(subdirs) > 3 else ''} hold images): name the folder above it")
    if not subdirs:
        return f"{place} is empty" if not any(place.iterdir()) else f"{place} holds no folders"
    return f"{place} holds none of its split folders (it holds {', '.join(d.name + '/' for d in subdirs[:5])})"


def find_data_root(dataset: str, split: str, data_root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``split`` of ``dataset``, or an error naming what is missing where."""
    check_split(dataset, split)
    named = named_location(data_root)
    places = candidate_roots(dataset, data_root)
    root = next((p for p in places if p.is_dir() and holds_dataset(p, dataset)), None)
    if root is not None and has_split(root, split, dataset):
        return root
    layout = f"Expected layout: {LAYOUT[dataset]}."
    if root is not None:
        where = f"{named[0]}={named[1]}: " if named else ""
        found = ", ".join(s + "/" for s in _jpeg_splits(root, dataset))
        fix = ("" if named else " Run `make data` again to complete this copy." if dataset == "cifar10"
               else " Add the missing folder, or name a complete copy with data_root / VITQUANT_DATA.")
        raise DataNotFoundError(f"{where}{dataset} split {split!r} not found: {root} holds {found} "
                                f"but no {split}/ folder. {layout}{fix}")
    if named:
        raise DataNotFoundError(f"{named[0]}={named[1]}: no {dataset} data there ({_what_is_wrong(named[1], dataset)}; "
                                f"{named[1] / DATASETS[dataset][0]} was also tried). {layout} "
                                "A location you name is the only place searched.")
    hint = {
        "cifar10": ("run `make data` (unpacks the JPEG copy into .cache/data/cifar10-jpeg), "
                    "or set VITQUANT_DATA / data_root to a folder holding train/ and test/ "
                    "ImageFolder trees or torchvision's cifar-10-batches-py"),
        "imagenet": ("set VITQUANT_DATA or data_root to a folder holding the ImageNet "
                     "validation set as val/<wnid>/*.JPEG (and optionally train/)"),
    }[dataset]
    lines = "\n  ".join(str(p) for p in places)
    raise DataNotFoundError(f"{dataset} split {split!r} not found. Looked in:\n  {lines}\nTo fix: {hint}.")
