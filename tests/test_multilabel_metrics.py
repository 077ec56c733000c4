"""Multi-label metrics and per-label calibration (medfit.evaluate.multilabel) on small seeded
synthetic data: values against scikit-learn and hand computation, the too-rare rule, bootstrap
CIs, the terminal lines, and the per-label temperature rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.metrics import average_precision_score, roc_auc_score

from medfit.evaluate.calibration import TooFewToCalibrate
from medfit.evaluate.multilabel import (
    MIN_POSITIVES,
    binary_ece,
    calibrate_multilabel,
    choose_thresholds,
    macro_auc,
    multilabel_report,
    report_lines,
    sigmoid_probs,
    weighted_ap,
    weighted_auc,
)


def _data(
    n: int, prevalences: list[float], seed: int = 0, signal: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n, L) at the given prevalences and informative, tied (2-decimal) probabilities."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(prevalences))) < np.array(prevalences)).astype(int)
    probs = expit(signal * (2 * labels - 1) + rng.normal(0, 1.5, labels.shape)).round(2)
    return labels, probs


def _with_positives(labels: np.ndarray, column: int, count: int) -> np.ndarray:
    out = labels.copy()
    out[:, column] = 0
    out[:count, column] = 1
    return out


def test_macro_auc_is_sklearn_mean_over_labels_with_both_classes() -> None:
    labels, probs = _data(80, [0.3, 0.5, 0.2, 0.4])
    labels[:, 2] = 0  # no positives: no AUC, must be skipped rather than crash or count
    expected = np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in (0, 1, 3)])
    assert macro_auc(labels, probs) == pytest.approx(expected)
    labels[:, 1] = 1  # no negatives either
    expected = np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in (0, 3)])
    assert macro_auc(labels, probs) == pytest.approx(expected)
    assert np.isnan(macro_auc(np.zeros((5, 2), dtype=int), np.full((5, 2), 0.5)))


def test_separable_label_gets_auc_one_and_a_threshold_between_classes() -> None:
    labels, probs = _data(60, [0.4, 0.4])
    probs[:, 0] = np.where(labels[:, 0] == 1, 0.7, 0.2) + np.linspace(0, 0.05, 60)
    thresholds = choose_thresholds(labels, probs)
    assert macro_auc(labels[:, :1], probs[:, :1]) == 1.0
    t = thresholds[0]
    assert t is not None
    assert probs[labels[:, 0] == 0, 0].max() < t <= probs[labels[:, 0] == 1, 0].min()
    labels[:, 1] = 0
    assert choose_thresholds(labels, probs)[1] is None
    r = multilabel_report(labels, probs, ["a", "b"], thresholds, n_boot=0)
    assert r["per_label"]["a"]["auc"] == 1.0
    assert r["per_label"]["a"]["sensitivity"] == r["per_label"]["a"]["specificity"] == 1.0


def test_rare_label_is_listed_but_kept_out_of_the_headlines() -> None:
    labels, probs = _data(120, [0.3, 0.4, 0.3])
    labels = _with_positives(labels, 2, 3)
    probs[:3, 2] = 0.01  # the 3 positives are missed: counting them would drag macro down
    names = ["Effusion", "Mass", "Hernia"]
    thresholds = choose_thresholds(labels, probs)
    r = multilabel_report(labels, probs, names, thresholds, n_boot=0)
    assert r["measured_labels"] == ["Effusion", "Mass"]
    assert r["too_rare"] == {"Hernia": f"3 positive(s) in this split (needs {MIN_POSITIVES})"}
    hernia = r["per_label"]["Hernia"]
    assert hernia["positives"] == 3 and hernia["auc"] == pytest.approx(
        roc_auc_score(labels[:, 2], probs[:, 2])
    )
    assert hernia["note"].startswith("too rare to measure: 3 positive(s)")
    assert r["per_label"]["Mass"]["note"] is None
    assert r["macro_auc"] == pytest.approx(macro_auc(labels[:, :2], probs[:, :2]))
    assert r["micro_auc"] == pytest.approx(
        roc_auc_score(labels[:, :2].ravel(), probs[:, :2].ravel())
    )
    assert r["map"] == pytest.approx(
        np.mean([average_precision_score(labels[:, j], probs[:, j]) for j in (0, 1)])
    )
    # With the same seed the resamples are the same: the rare label must not move the CIs.
    booted = multilabel_report(labels, probs, names, thresholds, n_boot=100)
    common = multilabel_report(labels[:, :2], probs[:, :2], names[:2], thresholds[:2], n_boot=100)
    assert booted["ci95"] == common["ci95"]
    lowered = multilabel_report(labels, probs, names, thresholds, n_boot=0, min_positives=3)
    assert lowered["too_rare"] == {}
    assert lowered["macro_auc"] == pytest.approx(macro_auc(labels, probs))
    assert lowered["macro_auc"] < r["macro_auc"] - 0.05


def test_label_without_positives_has_no_auc_and_report_is_strict_json() -> None:
    labels, probs = _data(50, [0.4, 0.3])
    labels[:, 1] = 0
    r = multilabel_report(labels, probs, ["a", "b"], [0.5, None], n_boot=50)
    b = r["per_label"]["b"]
    assert b["auc"] is None and b["ap"] is None and b["sensitivity"] is None
    assert b["ci95"]["auc"] == [None, None]
    assert r["too_rare"]["b"].startswith("0 positive(s)")
    json.dumps(r, allow_nan=False)


def test_exact_match_nll_and_ece_by_hand() -> None:
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    labels[:, 1] = [0, 1, 0, 0]
    probs = np.array([[0.8, 0.35], [0.3, 0.58], [0.9, 0.45], [0.2, 0.55]])
    # Label b has no threshold, so 0.5 applies: only row 3 (a false b) is wrong.
    r = multilabel_report(labels, probs, ["a", "b"], [0.5, None], n_boot=0, min_positives=1)
    assert r["exact_match"] == pytest.approx(0.75)
    assert r["per_label"]["b"]["threshold"] is None
    assert r["per_label"]["b"]["sensitivity"] is None
    y, p = labels.ravel(), probs.ravel()
    assert r["nll"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    # Label a: each p sits alone in its 1/15-wide bin, so ECE is the mean |y - p|.
    ece_a = np.mean(np.abs(labels[:, 0] - probs[:, 0]))
    assert binary_ece(labels[:, 0], probs[:, 0]) == pytest.approx(ece_a)
    # Label b: 0.55 and 0.58 share the bin (8/15, 9/15]: |1/2 - 0.565| weighs 2/4 there.
    ece_b = (0.35 + 0.45 + abs(0.5 - 0.565) * 2) / 4
    assert binary_ece(labels[:, 1], probs[:, 1]) == pytest.approx(ece_b)
    assert r["ece"] == pytest.approx((ece_a + ece_b) / 2)


def test_vectorised_bootstrap_statistics_match_sklearn_with_weights() -> None:
    labels, probs = _data(90, [0.3])
    rng = np.random.default_rng(1)
    weights = np.stack([np.bincount(rng.integers(0, 90, 90), minlength=90) for _ in range(6)])
    weights = weights.astype(float)
    y, p = labels[:, 0], probs[:, 0]
    expected_auc = [roc_auc_score(y, p, sample_weight=w) for w in weights]
    expected_ap = [average_precision_score(y, p, sample_weight=w) for w in weights]
    np.testing.assert_allclose(weighted_auc(y, p, weights), expected_auc)
    np.testing.assert_allclose(weighted_ap(y, p, weights), expected_ap)
    no_positive = np.where(y == 1, 0.0, 1.0)[None]
    assert np.isnan(weighted_auc(y, p, no_positive)[0])
    assert np.isnan(weighted_ap(y, p, no_positive)[0])
    no_negative = np.where(y == 1, 1.0, 0.0)[None]  # skipped, as sklearn's AP would be 1
    assert np.isnan(weighted_auc(y, p, no_negative)[0])
    assert np.isnan(weighted_ap(y, p, no_negative)[0])


def test_ci_brackets_the_estimate_and_narrows_with_more_images() -> None:
    names = ["a", "b", "c"]
    widths = []
    for n in (100, 1000):
        labels, probs = _data(n, [0.3, 0.4, 0.25], seed=n)
        r = multilabel_report(labels, probs, names, choose_thresholds(labels, probs), n_boot=300)
        for key in ("macro_auc", "micro_auc", "map"):
            lo, hi = r["ci95"][key]
            assert lo < r[key] < hi
        for row in r["per_label"].values():
            lo, hi = row["ci95"]["auc"]
            assert lo < row["auc"] < hi
            for key in ("ap", "sensitivity", "specificity"):
                lo, hi = row["ci95"][key]
                assert lo <= row[key] <= hi
        widths.append(r["ci95"]["macro_auc"][1] - r["ci95"]["macro_auc"][0])
    assert widths[1] < widths[0] / 2
    again = multilabel_report(labels, probs, names, [None] * 3, n_boot=300)
    assert again["ci95"] == r["ci95"]  # seeded
    assert multilabel_report(labels, probs, names, [None] * 3, n_boot=0)["ci95"] == {}


def test_duplicated_label_makes_micro_equal_macro_in_every_resample() -> None:
    labels, probs = _data(120, [0.3])
    labels, probs = np.repeat(labels, 2, axis=1), np.repeat(probs, 2, axis=1)
    r = multilabel_report(labels, probs, ["a", "a2"], [0.5, 0.5], n_boot=200)
    assert r["micro_auc"] == pytest.approx(r["macro_auc"])
    np.testing.assert_allclose(r["ci95"]["micro_auc"], r["per_label"]["a"]["ci95"]["auc"])
    np.testing.assert_allclose(r["ci95"]["macro_auc"], r["per_label"]["a"]["ci95"]["auc"])


def test_bootstrap_skips_a_label_missing_from_a_resample() -> None:
    labels, probs = _data(40, [0.4, 0.3])
    labels = _with_positives(labels, 1, 1)  # most resamples draw no positive of label 1
    r = multilabel_report(labels, probs, ["a", "b"], [0.5, 0.5], n_boot=200, min_positives=1)
    lo, hi = r["per_label"]["b"]["ci95"]["auc"]
    assert lo is not None and 0 <= lo <= hi <= 1
    lo, hi = r["ci95"]["macro_auc"]
    assert 0 <= lo <= hi <= 1


def test_report_lines_name_the_rare_labels() -> None:
    labels, probs = _data(150, [0.3, 0.3, 0.3, 0.5])
    labels = _with_positives(_with_positives(labels, 1, 0), 2, 4)
    labels[:, 3] = 1
    labels[:5, 3] = 0
    names = ["Effusion", "Hernia", "Pneumonia", "Support devices"]
    r = multilabel_report(labels, probs, names, choose_thresholds(labels, probs), n_boot=100)
    lines = report_lines(r)
    assert lines[0].startswith(f"macro ROC-AUC {r['macro_auc']:.3f} (95% CI ")
    assert "over 1 label;" in lines[0] and "mAP" in lines[0]
    assert lines[-1] == (
        "not measured (fewer than 10 positives or negatives): Hernia (0), Pneumonia (4), "
        "Support devices (5 negatives)"
    )
    table = lines[1:-1]
    assert len(table) == 5 and len({line.index("@") for line in table}) == 1  # fixed width
    assert "(too rare)" in table[2] and "(too rare)" not in table[1]
    none = multilabel_report(labels[:, 1:3], probs[:, 1:3], names[1:3], [None, None], n_boot=0)
    assert "not measured" in report_lines(none)[0]


def test_sigmoid_probs_averages_views_with_per_label_temperature() -> None:
    z = np.array([[[2.0, -1.0]], [[0.0, 3.0]]])  # (V=2, N=1, L=2)
    expected = (expit(z[0] / [2.0, 1.0]) + expit(z[1] / [2.0, 1.0])) / 2
    np.testing.assert_allclose(sigmoid_probs(z, np.array([2.0, 1.0])), expected)
    np.testing.assert_allclose(sigmoid_probs(z[0]), expit(z[0]))
    assert not np.allclose(sigmoid_probs(z), expit(z.mean(0)))  # mean of probs, not of logits


def _calibration_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label 0: logits 3x over-confident; label 1: calibrated; label 2: 5 positives."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 2, (n, 3))
    labels = (rng.random((n, 3)) < expit(truth)).astype(int)
    logits = truth * np.array([3.0, 1.0, 1.0])
    labels[:, 2] = 0
    labels[:5, 2] = 1
    return logits, labels


def test_calibrate_multilabel_fixes_only_the_overconfident_label() -> None:
    logits, labels = _calibration_data(600)
    cal = calibrate_multilabel(logits, labels, names=["over", "fine", "rare"])
    assert cal["applied"] == [True, False, False]
    assert 2.0 < cal["temperatures"][0] < 4.0
    assert cal["temperatures"][1:] == [1.0, 1.0]
    assert cal["fitted_temperatures"][1] == pytest.approx(1.0, abs=0.25)
    assert cal["fitted_temperatures"][2] is None
    assert "did not prove itself" in cal["reasons"]["fine"]
    assert cal["reasons"]["rare"].startswith("too rare: 5 positive(s)")
    assert "over" not in cal["reasons"]
    assert cal["nll_after"] < cal["nll_before"] and cal["ece_after"] < cal["ece_before"]
    assert cal["n_images"] == 600 and cal["fitted_on"] == "val"
    # Views: the same logits twice are one view; keys default to label indices.
    two_views = calibrate_multilabel(np.stack([logits, logits]), labels)
    np.testing.assert_allclose(two_views["temperatures"], cal["temperatures"], rtol=1e-6)
    assert set(two_views["reasons"]) == {"1", "2"}


def test_calibrate_multilabel_refuses_too_few_images() -> None:
    logits, labels = _calibration_data(29)
    with pytest.raises(TooFewToCalibrate, match="29 readable val image"):
        calibrate_multilabel(logits, labels)
    with pytest.raises(TooFewToCalibrate):  # even when every label is too rare to be fitted
        calibrate_multilabel(logits, np.zeros_like(labels))


def test_overconfident_probabilities_are_what_the_ece_sees() -> None:
    logits, labels = _calibration_data(600)
    sharp = sigmoid_probs(logits)[:, 0]
    honest = expit(logit(np.clip(sharp, 1e-9, 1 - 1e-9)) / 3)
    assert binary_ece(labels[:, 0], honest) < binary_ece(labels[:, 0], sharp) / 2
