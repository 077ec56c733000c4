"""Silent wrong results in the data layer, each now either handled or a one-line DataError:
folder symlinks that reuse another split's (or class's) images, hidden folders taken for classes,
and a val split off train that put one patient in both train and val (ids from a manifest, DICOM,
or file names with `--group-pattern`)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medfit import cli
from medfit.config import DataConfig, RunConfig
from medfit.data.dataset import load_index
from medfit.data.manifest import index_manifest
from medfit.data.sources import DatasetIndex, index_folder
from medfit.errors import ConfigError, DataError
from medfit.training.setup import _ignored_note, _links_note, _val_note
from tests.test_sources import make_tree, write_png

TRAIN = ["--model", "test_efficientnet", "--weights", "none", "--img-size", "32"]
TRAIN += ["--batch-size", "4", "--head-epochs", "0", "--epochs", "1"]


def dataset(root: Path) -> Path:
    return make_tree(
        root, {"train/benign": 3, "train/malignant": 3, "val/benign": 2, "val/malignant": 2}
    )


def link(path: Path, target: str) -> Path:
    path.symlink_to(target, target_is_directory=True)
    return path


def _replace_with_link(path: Path, target: str) -> Path:
    shutil.rmtree(path)
    return link(path, target)


LINKS = {
    "class folder into another split": lambda d: link(
        d / "train" / "malignant_copy", "../val/malignant"
    ),
    "val class folder to the train one": lambda d: _replace_with_link(
        d / "val" / "malignant", "../train/malignant"
    ),
    "val split folder to train": lambda d: _replace_with_link(d / "val", "train"),
    "class folder into the same split, another name": lambda d: link(
        d / "train" / "benign_again", "benign"
    ),
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_folder_link_inside_the_data_set_is_one_line_naming_it_and_nothing_is_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = dataset(tmp_path / "data")
    made = LINKS[case](data)
    out, cache = tmp_path / "run", tmp_path / "cache"
    code = cli.main(["train", str(data), *TRAIN, "--out", str(out), "--cache-dir", str(cache)])
    stdout, err = capsys.readouterr()
    assert code == 2, err
    line = err.strip()
    assert line.startswith("medfit: error:") and "\n" not in line and "Traceback" not in stdout
    assert str(made) in line and os.path.realpath(made) in line
    assert "remove the link" in line
    assert not out.exists() and not cache.exists()


def test_two_class_links_onto_one_outside_folder_are_refused(tmp_path: Path) -> None:
    data = dataset(tmp_path / "data")
    make_tree(tmp_path / "store", {"other": 2})
    link(data / "train" / "other", str(tmp_path / "store" / "other"))
    link(data / "val" / "other", str(tmp_path / "store" / "other"))
    with pytest.raises(DataError, match="resolve to the same images") as err:
        index_folder(data)
    assert str(data / "train" / "other") in str(err.value)


def test_folder_links_out_of_the_data_set_are_followed_and_said(tmp_path: Path) -> None:
    data = dataset(tmp_path / "data")
    make_tree(tmp_path / "store", {"test/benign": 1, "test/malignant": 1, "extra": 2})
    link(data / "test", str(tmp_path / "store" / "test"))
    link(data / "train" / "extra", str(tmp_path / "store" / "extra"))
    index = index_folder(data)
    assert index.classes == ["benign", "extra", "malignant"]
    assert index.counts("test") == {"benign": 1, "extra": 0, "malignant": 1}
    assert index.followed_links == [
        f"{data / 'test'} -> {os.path.realpath(tmp_path / 'store' / 'test')}",
        f"{data / 'train' / 'extra'} -> {os.path.realpath(tmp_path / 'store' / 'extra')}",
    ]
    assert "2 folder symlink(s) followed out of the data set" in _links_note(index)


def test_file_links_to_an_outside_folder_still_index(tmp_path: Path) -> None:
    """The benchmarks' subsets: real folders of file symlinks into a read-only shared tree."""
    shared = make_tree(tmp_path / "shared", {"train/a": 3, "train/b": 3, "val/a": 1, "val/b": 1})
    data = tmp_path / "subset"
    for real in sorted(shared.rglob("*.png")):
        dst = data / real.relative_to(shared)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(real.resolve())
    index = index_folder(data)
    assert index.classes == ["a", "b"] and len(index.samples) == 8
    assert all(s.path.startswith(str(data)) for s in index.samples)
    assert index.followed_links == [] and index.ignored_files == []


def test_one_file_in_two_splits_through_links_is_an_error_naming_it(tmp_path: Path) -> None:
    shared = write_png(tmp_path / "shared" / "x.png", 9)
    data = dataset(tmp_path / "data")
    (data / "train" / "benign" / "x.png").symlink_to(shared)
    (data / "val" / "benign" / "x_again.png").symlink_to(shared)
    (data / "val" / "malignant" / "img0_link.png").symlink_to("../../train/malignant/img0.png")
    with pytest.raises(DataError) as err:
        index_folder(data)
    message = str(err.value)
    assert "\n" not in message and "a leak between train and val" in message
    assert str(data / "train" / "benign" / "x.png") in message
    assert str(data / "val" / "benign" / "x_again.png") in message
    assert "(1 more such file(s))" in message


