"""`medfit check` on the real sets in ../shared/data: the flaws their README documents are found.

Skipped when ../shared is absent. `--features none` keeps these to seconds (the duplicates and
group checks need no model); bench/check_real.py runs the full check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medfit.check import CheckOptions, CheckReport, run_check
from medfit.data.sources import index_folder
from tests.conftest import shared_dataset

pytestmark = pytest.mark.integration


def _check(root: Path, pattern: str | None = None) -> CheckReport:
    options = CheckOptions(pattern, features="none", workers=2, progress=False)
    return run_check(index_folder(root), options)


def test_breastmnist_conflicting_cross_split_copy() -> None:
    report = _check(shared_dataset("breastmnist_28"))
    exact = report.exact_duplicates
    assert exact["cross_split_images"] == {"test->train": 1}
    pair = exact["cross_split_pairs"][0]
    assert Path(pair["a"]["path"]).name == "test76_1.png"
    assert Path(pair["b"]["path"]).name == "train115_0.png"
    assert pair["conflicting_labels"]
    near = report.near_duplicates["hash"]["per_split"]
    assert 12 <= near["val->train"]["with_near_duplicate"] <= 20  # README: 17/78 at <= 16 bits
    within = report.near_duplicates["within_split"]
    assert 50 <= within["per_split"]["train"]["with_near_duplicate"] <= 90  # measured: 72/546
    assert within["conflicting_pairs"] == 0


def test_pneumoniamnist_eight_val_copies_of_train() -> None:
    report = _check(shared_dataset("pneumoniamnist_28"))
    assert report.exact_duplicates["cross_split_images"].get("val->train") == 8
    assert report.finding("exact_cross_split") is not None


def test_oct_patient_ids_from_file_names() -> None:
    report = _check(shared_dataset("oct_kermany_val32") / "val", "kermany")
    groups = report.groups
    assert groups["groups"] == 25 and groups["images_without_id"] == 0
    # Bright speckle of the retinal layers reaches a few corners, in every class alike: no alarm.
    assert "burned-in text/markers" not in report.shortcuts["flagged"]
