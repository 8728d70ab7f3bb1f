import pytest
import torch

from vitquant_core.data import ImageSplit, balanced_indices, calibration_batches, load_cifar10


def test_balanced_indices_are_balanced_and_seeded():
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, like ImageFolder
    idx = balanced_indices(labels, 50, seed=3)
    assert len(idx) == 50 and len(set(idx.tolist())) == 50
    assert torch.bincount(labels[idx], minlength=10).tolist() == [5] * 10
    assert torch.equal(idx, balanced_indices(labels, 50, seed=3))
    assert not torch.equal(idx, balanced_indices(labels, 50, seed=4))
    # not "the first N images": every class appears among the first 20
    assert len(labels[idx[:20]].unique()) >= 6
    odd = balanced_indices(labels, 23, seed=0)
    counts = torch.bincount(labels[odd], minlength=10)
    assert counts.sum() == 23 and counts.max() - counts.min() <= 1


def test_balanced_indices_all_and_errors():
    labels = torch.arange(4).repeat_interleave(5)
    assert sorted(balanced_indices(labels, 0, seed=0).tolist()) == list(range(20))
    with pytest.raises(ValueError, match="only 20"):
        balanced_indices(labels, 21, seed=0)
    with pytest.raises(ValueError):
        balanced_indices(labels, -1, seed=0)
    excl = torch.arange(5)
    assert not set(balanced_indices(labels, 8, 0, exclude=excl).tolist()) & set(excl.tolist())




def _split(labels: torch.Tensor) -> ImageSplit:
    images = torch.zeros(len(labels), 3, 2, 2, dtype=torch.uint8)
    return ImageSplit("cifar10", "train", None, labels, tuple("abcd"), images=images)


def test_bad_sizes_say_what_is_available():
    labels = torch.cat([torch.zeros(5), torch.ones(2)]).long()  # class 1 has only 2 images
    with pytest.raises(ValueError, match=r"cannot draw 6 class-balanced images from 2 classes: class 1 has only 2; "
                       r"ask for at most 4 or for all of them \(n = 0\)"):
        balanced_indices(labels, 6, seed=0)
    with pytest.raises(ValueError, match=r"exclude holds indices outside 0\.\.6 \(min 0, max 7\)"):
        balanced_indices(labels, 2, seed=0, exclude=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"n_calib=8 is more than the 7 images of cifar10 'train': ask for at most 7"):
        calibration_batches(_split(labels), 8)


def test_calibration_batches(cifar_root):
    test = load_cifar10("test", cifar_root)
    batches = calibration_batches(test, 20, seed=0, batch_size=8)
    assert [b.shape[0] for b in batches] == [8, 8, 4]
    with pytest.raises(ValueError, match="n_calib"):
        calibration_batches(test, 0)
