"""medfit eval: metrics against hand-computed values, bootstrap CIs, ECE, temperature scaling,
and an end-to-end evaluation of a tiny trained run (files, CSV, calibration read by predict)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from medfit.errors import MedfitError
from medfit.evaluate.calibration import calibrate, fit_temperature, nll_at, probabilities
from medfit.evaluate.cli import EVAL_COMMANDS, add_eval_commands
from medfit.evaluate.metrics import (
    bootstrap_ci,
    classification_report,
    expected_calibration_error,
    headline_metrics,
    reliability,
    roc_auc,
)
from medfit.evaluate.runner import run_eval
from medfit.inference import Predictor
from tests.deploy_helpers import copy_run, trained_run


def _onehotish(predicted: list[int], k: int, conf: float = 0.8) -> np.ndarray:
    probs = np.full((len(predicted), k), (1 - conf) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = conf
    return probs


def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = _onehotish([0, 1, 1, 1, 2, 0], 3)
    r = classification_report(labels, probs, ["a", "b", "c"], n_boot=0)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # AUC of "a": positives score 0.8, 0.1; negatives 0.1, 0.1, 0.1, 0.8 -> (3.5 + 1.5) / 8.
    assert r["per_class"]["a"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "auc": 5 / 8}
    )
    assert r["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # Every confidence is 0.8 (bin 12 of 15), accuracy 4/6: ECE = |0.8 - 2/3|.
    assert r["ece"] == pytest.approx(0.8 - 4 / 6)
    assert [b["count"] for b in r["reliability"]][11] == 6


def test_perfect_and_all_wrong_classifiers() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    perfect = headline_metrics(labels, _onehotish([0, 0, 0, 1, 1], 2, 0.9))
    assert perfect == {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0, "auc": 1.0}
    wrong = headline_metrics(labels, _onehotish([1, 1, 1, 0, 0], 2, 0.9))
    assert wrong == {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0, "auc": 0.0}


def test_auc_with_an_absent_class_is_noted_and_single_class_is_nan() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    auc, note = roc_auc(labels, probs)
    assert auc == 1.0 and note is not None and "[2]" in note
    auc, note = roc_auc(np.array([1, 1]), probs[:2])
    assert math.isnan(auc) and note


def _noisy_predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + (labels - 0.5) * 0.3 + rng.normal(0, 0.3, n), 0.01, 0.99)
    return labels, np.stack([1 - p1, p1], 1)


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_images() -> None:
    small, large = _noisy_predictions(40, 1), _noisy_predictions(800, 2)
    ci_small = bootstrap_ci(*small, n_boot=200, seed=0)
    ci_large = bootstrap_ci(*large, n_boot=200, seed=0)
    point = headline_metrics(*small)
    for name, (lo, hi) in ci_small.items():
        assert lo is not None and hi is not None
        assert lo <= point[name] <= hi, name
        lo_l, hi_l = ci_large[name]
        assert lo_l is not None and hi_l is not None
        assert hi_l - lo_l < (hi - lo) / 2, name
    assert bootstrap_ci(*small, n_boot=200, seed=0) == ci_small  # seeded


def test_ece_zero_when_calibrated_and_large_when_over_confident() -> None:
    # 10 images at confidence 0.8 (8 right) and 10 at 0.6 (6 right): perfectly calibrated.
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    probs = np.array([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 10)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    bins = [b for b in reliability(labels, probs) if b["count"]]
    assert [b["count"] for b in bins] == [10, 10]
    assert [b["confidence"] for b in bins] == pytest.approx([0.6, 0.8])
    assert [b["accuracy"] for b in bins] == pytest.approx([0.6, 0.8])
    # Over-confident: 0.99 confidence, 60% right.
    over = np.array([[0.99, 0.01]] * 20)
    assert expected_calibration_error(labels, over) == pytest.approx(0.99 - 14 / 20)


def test_temperature_scaling_on_over_confident_logits() -> None:
    rng = np.random.default_rng(0)
    n, k = 2000, 3
    logits = rng.normal(0, 1.5, (n, k))
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in true_p])
    over = logits * 4.0  # a model 4x too confident
    t = fit_temperature(over, labels)
    assert 3.0 < t < 5.0
    assert nll_at(over, labels, t) < nll_at(over, labels, 1.0) - 0.1
    cal = calibrate(over, labels)
    assert cal["fitted_on"] == "val" and cal["ece_after"] < cal["ece_before"]
    assert cal["nll_after"] < cal["nll_before"]
    # It proved itself on held-out halves of val, so it is applied.
    assert cal["applied"] is True and cal["held_out_nll_gain_ci95"][0] > 0
    assert all(3.0 < t < 5.0 for t in cal["half_temperatures"])


def _calibrated_logits(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model whose probabilities are already right: labels drawn from its own softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, k))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return logits, np.array([rng.choice(k, p=row) for row in p])


def test_a_temperature_that_does_not_help_on_held_out_val_is_not_applied() -> None:
    """On a small val set of an already calibrated model, the fitted T is noise (it sharpens or
    softens at random): over 20 such sets it is kept out nearly always, and when it is, the
    probabilities are exactly the uncalibrated ones."""
    kept_out = 0
    for seed in range(20):
        logits, labels = _calibrated_logits(120, 5, seed)
        cal = calibrate(logits, labels)
        if not cal["applied"]:
            kept_out += 1
            assert cal["temperature"] == 1.0 and "did not prove itself" in cal["reason"]
            assert cal["nll_after"] == pytest.approx(cal["nll_before"])
            assert cal["fitted_temperature"] != 1.0  # fitted, and reported, just not used
    assert kept_out >= 17


def test_summary_says_why_a_fitted_temperature_was_not_applied() -> None:
    from medfit.evaluate.summary import _calibration_lines

    logits, labels = _calibrated_logits(120, 3, 1)
    cal = calibrate(logits, labels)
    assert cal["applied"] is False
    metrics = {"ece": 0.05, "nll": 0.9}
    result = {"metrics": metrics, "calibration": cal, "uncalibrated": metrics, "split": "test"}
    lines = "\n".join(_calibration_lines(result))
    assert "calibration: not applied" in lines and "T = 1" in lines


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


def _data_with_test(run: Path, dest: Path) -> Path:
    """The run's data plus a test split (the val images) and one unreadable test image."""
    source = run.parent / "data"
    shutil.copytree(source, dest)
    shutil.copytree(source / "val", dest / "test")
    (dest / "test" / "left" / "broken.png").write_bytes(b"not a png")
    return dest