def test_one_file_under_two_labels_is_an_error(tmp_path: Path) -> None:
    data = dataset(tmp_path / "data")
    (data / "train" / "benign" / "dup.png").symlink_to("../malignant/img1.png")
    with pytest.raises(DataError, match=r"under two labels \(benign, malignant\)"):
        index_folder(data)


@pytest.mark.parametrize("layout", ["split folders", "class folders only"])
def test_hidden_folders_and_files_are_no_class_and_no_sample_but_counted(
    tmp_path: Path, layout: str
) -> None:
    data = tmp_path / "data"
    train = data / "train" if layout == "split folders" else data
    make_tree(train, {"a": 3, "b": 3})
    trash = [write_png(train / ".Trash-1000" / "files" / f"t{i}.png") for i in range(3)]
    info = train / ".Trash-1000" / "info" / "t0.png.trashinfo"
    info.parent.mkdir()
    info.write_text("[Trash Info]\n")
    trash.append(info)
    hidden_file = write_png(train / "a" / ".peek.png")
    hidden_sub = write_png(train / "b" / ".cache" / "thumb.png")
    (train / "a" / ".DS_Store").write_bytes(b"x")  # known clutter stays silent
    index = index_folder(data)
    assert index.classes == ["a", "b"]
    assert len(index.samples) == 6
    hidden = {str(p) for p in [*trash, hidden_file, hidden_sub]}
    assert hidden <= set(index.ignored_files)
    assert not any(".DS_Store" in p for p in index.ignored_files)
    assert not any("/." in s.path for s in index.samples)
    assert f"\n  {len(index.ignored_files)} file(s) not used" in _ignored_note(index)


def _patients(root: Path) -> tuple[Path, dict[str, set[str]]]:
    """A manifest without a split column: 26 patients of 1-4 images, one class each, except
    two patients with images of two classes. Returns the manifest and {patient: labels}."""
    rng = np.random.default_rng(0)
    rows, labels = ["path,label,group"], {}
    for n, (label, count) in enumerate([("a", 12), ("b", 8), ("c", 6)]):
        for p in range(count):
            patient = f"{label.upper()}{p:02d}"
            extra = "b" if (label, p) in {("a", 0), ("c", 0)} else None
            for i in range(int(rng.integers(1, 5))):
                name = f"{patient}_{i}.png"
                write_png(root / "img" / name, n * 60 + i)
                rows.append(f"img/{name},{label},{patient}")
                labels.setdefault(patient, set()).add(label)
            if extra:
                write_png(root / "img" / f"{patient}_x.png", 200)
                rows.append(f"img/{patient}_x.png,{extra},{patient}")
                labels[patient].add(extra)
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv", labels


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_manifest_groups_never_straddle_the_automatic_val_split(tmp_path: Path, seed: int) -> None:
    manifest, patients = _patients(tmp_path)
    index = index_manifest(manifest, val_fraction=0.2, seed=seed)
    train_ids = {s.group for s in index.split("train")}
    val_ids = {s.group for s in index.split("val")}
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(patients)
    assert all(n > 0 for n in index.counts("train").values())
    assert all(n > 0 for n in index.counts("val").values())
    assert index.val_from_train and index.val_groups == len(patients)
    assert 0.1 <= len(index.split("val")) / len(index.samples) <= 0.35
    again = index_manifest(manifest, val_fraction=0.2, seed=seed)
    assert [s.split for s in again.samples] == [s.split for s in index.samples]
    assert f"grouped by {len(patients)} ids" in _val_note(index)


def test_dicom_slices_of_one_patient_stay_on_one_side(tmp_path: Path) -> None:
    from tests.test_sources import write_dicom

    for label in ("ct_a", "ct_b"):
        for p in range(5):
            for i in range(4):
                path = tmp_path / "train" / label / f"{label}_p{p}_s{i}.dcm"
                write_dicom(path, PatientID=f"{label}-P{p}")
    index = index_folder(tmp_path, val_fraction=0.2, seed=0)
    sides: dict[str | None, set[str]] = {}
    for s in index.samples:
        sides.setdefault(s.group, set()).add(s.split)
    assert len(sides) == 10 and all(len(splits) == 1 for splits in sides.values()), sides
    assert all(n > 0 for n in index.counts("val").values())
    assert index.val_groups == 10


