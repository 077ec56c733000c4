"""Issue 19, a newcomer's first hour: a temperature fitted on too few val images, patient leakage
and `check --strict`, noisy eval warnings and label-issue claims from a probe at chance, the
two-class operating point, and `medfit --version`."""

from __future__ import annotations

import csv
import json
import math
import shutil
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

import medfit
from medfit.cli import main
from medfit.errors import MedfitError
from medfit.evaluate.calibration import TooFewToCalibrate, calibrate
from medfit.evaluate.metrics import (
    classification_report,
    operating_metrics,
    operating_point,
    youden_threshold,
)
from medfit.evaluate.runner import run_eval
from medfit.inference import Predictor
from medfit.report import write_report
from medfit.rundir import MIN_CALIBRATION_IMAGES
from tests.deploy_helpers import copy_run
from tests.test_check import check, picture, save
from tests.test_train import make_dataset

TINY = {
    "model": "test_efficientnet",
    "weights": "none",
    "img_size": 32,
    "batch_size": 16,
    "head_epochs": 0,
    "epochs": 1,
    "workers": 0,
}


def _quiet(_: str) -> None:
    pass


def _with_test_split(run: Path, dest: Path) -> Path:
    """A copy of the run's data with a test split (a copy of its val images)."""
    source = run.parent / "data"
    shutil.copytree(source, dest)
    shutil.copytree(source / "val", dest / "test")
    return dest


@pytest.fixture(scope="module")
def calibratable_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run whose val split holds exactly MIN_CALIBRATION_IMAGES images."""
    root = tmp_path_factory.mktemp("newcomer-run")
    data = make_dataset(root / "data", per_class=MIN_CALIBRATION_IMAGES)  # val: half per class
    shutil.copytree(data / "val", data / "test")
    run = root / "run"
    medfit.train(data, out=str(run), cache_dir=str(root / "cache"), log=_quiet, **TINY)
    return run


# --- item 1: no temperature from too few val images ---------------------------------------------


def test_calibrate_refuses_below_the_minimum_and_fits_at_it() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(MIN_CALIBRATION_IMAGES, 2)) * 4
    labels = rng.integers(0, 2, MIN_CALIBRATION_IMAGES)
    with pytest.raises(TooFewToCalibrate, match=f"at least {MIN_CALIBRATION_IMAGES}"):
        calibrate(logits[:-1], labels[:-1])
    with pytest.raises(TooFewToCalibrate, match="0 readable val image"):
        calibrate(np.zeros((0, 2)), np.zeros(0, dtype=int))
    assert calibrate(logits, labels)["temperature"] > 0


def test_eval_with_unreadable_val_fits_no_temperature_and_writes_none(
    run: Path, tmp_path: Path
) -> None:
    """The newcomer's case: val rows listed in split.csv, none readable (data moved)."""
    copy = copy_run(run, tmp_path / "run")
    data = _with_test_split(run, tmp_path / "data")
    split_csv = copy / "split.csv"
    rows = list(csv.DictReader(split_csv.open(newline="")))
    for row in rows:
        if row["split"] == "val":
            row["path"] = str(tmp_path / "moved" / Path(row["path"]).name)
    with split_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines: list[str] = []
    result = run_eval(copy, data=data, split="test", n_boot=20, device="cpu", log=lines.append)
    cal = result["calibration"]
    assert cal["temperature"] is None and cal["fitted"] is False and cal["n_images"] == 0
    assert f"at least {MIN_CALIBRATION_IMAGES}" in cal["reason"] and "moved" in cal["reason"]
    assert not (copy / "calibration.json").exists()
    text = "\n".join(lines)
    assert "calibration: none — temperature not fitted: 0 readable val image(s)" in text
    assert "fitted on val" not in text
    saved = json.loads((copy / "eval_test.json").read_text())
    assert saved["calibration"]["temperature"] is None
    # Uncalibrated = what was scored: the headline equals the T = 1 numbers.
    assert saved["metrics"]["nll"] == pytest.approx(saved["uncalibrated"]["nll"])


def test_predict_ignores_a_temperature_saved_from_too_few_images(run: Path, tmp_path: Path) -> None:
    """A calibration.json an older medfit wrote from 0 images (T 0.493, NaN NLL) is not used."""
    copy = copy_run(run, tmp_path / "run")
    (copy / "calibration.json").write_text(
        '{"temperature": 0.493, "fitted_on": "val", "n_images": 0, "nll_after": NaN}'
    )
    predictor = Predictor(copy, device="cpu")
    assert predictor.info.temperature is None
    with pytest.raises(MedfitError, match="temperature scaling is not available"):
        image = run.parent / "data" / "val" / "left" / "left_0.png"
        predictor.predict_files([image], temperature_scaled=True)


