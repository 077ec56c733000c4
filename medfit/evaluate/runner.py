"""`run_eval`: logits on val (to fit the temperature) and on the evaluated split, then metrics.

Which images: the temperature is fitted on the run's own val images (the `val` rows of
RUN/split.csv, exactly what training validated on). The evaluated split comes from DATA (default:
the run's `data.root`) indexed as training indexes it, with the run's seed and val fraction, so
`--split val` reproduces a val set split off train; without --data, `--split val` uses split.csv.
Labels are matched to the run's classes by name.

Headline metrics use the temperature-scaled probabilities (what `medfit predict
--temperature-scaled` returns); the uncalibrated numbers are kept next to them. With fewer than
MIN_CALIBRATION_IMAGES readable val images no temperature is fitted: the probabilities are the
uncalibrated ones (T = 1), calibration.json is left as it was, and eval says why. A two-class run
adds an operating point (see `medfit.evaluate.metrics`): threshold picked on val (Youden's J) or
given, applied to the evaluated split. An ordinal run
(`data.task` in its config; runs from before that field resolve `auto` from their class names)
adds quadratic kappa and the mean absolute grade error to both.

A k-fold run (RUN/oof_logits.npz) fits on its out-of-fold predictions instead of val, and
`--split oof` evaluates them; a multi-label k-fold run does the same with its per-label
temperatures and thresholds (`run_eval_multilabel`). Its members are also scored alone on the
evaluated split (accuracy, or macro ROC-AUC for multi-label) beside the ensemble.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medfit.config import RunConfig
from medfit.data.dataset import load_index
from medfit.data.decode import DecodeError
from medfit.data.moved import data_moved, listed_files_missing
from medfit.data.sources import label_text, label_vector
from medfit.data.task import grade_ranks, resolve_task
from medfit.errors import DataError, MedfitError
from medfit.evaluate.calibration import (
    TooFewToCalibrate,
    calibrate,
    probabilities,
    write_calibration,
)
from medfit.evaluate.metrics import (
    classification_report,
    json_safe,
    operating_point,
    youden_threshold,
)
from medfit.evaluate.multilabel import (
    calibrate_multilabel,
    choose_thresholds,
    multilabel_report,
    report_lines,
    sigmoid_probs,
)
from medfit.evaluate.summary import summary_lines
from medfit.inference import Predictor
from medfit.inference.predictor import called_labels
from medfit.inference.scores import scaled_thresholds
from medfit.progress import Log, ticking
from medfit.rundir import PredictionRow, RunDir, existing_run_dir


@dataclass
class Logits:
    """(V, N, K) logits for the readable images, their labels and paths, and what was skipped."""

    values: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]]


def run_eval(
    run_dir: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    tta: bool = False,
    n_boot: int = 1000,
    batch_size: int = 32,
    device: str = "auto",
    log: Log = print,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Evaluate RUN on SPLIT; writes calibration.json, eval_SPLIT.json, predictions_SPLIT.csv.
    `threshold` (two-class runs): the operating threshold on the positive class's probability,
    instead of the one Youden's J picks on val."""
    run = existing_run_dir(str(run_dir))
    predictor = Predictor(run.path, device=device)
    classes = predictor.classes
    if threshold is not None and len(classes) != 2:
        raise MedfitError(
            f"--threshold applies to two-class runs; {run.path} has {len(classes)} classes "
            "(drop --threshold)"
        )
    task = run_task(run, classes)
    if task == "multilabel":
        if threshold is not None:
            raise MedfitError(
                "--threshold is for two-class runs; a multi-label run's per-label thresholds "
                "are chosen on val, or on the out-of-fold predictions of a k-fold run "
                "(RUN/thresholds.json)"
            )
        return run_eval_multilabel(
            run, predictor, data, split, tta, n_boot, batch_size, log, device
        )
    ranks = grade_ranks(classes) if task == "ordinal" else None
    oof = read_oof_logits(run, classes)  # a k-fold run: its honest "val" (training/folds.py)
    if split == "oof":
        target, source, tta = _oof_target(run, oof, data), str(run.oof_logits), False
    else:
        items, source = _split_items(run, data, split, classes)
        target = collect_logits(predictor, items, tta, batch_size, (f"eval {split}", log))
    if oof is not None:
        val, listed = oof, len(oof.labels)
    elif split == "val" and data is None:
        val, listed = target, len(target.labels) + len(target.skipped)
    else:
        val_items = _split_csv_items(run, "val", classes)
        progress = ("eval val (calibration)", log)
        val = collect_logits(predictor, val_items, tta, batch_size, progress)
        listed = len(val_items)
    if len(target.labels) == 0:
        raise DataError(f"no readable images in the {split} split of {source}")
    calibration = _calibration(run, val, listed, tta, "val" if oof is None else "oof")
    t = calibration["temperature"] or 1.0
    probs = probabilities(target.values, t)
    result: dict[str, Any] = {
        **_result_header(run, source, split, tta, predictor, task, target),
        "calibration": calibration,
        "metrics": classification_report(target.labels, probs, classes, n_boot, ranks=ranks),
        "uncalibrated": classification_report(
            target.labels, probabilities(target.values, 1.0), classes, n_boot=0, ranks=ranks
        ),
    }
    if len(classes) == 2:
        result["operating_point"] = _operating_point(
            val, target, probs, t, classes, threshold, n_boot, target is val
        )
    if predictor.members and split != "oof":
        result["members"] = member_metrics(predictor, items, batch_size, device, ranks)
    run.write_predictions(split, classes, prediction_rows(target, probs, classes))
    run.write_json(run.eval_json(split), json_safe(result))
    for line in summary_lines(result):
        log(line)
    for line in operating_lines(result.get("operating_point")):
        log(line)
    for line in member_lines(result):
        log(line)
    return result