def test_class_of_one_patient_cannot_be_split_by_group(tmp_path: Path) -> None:
    rows = ["path,label,group"]
    for label, patients in (("a", 4), ("b", 1)):
        for p in range(patients):
            for i in range(3):
                write_png(tmp_path / f"{label}{p}_{i}.png", i)
                rows.append(f"{label}{p}_{i}.png,{label},{label}{p}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"class 'b' has training images of 1 group id"):
        index_manifest(tmp_path / "m.csv")


# The ungrouped split as it was before grouping existed (computed from the previous code).
UNGROUPED_VAL = ["a/img0.png", "a/img5.png", "a/img7.png", "b/img3.png", "b/img4.png"]
UNGROUPED_VAL += ["c/img0.png", "c/img3.png"]


def _val_names(index: DatasetIndex, train: Path) -> list[str]:
    return sorted(str(Path(s.path).relative_to(train)) for s in index.split("val"))


def test_ungrouped_split_is_unchanged_for_folders_and_manifests(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train/a": 10, "train/b": 7, "train/c": 5})
    index = index_folder(tmp_path, val_fraction=0.3, seed=5)
    assert _val_names(index, tmp_path / "train") == UNGROUPED_VAL
    assert index.val_groups == 0 and "grouped" not in _val_note(index)
    rows = ["path,label,group"] + [
        f"train/{c}/img{i}.png,{c}," for c, n in {"a": 10, "b": 7, "c": 5}.items() for i in range(n)
    ]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")  # a group column, every cell empty
    index = index_manifest(tmp_path / "m.csv", val_fraction=0.3, seed=5)
    assert _val_names(index, tmp_path / "train") == UNGROUPED_VAL


# --- `medfit train --group-pattern`: patient ids from file names for the automatic val split ----

NAMED = r"^(?:.*/)?(?P<group>pat\d+)_"


def _named_patients(root: Path, per_class: int = 8) -> dict[str, str]:
    """root/train/<class>/patNN_K.png: `per_class` patients of 2-4 images per class (no val
    folder). Returns {file name: patient}."""
    rng = np.random.default_rng(1)
    owner = {}
    for c, label in enumerate(("a", "b")):
        for p in range(per_class):
            patient = f"pat{c}{p:02d}"
            for i in range(int(rng.integers(2, 5))):
                write_png(root / "train" / label / f"{patient}_{i}.png", 30 * i + p)
                owner[f"{patient}_{i}.png"] = patient
    return owner


def _sides(index: DatasetIndex, owner: dict[str, str]) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = {}
    for s in index.samples:
        sides.setdefault(owner[Path(s.path).name], set()).add(s.split)
    return sides


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_pattern_keeps_each_file_name_id_on_one_side(tmp_path: Path, seed: int) -> None:
    owner = _named_patients(tmp_path)
    grouped = load_index(DataConfig(root=str(tmp_path), group_pattern=NAMED), seed)
    assert all(len(splits) == 1 for splits in _sides(grouped, owner).values())
    assert {s.group for s in grouped.samples} == set(owner.values())
    assert grouped.val_from_train and grouped.val_groups == 16
    assert "grouped by 16 ids" in _val_note(grouped)
    assert all(n > 0 for n in grouped.counts("val").values())


def test_without_the_pattern_the_split_would_straddle(tmp_path: Path) -> None:
    owner = _named_patients(tmp_path)
    straddled = [
        any(len(s) > 1 for s in _sides(load_index(DataConfig(root=str(tmp_path)), seed), owner))
        for seed in range(3)
    ]
    assert any(straddled)  # what the tests above would catch


def test_group_pattern_on_a_manifest_and_a_preset(tmp_path: Path) -> None:
    rows = ["path,label"]
    for label in ("normal", "cnv"):
        for p in range(6):
            for i in range(3):  # Kermany OCT names: CLASS-PATIENT-N.jpeg -> preset "kermany"
                name = f"{label.upper()}-{1000 + p}{len(label)}-{i}.png"
                write_png(tmp_path / "img" / name, 40 * i + p)
                rows.append(f"img/{name},{label}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    index = load_index(DataConfig(root=str(tmp_path / "m.csv"), group_pattern="kermany"), 0)
    where: dict[str | None, set[str]] = {}
    for s in index.samples:
        where.setdefault(s.group, set()).add(s.split)
    assert len(where) == 12 and all(len(splits) == 1 for splits in where.values())
    assert index.val_groups == 12


def test_group_pattern_that_matches_nothing_or_is_no_regex_is_one_line(tmp_path: Path) -> None:
    _named_patients(tmp_path, per_class=3)
    with pytest.raises(ConfigError, match=r"matches none of the \d+ train file names"):
        load_index(DataConfig(root=str(tmp_path), group_pattern=r"patient(?P<group>\d+)"), 0)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        load_index(DataConfig(root=str(tmp_path), group_pattern="pat("), 0)


def test_train_group_pattern_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner = _named_patients(tmp_path / "data")
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["train", str(tmp_path / "data"), *TRAIN, "--group-pattern", NAMED]
    code = cli.main([*argv, "--out", str(out), "--cache-dir", str(cache)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "val split off train, grouped by 16 ids" in stdout
    sides: dict[str, set[str]] = {}
    for row in csv.DictReader((out / "split.csv").open()):
        sides.setdefault(owner[Path(row["path"]).name], set()).add(row["split"])
    assert len(sides) == 16 and all(len(splits) == 1 for splits in sides.values())
    assert RunConfig.load(out / "config.yaml").data.group_pattern == NAMED  # resume keeps it
