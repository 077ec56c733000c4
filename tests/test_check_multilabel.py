"""`medfit check` (and `medfit split`) on multi-label data: a 44-image manifest over 3 labels.

Label A is visible (the blob of `test_check.picture` on the left; right without A), B and C are
not. Planted: known co-occurrences (train: A+B 8, B+C 4, A+C 0), labels rare in val/test and C
absent from test, a patient in train and val (a near copy), an exact copy across splits whose
label sets differ and one whose sets agree, and one train image with the A blob but no label.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from medfit.check import CheckOptions, CheckReport, make_split, render_text, run_check
from medfit.check.cli import CHECK_COMMANDS, add_check_commands
from medfit.check.multilabel import (
    auc_ci,
    builtin_multilabel_issues,
    sigmoid_regression,
    torch_sigmoid_regression,
)
from medfit.data.manifest import index_manifest
from tests.test_check import check, make_set, picture, save

# (split, label cell) per image, in order; row numbers below index this list.
ROWS = (
    [("train", "A|B")] * 8  # 0-7
    + [("train", "A")] * 4  # 8-11
    + [("train", "B|C")] * 4  # 12-15
    + [("train", "C")] * 4  # 16-19
    + [("train", "No Finding")] * 4  # 20-23 (20: drawn with the A blob: a missing label)
    + [("val", "A|B")] * 3  # 24-26
    + [("val", "A")] * 7  # 27-33 (27: an exact copy of train 0, A|B; 28: patient P of train 1)
    + [("val", "C"), ("val", "No Finding")]  # 34, 35
    + [("test", "A")] * 4  # 36-39
    + [("test", "A|B")] * 2  # 40, 41
    + [("test", "No Finding")] * 2  # 42 (an exact copy of train 21), 43
)
COPY_CONFLICT = (0, 27)  # (train, val): same pixels, label sets A|B vs A
COPY_AGREE = (21, 42)  # (train, test): same pixels, no finding on both
PATIENT = (1, 28)  # (train, val): one patient id, a near copy
UNLABELLED_A = 20


def write_manifest(root: Path, fixed: dict[int, np.ndarray] | None = None) -> Path:
    """root/labels.csv (path,labels,split,patient_id) and root/images/*.png per ROWS."""
    rng = np.random.default_rng(3)
    pixels: list[np.ndarray] = []
    for i, (_, cell) in enumerate(ROWS):
        has_a = "A" in cell.split("|") or i == UNLABELLED_A
        pixels.append(picture(rng, 0 if has_a else 1))
    for a, b in (COPY_CONFLICT, COPY_AGREE):
        pixels[b] = pixels[a].copy()
    noise = rng.normal(0, 2, size=pixels[PATIENT[0]].shape)
    pixels[PATIENT[1]] = np.clip(pixels[PATIENT[0]] + noise, 0, 255).astype(np.uint8)
    lines = ["path,labels,split,patient_id"]
    for i, ((split, cell), image) in enumerate(zip(ROWS, pixels, strict=True)):
        save(root / "images" / f"img{i:02d}.png", image)
        patient = "P" if i in PATIENT else f"p{i}"
        lines.append(f"images/img{i:02d}.png,{cell},{split},{patient}")
    manifest = root / "labels.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def run(manifest: Path) -> CheckReport:
    options = CheckOptions(features="thumbnail", workers=1, progress=False)
    return run_check(index_manifest(manifest), options)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> CheckReport:
    _FORKS.clear()
    _WATCHING[0] = True
    try:
        result = run(write_manifest(tmp_path_factory.mktemp("ml")))
    finally:
        _WATCHING[0] = False
    return result


_FORKS: list[str] = []
_WATCHING = [False]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _FORKS.append("fork") if _WATCHING[0] else None)


def test_frequency_rare_labels_and_cooccurrence(report: CheckReport) -> None:
    ml = report.multilabel
    assert ml is not None and ml["labels"] == ["A", "B", "C"]
    train, val, test = (ml["frequency"][s] for s in ("train", "val", "test"))
    assert train["positives"] == {"A": 12, "B": 12, "C": 8}
    assert (train["images"], train["no_finding"], train["two_or_more"]) == (24, 4, 12)
    assert val["positives"] == {"A": 10, "B": 3, "C": 1} and val["no_finding"] == 1
    assert test["positives"] == {"A": 6, "B": 2, "C": 0} and test["two_or_more"] == 2
    flags = {(f["label"], f["split"]): (f["positives"], f["problem"]) for f in ml["rare"]}
    assert flags == {
        ("A", "test"): (6, "rare"),
        ("B", "val"): (3, "rare"),
        ("B", "test"): (2, "rare"),
        ("C", "val"): (1, "rare"),
        ("C", "test"): (0, "absent"),
    }  # A in val has 10: enough
    co = ml["cooccurrence"]
    assert co["train"] == [[12, 8, 0], [8, 12, 4], [0, 4, 8]]
    assert co["all"] == [[28, 13, 0], [13, 17, 4], [0, 4, 9]]
    assert [(p["a"], p["b"], p["images"], p["train"]) for p in co["pairs"]] == [
        ("A", "B", 13, 8),
        ("B", "C", 4, 4),
    ]
    inv = report.inventory
    assert inv["multilabel"] and inv["split_totals"] == {"train": 24, "val": 12, "test": 8}
    assert inv["counts"]["val"] == {"A": 10, "B": 3, "C": 1} and inv["imbalance_ratio"] is None
    rare = report.finding("rare_labels")
    assert rare is not None and rare["severity"] == "warning"
    assert "C (val 1, test 0)" in rare["title"] and "A (test 6)" in rare["title"]


def test_copies_patient_leak_and_label_conflicts(report: CheckReport) -> None:
    exact = report.exact_duplicates
    assert exact["cross_split_images"] == {"val->train": 1, "test->train": 1}
    assert exact["conflicting_cross_split"] == 1
    conflict = exact["cross_split_pairs"][0]  # conflicting first
    assert conflict["conflicting_labels"]
    assert (conflict["a"]["label"], conflict["b"]["label"]) == ("A", "A|B")
    assert conflict["b"]["labels"] == ["A", "B"]
    agree = exact["cross_split_pairs"][1]
    assert not agree["conflicting_labels"] and agree["a"]["label"] == "No Finding"
    crit = report.finding("exact_cross_split")
    assert crit is not None and "1 of them with a different label" in crit["title"]
    groups = report.groups
    assert groups["shared_groups"] == 1 and groups["leaking_groups"] == 1
    assert groups["shared"][0]["group"] == "P" and groups["shared"][0]["status"] == "leak"
    assert report.finding("group_leak") is not None
    assert any("patient leakage" in f for f in report.failures)


def test_shortcuts_label_issues_render_and_json(report: CheckReport) -> None:
    assert report.shortcuts["checked"] and report.shortcuts["target"] == "any finding vs no finding"
    labels = report.label_issues
    assert labels["multilabel"] and labels["checked"], labels.get("reason")
    # A is seen; C too (no C image has A: "right blob" predicts it); B is mostly with A: not
    assert labels["judged_labels"] == ["A", "C"]
    assert labels["too_few_labels"] == []  # C: 9 on, 35 off
    flagged = {Path(i["path"]).name: i for i in labels["issues"]}
    missing = flagged[f"img{UNLABELLED_A:02d}.png"]
    assert (
        missing["add"] == ["A"] and missing["suggested"] == "A" and missing["label"] == "No Finding"
    )
    assert not _FORKS, "a multi-label check forked this process"
    text = render_text(report)
    assert "LABELS (positives per split" in text
    assert "A + B: 13 (8)" in text and "absent, no AUC at all: C (test)" in text
    assert "[A|B]" in text and "CONFLICTING LABELS" in text
    assert "add A" in text
    data = json.loads(report.to_json())
    assert data["multilabel"]["cooccurrence"]["all"][0][1] == 13
    assert data["label_issues"]["per_label"][0]["label"] == "A"


def test_cli_check_and_split_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path / "data")
    parser = argparse.ArgumentParser(prog="medfit")
    add_check_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "split.csv"
    args = parser.parse_args(["split", str(manifest), "--by", "group", "--out", str(out)])
    CHECK_COMMANDS[args.command](args)
    assert "train" in capsys.readouterr().out
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["path", "split", "group", "A", "B", "C"]  # one 0/1 column per label
    before, after = index_manifest(manifest), index_manifest(out)
    assert after.multilabel and after.classes == before.classes
    by_path = {Path(s.path).name: s for s in after.samples}
    for s in before.samples:
        assert by_path[Path(s.path).name].targets == s.targets
    split_of = {Path(s.path).name: s.split for s in after.samples}
    assert split_of[f"img{PATIENT[0]:02d}.png"] == split_of[f"img{PATIENT[1]:02d}.png"]
    result = make_split(before, tmp_path / "s2.csv", by="stratified", val_fraction=0.2)
    assert sum(result.images.values()) == len(ROWS)
    assert f"train {result.images['train']} " in result.summary()


def test_probe_pieces() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = np.stack([x[:, 0] > 0, x[:, 1] + 0.5 * rng.normal(size=120) > 0.5], axis=1).astype(int)
    y_train = np.c_[y[:80], np.zeros(80, int)]  # a label with no positives: its smoothed rate
    cpu = sigmoid_regression(x[:80], y_train, x[80:], "cpu")
    assert np.allclose(cpu[:, 2], 1 / 82)
    torch_probs = torch_sigmoid_regression(x[:80], y[:80], x[80:], "cpu")
    assert np.abs(torch_probs - cpu[:, :2]).max() < 2e-3
    auc, (lo, hi) = auc_ci(y[80:, 1], cpu[:, 1])  # the noisy label
    assert 0.7 < auc < 1.0 and 0.5 < lo < auc < hi <= 1.0
    given = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.05, 0.9], [0.8, 0.7], [0.95, 0.1]])
    assert builtin_multilabel_issues(given, probs).tolist() == [3]  # A missing on the last


def test_single_label_report_is_unchanged(tmp_path: Path) -> None:
    make_set(tmp_path, {"train": 12, "val": 6})
    report = check(tmp_path)
    data = report.to_dict()
    assert "multilabel" not in data and "multilabel" not in data["inventory"]
    assert "target" not in data["shortcuts"] and "multilabel" not in data["label_issues"]
    assert "labels" not in data["exact_duplicates"]
    text = render_text(report)
    assert "LABELS (" not in text and "  train " in text  # the per-class inventory table
