"""Shared by the ranking-aware PTQ tests: one thread (the CI machine is shared) and a micro ViT."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn as nn


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _micro_vit(seed: int = 0) -> nn.Module:
    """A timm VisionTransformer small enough for unit tests: 16 patches + class token, dim 32."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                             num_classes=10).eval()


@pytest.fixture(scope="session")
def micro_vit() -> Callable[[int], nn.Module]:
    """``micro_vit(seed)``: a fresh micro ViT, its weights drawn from that seed."""
    return _micro_vit