def _oof_target(run: RunDir, oof: Logits | None, data: str | Path | None) -> Logits:
    """The out-of-fold predictions `--split oof` evaluates; a MedfitError for other runs."""
    if oof is None or data is not None:
        raise MedfitError(
            f"--split oof reads the out-of-fold predictions of a k-fold run (medfit train "
            f"DATA --folds K), without --data; {run.path} has no {run.oof_logits.name}"
        )
    return oof


# Point metrics shown for each fold member beside the ensemble (eval_<split>.json "members").
MEMBER_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def member_metrics(
    ensemble: Predictor,
    items: Sequence[tuple[str, int]],
    batch_size: int,
    device: str,
    ranks: list[int] | None,
) -> list[dict[str, Any]]:
    """Each fold member alone on the evaluated images (uncalibrated, no TTA): what bagging adds
    is the ensemble's row minus these."""
    rows = []
    for path in ensemble.members:
        member = Predictor(path, device=device)
        logits = collect_logits(member, items, False, batch_size)
        report = classification_report(
            logits.labels, probabilities(logits.values, 1.0), member.classes, 0, ranks=ranks
        )
        rows.append({"dir": path.name, **{k: report[k] for k in MEMBER_METRICS}})
    return rows


def multilabel_member_metrics(
    ensemble: Predictor,
    items: Sequence[tuple[str, Any]],
    batch_size: int,
    device: str,
    min_positives: int,
) -> list[dict[str, Any]]:
    """Each fold member of a multi-label ensemble alone on the evaluated images (uncalibrated,
    no TTA): its macro ROC-AUC over the labels the ensemble's headline measures (at least
    `min_positives` positives and negatives), and its mAP over the same labels."""
    rows = []
    for path in ensemble.members:
        member = Predictor(path, device=device)
        logits = collect_logits(member, items, False, batch_size)
        probs = sigmoid_probs(logits.values)
        thresholds: list[float | None] = [None] * len(member.classes)
        report = multilabel_report(
            logits.labels, probs, member.classes, thresholds, 0, min_positives=min_positives
        )
        rows.append({"dir": path.name, "macro_auc": report["macro_auc"], "map": report["map"]})
    return rows


