"""The sections of a multi-label run's report (several findings per image, a sigmoid per label).

Accuracy, the confusion matrix and the softmax reliability diagram have no meaning there: an image
is not one class. What a reader needs instead, all from the run directory:

  headline      macro ROC-AUC with its 95% CI, micro AUC and mAP, over the labels with enough
                positives and negatives to be measured; the others named with why, not averaged;
  per_label     positives, AUC, AP, sensitivity / specificity at each label's threshold (chosen
                on val), and whether its temperature was applied;
  roc_pr        each measured label's ROC and precision-recall curves, from predictions_<split>;
  cooccurrence  how often two labels share an image in the train split (split.csv);
  curves        val macro ROC-AUC (what selects the epoch) and the losses per epoch;
  label_errors  the images with the largest binary cross-entropy over their labels;
  gradcam       the logit of one label on images that have it (`medfit report --label NAME`).

Every builder returns {"absent": why} when its inputs are missing, like `sections`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import numpy as np

from medfit.data.sources import label_vector
from medfit.errors import MedfitError
from medfit.report import plots, sections
from medfit.report.images import thumbnail
from medfit.report.rundata import RunData, positive_labels
from medfit.rundir import PredictionRow

Section = dict[str, Any]
TOP_ERRORS = 12  # as many as the single-label "top losses"
ERROR_LABELS_SHOWN = 3  # per image: its worst labels, enough to see what went wrong
PAIRS_NAMED = 5  # most frequent label pairs named under the co-occurrence map
HEADLINE = (
    ("macro_auc", "Macro ROC-AUC"),
    ("micro_auc", "Micro ROC-AUC"),
    ("map", "mAP (mean average precision)"),
)


def classes_of(data: RunData) -> list[str]:
    return [str(c) for c in (data.evaluation or {}).get("classes") or data.classes]


def metrics_of(data: RunData) -> dict[str, Any]:
    metrics = (data.evaluation or {}).get("metrics")
    return metrics if isinstance(metrics, dict) else {}


# --- headline ---------------------------------------------------------------------------------


def headline(data: RunData) -> Section:
    s = data.summary
    classes = data.classes or classes_of(data)
    facts = [
        ("model", s.get("model") or sections.config_value(data, "model", "name")),
        (
            "task",
            f"multi-label: {len(classes)} labels (a sigmoid per label: an image may have "
            "several findings, or none)",
        ),
        ("labels", ", ".join(classes) if classes else None),
        ("train / val images", sections._pair(s.get("train_images"), s.get("val_images"))),
        ("best epoch", sections._pair(s.get("best_epoch"), s.get("epochs_run"), " of ")),
        ("selected on", s.get("selected_metric")),
        (
            "device, wall time",
            sections._pair(s.get("device"), sections._seconds(s.get("wall_s")), ", "),
        ),
    ]
    out: Section = {"facts": [(k, v) for k, v in facts if v not in (None, "")]}
    m = metrics_of(data)
    if data.evaluation and "per_label" in m:
        ci = m.get("ci95") or {}
        out["metrics"] = [
            (name, m.get(key), *(ci.get(key) or [None, None])) for key, name in HEADLINE
        ]
        out["measured"] = [str(x) for x in m.get("measured_labels") or []]
        out["too_rare"] = [(str(k), str(v)) for k, v in (m.get("too_rare") or {}).items()]
        out["min_positives"] = m.get("min_positives")
        out["n_labels"] = len(m.get("per_label") or {})
        out["n_images"] = data.evaluation.get("n_images", m.get("n_images", "?"))
        out["ece"] = m.get("ece")
        out["calibration"] = _calibration_line(data.evaluation.get("calibration") or {})
        out["source"] = (
            f"{data.split} split, {out['n_images']} images, probabilities scaled by each label's "
            "temperature where it was applied; 95% bootstrap CIs (images resampled with all "
            "their labels)"
        )
        if data.split == "val":
            out["warning"] = "val was used to select the model: these numbers are optimistic"
        return out
    row = _best_row(data)
    if row is not None:
        out["metrics"] = [
            (f"Val macro ROC-AUC (epoch {row['epoch']})", row.get("val_macro_auc"), None, None),
            ("Selection score (smoothed)", s.get("best_metric"), None, None),
        ]
        out["source"] = "validation set during training, over the labels val could measure (no CIs)"
    out["warning"] = sections.eval_missing(data)
    return out


def _best_row(data: RunData) -> dict[str, Any] | None:
    """The selected epoch's row (summary's best_epoch), else the one with the best val macro
    AUC; None when no row has one."""
    scored = [r for r in data.history if isinstance(r.get("val_macro_auc"), int | float)]
    best = data.summary.get("best_epoch")
    chosen = [r for r in scored if r.get("epoch") == best]
    if chosen:
        return chosen[0]
    return max(scored, key=lambda r: float(r["val_macro_auc"]), default=None)


def _calibration_line(cal: dict[str, Any]) -> str:
    if not cal.get("fitted"):
        reason = cal.get("reason")
        return f"uncalibrated: {reason}" if reason else "uncalibrated"
    applied = [bool(a) for a in cal.get("applied") or []]
    return (
        f"a temperature per label, fitted on {cal.get('n_images', '?')} val images: applied to "
        f"{sum(applied)} of {len(applied)} labels"
    )


# --- training ---------------------------------------------------------------------------------


def curves(data: RunData) -> Section:
    """Loss, val macro ROC-AUC (the selection metric) and learning rate per epoch, and a table of
    the same numbers."""
    if not data.history:
        return {"absent": data.no_history}
    best = data.summary.get("best_epoch")
    changes = sections.stage_changes(data.history)
    keys = ("train_loss", "val_loss", "val_macro_auc", "selection_score")
    rows = [
        {"epoch": r["epoch"], "stage": r.get("stage", ""), **{k: r.get(k) for k in keys}}
        for r in data.history
    ]
    best_epoch = best if isinstance(best, int) else None
    return {
        "png": plots.learning_curves(data.history, best_epoch, plots.MULTILABEL_PANELS),
        "stages": changes,
        "rows": rows,
        "best_epoch": best_epoch,
        "recorded": any(isinstance(r["val_macro_auc"], int | float) for r in rows),
    }


# --- evaluation -------------------------------------------------------------------------------


def per_label(data: RunData) -> Section:
    m = metrics_of(data)
    table = m.get("per_label")
    if not data.evaluation or not isinstance(table, dict) or not table:
        return {"absent": sections.eval_missing(data)}
    too_rare = m.get("too_rare") or {}
    cal = data.evaluation.get("calibration") or {}
    names = list(table)
    rows = []
    for j, name in enumerate(names):
        row = table[name] or {}
        ci = row.get("ci95") or {}
        cells = {
            key: (row.get(key), *(ci.get(key) or [None, None]))
            for key in ("auc", "ap", "sensitivity", "specificity")
        }
        rows.append(
            {
                "name": name,
                "positives": row.get("positives"),
                "negatives": row.get("negatives"),
                "too_rare": too_rare.get(name),
                "threshold": row.get("threshold"),
                "calibration": _temperature_cell(cal, j, name),
                **cells,
            }
        )
    rule = _threshold_rule(data)
    return {
        "rows": rows,
        "split": data.split,
        "n_images": data.evaluation.get("n_images", m.get("n_images")),
        "min_positives": m.get("min_positives"),
        "rule": rule,
        "exact_match": m.get("exact_match"),
    }


def _temperature_cell(cal: dict[str, Any], j: int, name: str) -> tuple[str, str | None]:
    """(short text, the full reason or None) for label j's temperature."""
    if not cal.get("fitted"):
        return "not fitted", cal.get("reason")
    reasons = cal.get("reasons") or {}
    why = reasons.get(name) or reasons.get(str(j))

    def at(key: str) -> Any:
        values = cal.get(key) or []
        return values[j] if j < len(values) else None

    applied, fitted, t = at("applied"), at("fitted_temperatures"), at("temperatures")
    if applied and isinstance(t, int | float):
        return f"T = {t:.2f} applied", why
    if isinstance(fitted, int | float):
        return f"not applied (fitted T = {fitted:.2f})", why
    return "not fitted", why


