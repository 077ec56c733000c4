"""Ordinal (disease-grade) tasks: which class names are grades, their order, quadratic kappa and
the mean grade error against scikit-learn and by hand, their bootstrap CIs, the console summary,
the report's headline, and `medfit eval` of a tiny run whose classes are grade folders."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.metrics import cohen_kappa_score

import medfit
from medfit.data.task import grade_ranks, grade_values, resolve_task
from medfit.errors import ConfigError
from medfit.evaluate.metrics import bootstrap_ci, classification_report, ordinal_metrics
from medfit.evaluate.runner import run_eval
from medfit.evaluate.summary import summary_lines
from medfit.report import write_report
from tests.test_report import _section, synthetic_run

GRADES = [f"grade{i}" for i in range(5)]


# --- which classes are grades ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "values"),
    [
        (GRADES, [0, 1, 2, 3, 4]),
        (["KL_1", "KL_2", "KL_3", "KL_4"], [1, 2, 3, 4]),
        (["0", "1", "2", "3", "4"], [0, 1, 2, 3, 4]),
        (["grade0", "grade1", "grade10", "grade2"], [0, 1, 10, 2]),
    ],
)
def test_grade_names_are_ordinal(classes: list[str], values: list[int]) -> None:
    assert grade_values(classes) == values
    assert resolve_task("auto", classes) == "ordinal"


@pytest.mark.parametrize(
    "classes",
    [
        ["normal", "pneumonia"],
        ["normal", "mild", "severe"],
        ["grade0", "grade1", "stage2"],  # mixed prefixes
        ["grade1", "grade01", "grade2"],  # the same number twice
        ["grade0", "grade1"],  # two grades are a binary task
    ],
)
def test_other_names_are_multiclass(classes: list[str]) -> None:
    assert grade_values(classes) is None
    assert resolve_task("auto", classes) == "multiclass"
    assert grade_ranks(classes) == list(range(len(classes)))


def test_grade_ranks_follow_the_number_not_the_name() -> None:
    # Sorted by name grade10 comes before grade2; on the scale it is above it.
    assert grade_ranks(["grade0", "grade1", "grade10", "grade2"]) == [0, 1, 3, 2]
    assert grade_ranks(["KL_3", "KL_1", "KL_2"]) == [2, 0, 1]
    assert grade_ranks(GRADES) == [0, 1, 2, 3, 4]


def test_an_explicit_task_wins_over_the_names() -> None:
    assert resolve_task("multiclass", GRADES) == "multiclass"
    assert resolve_task("ordinal", ["mild", "moderate", "severe"]) == "ordinal"
    with pytest.raises(ConfigError, match="task must be one of"):
        resolve_task("regression", GRADES)


# --- the metrics -------------------------------------------------------------------------------


def _noisy_grades(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True grades and predictions that are mostly within a grade of them."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    predicted = np.clip(true + rng.choice([-2, -1, 0, 0, 0, 1, 2], n), 0, k - 1)
    return true, predicted


def test_kappa_equals_sklearn_quadratic_kappa_on_the_ranks() -> None:
    k = 5
    true_rank, pred_rank = _noisy_grades(300, k, 0)
    # Classes stored in a shuffled order: class c has rank ranks[c], so index != rank.
    ranks = [3, 0, 4, 1, 2]
    class_of_rank = np.argsort(ranks)
    labels, predicted = class_of_rank[true_rank], class_of_rank[pred_rank]
    got = ordinal_metrics(labels, predicted, ranks)
    expected = cohen_kappa_score(true_rank, pred_rank, weights="quadratic")
    assert got["quadratic_kappa"] == pytest.approx(expected, abs=1e-12)
    assert expected > 0.5
    # Kappa on the raw class indices is a different (wrong) number: the ranks are used.
    on_indices = cohen_kappa_score(labels, predicted, weights="quadratic")
    assert abs(on_indices - expected) > 0.05
    # Identity ranks: the same as sklearn on the class indices.
    plain = ordinal_metrics(true_rank, pred_rank, list(range(k)))
    assert plain["quadratic_kappa"] == pytest.approx(expected, abs=1e-12)


def test_kappa_counts_grades_absent_from_labels_and_predictions() -> None:
    # Grades 3 and 4 never occur; `labels=all ranks` keeps the weights on the 5-grade scale.
    labels, predicted = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 2, 2, 1, 1, 0])
    got = ordinal_metrics(labels, predicted, list(range(5)))
    expected = cohen_kappa_score(labels, predicted, weights="quadratic", labels=np.arange(5))
    assert got["quadratic_kappa"] == pytest.approx(expected, abs=1e-12)


def test_mean_abs_error_by_hand() -> None:
    ranks = [2, 0, 3, 1]  # class 0 is grade rank 2, class 1 rank 0, ...
    labels = np.array([0, 1, 2, 3, 1])
    predicted = np.array([0, 2, 1, 3, 0])
    # ranks: true 2, 0, 3, 1, 0; predicted 2, 3, 0, 1, 2 -> errors 0, 3, 3, 0, 2.
    got = ordinal_metrics(labels, predicted, ranks)
    assert got["mean_abs_error"] == pytest.approx(8 / 5)


def test_kappa_of_a_single_grade_is_nan_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = ordinal_metrics(np.array([2, 2, 2]), np.array([2, 2, 2]), [0, 1, 2])
        empty = ordinal_metrics(np.array([], int), np.array([], int), [0, 1, 2])
        # All one grade, all predicted another: defined, no better than chance.
        shifted = ordinal_metrics(np.array([0, 0, 0]), np.array([2, 2, 2]), [0, 1, 2])
    assert math.isnan(one["quadratic_kappa"]) and one["mean_abs_error"] == 0.0
    assert math.isnan(empty["quadratic_kappa"]) and math.isnan(empty["mean_abs_error"])
    assert shifted == {"quadratic_kappa": 0.0, "mean_abs_error": 2.0}


def _probs(predicted: np.ndarray, k: int, conf: float = 0.7) -> np.ndarray:
    probs = np.full((len(predicted), k), (1 - conf) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = conf
    return probs


def test_report_and_bootstrap_give_ordinal_numbers_and_cis() -> None:
    labels, predicted = _noisy_grades(200, 5, 1)
    probs = _probs(predicted, 5)
    ranks = list(range(5))
    report = classification_report(labels, probs, GRADES, n_boot=100, ranks=ranks)
    point = ordinal_metrics(labels, predicted, ranks)
    assert report["task"] == "ordinal"
    for name in ("quadratic_kappa", "mean_abs_error"):
        assert report[name] == pytest.approx(point[name])
        lo, hi = report["ci95"][name]
        assert lo is not None and hi is not None
        assert lo < point[name] < hi, name
        assert hi - lo < 0.5, name
    assert report["ci95"] == bootstrap_ci(labels, probs, 100, 0, ranks)

    plain = classification_report(labels, probs, GRADES, n_boot=20)
    assert not {"task", "quadratic_kappa", "mean_abs_error"} & set(plain)
    assert set(plain["ci95"]) == {"accuracy", "balanced_accuracy", "macro_f1", "auc"}


def _result(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "run": "r",
        "split": "test",
        "n_images": 4,
        "tta": False,
        "views": ["identity"],
        "data": "d",
        "classes": ["grade0", "grade1", "grade2"],
        "skipped": [],
        "calibration": {"temperature": 1.2, "n_images": 4},
        "metrics": metrics,
        "uncalibrated": metrics,
    }


def test_summary_lines_show_kappa_and_grade_error_for_ordinal_runs() -> None:
    labels, predicted = np.array([0, 1, 2, 2, 1, 0]), np.array([0, 2, 2, 1, 1, 0])
    probs = _probs(predicted, 3)
    ordinal = classification_report(labels, probs, GRADES[:3], n_boot=50, ranks=[0, 1, 2])
    text = "\n".join(summary_lines(_result(ordinal)))
    lo, hi = ordinal["ci95"]["quadratic_kappa"]
    assert f"quadratic kappa   {ordinal['quadratic_kappa']:.3f}  (95% CI {lo:.3f}-{hi:.3f})" in text
    assert f"grade error (MAE) {2 / 6:.3f}  (95% CI" in text

    plain = classification_report(labels, probs, GRADES[:3], n_boot=0)
    text = "\n".join(summary_lines(_result(plain)))
    assert "kappa" not in text and "MAE" not in text
    assert "  accuracy       0.667" in text  # the multiclass layout is unchanged

    single = classification_report(labels[:1], probs[:1], GRADES[:3], n_boot=0, ranks=[0, 1, 2])
    text = "\n".join(summary_lines(_result(single)))
    assert "quadratic kappa     n/a" in text and "kappa undefined" in text


def _quiet(_: str) -> None:
    pass


def test_report_headline_shows_kappa_and_grade_error_next_to_accuracy(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "multiclass")
    headline = _section(write_report(run, log=_quiet, gradcam=False).read_text(), "headline")
    assert "kappa" not in headline.lower() and "grade error" not in headline.lower()

    run = synthetic_run(tmp_path / "ordinal")
    evaluation = json.loads((run / "eval_test.json").read_text())
    evaluation["task"] = "ordinal"
    evaluation["metrics"].update({"quadratic_kappa": 0.8125, "mean_abs_error": 0.4375})
    evaluation["metrics"]["ci95"]["quadratic_kappa"] = [0.625, 0.9375]
    (run / "eval_test.json").write_text(json.dumps(evaluation))
    headline = _section(write_report(run, log=_quiet, gradcam=False).read_text(), "headline")
    accuracy, kappa = headline.index(">Accuracy<"), headline.index(">Quadratic kappa<")
    error, balanced = headline.index(">Mean grade error<"), headline.index(">Balanced accuracy<")
    assert accuracy < kappa < error < balanced
    assert "0.812" in headline and "95% CI 0.625–0.938" in headline and "0.438" in headline
    assert "ordered grades" in headline


# --- end to end: a run whose class folders are grades ------------------------------------------

# grade10 sorts before grade2 by name: the run's class order is not the grade order.
RUN_GRADES = ("grade0", "grade1", "grade2", "grade10")
OPTIONS = {
    "model": "test_efficientnet",
    "weights": "none",
    "img_size": 32,
    "batch_size": 8,
    "head_epochs": 0,
    "epochs": 1,
    "workers": 0,
    "device": "cpu",
}


def _grade_dataset(root: Path, size: int = 32) -> Path:
    """A disc whose brightness grows with the grade; 4 train, 2 val and 2 test images a grade."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (size / 4) ** 2
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for rank, name in enumerate(RUN_GRADES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 40, (size, size)) + disc * (60 + 45 * rank)
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def grade_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ordinal-run")
    data = _grade_dataset(root / "data")
    run = medfit.train(
        data, out=str(root / "run"), cache_dir=str(root / "cache"), log=_quiet, **OPTIONS
    )
    return run.dir, data


