"""Shared by the sensitivity tests: one thread, a micro ViT, a micro CNN and their data."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def micro_vit(seed: int = 0) -> nn.Module:
    """timm VisionTransformer: 16 patches + class token, dim 32, 2 blocks, 2 heads."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    m = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                          num_classes=10).eval()
    with torch.no_grad():  # timm's initial head gives near-uniform logits; spread them like a trained one's
        m.head.weight.mul_(100.0)
    return m


class MicroBlock(nn.Module):
    """A residual block with an in-place ReLU and ``out += identity``, as torchvision's BasicBlock."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class MicroCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True)
        self.layer1 = nn.Sequential(MicroBlock(8), MicroBlock(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.fc(self.pool(self.layer1(x)).flatten(1))


def micro_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = MicroCNN()
    for bn in m.modules():  # non-trivial running statistics, so that folding them matters
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)
    with torch.no_grad():  # logits spread like a trained classifier's
        m.fc.weight.mul_(30.0)
    return m.eval()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return micro_vit()


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return micro_cnn()


@pytest.fixture(scope="module")
def data16() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(calibration batches, 24 evaluation images, their labels) at 16x16."""
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
    x = torch.randn(24, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (24,), generator=g)
    return calib, x, y
