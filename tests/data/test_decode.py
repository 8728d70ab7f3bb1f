import os
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vitquant_core.data import DataError
from vitquant_core.data.decode import decoded_folder


def test_a_replaced_image_is_decoded_again(tmp_path, make_tree, write_jpeg):
    root = make_tree(tmp_path / "c")
    images, labels, classes = decoded_folder(root, "test")
    cache = root / ".decoded-test.safetensors"
    with safe_open(str(cache), framework="pt") as f:
        assert f.metadata()["classes"].split("\n") == list(classes) and len(f.metadata()["files_sha256"]) == 64
    target = root / "test" / "class3" / "1.jpg"
    st = target.stat()
    write_jpeg(target, value=200, seed=7)  # same count, new pixels
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as a copy tool may set it
    again, labels2, _ = decoded_folder(root, "test")
    i = 3 * 2 + 1
    assert again[i].float().mean() > 190 > images[i].float().mean()
    assert torch.equal(again[:i], images[:i]) and torch.equal(labels2, labels)
    # unchanged files: the cache is read back, not decoded again (a decode would give the same tensor;
    # a poisoned cache with the right key proves it is read)
    with safe_open(str(cache), framework="pt") as f:
        meta = f.metadata()
    save_file({"images": torch.zeros_like(again), "labels": labels2}, str(cache), metadata=meta)
    assert decoded_folder(root, "test")[0].sum() == 0
    assert sorted(p.name for p in root.iterdir()) == [".decoded-test.safetensors", "test", "train"]


def test_a_cache_without_a_fingerprint_or_unreadable_is_rebuilt(tmp_path, make_tree):
    root = make_tree(tmp_path / "c")
    images, labels, _ = decoded_folder(root, "test")
    cache = root / ".decoded-test.safetensors"
    # the old format: trusted whenever the image count matched
    save_file({"images": torch.zeros_like(images), "labels": labels}, str(cache))
    (root / ".decoded-test.classes").write_text("x\n")
    assert torch.equal(decoded_folder(root, "test")[0], images)
    assert not (root / ".decoded-test.classes").exists()
    cache.write_bytes(cache.read_bytes()[:100])  # a half-copied cache
    assert torch.equal(decoded_folder(root, "test")[0], images)


def test_hidden_files_and_folders_are_neither_images_nor_classes(tmp_path, make_tree):
    root = make_tree(tmp_path / "c")
    images, labels, classes = decoded_folder(root, "test")
    (root / "test" / ".ipynb_checkpoints").mkdir()
    (root / "test" / "class0" / ".DS_Store").write_bytes(b"\0\1")
    (root / ".decoded-test.safetensors").unlink()
    again, labels2, classes2 = decoded_folder(root, "test")
    assert torch.equal(again, images) and torch.equal(labels2, labels) and classes2 == classes


def test_a_corrupt_or_truncated_jpeg_is_named(tmp_path, make_tree, write_jpeg):
    root = make_tree(tmp_path / "c")
    bad = root / "test" / "class4" / "0.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))} cannot be decoded as an image \(cannot identify"):
        decoded_folder(root, "test")
    write_jpeg(bad)
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))} cannot be decoded .*[Tt]runcated.*good copy"):
        decoded_folder(root, "test")


def test_images_of_two_sizes_name_both(tmp_path, make_tree, write_jpeg):
    root = make_tree(tmp_path / "c")
    odd = write_jpeg(root / "test" / "class7" / "1.jpg", size=(40, 24))
    first = root / "test" / "class0" / "0.jpg"
    with pytest.raises(DataError, match=rf"images in .*test differ in size: 32x32 \(e\.g\. {re.escape(str(first))}\) "
                       rf"and 40x24 \(e\.g\. {re.escape(str(odd))}\); every image of a split must have one size"):
        decoded_folder(root, "test")


def test_a_wrong_tree_says_what_is_expected(tmp_path, make_tree, write_jpeg):
    few = make_tree(tmp_path / "few", classes=("cat", "dog"))
    with pytest.raises(DataError, match=r"test holds 2 class folders \(cat, dog\), expected 10"):
        decoded_folder(few, "test", n_classes=10)
    empty = make_tree(tmp_path / "empty")
    for f in (empty / "test" / "class2").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class folder .*test/class2 holds no images"):
        decoded_folder(empty, "test")
    flat = tmp_path / "flat"
    write_jpeg(flat / "test" / "0.jpg")
    with pytest.raises(DataError, match=r"test holds no class folders \(its images lie directly in it\): expected "
                       r".*test/<class>/<image>"):
        decoded_folder(flat, "test")
