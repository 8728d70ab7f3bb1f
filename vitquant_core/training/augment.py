"""Batched, device-side data augmentation for uint8 image batches.

* :func:`random_crop_flip`: random crop after zero padding, and a horizontal flip (the CNN
  recipe, and the first step of the ViT recipe).
* :func:`trivial_augment_wide`: TrivialAugment (Müller & Hutter, ICCV 2021) in its "wide"
  augmentation space, with an operation and a magnitude drawn *per image*, applied to a
  whole batch at once on the batch's device.

torchvision's ``v2.TrivialAugmentWide`` draws one operation per call, so a per-image draw
means one call per image: about 0.8 ms of a CPU core per 32×32 image, in DataLoader
workers. Here images that drew the same operation are transformed together, with their own
magnitudes (one affine grid per image for the geometric operations), so a batch costs a
dozen batched operations wherever the model runs. Each operation mirrors torchvision's
tensor kernel for uint8 images (same magnitude bins, signs, nearest interpolation, zero
fill, rounding), and ``tests/test_augment.py`` checks every one image by image against
torchvision.

Random draws come from a CPU ``torch.Generator``, so a seed gives the same augmentation on
every device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

#: TrivialAugmentWide's operations, in torchvision's order.
TRIVIAL_AUGMENT_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
NUM_MAGNITUDE_BINS = 31
_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
           "Sharpness"}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _magnitude_bins(op: str, num_bins: int = NUM_MAGNITUDE_BINS) -> torch.Tensor:
    """The magnitudes of ``op``'s bins, as torchvision's ``TrivialAugmentWide`` defines them."""
    if op in ("ShearX", "ShearY", "Brightness", "Color", "Contrast", "Sharpness"):
        return torch.linspace(0.0, 0.99, num_bins)
    if op in ("TranslateX", "TranslateY"):
        return torch.linspace(0.0, 32.0, num_bins)
    if op == "Rotate":
        return torch.linspace(0.0, 135.0, num_bins)
    if op == "Posterize":
        return (8 - (torch.arange(num_bins) / ((num_bins - 1) / 6))).round()
    if op == "Solarize":
        return torch.linspace(1.0, 0.0, num_bins)
    return torch.zeros(num_bins)  # Identity, AutoContrast, Equalize take no magnitude


def random_crop_flip(x: torch.Tensor, g: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and a horizontal flip, per image of a uint8 batch.

    The offsets are drawn on the CPU from ``g`` (the same numbers on every device), the
    gathers run on ``x``'s device.
    """
    n, c, h, w = x.shape
    dev = x.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
    flip = (torch.rand(n, generator=g) < 0.5).to(dev)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy.view(n, 1) + torch.arange(h, device=dev).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=dev).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
    out = out.gather(3, cols)
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


