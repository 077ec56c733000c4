"""`medfit check` and `medfit split` on generated data sets that plant one finding each.

Images are 32 px: a smooth random field (so every image is different, and a hash of it is stable
under mild noise) plus a bright blob whose side (left/right) is the class, so the classes are
easy to separate from thumbnails alone. Most tests use `--features thumbnail` (no model); one
runs the real backbone path at 32 px.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from medfit.check import (
    CheckOptions,
    CheckReport,
    StrictCheckFailed,
    make_split,
    render_text,
    run_check,
)
from medfit.check.cli import CHECK_COMMANDS, add_check_commands
from medfit.check.hashing import dihedral_dhash, hamming_search
from medfit.check.labels import (
    builtin_confident_issues,
    softmax_regression,
    torch_softmax_regression,
)
from medfit.check.markers import marker_stats
from medfit.data.manifest import index_manifest
from medfit.data.sources import index_folder
from medfit.errors import ConfigError, DataError

SIDE = 32
CLASSES = ("left", "right")


def picture(rng: np.random.Generator, label: int, colour: bool = False) -> np.ndarray:
    """A smooth random field with a bright blob on the left (label 0) or right (label 1)."""
    coarse = Image.fromarray(rng.uniform(20, 120, size=(6, 6)).astype(np.uint8))
    field = np.asarray(coarse.resize((SIDE, SIDE), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    cx = SIDE * (0.25 if label == 0 else 0.75) + rng.uniform(-2, 2)
    cy = SIDE * 0.5 + rng.uniform(-4, 4)
    field += 130 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 30.0)
    gray = np.clip(field, 0, 255).astype(np.uint8)
    if not colour:
        return gray
    tint = rng.uniform(0.7, 1.0, size=3)
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_set(
    root: Path, per_class: dict[str, int], seed: int = 0, name: str = "{cls}_{i}.png"
) -> dict[str, list[Path]]:
    """root/<split>/<class>/*.png with per_class[split] images per class; returns paths."""
    rng = np.random.default_rng(seed)
    paths: dict[str, list[Path]] = {}
    for split, n in per_class.items():
        for label, cls in enumerate(CLASSES):
            for i in range(n):
                file = root / split / cls / name.format(cls=cls, i=f"{split}{i}", split=split)
                paths.setdefault(split, []).append(save(file, picture(rng, label)))
    return paths


def check(root: Path, **kwargs: object) -> CheckReport:
    options = CheckOptions(features="thumbnail", workers=1, progress=False)
    for key, value in kwargs.items():
        setattr(options, key, value)
    return run_check(index_folder(root), options)


def severity(report: CheckReport, key: str) -> str | None:
    found = report.finding(key)
    return found["severity"] if found else None


def serious(report: CheckReport) -> list[str]:
    return [f["key"] for f in report.verdict if f["severity"] != "info"]


def test_clean_set_has_no_false_alarms(tmp_path: Path) -> None:
    make_set(tmp_path, {"train": 30, "val": 10, "test": 10})
    report = check(tmp_path)
    assert serious(report) == []
    assert report.exact_duplicates["clusters"] == 0
    assert report.near_duplicates["hash"]["pairs_total"] == 0
    assert report.near_duplicates["within_split"]["pairs_total"] == 0
    assert report.shortcuts["flagged"] == []
    assert report.label_issues["checked"] and report.label_issues["issues_total"] == 0
    assert report.label_issues["probe_balanced_accuracy"] > 0.95
    assert report.failures == []
    text = render_text(report)
    assert "no patient ids" in text and "CRITICAL" not in text
    json.loads(report.to_json())  # serialisable as is


def test_exact_duplicate_across_splits_with_conflicting_label(tmp_path: Path) -> None:
    paths = make_set(tmp_path, {"train": 12, "val": 6})
    source = paths["train"][0]  # a "left" image
    copy = save(tmp_path / "val" / "right" / "copy.png", np.asarray(Image.open(source)))
    # The same picture saved as RGB still counts as the same pixels.
    rgb = np.repeat(np.asarray(Image.open(paths["train"][1]))[..., None], 3, axis=2)
    save(tmp_path / "val" / "left" / "copy_rgb.png", rgb)
    report = check(tmp_path)
    exact = report.exact_duplicates
    assert exact["cross_split_images"] == {"val->train": 2}
    assert exact["conflicting_cross_split"] == 1
    pair = exact["cross_split_pairs"][0]  # conflicting pairs are listed first
    assert pair["conflicting_labels"] and pair["a"]["path"] == str(copy)
    assert pair["b"]["path"] == str(source) and pair["b"]["label"] == "left"
    assert severity(report, "exact_cross_split") == "critical"
    assert report.failures  # what --strict fails on
    assert report.near_duplicates["hash"]["pairs_total"] == 0  # exact pairs are not repeated


def test_flipped_and_rotated_copies_are_near_duplicates(tmp_path: Path) -> None:
    paths = make_set(tmp_path, {"train": 12, "val": 6})
    flipped = np.fliplr(np.asarray(Image.open(paths["train"][2])))
    save(tmp_path / "val" / "left" / "flipped.png", flipped)
    rotated = np.rot90(np.asarray(Image.open(paths["train"][15])))
    noisy = np.clip(rotated + np.random.default_rng(1).normal(0, 2, rotated.shape), 0, 255)
    save(tmp_path / "val" / "right" / "rotated.png", noisy.astype(np.uint8))
    report = check(tmp_path)
    pairs = report.near_duplicates["hash"]["pairs"]
    found = {Path(p["a"]["path"]).name: p for p in pairs}
    assert set(found) == {"flipped.png", "rotated.png"}
    assert found["flipped.png"]["transform"] == "flip"
    assert found["flipped.png"]["b"]["path"] == str(paths["train"][2])
    assert found["rotated.png"]["transform"] in ("rot90", "rot270")
    assert found["rotated.png"]["b"]["path"] == str(paths["train"][15])
    assert report.near_duplicates["hash"]["rotated_or_flipped"] == 2
    assert report.exact_duplicates["clusters"] == 0
    assert severity(report, "near_hash") == "warning"


def test_shared_patient_alike_is_leak_and_different_content_is_not(tmp_path: Path) -> None:
    # Kermany-style names CLASS-PATIENT-N.png; every patient is in one split except two.
    rng = np.random.default_rng(3)
    for split, n in (("train", 16), ("val", 6)):
        for label, cls in enumerate(CLASSES):
            for i in range(n):
                patient = 100 + i if split == "train" else 500 + i
                save(tmp_path / split / cls / f"{cls}-{patient}-{label}.png", picture(rng, label))
    base = picture(rng, 0)
    similar = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    save(tmp_path / "train" / "left" / "left-7001-1.png", base)
    save(tmp_path / "val" / "left" / "left-7001-2.png", similar)
    save(tmp_path / "train" / "right" / "right-7002-1.png", picture(rng, 1))
    save(tmp_path / "val" / "right" / "right-7002-2.png", picture(rng, 1))
    report = check(tmp_path)  # the kermany preset is auto-detected from the names
    groups = report.groups
    assert "kermany" in groups["source"] and "auto-detected" in groups["source"]
    status = {v["group"]: v["status"] for v in groups["shared"]}
    assert status == {"7001": "leak", "7002": "same id, different content"}
    assert severity(report, "group_leak") == "critical"
    assert severity(report, "group_same_id") == "warning"
    leak = groups["shared"][0]
    assert {leak["pair"]["a"]["split"], leak["pair"]["b"]["split"]} == {"train", "val"}


def test_colour_mode_shortcut_is_flagged(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for split, n in (("train", 24), ("val", 8)):
        for label, cls in enumerate(CLASSES):
            for i in range(n):  # "left" all RGB, "right" all grayscale
                save(tmp_path / split / cls / f"{i}.png", picture(rng, label, colour=label == 0))
    report = check(tmp_path, features="none")
    scores = {p["property"]: p for p in report.shortcuts["properties"]}
    assert report.shortcuts["flagged"] == ["image mode"]
    assert scores["image mode"]["balanced_accuracy"] == 1.0
    assert scores["image mode"]["by_class"]["RGB"] == {"left": 32, "right": 0}
    assert severity(report, "shortcut:image mode") == "warning"
    assert report.label_issues["checked"] is False  # --features none


def picture64(rng: np.random.Generator, label: int, glyph: str = "") -> np.ndarray:
    """`picture` at 64 px, with `glyph` burned in white near the top-right corner."""
    image = Image.fromarray(picture(rng, label)).resize((64, 64), Image.Resampling.BICUBIC)
    if glyph:
        x, y = 52 + int(rng.integers(-2, 1)), 2 + int(rng.integers(0, 3))
        ImageDraw.Draw(image).text((x, y), glyph, fill=255, font=ImageFont.load_default(size=11))
    return np.asarray(image)


def test_marker_strokes_are_glyphs_not_bright_regions() -> None:
    rng = np.random.default_rng(10)
    marked = marker_stats(picture64(rng, 1, glyph="R").astype(np.float32))
    assert marked[1] > 0.02 and marked[4] >= 1  # top-right corner, one component
    assert marked[0] == marked[2] == marked[3] == 0
    clean = picture64(rng, 0).astype(np.float32)
    assert marker_stats(clean) == (0.0,) * 5
    yy, xx = np.mgrid[:64, :64]
    filled = np.where(xx + yy < 30, 255.0, clean)  # a white corner fill (rotation padding)
    filled[40:50, 40:50] = 255  # a bright square region
    assert marker_stats(filled) == (0.0,) * 5


@pytest.mark.parametrize("glyphs", [("", "R"), ("R", "R")])
def test_burned_in_marker_shortcut(tmp_path: Path, glyphs: tuple[str, str]) -> None:
    """A letter in one class only is a shortcut; the same letter in every image is not."""
    rng = np.random.default_rng(11)
    for split, n in (("train", 24), ("val", 8)):
        for label, cls in enumerate(CLASSES):
            for i in range(n):
                save(tmp_path / split / cls / f"{i}.png", picture64(rng, label, glyphs[label]))
    report = check(tmp_path, features="none")
    scores = {p["property"]: p for p in report.shortcuts["properties"]}
    markers = scores["burned-in text/markers"]
    assert markers["images_with_marks_by_class"] == {"left": 32 if glyphs[0] else 0, "right": 32}
    if glyphs[0]:
        assert not markers["flagged"] and "examples" not in markers
        return
    assert report.shortcuts["flagged"] == ["burned-in text/markers"]
    assert markers["balanced_accuracy"] == 1.0
    assert {e["label"] for e in markers["examples"]} == {"right"} and len(markers["examples"]) == 3
    assert severity(report, "shortcut:burned-in text/markers") == "warning"
    assert "images with strokes: left 0, right 32" in render_text(report)


def test_near_duplicates_inside_a_split(tmp_path: Path) -> None:
    paths = make_set(tmp_path, {"train": 12, "val": 6})
    source, other = paths["train"][3], paths["train"][14]  # a "left" and a "right" image
    flipped = np.fliplr(np.asarray(Image.open(source)))
    turned = np.rot90(np.asarray(Image.open(other)))
    flipped_path = save(tmp_path / "train" / "left" / "flipped.png", flipped)
    turned_path = save(tmp_path / "train" / "left" / "turned.png", turned)
    report = check(tmp_path)
    within = report.near_duplicates["within_split"]
    pairs = {frozenset((p["a"]["path"], p["b"]["path"])): p for p in within["pairs"]}
    assert set(pairs) == {
        frozenset((str(flipped_path), str(source))),
        frozenset((str(turned_path), str(other))),
    }
    assert pairs[frozenset((str(flipped_path), str(source)))]["transform"] == "flip"
    assert within["per_split"]["train"]["with_near_duplicate"] == 4
    assert within["per_split"]["val"]["with_near_duplicate"] == 0
    assert within["conflicting_pairs"] == 1 and within["pairs"][0]["conflicting_labels"]
    assert severity(report, "near_within_split") == "warning"  # the "right" image filed as left
    assert report.near_duplicates["hash"]["pairs_total"] == 0  # not a cross-split finding
    assert report.failures == []
    assert "inside one split: train: 4/26, val: 0/12 (2 pairs)" in render_text(report)


def test_flipped_labels_are_listed(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    flipped: set[str] = set()
    for label, cls in enumerate(CLASSES):
        for i in range(80):
            truth = label
            given = 1 - truth if i % 10 == 0 else truth  # 10% of each class mislabeled
            path = save(tmp_path / "train" / CLASSES[given] / f"{cls}_{i}.png", picture(rng, truth))
            if given != truth:
                flipped.add(str(path))
    make_set(tmp_path, {"val": 8}, seed=6)
    report = check(tmp_path, max_label_issues=100)
    ranked = [issue["path"] for issue in report.label_issues["issues"]]
    assert len(flipped & set(ranked)) >= 0.8 * len(flipped)  # most flipped labels are listed
    assert len(flipped & set(ranked[: len(flipped)])) >= 0.75 * len(flipped)  # and ranked first
    first = report.label_issues["issues"][0]
    assert first["path"] in flipped and first["suggested"] != first["label"]


def test_builtin_confident_learning_matches_the_rule() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]])
    assert builtin_confident_issues(labels, probs).tolist() == [2, 5]


@pytest.mark.parametrize("k", [2, 3])
def test_torch_probe_matches_sklearn(k: int) -> None:
    """The GPU path of the label-issue probe is the same model as the CPU (sklearn) path."""
    import torch

    rng = np.random.default_rng(9)
    x = rng.normal(size=(90, 5)).astype(np.float32)
    y = np.digitize(x[:, 0] + 0.5 * rng.normal(size=90), [-0.5, 0.5] if k == 3 else [0.0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problem: no thread pool to wait on
    try:
        fast = torch_softmax_regression(x[:60], y[:60], x[60:], k, "cpu")
    finally:
        torch.set_num_threads(threads)
    reference = softmax_regression(x[:60], y[:60], x[60:], k, "cpu")
    assert np.abs(fast - reference).max() < 2e-3


def test_unreadable_file_is_listed(tmp_path: Path) -> None:
    make_set(tmp_path, {"train": 8, "val": 4})
    bad = tmp_path / "train" / "left" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    report = check(tmp_path)
    inv = report.inventory
    assert inv["unreadable_count"] == 1 and inv["unreadable"][0]["path"] == str(bad)
    assert severity(report, "unreadable") == "warning"
    assert report.inventory["counts"]["train"] == {"left": 9, "right": 8}


def test_backbone_path_and_process_pool(tmp_path: Path) -> None:
    make_set(tmp_path, {"train": 16, "val": 6})
    report = check(tmp_path, features="backbone", embed_size=32, workers=2, batch_size=16)
    assert "tf_efficientnet_lite0 at 32 px" in report.timing["embedding"]
    calibration = report.near_duplicates["embedding_calibration"]
    assert "threshold" in calibration and "usable" in calibration
    labels = report.label_issues
    # The probe ran on the embeddings; at 32 px on 44 images it may be too weak to judge labels.
    assert labels["features"] == "backbone embeddings" and "probe_ci95" in labels
    assert report.exact_duplicates["clusters"] == 0


def test_hamming_search_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 255, size=(20, 20, 1), dtype=np.uint8) for _ in range(30)]
    hashes = np.stack([dihedral_dhash(im) for im in images])
    found = hamming_search(hashes[:5], hashes[5:], k=2, ref_chunk=7, query_chunk=2)
    bits = np.unpackbits(np.bitwise_xor(hashes[:5, :, None], hashes[None, 5:, 0]), axis=-1)
    brute = bits.sum(-1).min(axis=1)  # (5, 25): min over the query's transforms
    assert (found.distance[:, 0] == brute.min(axis=1)).all()
    assert (found.distance[:, 1] == np.sort(brute, axis=1)[:, 1]).all()
    turned = dihedral_dhash(np.ascontiguousarray(np.rot90(images[7])))
    again = hamming_search(turned[None], hashes, k=1)
    assert again.index[0, 0] == 7 and again.distance[0, 0] == 0


def _kermany_set(root: Path) -> None:
    rng = np.random.default_rng(8)
    for label, cls in enumerate(CLASSES):
        for patient in range(12):
            for n in range(3):
                name = f"{cls.upper()}-{1000 + 100 * label + patient}-{n}.png"
                save(root / "train" / cls / name, picture(rng, label))


def test_split_by_group_keeps_patients_together(tmp_path: Path) -> None:
    _kermany_set(tmp_path / "data")
    out = tmp_path / "split.csv"
    before = sorted(p.name for p in (tmp_path / "data").rglob("*.png"))
    result = make_split(
        index_folder(tmp_path / "data"), out, by="group", val_fraction=0.2, group_pattern="kermany"
    )
    assert sorted(p.name for p in (tmp_path / "data").rglob("*.png")) == before  # nothing moved
    index = index_manifest(out)
    assert not index.val_from_train and {s.split for s in index.samples} == {"train", "val"}
    where: dict[str | None, set[str]] = {}
    for s in index.samples:
        where.setdefault(s.group, set()).add(s.split)
    assert len(where) == 24 and all(len(splits) == 1 for splits in where.values())
    assert all(n > 0 for n in index.counts("val").values())
    assert result.groups == 24 and "none in two splits" in result.summary()
    with pytest.raises(ConfigError, match="exists"):
        make_split(index_folder(tmp_path / "data"), out, by="group", group_pattern="kermany")


def test_split_stratified_with_new_test_and_errors(tmp_path: Path) -> None:
    make_set(tmp_path / "data", {"train": 20})
    index = index_folder(tmp_path / "data")
    result = make_split(index, tmp_path / "s.tsv", by="stratified", test_fraction=0.2)
    assert result.counts["test"] == {"left": 4, "right": 4}
    assert result.counts["val"] == {"left": 3, "right": 3}
    assert index_manifest(tmp_path / "s.tsv").counts("test") == {"left": 4, "right": 4}
    with pytest.raises(DataError, match="no group ids"):
        make_split(index, tmp_path / "g.csv", by="group")
    with pytest.raises(ConfigError, match="valid regular expression"):
        make_split(index, tmp_path / "g.csv", by="group", group_pattern="(")


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="medfit")
    add_check_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    CHECK_COMMANDS[args.command](args)


def test_cli_strict_json_and_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_set(tmp_path / "data", {"train": 8, "val": 4})
    save(tmp_path / "data" / "val" / "left" / "dup.png", np.asarray(Image.open(paths["train"][0])))
    argv = ["check", str(tmp_path / "data"), "--features", "none", "--workers", "1"]
    _cli([*argv, "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert out.startswith("medfit check:")
    assert "CRITICAL: exact copies across splits: 1 val image(s) identical to train" in out
    saved = json.loads((tmp_path / "run" / "check.json").read_text())
    assert saved == json.loads((tmp_path / "r.json").read_text())
    pair = saved["exact_duplicates"]["cross_split_pairs"][0]
    assert pair["a"]["path"].endswith("dup.png") and pair["b"]["split"] == "train"
    assert list(saved)[:3] == ["schema_version", "root", "summary"] and saved["schema_version"] == 2
    assert saved["summary"] == {
        "findings": {"critical": 1, "warning": 0, "info": 1},
        "strict_fails": True,
    }
    for finding in saved["verdict"]:  # each finding points at its evidence in the document
        evidence: object = saved
        for key in finding["details"].split("."):
            assert isinstance(evidence, dict) and key in evidence, finding["details"]
            evidence = evidence[key]
    with pytest.raises(StrictCheckFailed, match="--strict: exact copies"):
        _cli([*argv, "--strict"])
    with pytest.raises(ConfigError, match="--near-bits"):
        _cli([*argv, "--near-bits", "300"])