def member_lines(result: dict[str, Any]) -> list[str]:
    """The console lines comparing the members with the ensemble (none for other runs)."""
    members = result.get("members")
    if not members:
        return []
    if result.get("task") == "multilabel":
        return _multilabel_member_lines(result["metrics"], members)
    m = result["metrics"]
    cells = "  ".join(f"{r['dir']} {r['accuracy']:.3f}" for r in members)
    mean = float(np.mean([r["accuracy"] for r in members]))
    return [
        f"  fold members alone: accuracy {cells} (mean {mean:.3f}); ensemble {m['accuracy']:.3f}"
    ]


def _multilabel_member_lines(metrics: dict[str, Any], members: list[dict[str, Any]]) -> list[str]:
    def num(value: Any) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"

    cells = "  ".join(f"{r['dir']} {num(r['macro_auc'])}" for r in members)
    values = [r["macro_auc"] for r in members if r["macro_auc"] is not None]
    finite = [v for v in values if math.isfinite(v)]
    mean = f" (mean {np.mean(finite):.3f})" if finite else ""
    return [
        f"  fold members alone: macro ROC-AUC {cells}{mean}; ensemble "
        f"{num(metrics.get('macro_auc'))}"
    ]


def _calibration(
    run: RunDir, val: Logits, listed: int, tta: bool, fitted_on: str
) -> dict[str, Any]:
    """Fit T on the readable val images and write calibration.json; with too few, fit nothing,
    write nothing, and return temperature None with the reason."""
    try:
        calibration = {
            **calibrate(val.values, val.labels),
            "fitted": True,
            "fitted_on": fitted_on,
            "tta": tta,
        }
    except TooFewToCalibrate as exc:
        reason = f"{exc}; {listed} val image(s) listed in {run.split}"
        if val.skipped:
            path, why = val.skipped[0]
            reason += f", {len(val.skipped)} unreadable (first: {path}: {why})"
        reason += "; probabilities are uncalibrated (T = 1) and calibration.json was not written"
        return {
            "temperature": None,
            "fitted": False,
            "fitted_on": fitted_on,
            "n_images": len(val.labels),
            "reason": reason,
            "tta": tta,
        }
    write_calibration(run.path, calibration)
    return calibration


def _operating_point(
    val: Logits,
    target: Logits,
    probs: np.ndarray,
    temperature: float,
    classes: list[str],
    threshold: float | None,
    n_boot: int,
    same_images: bool,
) -> dict[str, Any]:
    """Sensitivity/specificity/PPV/NPV of the second class at a threshold picked on val (Youden's
    J on the temperature-scaled val probabilities) or given, on the evaluated images."""
    if threshold is not None:
        rule = "given (--threshold)"
    else:
        threshold = youden_threshold(val.labels, probabilities(val.values, temperature)[:, 1])
        rule = f"Youden's J on val ({len(val.labels)} images)"
        if threshold is None:
            threshold, rule = 0.5, "0.5: Youden's J needs both classes among readable val images"
        elif same_images:
            rule += "; picked on these same images, so optimistic"
    point = operating_point(target.labels, probs[:, 1], threshold, n_boot)
    return {"positive": classes[1], "negative": classes[0], "rule": rule, **point}


def operating_lines(point: dict[str, Any] | None) -> list[str]:
    """The console lines of a two-class operating point (none for other runs)."""
    if not point:
        return []

    def num(key: str) -> str:
        value = point[key]
        text = "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
        lo, hi = point["ci95"].get(key, [None, None])
        return text + (f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None else "")

    c = point["counts"]
    return [
        f"  operating point: {point['positive']} when p >= {point['threshold']:.3f} "
        f"({point['rule']})",
        f"    sensitivity {num('sensitivity')}  specificity {num('specificity')}",
        f"    PPV {num('ppv')}  NPV {num('npv')}  "
        f"(TP {c['tp']}, FP {c['fp']}, TN {c['tn']}, FN {c['fn']})",
    ]


