"""medfit report on a multi-label run: per-label AUCs instead of accuracy, the too-rare labels
named, label co-occurrence from split.csv, val macro AUC curves, ROC/PR curves, and Grad-CAM of
one label's logit (`--label NAME`, validated against the run's labels).

The run is written by hand (no training): four labels on 24 test images, one of them too rare by
positives (Hernia: 2) and one by negatives (Infiltration: 20 of 24 positive, so it has the most
positives but is not measured); a tiny timm model saved as checkpoints/best.pt for Grad-CAM."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from medfit.errors import MedfitError
from medfit.evaluate.multilabel import multilabel_report
from medfit.report import plots, write_report
from medfit.report.cli import REPORT_COMMANDS, add_report_commands
from medfit.rundir import PredictionRow, RunDir, SplitRow
from tests.test_report import _section, synthetic_run

CLASSES = ["Effusion", "Infiltration", "Mass", "Hernia"]
N_TEST = 24
THRESHOLDS = [0.5, 0.5, 0.5, 0.5]
# val_acc is the label-wise accuracy a multi-label epoch records: high and meaningless.
EPOCHS = [(0.911, 0.612), (0.923, 0.734), (0.937, 0.845)]  # (val_acc, val_macro_auc)
# split.csv: train rows (status ok) are counted; the val row and the skipped train row are not.
TRAIN_LABELS = [
    "Effusion|Mass",
    "Effusion|Mass",
    "Effusion|Infiltration|Mass",
    "Effusion",
    "Effusion|Infiltration",
    "Mass|Hernia",
    "Infiltration",
    "(none)",
    "(none)",
    "(none)",
]
EXPECTED_COOCCURRENCE = [  # rows / columns in CLASSES order; the diagonal is each label's count
    [5, 2, 3, 0],
    [2, 3, 1, 0],
    [3, 1, 4, 1],
    [0, 0, 1, 1],
]
CALIBRATION = {
    "fitted": True,
    "temperatures": [1.7, 1.0, 1.0, 1.0],
    "fitted_temperatures": [1.7, 1.2, 0.9, None],
    "applied": [True, False, False, False],
    "reasons": {
        "1": "T = 1.200 fitted on 40 val images did not prove itself",
        "2": "T = 0.900 fitted on 40 val images did not prove itself",
        "3": "too rare: 1 positive(s) in this split (needs 10) among 40 val images",
    },
    "n_images": 40,
    "nll_before": 0.61,
    "nll_after": 0.58,
    "ece_before": 0.12,
    "ece_after": 0.09,
}


def _quiet(_: str) -> None:
    pass


def _truth() -> np.ndarray:
    i = np.arange(N_TEST)
    return np.stack(
        [i < 12, i % 6 != 0, (i % 2 == 0) & (i < 20), np.isin(i, [5, 17])], axis=1
    ).astype(int)


def _probs(truth: np.ndarray) -> np.ndarray:
    """Informative but imperfect scores, rounded as predictions_<split>.csv stores them; image 0
    is confidently wrong on every label (the largest error)."""
    rng = np.random.default_rng(7)
    p = np.clip(0.35 * truth + rng.uniform(0.05, 0.65, truth.shape), 0.0, 1.0)
    p[0] = np.where(truth[0] == 1, 0.02, 0.98)
    return np.round(p, 6)


def _called(p: np.ndarray) -> str:
    on = [c for c, v, t in zip(CLASSES, p, THRESHOLDS, strict=True) if v >= t]
    return "|".join(on) or "(none)"


def _text(y: np.ndarray) -> str:
    return "|".join(c for c, v in zip(CLASSES, y, strict=True) if v) or "(none)"


def _save_model(run: Path, img_size: int) -> None:
    """A tiny randomly initialised timm model as a medfit checkpoint with sigmoid outputs."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(CLASSES))
    state = {
        "model": model.state_dict(),
        "model_name": "test_efficientnet",
        "classes": CLASSES,
        "preprocess": {
            "img_size": img_size,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bicubic",
            "crop_pct": 0.875,
        },
        "config": {"data": {"task": "multilabel"}},
        "epoch": 3,
    }
    (run / "checkpoints").mkdir()
    torch.save(state, run / "checkpoints" / "best.pt")


