import pytest
import torch

from vitquant_core.data import (DataNotFoundError, balanced_indices, calibration_batches, find_data_root,
                                load_cifar10)


def test_missing_data_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("VITQUANT_DATA", str(tmp_path / "env"))
    monkeypatch.setattr("vitquant_core.data.REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path / "home")
    with pytest.raises(DataNotFoundError) as e:
        find_data_root("cifar10", "test", tmp_path / "param")
    msg = str(e.value)
    for place in ("param", "env", "repo", "home"):
        assert str(tmp_path / place) in msg
    assert "make data" in msg and "VITQUANT_DATA" in msg


def test_unknown_dataset():
    with pytest.raises(ValueError, match="cifar10"):
        find_data_root("mnist", "test")


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


def test_cifar10_jpeg_copy(cifar_root):
    test = load_cifar10("test", cifar_root)
    assert len(test) == 10_000 and test.images.shape == (10_000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert test.classes[0] == "airplane" and test.classes[-1] == "truck"
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    x, y = next(iter(test.loader(torch.arange(8), batch_size=8)))
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 1.0
    assert test.describe()["copy"].startswith("cifar10-jpeg")


def test_cifar10_jpeg_copy_is_chroma_subsampled(cifar_root):
    """The book says the copy stores colour at half resolution (JPEG 4:2:0), train and test alike."""
    from PIL import Image, JpegImagePlugin

    for split in ("train", "test"):
        files = sorted((cifar_root / split).glob("*/*.jpg"))[::1000]
        assert files, f"no JPEG files under {cifar_root / split}"
        assert {JpegImagePlugin.get_sampling(Image.open(f)) for f in files} == {2}  # 2 = 4:2:0


def test_calibration_batches(cifar_root):
    test = load_cifar10("test", cifar_root)
    batches = calibration_batches(test, 20, seed=0, batch_size=8)
    assert [b.shape[0] for b in batches] == [8, 8, 4]
    with pytest.raises(ValueError, match="n_calib"):
        calibration_batches(test, 0)
