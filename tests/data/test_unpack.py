import tarfile

import pytest

from vitquant_core.data import DataError, DataNotFoundError, main, unpack_cifar10_jpeg


@pytest.fixture
def archives(tmp_path, make_tree):
    tree = make_tree(tmp_path / "tree")
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "test"):
        with tarfile.open(src / f"{split}.tar.gz", "w:gz") as tar:
            tar.add(tree / split, arcname=split)
    return src


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_unpack_is_whole_and_idempotent(archives, tmp_path):
    dest = unpack_cifar10_jpeg(archives, tmp_path / "out")
    files = _listing(dest)
    assert ".test.complete" in files and ".train.complete" in files and "train/class9/1.jpg" in files
    assert len([f for f in files if f.endswith(".jpg")]) == 40
    (archives / "test.tar.gz").unlink()  # complete splits are not read again
    assert _listing(unpack_cifar10_jpeg(archives, dest)) == files


def test_a_truncated_archive_leaves_nothing_half_written(archives, tmp_path):
    data = (archives / "train.tar.gz").read_bytes()
    (archives / "train.tar.gz").write_bytes(data[:len(data) // 2])
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=r"train\.tar\.gz is truncated or corrupt \(EOFError: .*\): copy it again; "
                       r"nothing was unpacked"):
        unpack_cifar10_jpeg(archives, dest)
    # test/ (a good archive) is complete; of train nothing, not even a temporary folder
    assert sorted(p.name for p in dest.iterdir()) == [".test.complete", "test"]
    assert len(list((dest / "test").rglob("*.jpg"))) == 20
    with pytest.raises(SystemExit, match=r"unpack: error: .*train\.tar\.gz is truncated or corrupt"):
        main(["unpack", "--from", str(archives), "--to", str(dest)])
    # a folder left by an unpack that never finished is replaced by the good copy's
    (dest / "train" / "class0").mkdir(parents=True)
    (dest / "train" / "class0" / "stale.jpg").write_bytes(b"half")
    (archives / "train.tar.gz").write_bytes(data)
    unpack_cifar10_jpeg(archives, dest)
    assert len(list((dest / "train").rglob("*.jpg"))) == 20 and not (dest / "train" / "class0" / "stale.jpg").exists()
    assert (dest / ".train.complete").exists()


def test_unpack_refuses_wrong_sources(archives, tmp_path):
    with pytest.raises(DataNotFoundError, match=r"--from .*nowhere: no such folder"):
        unpack_cifar10_jpeg(tmp_path / "nowhere", tmp_path / "out")
    (archives / "test.tar.gz").write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError, match=r"test\.tar\.gz is truncated or corrupt"):
        unpack_cifar10_jpeg(archives, tmp_path / "out")
    with tarfile.open(archives / "test.tar.gz", "w:gz") as tar:
        tar.add(archives / "train.tar.gz", arcname="readme.txt")
    with pytest.raises(DataError, match=r"test\.tar\.gz does not hold a test/ folder \(it holds readme\.txt\)"):
        unpack_cifar10_jpeg(archives, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