def _threshold_rule(data: RunData) -> str | None:
    try:
        saved = data.run.read_json(data.run.thresholds)
    except MedfitError:
        return None
    rule = saved.get("rule") if isinstance(saved, dict) else None
    return str(rule) if rule else None


def label_matrix(
    predictions: list[PredictionRow], classes: list[str]
) -> tuple[list[PredictionRow], np.ndarray, np.ndarray]:
    """The rows whose true labels and probabilities are all readable, their 0/1 labels (N, L)
    and probabilities (N, L)."""
    kept, truth, probs = [], [], []
    for p in predictions:
        vector = label_vector(p.label, classes)
        if vector is None or any(c not in p.probs for c in classes):
            continue
        kept.append(p)
        truth.append(vector)
        probs.append([p.probs[c] for c in classes])
    shape = (len(kept), len(classes))
    return (
        kept,
        np.asarray(truth, dtype=int).reshape(shape),
        np.asarray(probs, dtype=float).reshape(shape),
    )


def roc_pr(data: RunData) -> Section:
    """The measured labels' ROC and PR curves from predictions_<split>.csv."""
    if not data.evaluation:
        return {"absent": sections.eval_missing(data)}
    if not data.predictions:
        missing = data.run.predictions(str(data.split)).name
        return {"absent": f"no {missing}: re-run `medfit eval {data.path}`"}
    m = metrics_of(data)
    classes = classes_of(data)
    rows, truth, probs = label_matrix(data.predictions, classes)
    per = m.get("per_label") or {}
    measured = [c for c in m.get("measured_labels") or [] if c in classes]
    curves = []
    for name in measured:
        j = classes.index(name)
        y = truth[:, j].astype(bool)
        if y.any() and not y.all():
            threshold = (per.get(name) or {}).get("threshold")
            curves.append(plots.LabelCurve(name, y, probs[:, j], threshold))
    if not curves:
        need = m.get("min_positives", "?")
        return {
            "absent": f"no label has {need} positive and {need} negative {data.split} images: "
            "there is no curve worth drawing (see the per-label table)"
        }
    return {
        "png": plots.roc_pr_grid(curves),
        "labels": [c.name for c in curves],
        "not_drawn": [c for c in classes if c not in measured],
        "n_images": len(rows),
    }