def _result_header(
    run: RunDir,
    source: str,
    split: str,
    tta: bool,
    predictor: Predictor,
    task: str,
    target: Logits,
) -> dict[str, Any]:
    """The first keys of eval_<split>.json: what was evaluated, on which images, and what was
    skipped (single- and multi-label alike)."""
    return {
        "run": str(run.path),
        "data": source,
        "split": split,
        "tta": tta,
        "views": ["identity"] if split == "oof" else list(predictor.views(tta)),
        "classes": predictor.classes,
        "task": task,
        "n_images": len(target.labels),
        "skipped": [{"path": p, "reason": r} for p, r in target.skipped],
    }


def run_eval_multilabel(
    run: RunDir,
    predictor: Predictor,
    data: str | Path | None,
    split: str,
    tta: bool,
    n_boot: int,
    batch_size: int,
    log: Log,
    device: str = "auto",
) -> dict[str, Any]:
    """`run_eval` for a multi-label run: per-label temperatures fitted on val (the single-label
    rule, label by label), per-label thresholds chosen on val (Youden's J; RUN/thresholds.json,
    what predict and serve call labels with), then per-label AUC/AP/sensitivity/specificity with
    bootstrap CIs on SPLIT, and macro/micro AUC and mAP over the labels with enough positives.

    A k-fold run (RUN/oof_logits.npz) fits its temperatures and thresholds on the out-of-fold
    predictions instead of val (`fitted_on: oof`); `--split oof` reports on those same images,
    and any other split adds each member's macro ROC-AUC alone (`members`)."""
    classes = predictor.classes
    oof = read_oof_logits(run, classes, multilabel=True)
    items: list[tuple[str, Any]] = []
    if split == "oof":
        target, source, tta = _oof_target(run, oof, data), str(run.oof_logits), False
    else:
        items, source = _split_items(run, data, split, classes)
        target = collect_logits(predictor, items, tta, batch_size, (f"eval {split}", log))
    fitted_on = "val" if oof is None else "oof"
    if oof is not None:
        val = oof
    elif split == "val" and data is None:
        val = target
    else:
        val_items = _split_csv_items(run, "val", classes)
        val = collect_logits(predictor, val_items, tta, batch_size, ("eval val (calibration)", log))
    if len(target.labels) == 0:
        raise DataError(f"no readable images in the {split} split of {source}")
    calibration, temperatures = _multilabel_calibration(run, val, tta, fitted_on)
    # Chosen on uncalibrated probabilities (what predict returns by default); the report reads
    # calibrated ones, at the same thresholds moved by each label's T (the same images called).
    chosen = _write_thresholds(run, classes, val, fitted_on)
    thresholds = [0.5 if t is None else t for t in chosen]
    scaled = scaled_thresholds(thresholds, temperatures)
    on_probs = [None if c is None else t for c, t in zip(chosen, scaled, strict=True)]
    probs = sigmoid_probs(target.values, temperatures)
    metrics = multilabel_report(target.labels, probs, classes, on_probs, n_boot)
    uncalibrated = multilabel_report(
        target.labels, sigmoid_probs(target.values), classes, chosen, n_boot=0
    )
    result: dict[str, Any] = {
        **_result_header(run, source, split, tta, predictor, "multilabel", target),
        "calibration": calibration,
        "thresholds": thresholds,
        "metrics": metrics,
        "uncalibrated": {k: uncalibrated[k] for k in ("macro_auc", "micro_auc", "map", "nll")},
    }
    if predictor.members and split != "oof":
        result["members"] = multilabel_member_metrics(
            predictor, items, batch_size, device, metrics["min_positives"]
        )
    rows = [
        PredictionRow(
            path,
            label_text(y, classes),
            called_labels(p, classes, scaled),
            dict(zip(classes, p.tolist(), strict=True)),
        )
        for path, y, p in zip(target.paths, target.labels, probs, strict=True)
    ]
    run.write_predictions(split, classes, rows)
    run.write_json(run.eval_json(split), json_safe(result))
    log(f"medfit eval: {run.path} on {split} ({len(target.labels)} images), multi-label")
    for line in report_lines(metrics):
        log("  " + line)
    log("  " + multilabel_calibration_line(calibration))
    for line in member_lines(result):
        log(line)
    return result


