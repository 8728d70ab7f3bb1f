"""Batched augmentation: every TrivialAugmentWide operation, image by image, against torchvision."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from vitquant_core.training.augment import (
    NUM_MAGNITUDE_BINS,
    TRIVIAL_AUGMENT_OPS,
    _magnitude_bins,
    random_crop_flip,
    sample_trivial_augment,
    trivial_augment_wide,
)


def _images(n: int = 12, seed: int = 0) -> torch.Tensor:
    # smooth colour fields plus noise: real structure for the geometric ops, a spread of
    # intensities (with some saturated pixels) for the colour ops
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    base = torch.stack([torch.sin(xx / (3 + c) + c) + torch.cos(yy / (4 + c)) for c in range(3)])
    scale = torch.rand(n, 3, 1, 1, generator=g) * 120
    x = 128 + scale * base / 2 + torch.randn(n, 3, 32, 32, generator=g) * 20
    return x.clamp(0, 255).round().to(torch.uint8)


def _torchvision(img: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    t = v2.TrivialAugmentWide()
    return t._apply_image_or_video_transform(img, op, magnitude, interpolation=t.interpolation, fill=t._fill)


def _magnitudes(op: str) -> list[float]:
    bins = _magnitude_bins(op)
    signed = op in {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                    "Contrast", "Sharpness"}
    picks = [float(b) for b in bins]  # every bin
    return picks + [-m for m in picks if m] if signed else picks


@pytest.mark.parametrize("op", TRIVIAL_AUGMENT_OPS)
def test_each_operation_matches_torchvision_image_by_image(op):
    mags = _magnitudes(op)
    x = _images(len(mags))
    # one magnitude per image, every magnitude torchvision can draw, all in one batched call
    per_image = torch.tensor([mags[i % len(mags)] for i in range(len(x))], dtype=torch.float64)
    ops = torch.full((len(x),), TRIVIAL_AUGMENT_OPS.index(op))
    ours = trivial_augment_wide(x, ops=ops, magnitudes=per_image)
    for i in range(len(x)):
        ref = _torchvision(x[i], op, float(per_image[i]))
        diff = (ours[i].int() - ref.int()).abs()
        # float rounding in a blend may move a rare value by one level; nothing more
        assert diff.max() <= 1, f"{op} magnitude {float(per_image[i])}: max difference {diff.max()}"
        assert (diff == 0).float().mean() >= 0.999, f"{op} magnitude {float(per_image[i])}"
        if op in ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
            assert torch.equal(ours[i], ref), f"{op} magnitude {float(per_image[i])}"  # same grid, exactly


def test_random_crop_flip_is_a_shifted_window_and_seeded():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).view(2, 3, 8, 8).to(torch.uint8)
    a = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    b = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert torch.equal(a, b) and a.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # every output is one window of the padded image, possibly mirrored
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(2)) for w in windows)


def test_a_mixed_batch_applies_each_images_own_operation():
    x = _images(len(TRIVIAL_AUGMENT_OPS) * 2, seed=1)
    ops = torch.arange(len(x)) % len(TRIVIAL_AUGMENT_OPS)  # every operation, twice
    mags = torch.tensor([float(_magnitude_bins(TRIVIAL_AUGMENT_OPS[o])[10]) for o in ops.tolist()],
                        dtype=torch.float64)
    ours = trivial_augment_wide(x, ops=ops, magnitudes=mags)
    for i, o in enumerate(ops.tolist()):
        ref = _torchvision(x[i], TRIVIAL_AUGMENT_OPS[o], float(mags[i]))
        assert (ours[i].int() - ref.int()).abs().max() <= 1, TRIVIAL_AUGMENT_OPS[o]
    assert torch.equal(ours[0], x[0])  # Identity


def test_draws_are_seeded_uniform_and_signed_as_torchvision_draws():
    n = 28_000
    ops, mags = sample_trivial_augment(n, torch.Generator().manual_seed(0))
    ops2, mags2 = sample_trivial_augment(n, torch.Generator().manual_seed(0))
    assert torch.equal(ops, ops2) and torch.equal(mags, mags2)
    counts = torch.bincount(ops, minlength=len(TRIVIAL_AUGMENT_OPS)).float()
    expected = n / len(TRIVIAL_AUGMENT_OPS)
    assert (counts - expected).abs().max() < 5 * expected ** 0.5  # 5 sigma
    for k, op in enumerate(TRIVIAL_AUGMENT_OPS):
        m = mags[ops == k]
        allowed = set(_magnitude_bins(op).double().tolist())
        assert set(m.abs().tolist()) <= allowed | {0.0}
        if op in ("Rotate", "Brightness", "TranslateX"):  # signed: about half negative
            assert 0.45 < (m < 0).float().mean() < 0.55
            assert len(set(m.abs().tolist())) == NUM_MAGNITUDE_BINS  # every bin drawn
        if op in ("Posterize", "Solarize", "Equalize"):
            assert (m >= 0).all()


def test_whole_pipeline_is_seeded_and_keeps_shape_and_dtype():
    x = _images(64, seed=2)
    a = trivial_augment_wide(random_crop_flip(x, torch.Generator().manual_seed(3)), torch.Generator().manual_seed(4))
    b = trivial_augment_wide(random_crop_flip(x, torch.Generator().manual_seed(3)), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.uint8
    assert not torch.equal(a, x)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8 batch"):
        trivial_augment_wide(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8 batch"):
        trivial_augment_wide(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one entry per image"):
        trivial_augment_wide(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ops=torch.zeros(3, dtype=torch.long),
                             magnitudes=torch.zeros(3))