def test_eval_fits_and_saves_t_at_the_minimum(calibratable_run: Path, tmp_path: Path) -> None:
    run = copy_run(calibratable_run, tmp_path / "run")
    result = run_eval(run, split="test", n_boot=0, device="cpu", log=_quiet)
    cal = result["calibration"]
    assert cal["fitted"] is True and cal["n_images"] == MIN_CALIBRATION_IMAGES
    saved = json.loads((run / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(cal["temperature"])
    assert Predictor(run, device="cpu").info.temperature == pytest.approx(cal["temperature"])


# --- beyond fixing: the two-class operating point ------------------------------------------------


def test_youden_threshold_and_rates_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.6, 0.4, 0.7, 0.8, 0.9])
    # Thresholds 0.7: sens 3/4, spec 4/4 -> J 0.75; 0.4: sens 4/4, spec 3/4 -> J 0.75 (tie: the
    # higher threshold wins); 0.6: sens 3/4, spec 3/4 -> J 0.5.
    assert youden_threshold(labels, p) == pytest.approx(0.7)
    rates = operating_metrics(labels, p, 0.4)
    assert rates == pytest.approx(
        {"sensitivity": 1.0, "specificity": 0.75, "ppv": 4 / 5, "npv": 1.0}
    )
    assert youden_threshold(np.zeros(4, dtype=int), p[:4]) is None
    point = operating_point(labels, p, 0.4, n_boot=200)
    assert point["counts"] == {"tp": 4, "fp": 1, "tn": 3, "fn": 0}
    lo, hi = point["ci95"]["specificity"]
    assert lo <= 0.75 <= hi and lo < hi
    assert math.isnan(operating_metrics(labels, p, 0.95)["ppv"])  # nothing called positive


def test_eval_reports_the_operating_point_and_the_report_marks_it(
    calibratable_run: Path, tmp_path: Path
) -> None:
    run = copy_run(calibratable_run, tmp_path / "run")
    lines: list[str] = []
    result = run_eval(run, split="test", n_boot=50, device="cpu", log=lines.append)
    op = result["operating_point"]
    assert op["positive"] == "right" and op["rule"].startswith("Youden's J on val (30 images)")
    rows = list(csv.DictReader((run / "predictions_test.csv").open(newline="")))
    positive = np.array([r["label"] == "right" for r in rows])
    # The CSV holds 6 decimals, and the threshold is one image's own probability (Youden picks
    # among them), so compare at the CSV's precision or that image lands on the wrong side.
    threshold = round(op["threshold"], 6)
    called = np.array([float(r["p_right"]) >= threshold for r in rows])
    assert op["sensitivity"] == pytest.approx(called[positive].mean())
    assert op["specificity"] == pytest.approx((~called[~positive]).mean())
    assert set(op["ci95"]) == {"sensitivity", "specificity", "ppv", "npv"}
    saved = json.loads((run / "eval_test.json").read_text())["operating_point"]
    assert saved["threshold"] == pytest.approx(op["threshold"])
    text = "\n".join(lines)
    assert "operating point: right when p >=" in text and "sensitivity" in text and "NPV" in text

    html = write_report(run, log=_quiet, gradcam=False).read_text()
    section = html[html.index('id="per_class"') : html.index('id="calibration"')]
    assert "Operating point: right when p" in section and "Youden" in section
    assert "Specificity" in section and 'alt="ROC curve with the operating point"' in section

    given = run_eval(run, split="test", n_boot=0, device="cpu", log=_quiet, threshold=0.25)
    assert given["operating_point"]["threshold"] == 0.25
    assert given["operating_point"]["rule"] == "given (--threshold)"


def test_threshold_must_be_a_probability(run: Path, tmp_path: Path) -> None:
    from tests.test_evaluate import _cli

    copy = copy_run(run, tmp_path / "run")
    with pytest.raises(MedfitError, match=r"--threshold is a probability in \[0, 1\]"):
        _cli(["eval", str(copy), "--split", "val", "--threshold", "1.5"])


# --- item 9: patient leakage is critical and --strict fails on it --------------------------------