def sample_trivial_augment(n: int, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw an operation index and a signed magnitude for each of ``n`` images.

    As torchvision does per call: an operation uniformly from :data:`TRIVIAL_AUGMENT_OPS`, a
    bin uniformly from the 31, and for the signed operations a minus sign with probability
    one half. Returns ``(ops, magnitudes)``, CPU tensors of shape ``(n,)``.
    """
    ops = torch.randint(len(TRIVIAL_AUGMENT_OPS), (n,), generator=g)
    bins = torch.randint(NUM_MAGNITUDE_BINS, (n,), generator=g)
    negative = torch.rand(n, generator=g) <= 0.5
    table = torch.stack([_magnitude_bins(op) for op in TRIVIAL_AUGMENT_OPS]).double()  # (ops, bins)
    signed = torch.tensor([op in _SIGNED for op in TRIVIAL_AUGMENT_OPS])[ops]
    mags = table[ops, bins]
    return ops, torch.where(signed & negative, -mags, mags)


def trivial_augment_wide(x: torch.Tensor, g: torch.Generator | None = None,
                         ops: torch.Tensor | None = None, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
    """TrivialAugmentWide on a uint8 batch ``(N, 3, H, W)``, one draw per image.

    ``ops`` and ``magnitudes`` (from :func:`sample_trivial_augment`) may be given to apply a
    chosen draw; otherwise they are drawn from ``g``.
    """
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"trivial_augment_wide takes a uint8 batch of RGB images (N, 3, H, W), "
                         f"got {tuple(x.shape)} {x.dtype}")
    if ops is None or magnitudes is None:
        ops, magnitudes = sample_trivial_augment(len(x), g)
    if ops.shape != (len(x),) or magnitudes.shape != (len(x),):
        raise ValueError(f"ops and magnitudes need one entry per image ({len(x)}), "
                         f"got {tuple(ops.shape)} and {tuple(magnitudes.shape)}")
    ops, magnitudes = ops.cpu(), magnitudes.cpu().double()
    out = x.clone()

    geometric = torch.zeros(len(x), dtype=torch.bool)
    for name in _GEOMETRIC:
        geometric |= ops == TRIVIAL_AUGMENT_OPS.index(name)
    if geometric.any():
        idx = geometric.nonzero().flatten()
        out[idx.to(x.device)] = _affine(x[idx.to(x.device)], ops[idx], magnitudes[idx])

    for name, kernel in _COLOUR_KERNELS.items():
        idx = (ops == TRIVIAL_AUGMENT_OPS.index(name)).nonzero().flatten()
        if len(idx):
            dev_idx = idx.to(x.device)
            # magnitudes stay float64 until each kernel forms its factor, as torchvision's do
            out[dev_idx] = kernel(x[dev_idx], magnitudes[idx].to(x.device).view(-1, 1, 1, 1))
    return out


def _inverse_affine(ops: torch.Tensor, mags: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-image inverse affine matrices ``(n, 2, 3)``, as torchvision's ``_get_inverse_affine_matrix``.

    Computed in float64 (torchvision computes them in Python floats) and returned in float32.
    """
    def is_op(name: str) -> torch.Tensor:
        return ops == TRIVIAL_AUGMENT_OPS.index(name)

    zero = torch.zeros_like(mags)
    shear = is_op("ShearX") | is_op("ShearY")
    shear_deg = torch.rad2deg(torch.atan(mags))
    sx = torch.where(is_op("ShearX"), shear_deg, zero)
    sy = torch.where(is_op("ShearY"), shear_deg, zero)
    cx = torch.where(shear, torch.full_like(mags, -w * 0.5), zero)  # sheared about the top-left corner
    cy = torch.where(shear, torch.full_like(mags, -h * 0.5), zero)
    tx = torch.where(is_op("TranslateX"), mags.trunc(), zero)  # whole pixels, truncated as int() does
    ty = torch.where(is_op("TranslateY"), mags.trunc(), zero)
    # F.rotate turns by angle % 360 counter-clockwise: its matrix takes the negative angle
    angle = torch.where(is_op("Rotate"), -torch.remainder(mags, 360.0), zero)
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(sx), torch.deg2rad(sy)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3).float()


def _affine(x: torch.Tensor, ops: torch.Tensor, mags: torch.Tensor) -> torch.Tensor:
    """Shear, translate or rotate each image by its own matrix: nearest interpolation, zero fill."""
    n, _, h, w = x.shape
    dev = x.device
    theta = _inverse_affine(ops, mags, h, w).to(dev)
    # torchvision's _affine_grid, with one theta per image
    base = torch.empty(1, h, w, 3, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=dev)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    # torchvision's _rgb_to_grayscale_image, floored as its uint8 saturation and contrast are
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    # torchvision's _blend: x * ratio + other * (1 - ratio), both factors formed in float64
    alpha = (1.0 - ratio).float()
    return torch.addcmul(x.mul(ratio.float()), other, alpha).clamp_(0, 255).to(torch.uint8)


def _brightness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return x.mul((1.0 + m).float()).clamp_(0, 255).to(torch.uint8)


def _color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grayscale(x), 1.0 + m)


def _contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), 1.0 + m)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # torchvision's adjust_sharpness: blend with a 3x3 smoothing of the interior, borders kept
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], device=x.device).expand(3, 1, 3, 3)
    out = x.float()
    blurred = F.conv2d(out, kernel, groups=3).round_()
    view = out[..., 1:-1, 1:-1]
    view.add_(blurred.sub_(view) * (1.0 - (1.0 + m)).float())
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    bits = m.round().to(torch.int64)
    mask = (torch.ones_like(bits).bitwise_left_shift(bits) - 1).bitwise_left_shift(8 - bits)
    return x & mask.to(torch.uint8)


def _solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # the threshold is compared in float32, as torchvision's uint8 tensor against a Python float
    return torch.where(x >= (255.0 * m).float(), 255 - x, x)


def _autocontrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return TF.autocontrast(x)  # per image and channel already


def _equalize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return TF.equalize(x)  # torchvision's tensor kernel equalizes each image of a batch


_COLOUR_KERNELS = {"Brightness": _brightness, "Color": _color, "Contrast": _contrast,
                   "Sharpness": _sharpness, "Posterize": _posterize, "Solarize": _solarize,
                   "AutoContrast": _autocontrast, "Equalize": _equalize}