def cooccurrence(data: RunData) -> Section:
    """Images per pair of labels in the train split of split.csv (the diagonal: per label)."""
    classes = data.classes or classes_of(data)
    try:
        split_rows = data.run.read_split_rows()
    except MedfitError as exc:
        return {"absent": f"{exc}"}
    train = [r for r in split_rows if r.ok and r.split == "train"]
    if not train or not classes:
        return {"absent": f"no train rows in {data.run.split.name}: the run has not started yet"}
    vectors = [label_vector(r.label, classes) for r in train]
    y = np.asarray([v for v in vectors if v is not None], dtype=int).reshape(-1, len(classes))
    counts = (y.T @ y).astype(int)
    pairs = sorted(
        (
            (int(counts[i, j]), classes[i], classes[j])
            for i, j in itertools.combinations(range(len(classes)), 2)
        ),
        key=lambda t: -t[0],
    )
    per_image = Counter(int(n) for n in y.sum(1))
    return {
        "png": plots.cooccurrence(counts.tolist(), classes),
        "classes": classes,
        "counts": counts.tolist(),
        "table": list(zip(classes, counts.tolist(), strict=True)),
        "n_images": len(y),
        "unreadable": len(vectors) - len(y),
        "no_label": per_image.get(0, 0),
        "several": sum(n for k, n in per_image.items() if k > 1),
        "pairs": [(a, b, n) for n, a, b in pairs[:PAIRS_NAMED] if n > 0],
    }


def label_calibration(data: RunData) -> Section:
    """Per-label temperatures: how many were applied, and NLL / class-wise ECE before and after
    on val (where they were fitted) and on the evaluated split."""
    ev = data.evaluation
    if not ev:
        return {"absent": sections.eval_missing(data)}
    cal = ev.get("calibration") or {}
    m = metrics_of(data)
    uncal = ev.get("uncalibrated") or {}
    if not cal.get("fitted"):
        return {"not_fitted": cal.get("reason") or "no temperatures were fitted"}
    classes = classes_of(data)
    applied = [c for c, a in zip(classes, cal.get("applied") or [], strict=False) if a]
    return {
        "fitted_on": cal.get("n_images"),
        "applied": applied,
        "n_labels": len(cal.get("applied") or []),
        "rows": [
            (
                "negative log-likelihood per (image, label)",
                cal.get("nll_before"),
                cal.get("nll_after"),
                uncal.get("nll"),
                m.get("nll"),
            ),
            ("class-wise ECE", cal.get("ece_before"), cal.get("ece_after"), None, m.get("ece")),
        ],
    }


