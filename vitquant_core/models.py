"""Model registry and checkpoints.

The registry holds the project's CIFAR-10 variants and passes every other name through
to timm or torchvision, so ``deit_tiny_patch16_224`` with ImageNet weights runs through
the same code path as the project's own models.

Checkpoints are safetensors files (no pickle) with a JSON model card beside each; the
card's SHA-256 is checked on every load.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

# re-exported, so that models.load_checkpoint and the rest keep working
from .checkpoints import card_path, check_card_model, load_checkpoint, read_card, save_checkpoint, sha256_file  # noqa: F401

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelEntry:
    """What the project knows about a registered model."""

    name: str
    builder: Callable[..., nn.Module]
    dataset: str
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    family: str  # "cnn" or "vit": picks the training recipe
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def default_checkpoint(self) -> Path:
        return CHECKPOINT_DIR / f"{self.name}.safetensors"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def list_models(pattern: str = "*") -> list[str]:
    """Names of the project's registered models matching a glob pattern."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry | None:
    return _REGISTRY.get(name)


# ---------------------------------------------------------------------------- CIFAR models


class _BasicBlock(nn.Module):
    """ResNet basic block for CIFAR (He et al., CVPR 2016, section 4.2)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            # projection shortcut (option B): a 1x1 conv keeps every layer a real conv,
            # which is what a quantizer sees on deployed ResNets
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3 stages of 16/32/64 channels."""

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet20_cifar(num_classes: int = 10, **_: Any) -> nn.Module:
    return ResNetCifar(20, num_classes)


def _resnet18_cifar(num_classes: int = 10, **_: Any) -> nn.Module:
    import torchvision

    model = torchvision.models.resnet18(num_classes=num_classes)
    # CIFAR stem: 3x3 stride-1 conv and no max-pool, so 32x32 inputs keep their detail
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _deit_tiny_cifar(num_classes: int = 10, drop_path_rate: float = 0.1,
                     distilled: bool = False, **_: Any) -> nn.Module:
    import timm

    # DeiT-Tiny (Touvron et al., ICML 2021): dim 192, depth 12, 3 heads; patch 4 on 32x32
    # gives 64 tokens, the same sequence length scale as 224/16 = 196 patches.
    name = "deit_tiny_distilled_patch16_224" if distilled else "deit_tiny_patch16_224"
    return timm.create_model(name, pretrained=False, img_size=32, patch_size=4,
                             num_classes=num_classes, drop_path_rate=drop_path_rate)


