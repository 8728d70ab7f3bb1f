import re

import pytest
import torch

from vitquant_core.data import DataError, ImageSplit, load_cifar10, load_imagenet, load_split


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


def test_bad_split_and_dataset_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"cifar10 has no split 'validation': choose one of 'train', 'test'"):
        load_cifar10("validation", tmp_path)
    with pytest.raises(ValueError, match=r"imagenet has no split 'valid': choose one of 'train', 'val'"):
        load_split("imagenet", "valid", tmp_path)
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar100': choose one of 'cifar10', 'imagenet'"):
        load_split("cifar100", "test", tmp_path)


def test_loader_indices_must_lie_in_the_split():
    split = ImageSplit("cifar10", "test", None, torch.arange(4), tuple("abcd"),
                       images=torch.zeros(4, 3, 2, 2, dtype=torch.uint8))
    assert [y.tolist() for _, y in split.loader([3, 1], batch_size=1)] == [[3], [1]]
    with pytest.raises(ValueError, match=r"indices must lie in 0\.\.3 \(cifar10 'test' holds 4 images\), got min 0, "
                       r"max 4"):
        split.loader([0, 4])
    with pytest.raises(ValueError, match=r"indices must be a 1-D sequence of integers, got torch.float32"):
        split.loader([0.0, 1.0])


def test_a_cifar_split_from_a_small_folder(tmp_path, make_tree):
    root = make_tree(tmp_path / "c", per_class=3)
    test = load_cifar10("test", root)
    assert test.images.shape == (30, 3, 32, 32) and test.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert test.classes == tuple(f"class{c}" for c in range(10))
    assert abs(test.images[test.labels == 9].float().mean().item() - (180 + 19.5)) < 3  # class 9's colour


def test_imagenet_flat_or_unknown_folders_are_refused(tmp_path, make_tree, write_jpeg):
    flat = tmp_path / "flat"
    write_jpeg(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match=r"val holds no class folders \(1 files lie directly in it\).*unpacks flat: "
                       r"sort its images into one folder per synset"):
        load_imagenet("val", flat, model_name="resnet20_cifar")
    named = make_tree(tmp_path / "named", splits=("val",), classes=("n01440764", "tench"), per_class=1, ext="JPEG")
    with pytest.raises(DataError, match=r"val holds 1 folders that are not ImageNet-1k synset ids \(e\.g\. tench\)"):
        load_imagenet("val", named, model_name="resnet20_cifar")
    empty = make_tree(tmp_path / "empty", splits=("train", "val"), classes=("n01440764",), per_class=1, ext="JPEG")
    (empty / "train" / "n01443537").mkdir()
    # a train/ folder that is there but broken is an error, not a missing split to fall back from
    with pytest.raises(DataError, match=r"train: Found no valid file for the classes n01443537") as e:
        load_imagenet("train", empty, model_name="resnet20_cifar")
    assert not isinstance(e.value, FileNotFoundError)


def test_imagenet_subset_is_labelled_by_imagenet_1k_index(tmp_path, make_tree):
    # the 1st and 3rd synsets: ImageFolder alone would label the 3rd as 1
    first = make_tree(tmp_path / "a", splits=("val",), classes=("n01440764", "n01443537"), per_class=1, ext="JPEG")
    assert load_imagenet("val", first, model_name="resnet20_cifar").labels.tolist() == [0, 1]
    root = make_tree(tmp_path / "b", splits=("val",), classes=("n01440764", "n01484850"), per_class=2, ext="JPEG")
    (root / "val" / ".ipynb_checkpoints").mkdir()
    split = load_imagenet("val", root, model_name="resnet20_cifar")
    assert split.labels.tolist() == [0, 0, 2, 2] and len(split.classes) == 1000 and split.classes[2] == "n01484850"
    assert [y.tolist() for _, y in split.loader(batch_size=4, num_workers=0)] == [[0, 0, 2, 2]]


def test_an_imagenet_file_that_does_not_decode_is_named(tmp_path, make_tree):
    root = make_tree(tmp_path / "i", splits=("val",), classes=("n01440764",), per_class=2, ext="JPEG")
    bad = root / "val" / "n01440764" / "1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    split = load_imagenet("val", root, model_name="resnet20_cifar")
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))} cannot be decoded as an image \(.*[Tt]runcated"):
        list(split.loader(num_workers=0))