def test_a_given_patient_id_in_two_splits_is_critical_and_strict_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(11)
    for split, n in (("train", 10), ("val", 5)):
        for label, cls in enumerate(("left", "right")):
            for i in range(n):
                patient = f"{split}{cls}{i}"
                save(tmp_path / split / cls / f"p{patient}_{i}.png", picture(rng, label))
    # Patient 77: one (different) image in train and one in val, by the pattern the user gave.
    save(tmp_path / "train" / "left" / "p77_a.png", picture(rng, 0))
    save(tmp_path / "val" / "left" / "p77_b.png", picture(rng, 0))
    argv = ["check", str(tmp_path), "--features", "thumbnail", "--workers", "1"]
    argv += ["--group-pattern", r"p(?P<group>[a-z]*\d+)_"]

    assert main(argv) == 0  # without --strict, findings are reported, not fatal
    out = capsys.readouterr().out
    assert "CRITICAL: patient leakage" in out
    assert main([*argv, "--strict"]) == 2
    assert "--strict: patient leakage" in capsys.readouterr().err


def test_strict_fails_on_every_critical_finding(tmp_path: Path) -> None:
    from medfit.check.verdict import strict_failures

    report = check_report_with_two_criticals(tmp_path)
    critical = [f["title"] for f in report.verdict if f["severity"] == "critical"]
    assert len(critical) >= 2
    assert strict_failures(report.to_dict()) == critical == report.failures
    assert report.summary["strict_fails"] is True


def check_report_with_two_criticals(root: Path):  # type: ignore[no-untyped-def]
    """A set with an exact copy across splits and a given patient id in two splits."""
    rng = np.random.default_rng(12)
    for split, n in (("train", 8), ("val", 4)):
        for label, cls in enumerate(("left", "right")):
            for i in range(n):
                save(root / split / cls / f"p{split}{cls}{i}_x.png", picture(rng, label))
    image = picture(rng, 1)
    save(root / "train" / "right" / "p5_a.png", image)
    save(root / "val" / "right" / "p6_a.png", image)  # an exact copy, another id
    save(root / "train" / "left" / "p9_a.png", picture(rng, 0))
    save(root / "val" / "left" / "p9_b.png", picture(rng, 0))
    return check(root, group_pattern=r"p(?P<group>[a-z]*\d+)_")


# --- item 10: no sklearn warnings in eval, no label claims from a probe at chance ----------------


def test_eval_metrics_raise_no_warning_when_a_class_is_absent() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20 + [2] * 2)
    probs = rng.dirichlet([1, 1, 1], size=len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's "y_pred contains classes not in y_true"
        report = classification_report(labels, probs, ["a", "b", "c"], n_boot=200)
    assert report["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, probs.argmax(1))
    )
    two = np.array([0] * 10 + [1] * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        missing = classification_report(two, rng.dirichlet([1, 1, 1], size=20), ["a", "b", "c"])
    assert 0.0 <= missing["balanced_accuracy"] <= 1.0


def test_label_issues_from_a_probe_at_chance_are_not_listed(tmp_path: Path) -> None:
    """Labels independent of the pictures: the probe is at chance, so nothing can be judged."""
    rng = np.random.default_rng(13)
    for split, n in (("train", 40), ("val", 10)):
        for cls in ("left", "right"):
            for i in range(n):
                save(tmp_path / split / cls / f"{cls}_{split}{i}.png", picture(rng, i % 2))
    report = check(tmp_path)
    labels = report.label_issues
    assert labels["judged"] is False and "issues" not in labels
    assert labels["probe_ci95"][0] < labels["chance"] + 0.15
    assert "cannot be judged" in labels["reason"] and "95% CI" in labels["reason"]
    finding = report.finding("label_unjudged")
    assert finding is not None and finding["severity"] == "info"
    assert report.finding("label_issues") is None


def test_label_issues_from_a_good_probe_say_how_sure(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    for split, n in (("train", 40), ("val", 10)):
        for label, cls in enumerate(("left", "right")):
            for i in range(n):
                given = 1 - label if (split == "train" and i % 10 == 0) else label
                path = tmp_path / split / ("left", "right")[given] / f"{cls}_{split}{i}.png"
                save(path, picture(rng, label))
    report = check(tmp_path)
    labels = report.label_issues
    assert labels["judged"] is True and labels["issues_total"] > 0
    lo, hi = labels["probe_ci95"]
    assert lo <= labels["probe_balanced_accuracy"] <= hi
    finding = report.finding("label_issues")
    assert finding is not None and "95% CI" in finding["title"] and "vs chance" in finding["title"]


# --- also: medfit --version --------------------------------------------------------------------


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"medfit {version('medfit')}"