def test_run_eval_end_to_end(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    data = _data_with_test(tiny_run, tmp_path / "data")
    lines: list[str] = []
    result = run_eval(run, data=data, split="test", tta=True, n_boot=50, log=lines.append)

    n_test = len(list((data / "test").rglob("*.png"))) - 1
    assert result["n_images"] == n_test
    assert [Path(s["path"]).name for s in result["skipped"]] == ["broken.png"]
    rows = list(csv.DictReader((run / "predictions_test.csv").open(newline="")))
    assert len(rows) == n_test
    assert list(rows[0]) == ["path", "label", "predicted", "p_left", "p_right"]
    saved = json.loads((run / "eval_test.json").read_text())
    m = saved["metrics"]
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "auc", "ece"):
        assert 0.0 <= m[name] <= 1.0, name
    assert sum(sum(r) for r in m["confusion_matrix"]) == n_test
    # left/right are not grades: no ordinal numbers.
    assert saved["task"] == "multiclass" and "quadratic_kappa" not in m
    text = "\n".join(lines)
    assert "95% CI" in text and "broken.png" in text and "ECE" in text
    assert "kappa" not in text

    # 8 val images are too few to fit T (tests/test_newcomer.py has the fitted case): none is
    # saved or applied, and the predictor's TTA probabilities match ours.
    assert saved["calibration"]["temperature"] is None
    assert not (run / "calibration.json").exists()
    predictor = Predictor(run, device="cpu")
    assert predictor.info.temperature is None
    x = predictor.model_input(np.stack([predictor.load_square(r["path"]) for r in rows[:4]]))
    ours = probabilities(predictor.view_logits(x, tta=True), 1.0)
    theirs = predictor.probabilities(x, tta=True, temperature=None)
    assert np.allclose(ours, theirs, atol=1e-5)
    csv_probs = np.array([[float(r["p_left"]), float(r["p_right"])] for r in rows[:4]])
    assert np.allclose(csv_probs, theirs, atol=1e-4)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="medfit")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    EVAL_COMMANDS[args.command](args)


def test_cli_val_split_and_missing_test_split(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    with pytest.raises(MedfitError, match=r"no 'test' split .*--split val"):
        _cli(["eval", str(run)])
    _cli(["eval", str(run), "--split", "val", "--bootstrap", "20", "--device", "cpu"])
    assert "temperature not fitted: 8 readable val image(s)" in capsys.readouterr().out
    saved = json.loads((run / "eval_val.json").read_text())
    val_rows = [r for r in csv.DictReader((run / "split.csv").open()) if r["split"] == "val"]
    assert saved["n_images"] == len(val_rows)
    assert saved["calibration"]["temperature"] is None
    assert not (run / "calibration.json").exists()
    with pytest.raises(MedfitError, match="--split"):
        _cli(["eval", str(run), "--split", "holdout"])