def label_errors(data: RunData) -> Section:
    """The images whose labels the model got most wrong: the largest binary cross-entropy summed
    over the labels, with the labels wrong at their thresholds (missed or false) named."""
    if not data.evaluation:
        return {"absent": sections.eval_missing(data)}
    if not data.predictions:
        missing = data.run.predictions(str(data.split)).name
        return {"absent": f"no {missing}: re-run `medfit eval {data.path}`"}
    classes = classes_of(data)
    rows, truth, probs = label_matrix(data.predictions, classes)
    if not rows:
        return {"absent": f"no readable rows in {data.run.predictions(str(data.split)).name}"}
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    cell_loss = -(truth * np.log(p) + (1 - truth) * np.log1p(-p))
    losses = cell_loss.sum(1)
    bases = sections.image_bases(data)
    wrong = 0
    mistakes_of: list[list[tuple[str, str, float]]] = []
    for i, row in enumerate(rows):
        called = positive_labels(row.predicted)
        mistakes = []
        for j in np.argsort(-cell_loss[i], kind="stable"):
            name = classes[j]
            if (name in called) != bool(truth[i, j]):
                kind = "missed" if truth[i, j] else "wrongly called"
                mistakes.append((kind, name, float(probs[i, j])))
        wrong += bool(mistakes)
        mistakes_of.append(mistakes)
    order = np.argsort(-losses, kind="stable")[:TOP_ERRORS]
    cards = []
    for i in order:
        png, why = thumbnail(rows[i].path, bases)
        cards.append(
            {
                "p": rows[i],
                "png": png,
                "why": why,
                "loss": float(losses[i]) / len(classes),
                "mistakes": mistakes_of[i][:ERROR_LABELS_SHOWN],
                "more": max(0, len(mistakes_of[i]) - ERROR_LABELS_SHOWN),
            }
        )
    return {"cards": cards, "wrong": wrong, "total": len(rows)}


# --- Grad-CAM ---------------------------------------------------------------------------------


def choose_label(data: RunData, label: str | None) -> tuple[str | None, str]:
    """(the label Grad-CAM explains, why that one): `label` when given, else the measured label
    with the most positives in the evaluated split (ties: class order), else the label with the
    most positives at all; None when no image has any label."""
    if label is not None:
        return label, "chosen with --label"
    m = metrics_of(data)
    per = m.get("per_label") or {}
    counts = {name: int((row or {}).get("positives") or 0) for name, row in per.items()}
    if not counts:
        tally: Counter[str] = Counter()
        for p in data.predictions:
            tally.update(positive_labels(p.label))
        counts = {c: tally.get(c, 0) for c in classes_of(data)}
    measured = [c for c in m.get("measured_labels") or [] if c in counts]
    pool = measured or [c for c, n in counts.items() if n > 0]
    if not pool:
        return None, ""
    best = max(pool, key=lambda c: counts[c])  # max keeps the first of equals: class order
    kind = "measured label" if measured else "label"
    return best, (
        f"the {kind} with the most {data.split} positives ({counts[best]}); explain another "
        f"with `medfit report {data.path} --label NAME`"
    )


def gradcam(data: RunData, enabled: bool, label: str | None = None) -> Section:
    why = sections.gradcam_unavailable(data, enabled)
    if why is not None:
        return {"absent": why}
    chosen, reason = choose_label(data, label)
    if chosen is None:
        return {"absent": f"no {data.split} image has any label to explain"}
    positives = [p for p in data.predictions if chosen in positive_labels(p.label)]
    if not positives:
        return {
            "absent": f"no {data.split} image is positive for {chosen}: choose another label "
            f"with `medfit report {data.path} --label NAME`"
        }
    from medfit.report.gradcam import overlays

    bases = sections.image_bases(data)
    result = overlays(data.path, data.predictions, bases, label=chosen, member=data.member)
    if not result.images:
        return {"absent": result.note or "no images to explain"}
    threshold = ((metrics_of(data).get("per_label") or {}).get(chosen) or {}).get("threshold")
    return {
        "result": result,
        "label": chosen,
        "why": reason,
        "positives": len(positives),
        "threshold": threshold if isinstance(threshold, int | float) else None,
    }
