"""index_folder / find_split_dirs / stratified_val_split / stratified_subset: the folder layouts
users bring, the junk inside them, and a DataError that names the problem for every bad layout."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfit.data.decode import DecodeError, decode_image
from medfit.data.sources import (
    DatasetIndex,
    Sample,
    check_classes,
    dicom_group,
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


# --- shared class checks, DICOM groups, odd entries in the walk ----------------------------------


def test_check_classes_is_the_one_rule_for_every_source() -> None:
    assert check_classes("src", {"train": {"b": 2, "a": 1}, "val": {"a": 1}}, "none") == ["a", "b"]
    with pytest.raises(DataError, match=r"^src: no train here$"):
        check_classes("src", {"val": {"a": 1}}, "no train here")
    with pytest.raises(DataError, match=r"src: .*hollow"):
        check_classes("src", {"train": {"a": 1, "hollow": 0}}, "none")
    with pytest.raises(DataError, match=r"src: only one class \(a\)"):
        check_classes("src", {"train": {"a": 3}}, "none")
    with pytest.raises(DataError, match=r"src: class\(es\) zebra in test but not in train"):
        check_classes("src", {"train": {"a": 1, "b": 1}, "test": {"zebra": 1}}, "none")


def write_dicom(path: Path, **elements: str) -> Path:
    """A tiny 4x4 MONOCHROME2 DICOM with the given header elements."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "OT", 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.arange(16, dtype=np.uint8).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).get("PatientID", "") == elements.get("PatientID", "")
    return path


def test_dicom_group_in_folder_layout_patient_then_study(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2})
    write_dicom(tmp_path / "train" / "a" / "scan.dcm", PatientID="P7", StudyInstanceUID="1.2.3")
    write_dicom(tmp_path / "train" / "b" / "study.DICOM", PatientID="", StudyInstanceUID="1.2.9")
    write_dicom(tmp_path / "train" / "b" / "anon.dcm")
    (tmp_path / "train" / "a" / "broken.dcm").write_bytes(b"not a dicom at all")
    index = index_folder(tmp_path)
    groups = {Path(s.path).name: s.group for s in index.samples}
    assert groups["scan.dcm"] == "P7"
    assert groups["study.DICOM"] == "1.2.9"
    assert groups["anon.dcm"] is None
    assert groups["broken.dcm"] is None  # still indexed: decode reports it later
    assert groups["img0.png"] is None
    # Whichever split a file lands in (val is split off train here), its group goes with it.
    assert [Path(s.path).name for s in index.samples if s.group == "P7"] == ["scan.dcm"]


def test_dicom_group_is_none_without_pydicom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2})
    write_dicom(tmp_path / "train" / "a" / "scan.dcm", PatientID="P7")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    index = index_folder(tmp_path)
    assert {Path(s.path).name: s.group for s in index.samples}["scan.dcm"] is None


def test_dicom_group_reads_the_header_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pydicom = pytest.importorskip("pydicom")
    path = write_dicom(tmp_path / "x.dcm", PatientID="P7")
    calls: list[dict[str, object]] = []
    real = pydicom.dcmread

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    assert dicom_group(path) == "P7"
    assert calls and calls[0].get("stop_before_pixels") is True
    assert dicom_group(write_png(tmp_path / "x.png")) is None
    assert len(calls) == 1  # non-DICOM suffixes are not opened


@pytest.mark.timeout(30)
def test_symlink_loops_do_not_hang_and_symlinked_files_are_indexed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, {"train/a": 2, "train/b": 2})
    a = data / "train" / "a"
    (a / "loop").symlink_to(a, target_is_directory=True)  # a/loop -> a
    (a / "up").symlink_to(data / "train", target_is_directory=True)  # a/up -> train (b inside)
    (data / "train" / "c").symlink_to(data / "train" / "c")  # a class folder linked to itself
    outside = write_png(tmp_path / "elsewhere" / "real.png", 7)
    (a / "linked.png").symlink_to(outside)
    (a / "dangling.png").symlink_to(tmp_path / "no_such.png")
    (a / "self.png").symlink_to(a / "self.png")
    real_b = tmp_path / "store" / "d"
    for i in range(2):
        write_png(real_b / f"d{i}.png", i)
    (data / "train" / "d").symlink_to(real_b, target_is_directory=True)  # linked class folder

    index = index_folder(data)
    assert index.classes == ["a", "b", "d"]  # c (a loop) is no class; linked d is followed
    names = sorted(Path(s.path).name for s in index.samples if index.classes[s.label] == "a")
    # Directories are not followed: a/loop and a/up add nothing; linked files are indexed.
    assert names == ["dangling.png", "img0.png", "img1.png", "linked.png", "self.png"]
    assert index.counts("train")["b"] + index.counts("val")["b"] == 2
    assert index.counts("train")["d"] + index.counts("val")["d"] == 2
    assert {str(a / "loop"), str(a / "up"), str(data / "train" / "c")} <= set(index.ignored_files)
    linked = next(s.path for s in index.samples if s.path.endswith("linked.png"))
    assert decode_image(linked).pixels[0, 0, 0] == 7
    # Broken links are left for the decode step, which names them.
    with pytest.raises(DecodeError, match=r"dangling\.png.*not found"):
        decode_image(a / "dangling.png")
    with pytest.raises(DecodeError, match=r"self\.png"):
        decode_image(a / "self.png")


def test_non_utf8_file_name_is_indexed_and_opens(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2})
    raw = os.path.join(os.fsencode(tmp_path / "train" / "a"), b"img_\xff.png")
    try:
        with open(raw, "wb") as f:
            Image.fromarray(np.full((8, 8), 9, dtype=np.uint8)).save(f, format="PNG")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 file names")
    index = index_folder(tmp_path)
    odd = [s for s in index.samples if os.fsencode(s.path) == raw]
    assert len(odd) == 1
    assert "\udcff" in odd[0].path  # surrogate-escaped str, as os.fsdecode gives
    assert index.classes[odd[0].label] == "a"
    assert decode_image(odd[0].path).pixels[0, 0, 0] == 9


def test_files_directly_in_a_split_folder_are_listed_not_dropped(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1})
    loose = write_png(tmp_path / "train" / "stray.png")
    notes = tmp_path / "val" / "notes.txt"
    notes.write_text("x")
    (tmp_path / "train" / ".DS_Store").write_bytes(b"x")  # clutter stays silent
    index = index_folder(tmp_path)
    assert sorted(index.ignored_files) == sorted([str(loose), str(notes)])
    assert "stray.png" not in {Path(s.path).name for s in index.samples}
    assert len(index.samples) == 6


def test_images_only_loose_in_train_say_to_move_them(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "train" / f"loose{i}.png")
    with pytest.raises(DataError, match=r"no class folders.*3 image\(s\) lie directly in"):
        index_folder(tmp_path)