def multilabel_run(root: Path, with_model: bool = False) -> Path:
    """A multi-label run directory written as medfit writes one (see the module docstring)."""
    run, images = root / "run", root / "images"
    run.mkdir(parents=True)
    images.mkdir()
    rd = RunDir(run)
    config = {
        "data": {"root": str(images), "task": "multilabel", "img_size": 32},
        "model": {"name": "test_efficientnet"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "classes.json").write_text(json.dumps(CLASSES))
    summary = {
        "model": "test_efficientnet",
        "weights": "none",
        "classes": CLASSES,
        "train_images": len(TRAIN_LABELS),
        "val_images": 40,
        "skipped_images": 1,
        "selected_metric": "macro_auc",
        "best_epoch": 3,
        "best_metric": 0.79,
        "epochs_run": 3,
        "final": {"val_acc": 0.937, "val_balanced_accuracy": 0.6, "val_macro_f1": 0.3},
        "data_wait_s": 0.1,
        "compute_s": 3.0,
        "device": "cpu",
        "wall_s": 5.0,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    rd.write_history(
        [
            {
                "epoch": e,
                "stage": "head" if e == 1 else "full",
                "train_loss": 0.9 / e,
                "train_acc": acc - 0.01,
                "val_loss": 0.8 / e,
                "val_acc": acc,
                "val_balanced_accuracy": 0.55,
                "val_macro_f1": 0.2,
                "lr": 1e-3,
                "epoch_s": 1.0,
                "selection_score": auc,
                "val_macro_auc": auc,
            }
            for e, (acc, auc) in enumerate(EPOCHS, start=1)
        ]
    )
    split_rows = [SplitRow(f"train_{k}.png", t, "train", "ok") for k, t in enumerate(TRAIN_LABELS)]
    split_rows.append(SplitRow("val_0.png", "Effusion|Mass|Hernia", "val", "ok"))
    split_rows.append(SplitRow("bad.png", "Effusion|Hernia", "train", "skipped: unreadable"))
    rd.write_split_rows(split_rows)
    truth = _truth()
    probs = _probs(truth)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(N_TEST):
        path = images / f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
        paths.append(str(path))
    rows = [
        PredictionRow(path, _text(y), _called(p), dict(zip(CLASSES, p.tolist(), strict=True)))
        for path, y, p in zip(paths, truth, probs, strict=True)
    ]
    rd.write_predictions("test", CLASSES, rows)
    metrics = multilabel_report(truth, probs, CLASSES, list(THRESHOLDS), n_boot=30)
    evaluation = {
        "split": "test",
        "classes": CLASSES,
        "task": "multilabel",
        "n_images": N_TEST,
        "calibration": CALIBRATION,
        "thresholds": THRESHOLDS,
        "metrics": metrics,
        "uncalibrated": {"macro_auc": 0.7, "micro_auc": 0.7, "map": 0.5, "nll": 0.66},
    }
    rd.write_json(rd.eval_json("test"), evaluation)
    rd.write_json(
        rd.thresholds,
        {"labels": CLASSES, "thresholds": THRESHOLDS, "rule": "Youden's J per label on val"},
    )
    if with_model:
        _save_model(run, img_size=32)
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = multilabel_run(tmp_path_factory.mktemp("multilabel"))
    return run, write_report(run, log=_quiet, gradcam=False).read_text()


def _rows(table_html: str) -> dict[str, list[str]]:
    """First cell (th or td) -> the text of the other cells, tags stripped, per table row."""
    out = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table_html, re.S):
        cells = [
            re.sub(r"<[^>]+>", " ", c).split()
            for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        ]
        if cells and cells[0]:
            out[" ".join(cells[0])] = [" ".join(c) for c in cells[1:]]
    return out


def _table(html: str, table_id: str) -> str:
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert match, f"table {table_id} missing"
    return match.group(1)


# --- what replaces the single-label sections ----------------------------------------------------


def test_no_accuracy_confusion_matrix_or_softmax_reliability(report: tuple[Path, str]) -> None:
    _, html = report
    for single_label in ("confusion", "per_class", "calibration", "top_losses"):
        assert f'<section id="{single_label}">' not in html
    headline = _section(html, "headline")
    assert '<div class="n">Accuracy</div>' not in headline
    assert "Balanced accuracy" not in headline and "Macro F1" not in headline
    assert "multi-label: 4 labels" in html.split("</header>")[0]
    for name in ("per_label", "roc_pr", "cooccurrence", "label_calibration", "label_errors"):
        assert "Not in this report" not in _section(html, name), name


def test_headline_is_macro_auc_with_ci_over_the_measured_labels(report: tuple[Path, str]) -> None:
    run, html = report
    metrics = json.loads((run / "eval_test.json").read_text())["metrics"]
    assert metrics["measured_labels"] == ["Effusion", "Mass"]  # the fixture is what it claims
    headline = _section(html, "headline")
    lo, hi = metrics["ci95"]["macro_auc"]
    assert f'Macro ROC-AUC</div><div class="v">{metrics["macro_auc"]:.3f}' in headline
    assert f"95% CI {lo:.3f}–{hi:.3f}" in headline
    assert f"{metrics['micro_auc']:.3f}" in headline and f"{metrics['map']:.3f}" in headline
    measured = re.search(r'<p id="measured">(.*?)</p>', headline, re.S)
    assert measured and "2 of 4 labels" in measured.group(1)
    assert measured.group(1).rstrip(".").endswith("Effusion, Mass")
    too_rare = re.search(r'<ul id="too_rare"[^>]*>(.*?)</ul>', headline, re.S)
    assert too_rare, "the too-rare labels are not listed"
    assert "<b>Hernia</b>: 2 positive(s) in this split (needs 10)" in too_rare.group(1)
    assert "<b>Infiltration</b>: 4 negative(s) in this split (needs 10)" in too_rare.group(1)
    assert "Effusion" not in too_rare.group(1)


def test_per_label_table_has_the_measured_aucs_and_not_the_noise(report: tuple[Path, str]) -> None:
    _, html = report
    rows = _rows(_table(_section(html, "per_label"), "per_label_table"))
    truth, probs = _truth(), _probs(_truth())
    for j, name in enumerate(CLASSES):
        assert rows[name][0] == str(truth[:, j].sum()), name  # positives
    for j in (0, 2):  # Effusion, Mass: measured, their own AUC (not another label's)
        auc = roc_auc_score(truth[:, j], probs[:, j])
        assert rows[CLASSES[j]][1].startswith(f"{auc:.3f} ("), (CLASSES[j], rows[CLASSES[j]])
    assert rows["Effusion"][1] != rows["Mass"][1]
    for j in (1, 3):  # too rare: the reason instead of an AUC
        auc = roc_auc_score(truth[:, j], probs[:, j])
        assert rows[CLASSES[j]][1].startswith("too rare:"), rows[CLASSES[j]]
        assert f"{auc:.3f}" not in " ".join(rows[CLASSES[j]])
    # Calibration: label 0 applied; 1 and 2 fitted but not applied; 3 never fitted.
    assert rows["Effusion"][-1] == "T = 1.70 applied"
    assert rows["Mass"][-1] == "not applied (fitted T = 0.90)"
    assert rows["Hernia"][-1] == "not fitted"


def test_cooccurrence_counts_the_train_rows_of_split_csv(report: tuple[Path, str]) -> None:
    _, html = report
    section = _section(html, "cooccurrence")
    assert section.count("data:image/png;base64,") == 1
    rows = _rows(_table(section, "cooccurrence_table"))
    counts = [[int(v) for v in rows[name]] for name in CLASSES]
    assert counts == EXPECTED_COOCCURRENCE
    assert "10 training images: 3 with no finding, 5 with two or more" in section


def test_curves_plot_and_list_val_macro_auc_not_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[str] = []
    original = plots.learning_curves

    def spy(history: Any, best: Any, panels: Any = ()) -> str:
        drawn.extend(key for _, series in panels or plots.CLASS_PANELS for key, _, _ in series)
        return original(history, best, panels)

    monkeypatch.setattr(plots, "learning_curves", spy)
    run = multilabel_run(tmp_path)
    section = _section(write_report(run, log=_quiet, gradcam=False).read_text(), "curves")
    assert "val_macro_auc" in drawn and "val_acc" not in drawn and "train_acc" not in drawn
    rows = _rows(_table(section, "curve_rows"))
    assert [rows[str(e)][3] for e in (1, 2, 3)] == [f"{auc:.3f}" for _, auc in EPOCHS]
    assert all(f"{acc:.3f}" not in section for acc, _ in EPOCHS)
    assert section.count("data:image/png;base64,") == 1


def test_roc_pr_curves_are_drawn_for_the_measured_labels_from_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[plots.LabelCurve] = []
    original = plots.roc_pr_grid

    def spy(curves: list[plots.LabelCurve]) -> str:
        seen.extend(curves)
        return original(curves)

    monkeypatch.setattr(plots, "roc_pr_grid", spy)
    html = write_report(multilabel_run(tmp_path), log=_quiet, gradcam=False).read_text()
    assert [c.name for c in seen] == ["Effusion", "Mass"]
    truth, probs = _truth(), _probs(_truth())
    for curve, j in zip(seen, (0, 2), strict=True):
        assert curve.positive.tolist() == truth[:, j].astype(bool).tolist()
        assert np.allclose(curve.scores, probs[:, j])
    section = _section(html, "roc_pr")
    assert section.count("data:image/png;base64,") == 1
    assert "Not drawn (too rare to measure): Infiltration, Hernia" in section


def test_largest_errors_rank_by_cross_entropy_over_labels(report: tuple[Path, str]) -> None:
    _, html = report
    section = _section(html, "label_errors")
    first = re.search(r"<figure>(.*?)</figure>", section, re.S)
    assert first and "img_00.png" in first.group(1)  # confidently wrong on every label
    assert "true <b>Effusion, Mass</b><br>called <b>Infiltration, Hernia</b>" in first.group(1)
    # all four labels wrong, equally badly: three named, then the count of the rest
    caption = first.group(1).split("</b><br>")[-1]
    assert caption.count("(p 0.02)") + caption.count("(p 0.98)") == 3
    assert "and 1 more" in caption and "wrongly called Infiltration (p 0.98)" in caption


# --- Grad-CAM of one label -------------------------------------------------------------------


def _captions(section: str) -> list[str]:
    return re.findall(r'<span class="path">(.*?)</span>', section)


def test_gradcam_explains_one_labels_logit_on_its_positive_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captum.attr import LayerGradCam

    targets: list[list[int]] = []
    original = LayerGradCam.attribute

    def spy(self: Any, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        targets.append(target.tolist())
        return original(self, inputs, target=target, **kwargs)

    monkeypatch.setattr(LayerGradCam, "attribute", spy)
    run = multilabel_run(tmp_path, with_model=True)
    truth = _truth()
    positive = {j: {f"img_{i:02d}.png" for i in np.flatnonzero(truth[:, j])} for j in range(4)}

    # Default: the measured label with the most positives (Effusion, 12), not Infiltration
    # (20 positives, but only 4 negatives: too rare to measure).
    section = _section(write_report(run, log=_quiet).read_text(), "gradcam")
    assert "Label explained: <b>Effusion</b>" in section
    shown = [Path(p).name for p in _captions(section)]
    assert len(shown) == 8 and set(shown) <= positive[0]
    assert section.count("data:image/png;base64,") == 8
    assert targets[-1] == [CLASSES.index("Effusion")] * 8

    section = _section(write_report(run, log=_quiet, label="Hernia").read_text(), "gradcam")
    assert "Label explained: <b>Hernia</b>" in section and "chosen with --label" in section
    assert {Path(p).name for p in _captions(section)} == positive[3]  # both of its positives
    assert targets[-1] == [CLASSES.index("Hernia")] * 2


def test_label_option_is_validated_against_the_runs_labels(tmp_path: Path) -> None:
    run = multilabel_run(tmp_path / "ml")
    parser = argparse.ArgumentParser(prog="medfit")
    add_report_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(run), "--label", "Nodule", "--no-gradcam"])
    with pytest.raises(MedfitError) as err:
        REPORT_COMMANDS[args.command](args)
    assert "'Nodule' is not a label" in str(err.value)
    assert "valid labels: Effusion, Infiltration, Mass, Hernia" in str(err.value)
    assert not (run / "report.html").exists()  # refused before anything was written
    args = parser.parse_args(["report", str(run), "--label", "Mass", "--no-gradcam"])
    REPORT_COMMANDS[args.command](args)
    assert (run / "report.html").is_file()
    single = synthetic_run(tmp_path / "single")
    with pytest.raises(MedfitError, match="single-label"):
        write_report(single, log=_quiet, gradcam=False, label="normal")