def _multilabel_calibration(
    run: RunDir, val: Logits, tta: bool, fitted_on: str
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Per-label temperatures fitted on `val` (written to calibration.json), or none with the
    reason when there are too few images."""
    try:
        calibration = calibrate_multilabel(val.values, val.labels)
    except TooFewToCalibrate as exc:
        return {
            "temperatures": None,
            "fitted": False,
            "fitted_on": fitted_on,
            "reason": str(exc),
            "tta": tta,
        }, None
    calibration = {**calibration, "fitted": True, "fitted_on": fitted_on, "tta": tta}
    write_calibration(run.path, calibration)
    return calibration, np.asarray(calibration["temperatures"], dtype=float)


def _write_thresholds(
    run: RunDir, classes: list[str], val: Logits, fitted_on: str
) -> list[float | None]:
    """Each label's threshold by Youden's J on the uncalibrated `val` probabilities, written to
    RUN/thresholds.json (0.5 for a label without both classes there: None in the result)."""
    chosen = choose_thresholds(val.labels, sigmoid_probs(val.values))
    run.write_json(
        run.thresholds,
        json_safe(
            {
                "labels": classes,
                "thresholds": [0.5 if t is None else t for t in chosen],
                "rule": f"Youden's J per label on {fitted_on} ({len(val.labels)} images); 0.5 "
                f"for a label without positives and negatives in {fitted_on}",
                "chosen": [t is not None for t in chosen],
                "fitted_on": fitted_on,
            }
        ),
    )
    return chosen


def multilabel_calibration_line(calibration: dict[str, Any]) -> str:
    if not calibration.get("fitted"):
        return f"calibration: not fitted ({calibration.get('reason', '')})"
    applied = [bool(a) for a in calibration.get("applied", [])]
    on = "out-of-fold" if calibration.get("fitted_on") == "oof" else "val"
    return (
        f"calibration: a temperature per label on {calibration.get('n_images')} {on} images, "
        f"applied to {sum(applied)} of {len(applied)} labels (the others did not prove "
        f"themselves on held-out halves of {on}; T = 1)"
    )


def run_task(run: RunDir, classes: list[str]) -> str:
    """The run's task, ordinal, multiclass or multilabel: its resolved `data.task`, or `auto`
    resolved from the class names for runs whose config predates the field."""
    cfg = RunConfig.load(run.config)
    task = getattr(cfg.data, "task", "auto")
    return task if task == "multilabel" else resolve_task(task, classes)


# --- which images ----------------------------------------------------------------------------


def _split_items(
    run: RunDir, data: str | Path | None, split: str, classes: list[str]
) -> tuple[list[tuple[str, Any]], str]:
    cfg = RunConfig.load(run.config)
    if data is None and split == "val":
        items = _split_csv_items(run, "val", classes)
        missing = listed_files_missing(run.split, "val", [path for path, _ in items])
        if missing is not None:
            raise missing
        return items, str(run.split)
    root = str(data) if data is not None else cfg.data.root
    if data is None and not os.path.exists(os.path.expanduser(root)):
        raise data_moved(run.path, root)
    index = load_index(replace(cfg.data, root=root), cfg.train.seed)
    samples = index.split(split)
    if not samples:
        present = sorted({s.split for s in index.samples})
        raise DataError(
            f"no '{split}' split in {root} (it has: {', '.join(present) or 'nothing'}); "
            f"add {root}/{split}/<class>/ images, pass --data, or use --split val"
        )
    if index.multilabel:
        if index.classes != classes:
            raise DataError(
                f"{root}: its labels ({', '.join(index.classes)}) are not the run's "
                f"({', '.join(classes)})"
            )
        return [(s.path, list(s.targets or ())) for s in samples], root
    return [(s.path, _class_index(index.classes[s.label], classes, root)) for s in samples], root


def read_oof_logits(run: RunDir, classes: list[str], multilabel: bool = False) -> Logits | None:
    """The out-of-fold logits of a k-fold run (one view: each image scored by the member that
    held it out); None for any other run. Labels are (N,) class indices, or (N, L) 0/1 rows for
    a multi-label run."""
    if not run.oof_logits.is_file():
        return None
    try:
        with np.load(run.oof_logits, allow_pickle=False) as saved:
            if [str(c) for c in saved["classes"]] != classes:
                raise MedfitError(f"{run.oof_logits}: classes differ from the members'")
            logits, labels = saved["logits"][None], saved["labels"].astype(int)
            paths = [str(p) for p in saved["paths"]]
            if labels.ndim != (2 if multilabel else 1) or labels.shape[0] != logits.shape[1]:
                raise ValueError(f"labels of shape {labels.shape} beside logits {logits.shape}")
    except (OSError, KeyError, ValueError) as exc:
        raise MedfitError(
            f"{run.oof_logits} is unreadable ({exc}); write it again: medfit train --resume "
            f"{run.path} --folds K"
        ) from None
    return Logits(logits, labels, paths, [])


def _split_csv_items(run: RunDir, split: str, classes: list[str]) -> list[tuple[str, Any]]:
    """The readable rows of RUN/split.csv for one split, as (path, class index)."""
    if not run.split.is_file():
        raise MedfitError(f"{run.path} has no split.csv; pass --data with a val folder")
    rows = [r for r in run.read_split_rows() if r.split == split and r.ok]
    if run_task(run, classes) == "multilabel":
        return [(r.path, _label_vector(r.label, classes, str(run.split))) for r in rows]
    return [(r.path, _class_index(r.label, classes, str(run.split))) for r in rows]


def _label_vector(text: str, classes: list[str], source: str) -> list[int]:
    vector = label_vector(text, classes)
    if vector is None:
        raise DataError(f"{source}: labels {text!r} are not all ones the run knows ({classes})")
    return vector


def _class_index(label: str, classes: list[str], source: str) -> int:
    if label not in classes:
        raise DataError(f"{source}: class {label!r} is not one the run knows ({classes})")
    return classes.index(label)


# --- logits ----------------------------------------------------------------------------------


def collect_logits(
    predictor: Predictor,
    items: Sequence[tuple[str, Any]],
    tta: bool,
    batch_size: int = 32,
    progress: tuple[str, Callable[[str], None]] | None = None,
) -> Logits:
    """Decode with the run's preprocessing and run the model; unreadable files are skipped.
    `progress` = (what, log): show progress as `ticking` does."""
    chunks: list[np.ndarray] = []
    labels: list[Any] = []  # class indices, or 0/1 lists (multi-label)
    paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    starts: Iterable[int] = range(0, len(items), batch_size)
    if progress is not None:
        starts = ticking(starts, math.ceil(len(items) / batch_size), *progress)
    for start in starts:
        squares = []
        for path, label in items[start : start + batch_size]:
            try:
                squares.append(predictor.load_square(path))
            except DecodeError as exc:
                skipped.append((path, str(exc).removeprefix(f"{path}: ")))
                continue
            labels.append(label)
            paths.append(path)
        if squares:
            chunks.append(predictor.view_logits(predictor.model_input(np.stack(squares)), tta))
    k, v = len(predictor.classes), len(predictor.views(tta))
    values = np.concatenate(chunks, axis=1) if chunks else np.zeros((v, 0, k), np.float32)
    shape = (0, k) if items and not isinstance(items[0][1], int) else (0,)
    array = np.asarray(labels, dtype=int) if labels else np.zeros(shape, dtype=int)
    return Logits(values, array, paths, skipped)


# --- outputs ---------------------------------------------------------------------------------


def prediction_rows(target: Logits, probs: np.ndarray, classes: list[str]) -> list[PredictionRow]:
    """The predictions CSV's rows: each readable image, its label and the argmax class."""
    rows = []
    for path, y, p in zip(target.paths, target.labels, probs, strict=True):
        by_class = dict(zip(classes, p.tolist(), strict=True))
        rows.append(PredictionRow(path, classes[y], classes[int(p.argmax())], by_class))
    return rows
