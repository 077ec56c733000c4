"""index_manifest / load_index dispatch: a CSV/TSV manifest as the data source, and a DataError
naming the manifest, the row and the fix for every bad manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfit.config import DataConfig
from medfit.data.dataset import load_index
from medfit.data.manifest import index_manifest
from medfit.data.sources import DatasetIndex
from medfit.errors import DataError


def write_png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path


def write_manifest(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(delimiter.join(row) + "\n" for row in rows), encoding="utf-8")
    return path


def images(root: Path, names: list[str]) -> list[str]:
    """Write root/<name> for each name; return the names (paths relative to root)."""
    for i, name in enumerate(names):
        write_png(root / name, i)
    return names


def labelled(root: Path) -> DatasetIndex:
    return index_manifest(root / "m.csv")


def by_name(index: DatasetIndex) -> dict[str, tuple[str, str, str | None]]:
    """file name -> (class, split, group)."""
    return {Path(s.path).name: (index.classes[s.label], s.split, s.group) for s in index.samples}


def test_relative_and_absolute_paths_labels_splits_and_groups(tmp_path: Path) -> None:
    images(tmp_path, ["img/a0.png", "img/a1.png", "img/b0.png", "img/b1.png", "img/a2.png"])
    outside = write_png(tmp_path / "elsewhere" / "b2.png")
    write_manifest(
        tmp_path / "data" / "m.csv",
        [
            ["path", "label", "split", "group"],
            ["../img/a0.png", "cat", "train", "P1"],
            ["../img/b0.png", "dog", "train", "P2"],
            [str(outside), "dog", "train", ""],  # absolute; empty group -> None
            ["../img/a1.png", "cat", "val", "P3"],
            ["../img/b1.png", "dog", "val", "P4"],
            ["../img/a2.png", "cat", "test", "P5"],
        ],
    )
    index = index_manifest(tmp_path / "data" / "m.csv")
    assert index.classes == ["cat", "dog"]
    assert index.val_from_train is False
    assert by_name(index) == {
        "a0.png": ("cat", "train", "P1"),
        "b0.png": ("dog", "train", "P2"),
        "b2.png": ("dog", "train", None),
        "a1.png": ("cat", "val", "P3"),
        "b1.png": ("dog", "val", "P4"),
        "a2.png": ("cat", "test", "P5"),
    }
    for s in index.samples:  # every path resolves to the real file, from any working directory
        assert Path(s.path).is_file()
    assert index.root == str(tmp_path / "data" / "m.csv")


def test_column_names_any_case_extra_columns_ignored_any_order(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    write_manifest(
        tmp_path / "m.csv",
        [
            ["Age", " LABEL ", "Split", "PATH", "notes"],
            ["40", "x", "train", "a.png", "blurry"],
            ["41", "y", "train", "b.png", ""],
            ["42", "x", "valid", "c.png", ""],
            ["43", "y", "VAL", "d.png", ""],
        ],
    )
    index = labelled(tmp_path)
    assert by_name(index) == {
        "a.png": ("x", "train", None),
        "b.png": ("y", "train", None),
        "c.png": ("x", "val", None),
        "d.png": ("y", "val", None),
    }


@pytest.mark.parametrize(
    ("value", "split"),
    [
        ("training", "train"),
        ("Train", "train"),
        ("dev", "val"),
        ("Validation", "val"),
        ("valid", "val"),
        ("TESTING", "test"),
        ("test", "test"),
    ],
)
def test_split_synonyms(tmp_path: Path, value: str, split: str) -> None:
    images(tmp_path, ["a0.png", "b0.png", "a1.png", "b1.png", "z.png"])
    write_manifest(
        tmp_path / "m.csv",
        [
            ["path", "label", "split"],
            ["a0.png", "a", "train"],
            ["b0.png", "b", "train"],
            ["a1.png", "a", "val"],
            ["b1.png", "b", "val"],
            ["z.png", "a", value],
        ],
    )
    assert by_name(labelled(tmp_path))["z.png"] == ("a", split, None)


def test_no_split_column_gives_a_stratified_val_split(tmp_path: Path) -> None:
    names = [f"a{i}.png" for i in range(10)] + [f"b{i}.png" for i in range(6)]
    images(tmp_path, names)
    write_manifest(tmp_path / "m.csv", [["path", "label"]] + [[n, n[0]] for n in names])
    index = index_manifest(tmp_path / "m.csv", val_fraction=0.2, seed=1)
    assert index.val_from_train is True
    assert index.counts("val") == {"a": 2, "b": 1}
    assert index.counts("train") == {"a": 8, "b": 5}
    assert index.split("test") == []
    assert all(Path(s.path).name[0] == index.classes[s.label] for s in index.samples)
    again = index_manifest(tmp_path / "m.csv", val_fraction=0.2, seed=1)
    assert {s.path for s in again.split("val")} == {s.path for s in index.split("val")}


def test_empty_split_cells_are_train_when_a_val_split_exists(tmp_path: Path) -> None:
    images(tmp_path, ["a0.png", "b0.png", "a1.png", "b1.png"])
    write_manifest(
        tmp_path / "m.csv",
        [
            ["path", "label", "split"],
            ["a0.png", "a", ""],
            ["b0.png", "b", " "],
            ["a1.png", "a", "val"],
            ["b1.png", "b", "val"],
        ],
    )
    index = labelled(tmp_path)
    assert index.val_from_train is False  # val given: nothing moved
    assert index.counts("train") == {"a": 1, "b": 1}
    assert index.counts("val") == {"a": 1, "b": 1}


def test_split_column_without_val_rows_gets_a_stratified_split(tmp_path: Path) -> None:
    names = [f"a{i}.png" for i in range(4)] + [f"b{i}.png" for i in range(4)] + ["t.png"]
    images(tmp_path, names)
    rows = [[n, n[0], ""] for n in names[:-1]] + [["t.png", "a", "test"]]
    write_manifest(tmp_path / "m.csv", [["path", "label", "split"], *rows])
    index = labelled(tmp_path)
    assert index.val_from_train is True
    assert index.counts("val") == {"a": 1, "b": 1}
    assert index.counts("test") == {"a": 1, "b": 0}


def test_tsv_and_sniffed_txt(tmp_path: Path) -> None:
    images(tmp_path, ["with, comma a.png", "b.png", "c.png", "d.png"])
    rows = [
        ["path", "label", "split"],
        ["with, comma a.png", "x", "train"],
        ["b.png", "y", "train"],
        ["c.png", "x", "val"],
        ["d.png", "y", "val"],
    ]
    write_manifest(tmp_path / "m.tsv", rows, "\t")
    index = index_manifest(tmp_path / "m.tsv")
    assert by_name(index)["with, comma a.png"] == ("x", "train", None)
    write_manifest(tmp_path / "m.txt", [[c.replace(",", "") for c in r] for r in rows], ";")
    (tmp_path / "with comma a.png").write_bytes((tmp_path / "with, comma a.png").read_bytes())
    index = index_manifest(tmp_path / "m.txt")
    assert index.classes == ["x", "y"] and index.counts("val") == {"x": 1, "y": 1}


def test_quoted_csv_field_with_comma_and_utf8_bom_and_blank_rows(tmp_path: Path) -> None:
    images(tmp_path, ["a, b.png", "c.png", "d.png", "e.png"])
    text = (
        '\ufeffpath,label,split\n"a, b.png",x,train\n\nc.png,y,train\n'
        "d.png,x,val\r\ne.png,y,val\r\n\n"
    )
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    index = labelled(tmp_path)
    assert by_name(index)["a, b.png"] == ("x", "train", None)
    assert len(index.samples) == 4


# --- errors ---------------------------------------------------------------------------------------


def error(tmp_path: Path, rows: list[list[str]], name: str = "m.csv") -> str:
    write_manifest(tmp_path / name, rows, "\t" if name.endswith(".tsv") else ",")
    with pytest.raises(DataError) as info:
        index_manifest(tmp_path / name)
    message = str(info.value)
    assert "\n" not in message
    assert name in message  # every message names the manifest
    return message


@pytest.mark.parametrize("header", [["file", "label"], ["path", "class"], ["a.png", "x"]])
def test_missing_required_column_lists_the_columns_found(tmp_path: Path, header: list[str]) -> None:
    images(tmp_path, ["a.png"])
    message = error(tmp_path, [header, ["a.png", "x"]])
    assert "row 1" in message
    for name in header:
        assert repr(name) in message  # the columns found
    assert "path,label" in message  # the layout expected


def test_semicolon_csv_gets_a_delimiter_hint(tmp_path: Path) -> None:
    message = error(tmp_path, [["path;label"], ["a.png;x"]])
    assert "semicolon" in message and "comma" in message


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"m\.csv.*empty"):
        index_manifest(tmp_path / "m.csv")


def test_missing_manifest_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest not found.*nope\.csv"):
        index_manifest(tmp_path / "nope.csv")


def test_missing_files_name_the_first_row_its_path_and_how_many_more(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png"])
    message = error(
        tmp_path,
        [
            ["path", "label"],
            ["a.png", "x"],
            ["sub/gone1.png", "x"],
            ["b.png", "y"],
            ["gone2.png", "y"],
            ["gone3.png", "y"],
        ],
    )
    assert "row 3" in message
    assert str(tmp_path / "sub" / "gone1.png") in message  # the resolved path
    assert "2 more" in message
    assert "gone2" not in message


def test_a_folder_listed_as_a_file_is_an_error(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png", "dir/c.png"])
    message = error(tmp_path, [["path", "label"], ["a.png", "x"], ["dir", "x"], ["b.png", "y"]])
    assert "row 3" in message and "folder" in message


def test_empty_label_names_the_row(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png", "c.png"])
    message = error(tmp_path, [["path", "label"], ["a.png", "x"], ["b.png", "y"], ["c.png", "  "]])
    assert "row 4" in message and "label" in message and "c.png" in message


def test_empty_path_names_the_row(tmp_path: Path) -> None:
    images(tmp_path, ["a.png"])
    message = error(tmp_path, [["path", "label"], ["a.png", "x"], ["", "y"]])
    assert "row 3" in message and "path" in message


@pytest.mark.parametrize("second", ["a.png", "./a.png", "sub/../a.png", "ABS"])
def test_duplicate_rows_name_both_rows(tmp_path: Path, second: str) -> None:
    images(tmp_path, ["a.png", "b.png", "c.png", "sub/d.png"])
    second = str(tmp_path / "a.png") if second == "ABS" else second
    message = error(
        tmp_path,
        [
            ["path", "label", "split"],
            ["a.png", "x", "train"],
            ["b.png", "y", "train"],
            ["c.png", "y", "train"],
            [second, "x", "val"],
        ],
    )
    assert "row 5" in message and "row 2" in message and "a.png" in message


def test_unknown_split_lists_the_valid_ones(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png"])
    message = error(
        tmp_path, [["path", "label", "split"], ["a.png", "x", "train"], ["b.png", "y", "holdout"]]
    )
    assert "row 3" in message and "'holdout'" in message
    for name in ("train", "validation", "dev", "testing"):
        assert name in message


def test_class_only_in_val_or_test_is_an_error_naming_it(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png", "z.png"])
    message = error(
        tmp_path,
        [
            ["path", "label", "split"],
            ["a.png", "x", "train"],
            ["b.png", "y", "train"],
            ["z.png", "zebra", "test"],
        ],
    )
    assert "zebra" in message and "test" in message and "not in train" in message


def test_single_class_is_an_error_naming_it(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png"])
    message = error(tmp_path, [["path", "label"], ["a.png", "only"], ["b.png", "only"]])
    assert "only one class" in message and "only" in message


def test_no_train_rows_is_an_error(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png"])
    message = error(
        tmp_path, [["path", "label", "split"], ["a.png", "x", "val"], ["b.png", "y", "test"]]
    )
    assert "no rows in the train split" in message


def test_row_with_too_many_values_names_the_row(tmp_path: Path) -> None:
    images(tmp_path, ["a.png", "b.png"])
    message = error(tmp_path, [["path", "label"], ["a.png", "x"], ["b", "c.png", "y"]])
    assert "row 3" in message and "3 values" in message and "quote" in message


def test_trailing_empty_cells_are_fine(tmp_path: Path) -> None:
    images(tmp_path, ["a0.png", "a1.png", "b0.png", "b1.png"])
    rows = [[n, n[0], "", ""] for n in ["a0.png", "a1.png", "b0.png", "b1.png"]]
    write_manifest(tmp_path / "m.csv", [["path", "label"], *rows])
    assert labelled(tmp_path).classes == ["a", "b"]


def test_duplicate_column_name_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, [["path", "label", "Label"], ["a.png", "x", "y"]])
    assert "row 1" in message and "'label'" in message


def test_non_utf8_manifest_says_to_save_as_utf8(tmp_path: Path) -> None:
    images(tmp_path, ["a.png"])
    (tmp_path / "m.csv").write_bytes("path,label\na.png,x\nb.png,Größe\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        index_manifest(tmp_path / "m.csv")
    message = str(info.value)
    assert "m.csv" in message and "row 3" in message and "UTF-8" in message


def test_utf16_manifest_says_to_save_as_utf8(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_bytes("path\tlabel\na.png\tx\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"m\.txt, row 1.*save the manifest as UTF-8"):
        index_manifest(tmp_path / "m.txt")


def test_unsniffable_txt_says_to_rename(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("path label\na.png x\n")
    with pytest.raises(DataError, match=r"m\.txt.*\.csv.*\.tsv"):
        index_manifest(tmp_path / "m.txt")


def test_utf8_labels_and_paths(tmp_path: Path) -> None:
    images(tmp_path, ["größe0.png", "größe1.png", "b0.png", "b1.png"])
    rows = [["größe0.png", "Ödem"], ["größe1.png", "Ödem"], ["b0.png", "b"], ["b1.png", "b"]]
    write_manifest(tmp_path / "m.csv", [["path", "label"], *rows])
    index = labelled(tmp_path)
    assert index.classes == ["b", "Ödem"]
    assert {Path(s.path).name for s in index.samples if s.label == 1} == {
        "größe0.png",
        "größe1.png",
    }


# --- load_index dispatch --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt", ".CSV"])
def test_load_index_dispatches_manifests_by_suffix(tmp_path: Path, suffix: str) -> None:
    names = images(tmp_path / "imgs", ["a0.png", "a1.png", "b0.png", "b1.png"])
    delimiter = "," if suffix.lower() != ".tsv" else "\t"
    rows = [["path", "label", "split"]] + [
        [f"imgs/{n}", n[0], "train" if n[1] == "0" else "val"] for n in names
    ]
    manifest = write_manifest(tmp_path / f"m{suffix}", rows, delimiter)
    index = load_index(DataConfig(root=str(manifest)), seed=0)
    assert index.root == str(manifest)
    assert index.classes == ["a", "b"]
    assert index.counts("val") == {"a": 1, "b": 1}


def test_load_index_missing_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest not found"):
        load_index(DataConfig(root=str(tmp_path / "labels.csv")), seed=0)


def test_load_index_still_reads_folders(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "data" / "train" / cls / f"{i}.png", i)
    index = load_index(DataConfig(root=str(tmp_path / "data")), seed=0)
    assert index.classes == ["a", "b"] and index.val_from_train is True


def test_load_index_folder_named_like_a_manifest_is_a_folder(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "set.csv" / "train" / cls / f"{i}.png", i)
    index = load_index(DataConfig(root=str(tmp_path / "set.csv")), seed=0)
    assert index.classes == ["a", "b"]


def test_dicom_rows_get_header_groups_unless_a_group_column_is_given(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from tests.test_sources import write_dicom

    write_dicom(tmp_path / "a0.dcm", PatientID="P7")
    write_dicom(tmp_path / "a1.dcm", StudyInstanceUID="1.2.3")
    images(tmp_path, ["b0.png", "b1.png"])
    rows = [["a0.dcm", "a", "train"], ["a1.dcm", "a", "val"]]
    rows += [["b0.png", "b", "train"], ["b1.png", "b", "val"]]
    write_manifest(tmp_path / "m.csv", [["path", "label", "split"], *rows])
    groups = {name: g for name, (_, _, g) in by_name(labelled(tmp_path)).items()}
    assert groups == {"a0.dcm": "P7", "a1.dcm": "1.2.3", "b0.png": None, "b1.png": None}
    # A group column is the user's word: it wins, and an empty cell stays None.
    rows = [[*rows[0], "X1"], [*rows[1], ""], [*rows[2], "X2"], [*rows[3], "X3"]]
    write_manifest(tmp_path / "m.csv", [["path", "label", "split", "group"], *rows])
    groups = {name: g for name, (_, _, g) in by_name(labelled(tmp_path)).items()}
    assert groups == {"a0.dcm": "X1", "a1.dcm": None, "b0.png": "X2", "b1.png": "X3"}