register_model(ModelEntry(
    "resnet20_cifar", _resnet20_cifar, "cifar10", (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD, 10,
    "cnn", "ResNet-20 for CIFAR (He et al. 2016), 0.27 M parameters, projection shortcuts"))
register_model(ModelEntry(
    "resnet18_cifar", _resnet18_cifar, "cifar10", (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD, 10,
    "cnn", "torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool, 11.2 M parameters"))
register_model(ModelEntry(
    "deit_tiny_cifar", _deit_tiny_cifar, "cifar10", (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD, 10,
    "vit", "timm DeiT-Tiny (dim 192, depth 12, 3 heads) with 4x4 patches on 32x32 inputs"))


# ---------------------------------------------------------------------------- creation


def _check_name(name: str, fetch: bool) -> None:
    """Refuse a near miss of a registry name before timm or torchvision is asked for weights.

    ``fetch``: the call would download published weights (48 s of network timeouts here).
    """
    import timm
    import torchvision

    if timm.is_model(name) or name in torchvision.models.list_models():
        # a published architecture whose CIFAR-10 variant the registry holds: "resnet18"
        variants = [n for n in _REGISTRY if n.startswith(name + "_")] if fetch else []
        if variants:
            tags = timm.list_pretrained(f"{name}.*")[:1]
            raise ValueError(
                f"{name!r} is not one of the project's models: did you mean {' or '.join(variants)}? "
                f"{name!r} itself means its published ImageNet weights, fetched over the network: to get "
                f"them, name a pretrained tag{f' such as {tags[0]!r}' if tags else ''} (timm.list_pretrained"
                f"('{name}.*')); for your own weights, pass checkpoint=PATH")
        return
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
    if close:
        raise ValueError(f"unknown model {name!r}: did you mean {' or '.join(close)}? (the project registry: "
                         f"{', '.join(list_models())}; timm and torchvision names pass through)")


def create_model(name: str, pretrained: bool = False, checkpoint: str | Path | None = None,
                 num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a model by registry name, or pass the name through to timm / torchvision.

    For the project's own models ``pretrained=True`` (or ``checkpoint=None`` through
    :func:`load_model`) means the shipped checkpoint. For timm and torchvision names it means
    their published weights (downloaded on first use where the network allows).
    """
    entry = _REGISTRY.get(name)
    if entry is not None:
        path = Path(checkpoint) if checkpoint else (entry.default_checkpoint if pretrained else None)
        if path is not None and card_path(path).exists():
            card = read_card(path)
            check_card_model(card, path, name)  # before the card's builder_kwargs reach the builder
            kwargs = card.get("builder_kwargs", {}) | kwargs
        model = entry.builder(num_classes=num_classes or entry.num_classes, **kwargs)
        if pretrained:
            load_checkpoint(model, checkpoint or entry.default_checkpoint, name=name)
        elif checkpoint is not None:
            load_checkpoint(model, checkpoint, name=name)
        return model.eval()

    _check_name(name, fetch=pretrained and checkpoint is None)
    import timm

    if timm.is_model(name):
        extra = {} if num_classes is None else {"num_classes": num_classes}
        model = timm.create_model(name, pretrained=pretrained and checkpoint is None,
                                  **extra, **kwargs)
    else:
        import torchvision

        if name not in torchvision.models.list_models():
            raise KeyError(
                f"unknown model {name!r}: not in the project registry ({', '.join(list_models())}), "
                "timm (timm.list_models()) or torchvision (torchvision.models.list_models())")
        extra = {} if num_classes is None else {"num_classes": num_classes}
        weights = "DEFAULT" if (pretrained and checkpoint is None) else None
        model = torchvision.models.get_model(name, weights=weights, **extra, **kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, verify=card_path(checkpoint).exists(), name=name)
    return model.eval()


def load_model(name: str, checkpoint: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model a notebook studies: registry default checkpoint, or ``checkpoint``.

    Returns the model in eval mode and a description (checkpoint path, SHA-256, card) for
    the results' provenance.
    """
    entry = _REGISTRY.get(name)
    if entry is not None:
        path = Path(checkpoint) if checkpoint else entry.default_checkpoint
        if not path.exists():
            raise FileNotFoundError(
                f"no checkpoint for {name!r} at {path}: train one with "
                f"`python -m vitquant_core.training.train --model {name}` or pass checkpoint=PATH")
        model = create_model(name, checkpoint=path)  # verifies the card's SHA-256
        card = read_card(path)
        return model, {"checkpoint": str(path), "checkpoint_sha256": card["sha256"], "card": card}
    if checkpoint is None:
        model = create_model(name, pretrained=True)
        return model, {"checkpoint": f"{name} published weights", "checkpoint_sha256": None,
                       "card": {}}
    model = create_model(name, checkpoint=checkpoint)
    return model, {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
                   "card": {}}


def data_config(name: str, model: nn.Module | None = None) -> dict[str, Any]:
    """Input size and normalisation for a model: the registry's, else timm's own."""
    entry = _REGISTRY.get(name)
    if entry is not None:
        return {"input_size": entry.input_size, "mean": entry.mean, "std": entry.std,
                "interpolation": "bilinear", "crop_pct": 1.0}
    import timm.data

    if model is None:
        model = create_model(name, pretrained=False)
    cfg = timm.data.resolve_data_config({}, model=model)
    return dict(cfg)
