"""Shared fixtures: small models and inputs, and the CIFAR-10 copy when it is unpacked."""
from __future__ import annotations

import pytest
import torch

from vitquant_core.data import DataNotFoundError, find_data_root


@pytest.fixture(scope="session")
def cifar_root():
    """The unpacked CIFAR-10 copy (`make data` puts it in .cache/data); tests needing it fail
    loudly rather than skip when it is missing, since `make test` always unpacks it first."""
    try:
        return find_data_root("cifar10", "test")
    except DataNotFoundError as e:
        pytest.fail(f"CIFAR-10 is not unpacked: run `make data` first.\n{e}")


@pytest.fixture
def tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             num_classes=10).eval()
