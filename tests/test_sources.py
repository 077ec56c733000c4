"""index_folder / find_split_dirs / stratified_val_split / stratified_subset: the folder layouts
users bring, the junk inside them, and a DataError that names the problem for every bad layout."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfit.data.sources import (
    DatasetIndex,
    Sample,
    find_split_dirs,
    index_folder,
    stratified_subset,
    stratified_val_split,
)
from medfit.errors import DataError


def write_png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path


def make_tree(root: Path, layout: dict[str, int]) -> Path:
    """`{"train/cat": 3}` -> root/train/cat/img0.png .. img2.png."""
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_png(root / folder / f"img{i}.png", i)
    return root


def class_of(sample: Sample, index: DatasetIndex) -> str:
    return index.classes[sample.label]


def test_train_val_test_layout_sorted_classes_labels_and_counts(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "train/dog": 2,
            "train/cat": 3,
            "train/bird": 4,
            "val/cat": 1,
            "val/dog": 2,
            "val/bird": 1,
            "test/cat": 2,
            "test/dog": 1,
        },
    )
    index = index_folder(tmp_path)
    assert index.classes == ["bird", "cat", "dog"]
    assert index.counts("train") == {"bird": 4, "cat": 3, "dog": 2}
    assert index.counts("val") == {"bird": 1, "cat": 1, "dog": 2}
    assert index.counts("test") == {"bird": 0, "cat": 2, "dog": 1}
    assert index.val_from_train is False
    assert len(index.samples) == 4 + 3 + 2 + 1 + 2 + 1 + 2 + 1
    for s in index.samples:
        path = Path(s.path)
        assert path.parent.name == class_of(s, index)  # label matches its folder
        assert path.parent.parent.name == s.split  # split matches its folder
    assert len({s.path for s in index.samples}) == len(index.samples)


def test_split_folder_synonyms_any_case(tmp_path: Path) -> None:
    make_tree(tmp_path, {"Training/a": 3, "Training/b": 2, "VALID/a": 1, "VALID/b": 1})
    make_tree(tmp_path, {"Testing/b": 2})
    dirs = find_split_dirs(tmp_path)
    assert dirs == {
        "train": tmp_path / "Training",
        "val": tmp_path / "VALID",
        "test": tmp_path / "Testing",
    }
    index = index_folder(tmp_path)
    assert index.classes == ["a", "b"]
    assert index.counts("train") == {"a": 3, "b": 2}
    assert index.counts("val") == {"a": 1, "b": 1}
    assert index.counts("test") == {"a": 0, "b": 2}
    assert index.val_from_train is False


@pytest.mark.parametrize("name", ["dev", "Validation", "vAl"])
def test_more_val_synonyms(tmp_path: Path, name: str) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2, f"{name}/a": 1})
    assert find_split_dirs(tmp_path)["val"] == tmp_path / name


def test_doubled_kaggle_nesting_is_descended(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "Train/Train/x": 2,
            "Train/Train/y": 3,
            "Validation/Validation/x": 1,
            "Validation/Validation/y": 2,
        },
    )
    # Zip clutter beside the inner folder must not stop the descent.
    write_png(tmp_path / "Validation" / "__MACOSX" / "Validation" / "x" / "._a.png")
    dirs = find_split_dirs(tmp_path)
    assert dirs["train"] == tmp_path / "Train" / "Train"
    assert dirs["val"] == tmp_path / "Validation" / "Validation"
    index = index_folder(tmp_path)
    assert index.classes == ["x", "y"]
    assert index.counts("train") == {"x": 2, "y": 3}
    assert index.counts("val") == {"x": 1, "y": 2}
    assert index.val_from_train is False


def test_split_folder_with_real_class_named_like_split_is_not_descended(tmp_path: Path) -> None:
    # Two children: the split folder is the class container itself.
    make_tree(tmp_path, {"train/a": 2, "train/b": 2})
    assert find_split_dirs(tmp_path)["train"] == tmp_path / "train"


@pytest.mark.parametrize(("first", "second"), [("val", "valid"), ("train", "Training")])
def test_two_folders_for_one_split_is_an_error_naming_both(
    tmp_path: Path, first: str, second: str
) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2, f"{first}/a": 1, f"{second}/a": 1})
    with pytest.raises(DataError) as info:
        index_folder(tmp_path)
    message = str(info.value)
    assert repr(first) in message and repr(second) in message


def test_no_val_folder_gives_a_stratified_split(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 20, "train/b": 10, "train/c": 7, "test/a": 2})
    index = index_folder(tmp_path, val_fraction=0.2, seed=3)
    assert index.val_from_train is True
    train_counts = index.counts("train")
    val_counts = index.counts("val")
    for cls, total in {"a": 20, "b": 10, "c": 7}.items():
        assert val_counts[cls] >= 1
        assert abs(val_counts[cls] - 0.2 * total) <= 1
        assert train_counts[cls] + val_counts[cls] == total
    train_paths = {s.path for s in index.split("train")}
    val_paths = {s.path for s in index.split("val")}
    assert not train_paths & val_paths
    assert all("/train/" in p for p in val_paths)  # val was taken from train
    assert index.counts("test") == {"a": 2, "b": 0, "c": 0}  # test untouched
    # Labels are kept when a sample moves to val.
    assert all(Path(s.path).parent.name == class_of(s, index) for s in index.samples)


def test_stratified_split_is_deterministic_per_seed(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 20, "train/b": 20})

    def val_paths(seed: int) -> set[str]:
        return {s.path for s in index_folder(tmp_path, val_fraction=0.25, seed=seed).split("val")}

    assert val_paths(0) == val_paths(0)
    assert val_paths(0) != val_paths(1)


def test_stratified_val_split_direct_preserves_root_classes_and_ignored() -> None:
    samples = [
        Sample(f"/d/{c}/{i}.png", label, "train") for label, c in enumerate("ab") for i in range(10)
    ]
    dataset = DatasetIndex("/d", ["a", "b"], samples, ["/d/a/x.txt"])
    out = stratified_val_split(dataset, 0.3, seed=0)
    assert out.root == "/d" and out.classes == ["a", "b"] and out.ignored_files == ["/d/a/x.txt"]
    assert out.val_from_train is True
    assert out.counts("val") == {"a": 3, "b": 3}
    assert out.counts("train") == {"a": 7, "b": 7}
    assert dataset.split("val") == []  # input not mutated


def test_stratified_split_class_with_one_image_is_an_error(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/many": 5, "train/lonely": 1})
    with pytest.raises(DataError, match="lonely"):
        index_folder(tmp_path)


def test_stratified_split_keeps_at_least_one_training_image_per_class(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 4, "train/b": 10})
    index = index_folder(tmp_path, val_fraction=0.9)
    assert all(n >= 1 for n in index.counts("train").values())
    assert all(n >= 1 for n in index.counts("val").values())


def test_plain_folder_of_class_folders_is_train_plus_val_split(tmp_path: Path) -> None:
    make_tree(tmp_path, {"normal": 6, "pneumonia": 8})
    index = index_folder(tmp_path, val_fraction=0.25)
    assert index.classes == ["normal", "pneumonia"]
    assert index.val_from_train is True
    assert index.split("test") == []
    assert sum(index.counts("train").values()) + sum(index.counts("val").values()) == 14
    assert index.counts("val") == {"normal": 2, "pneumonia": 2}


def test_junk_is_ignored_silently_and_non_images_are_listed(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1})
    write_png(tmp_path / "train" / "a" / "UPPER.PNG")  # suffix case does not matter
    junk = [
        tmp_path / "train" / "a" / "._img0.png",
        tmp_path / "train" / "a" / ".ipynb_checkpoints" / "img9.png",
        tmp_path / "train" / "__MACOSX" / "a" / "img9.png",
        tmp_path / "__MACOSX" / "train" / "a" / "img9.png",
        tmp_path / "train" / ".ipynb_checkpoints" / "img9.png",
    ]
    for path in junk:
        write_png(path)
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "train" / "a" / "Thumbs.db").write_bytes(b"x")
    notes = tmp_path / "train" / "b" / "notes.txt"
    notes.write_text("scanner settings")
    readme = tmp_path / "val" / "a" / "README.md"
    readme.write_text("x")

    index = index_folder(tmp_path)
    assert index.classes == ["a", "b"]
    assert index.counts("train") == {"a": 3, "b": 2}
    assert index.counts("val") == {"a": 1, "b": 1}
    indexed = {Path(s.path).name for s in index.samples}
    assert "UPPER.PNG" in indexed
    assert "._img0.png" not in indexed and "img9.png" not in indexed
    assert sorted(index.ignored_files) == sorted([str(notes), str(readme)])


def test_plain_folder_ignores_junk_class_folders(tmp_path: Path) -> None:
    make_tree(tmp_path, {"a": 3, "b": 3})
    for junk_dir in ("__MACOSX", ".ipynb_checkpoints", ".medfit-cache"):
        write_png(tmp_path / junk_dir / "img0.png")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    index = index_folder(tmp_path)
    assert index.classes == ["a", "b"]
    assert len(index.samples) == 6


def test_images_in_nested_subfolders_belong_to_the_class(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a/patient1": 2, "train/a/patient2": 1, "train/b": 2, "val/a": 1})
    index = index_folder(tmp_path)
    assert index.counts("train") == {"a": 3, "b": 2}


def test_missing_root_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_data"
    with pytest.raises(DataError, match="no_such_data"):
        index_folder(missing)


def test_root_that_is_a_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_png(tmp_path / "scan.png")
    with pytest.raises(DataError, match=r"scan\.png.*is a file"):
        index_folder(path)


@pytest.mark.parametrize("split", ["val", "test"])
def test_class_missing_from_train_is_an_error_naming_the_class(tmp_path: Path, split: str) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2, f"{split}/a": 1, f"{split}/zebra": 1})
    with pytest.raises(DataError, match=rf"zebra.*{split}"):
        index_folder(tmp_path)


def test_empty_class_folder_in_train_is_an_error_naming_it(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1})
    (tmp_path / "train" / "hollow").mkdir()
    with pytest.raises(DataError, match="hollow"):
        index_folder(tmp_path)


def test_class_folder_with_only_junk_and_text_counts_as_empty(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1})
    (tmp_path / "train" / "ghost").mkdir()
    (tmp_path / "train" / "ghost" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "train" / "ghost" / "notes.txt").write_text("x")
    write_png(tmp_path / "train" / "ghost" / "._img.png")
    with pytest.raises(DataError, match="ghost"):
        index_folder(tmp_path)


def test_single_class_is_an_error_naming_it(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/only_normal": 3, "val/only_normal": 1})
    with pytest.raises(DataError, match="only_normal"):
        index_folder(tmp_path)


def test_val_folder_without_train_folder_is_an_error(tmp_path: Path) -> None:
    make_tree(tmp_path, {"val/a": 2, "val/b": 2, "test/a": 1})
    with pytest.raises(DataError, match=r"no train folder") as info:
        index_folder(tmp_path)
    assert "val" in str(info.value)


def test_train_folder_without_class_folders_is_an_error(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "loose.png")
    with pytest.raises(DataError, match="no class folders"):
        index_folder(tmp_path)


def _samples(per_class: dict[int, int]) -> list[Sample]:
    return [
        Sample(f"/d/{label}/{i}.png", label, "train")
        for label, n in per_class.items()
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("per_class", "limit"),
    [({0: 60, 1: 30, 2: 10}, 20), ({0: 45, 1: 5}, 10), ({0: 7, 1: 13, 2: 21}, 17)],
)
def test_stratified_subset_keeps_class_proportions(per_class: dict[int, int], limit: int) -> None:
    samples = _samples(per_class)
    subset = stratified_subset(samples, limit, seed=0)
    counts = Counter(s.label for s in subset)
    total = len(samples)
    for label, n in per_class.items():
        assert counts[label] >= 1
        assert abs(counts[label] - limit * n / total) <= 1
    assert abs(len(subset) - limit) <= len(per_class)
    assert len(set(subset)) == len(subset)  # no duplicates
    assert set(subset) <= set(samples)
    assert stratified_subset(samples, limit, seed=0) == subset  # deterministic


def test_stratified_subset_depends_on_seed() -> None:
    samples = _samples({0: 50, 1: 50})
    assert stratified_subset(samples, 10, seed=0) != stratified_subset(samples, 10, seed=1)


@pytest.mark.parametrize("limit", [None, 6, 7, 100])
def test_stratified_subset_unchanged_without_a_binding_limit(limit: int | None) -> None:
    samples = _samples({0: 4, 1: 2})
    assert stratified_subset(samples, limit, seed=0) == samples


def test_stratified_subset_never_exceeds_limit() -> None:
    samples = _samples({0: 30, 1: 30, 2: 30})
    assert len(stratified_subset(samples, 50, seed=0)) <= 50