def _set_task(run: Path, task: str | None) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"].pop("task", None)
    if task is not None:
        config["data"]["task"] = task
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_eval_of_a_grade_run_reports_kappa_and_grade_error(grade_run: tuple[Path, Path]) -> None:
    run, data = grade_run
    lines: list[str] = []
    run_eval(run, data=data, split="test", n_boot=20, device="cpu", log=lines.append)
    saved = json.loads((run / "eval_test.json").read_text())
    assert saved["task"] == "ordinal" and saved["metrics"]["task"] == "ordinal"
    assert saved["classes"] == ["grade0", "grade1", "grade10", "grade2"]

    # Recompute both numbers from the predictions CSV on the grade scale.
    rank = {name: r for r, name in enumerate(RUN_GRADES)}
    rows = list(csv.DictReader((run / "predictions_test.csv").open(newline="")))
    true = np.array([rank[r["label"]] for r in rows])
    pred = np.array([rank[r["predicted"]] for r in rows])
    m = saved["metrics"]
    assert m["mean_abs_error"] == pytest.approx(np.abs(true - pred).mean())
    kappa = cohen_kappa_score(true, pred, weights="quadratic", labels=np.arange(4))
    assert m["quadratic_kappa"] == pytest.approx(kappa)
    assert m["ci95"]["mean_abs_error"][0] is not None
    assert "quadratic_kappa" in saved["uncalibrated"] and "mean_abs_error" in saved["uncalibrated"]
    text = "\n".join(lines)
    assert "quadratic kappa" in text and "grade error (MAE)" in text


def test_eval_reads_the_task_from_the_run_config(
    grade_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.deploy_helpers import copy_run

    run, data = grade_run
    run = copy_run(run, tmp_path / "run")
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["task"] == "ordinal"

    _set_task(run, None)  # a run from before data.task: auto, decided by the class names
    result = run_eval(run, data=data, split="test", n_boot=0, device="cpu", log=_quiet)
    assert result["task"] == "ordinal" and "quadratic_kappa" in result["metrics"]

    _set_task(run, "multiclass")  # trained with --task multiclass
    result = run_eval(run, data=data, split="test", n_boot=0, device="cpu", log=_quiet)
    assert result["task"] == "multiclass"
    assert "quadratic_kappa" not in result["metrics"]
    assert "quadratic_kappa" not in result["uncalibrated"]
