"""Data sets, calibration sampling and evaluation subsets.

CIFAR-10 comes from an ImageFolder tree (``train/<class>/*.jpg``, ``test/<class>/*.jpg``:
the JPEG copy this project ships its results on) or from torchvision's binary format
(``cifar-10-batches-py``). CIFAR images are decoded once into one uint8 tensor, so that
evaluation and training are not bound by JPEG decoding.

ImageNet comes from an ImageFolder tree (``val/<wnid>/*.JPEG``) with the timm model's own
preprocessing.

Every subset (calibration, evaluation) is drawn class-balanced with a seeded generator:
the folders are sorted by class, so "the first N images" would be a few classes only.

Modules: ``locate`` (where data lives, and the errors), ``decode`` (the decoded-image
cache), ``unpack`` (the archives, ``python -m vitquant_core.data unpack``), ``imagenet``,
``splits`` (splits and batch loaders), ``sampling`` (class-balanced subsets).
"""
from .locate import REPO_ROOT, DataError, DataNotFoundError, candidate_roots, find_data_root
from .sampling import balanced_indices, calibration_batches
from .splits import CIFAR10_CLASSES, BatchLoader, ImageSplit, load_cifar10, load_imagenet, load_split
from .unpack import main, unpack_cifar10_jpeg

__all__ = ["REPO_ROOT", "CIFAR10_CLASSES", "DataError", "DataNotFoundError", "candidate_roots",
           "find_data_root", "unpack_cifar10_jpeg", "ImageSplit", "BatchLoader", "load_cifar10",
           "load_imagenet", "load_split", "balanced_indices", "calibration_batches", "main"]
