import pytest

from vitquant_core.data import DataNotFoundError, candidate_roots, find_data_root


def test_missing_data_names_every_place_tried(no_default_data):
    repo, home = no_default_data
    with pytest.raises(DataNotFoundError) as e:
        find_data_root("cifar10", "test")
    msg = str(e.value)
    assert str(repo / ".cache" / "data" / "cifar10-jpeg") in msg and str(home / ".cache" / "vitquant") in msg
    assert "make data" in msg and "VITQUANT_DATA" in msg


@pytest.mark.parametrize("call, message", [
    (lambda: find_data_root("mnist", "test"), r"unknown dataset 'mnist': choose one of 'cifar10', 'imagenet'"),
    (lambda: candidate_roots("mnist"), r"unknown dataset 'mnist'"),
    (lambda: find_data_root("cifar10", "val"), r"cifar10 has no split 'val': choose one of 'train', 'test'"),
    (lambda: find_data_root("imagenet", "test"), r"imagenet has no split 'test': choose one of 'train', 'val'"),
    (lambda: find_data_root("cifar10", "test", 3), r"data_root must be a folder path or None, got 3"),
], ids=["dataset", "dataset-candidates", "cifar-split", "imagenet-split", "data_root-type"])
def test_bad_names_list_the_valid_ones(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_a_named_empty_folder_is_an_error_not_the_repository_copy(tree, tmp_path, no_default_data):
    repo, _ = no_default_data
    tree("repo/.cache/data/cifar10-jpeg")  # a complete copy the old search would have fallen back to
    assert find_data_root("cifar10", "test") == repo / ".cache" / "data" / "cifar10-jpeg"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"data_root=.*empty: no cifar10 data there \(.*empty is empty;"
                       r".*Expected layout: train/<class>/\*\.jpg and test/<class>/\*\.jpg") as e:
        find_data_root("cifar10", "test", tmp_path / "empty")
    assert isinstance(e.value, FileNotFoundError)


def test_a_named_folder_missing_one_split_says_which(tree, tmp_path, no_default_data, monkeypatch):
    tree("repo/.cache/data/cifar10-jpeg")
    only_train = tree("mine", splits=("train",))
    monkeypatch.setenv("VITQUANT_DATA", str(only_train))
    assert find_data_root("cifar10", "train") == only_train
    with pytest.raises(DataNotFoundError, match=r"VITQUANT_DATA=.*mine: cifar10 split 'test' not found: .*mine "
                       r"holds train/ but no test/ folder\. Expected layout: train/<class>/\*\.jpg"):
        find_data_root("cifar10", "test")
    # data_root outranks the environment variable, and its data-set sub-folder is found
    both = tree("shared/cifar10-jpeg")
    assert find_data_root("cifar10", "test", tmp_path / "shared") == both


def test_the_default_copy_missing_a_split_is_not_completed_from_another(tree, no_default_data):
    repo, home = no_default_data
    tree("repo/.cache/data/cifar10-jpeg", splits=("test",))
    tree("home/.cache/vitquant/cifar10-jpeg")
    with pytest.raises(DataNotFoundError, match=r"cifar10-jpeg holds test/ but no train/ folder.*make data"):
        find_data_root("cifar10", "train")


def test_imagenet_without_train_is_a_missing_split(tree, tmp_path, no_default_data):
    root = tree("imagenet", splits=("val",), classes=("n01440764",))
    assert find_data_root("imagenet", "val", root) == root
    # experiment.py falls back to validation images on FileNotFoundError
    with pytest.raises(FileNotFoundError, match=r"imagenet split 'train' not found: .*holds val/ but no train/"):
        find_data_root("imagenet", "train", root)


@pytest.mark.parametrize("make, message", [
    (lambda p: None, r"does not exist"),
    (lambda p: (p.parent.mkdir(parents=True), p.write_text("x")), r"is a file, not a folder"),
    (lambda p: (p.mkdir(parents=True), (p / "test.tar.gz").write_bytes(b"")),
     r"holds archives \(test\.tar\.gz\), not unpacked folders: run `python -m vitquant_core.data unpack --from"),
    (lambda p: (p.mkdir(parents=True), (p / "notes").mkdir()), r"holds none of its split folders \(it holds notes/\)"),
], ids=["missing", "file", "archives", "other-folders"])
def test_a_named_location_says_what_is_wrong_with_it(tmp_path, no_default_data, make, message):
    place = tmp_path / "named" / "here"
    make(place)
    with pytest.raises(DataNotFoundError, match=message):
        find_data_root("cifar10", "test", place)


def test_a_split_folder_named_as_the_root_points_at_its_parent(tree, no_default_data):
    root = tree()
    with pytest.raises(DataNotFoundError, match=r"test looks like a split folder itself \(its sub-folders class0, "
                       r"class1, class2, \.\.\. hold images\): name the folder above it"):
        find_data_root("cifar10", "test", root / "test")
