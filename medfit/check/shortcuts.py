"""Shortcuts: file or acquisition properties that predict the class by themselves.

If one class was scanned on another machine, saved in another format or padded with another
colour, a network learns that instead of the disease, and validation (drawn from the same
collection) rewards it. For each property we fit a trivial classifier on that property alone and
measure its cross-validated balanced accuracy (all splits pooled: the shortcut is a property of
how the data was collected):

- categorical (mode, format, size as WxH): each value predicts the class it is most over-
  represented in (count / class size), learnt on the training folds;
- numeric (width/height/aspect, corner and border brightness, burned-in text/markers in the
  corners — see `markers` —, JPEG quality): a depth-3 decision tree with balanced class weights.

Multi-label data have no one class per image: there the target is "any finding" vs "no finding"
(is an image abnormal at all?), the split a second hospital or scanner most often follows.

Balanced accuracy is 1/K for a majority-class or constant predictor whatever the imbalance, so
"chance" is 1/K. A property is flagged when it beats chance by MIN_MARGIN and by 3 standard errors
of a chance-level score on n images (sqrt(c(1-c)/n)); 32 images need +0.23 over 0.25, 1,000 binary
images +0.10 over 0.5. The report states the margin.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from medfit.check.context import Context
from medfit.check.markers import N_VALUES as N_MARKS

MARKERS = "burned-in text/markers"
EXAMPLES = 3  # images per class shown for a flagged marker property (most stroke pixels first)
MIN_MARGIN = 0.10
FOLDS = 5
MULTILABEL_TARGET = "any finding vs no finding"
MULTILABEL_NAMES = ["no finding", "any finding"]


def _properties(ctx: Context, rows: np.ndarray) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (kind, values) for the readable rows."""
    infos = [ctx.scan.infos[r] for r in rows]
    props: dict[str, tuple[str, np.ndarray]] = {
        "image mode": ("categorical", np.array([i.shown_mode for i in infos])),
        "file format": ("categorical", np.array([i.format for i in infos])),
        "image size": ("categorical", np.array([f"{i.width}x{i.height}" for i in infos])),
        "width/height": (
            "numeric",
            np.array([[i.width, i.height, i.width / max(1, i.height)] for i in infos], float),
        ),
        "corner/border brightness": (
            "numeric",
            np.array([[*i.corners, i.border] if i.corners else [0.0] * 5 for i in infos], float),
        ),
        MARKERS: (
            "numeric",
            np.array([i.marks if i.marks else [0.0] * N_MARKS for i in infos], float),
        ),
    }
    if any(i.jpeg_quality is not None for i in infos):
        quality = [i.jpeg_quality if i.jpeg_quality is not None else -1 for i in infos]
        props["JPEG quality"] = ("numeric", np.array(quality, float)[:, None])
    return props


def _target(ctx: Context, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """What a property should not predict, per row, and the names of its values: the class, or
    for multi-label data whether the image has any finding (MULTILABEL_NAMES)."""
    if ctx.multilabel:
        return ctx.targets[rows].any(axis=1).astype(np.int64), MULTILABEL_NAMES
    return ctx.labels[rows], ctx.classes


def find_shortcuts(ctx: Context) -> dict[str, Any]:
    """Balanced accuracy of each single-property classifier, flagged when clearly above chance."""
    rows = ctx.readable()
    labels, names = _target(ctx, rows)
    n_classes = len(np.unique(labels))
    if n_classes < 2 or len(rows) < 2 * FOLDS:
        reason = "too few readable images or classes"
        if ctx.multilabel:
            reason = "too few readable images, or not both images with and without a finding"
        return {"checked": False, "reason": reason, "properties": []}
    chance = 1.0 / n_classes
    margin = max(MIN_MARGIN, 3.0 * float(np.sqrt(chance * (1 - chance) / len(rows))))
    results = []
    for name, (kind, values) in _properties(ctx, rows).items():
        result = _score(name, kind, values, labels, names, ctx.options.seed, chance, margin)
        if name == MARKERS:
            result.update(_marker_details(ctx, rows, values, labels, names, result["flagged"]))
        results.append(result)
    results.sort(key=lambda r: -r["balanced_accuracy"])
    target = {"target": MULTILABEL_TARGET} if ctx.multilabel else {}
    return {
        "checked": True,
        **target,
        "images": len(rows),
        "chance": round(chance, 4),
        "margin": round(margin, 4),
        "flagged": [r["property"] for r in results if r["flagged"]],
        "properties": results,
    }


def _score(
    name: str,
    kind: str,
    values: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    seed: int,
    chance: float,
    margin: float,
) -> dict[str, Any]:
    distinct = (
        len({str(v) for v in values.tolist()})
        if values.ndim == 1
        else len(np.unique(values, axis=0))
    )
    if distinct < 2:
        accuracy = chance  # a constant property predicts nothing
    else:
        pred = _cv_predict(kind, values, labels, seed)
        accuracy = _balanced_accuracy(labels, pred)
    result: dict[str, Any] = {
        "property": name,
        "balanced_accuracy": round(accuracy, 4),
        "above_chance": round(accuracy - chance, 4),
        "flagged": distinct > 1 and accuracy - chance >= margin,
        "distinct_values": distinct,
    }
    if kind == "categorical":
        result["by_class"] = _value_table(values, labels, names)
    return result


def _marker_details(
    ctx: Context,
    rows: np.ndarray,
    values: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    flagged: bool,
) -> dict[str, Any]:
    """How many images per class carry strokes, and (when flagged) the most marked ones, so
    that a report can show what the letters look like."""
    marked = values[:, -1] > 0  # at least one stroke component
    counts = {name: int(np.sum(marked[labels == c])) for c, name in enumerate(names)}
    details: dict[str, Any] = {"images_with_marks_by_class": counts}
    if flagged:
        score = values[:, :-1].sum(axis=1)
        examples = []
        for c in np.unique(labels):
            mine = np.flatnonzero((labels == c) & marked)
            for i in mine[np.argsort(-score[mine], kind="stable")][:EXAMPLES]:
                examples.append({**ctx.ref(int(rows[i])), "stroke_fraction": round(score[i], 5)})
        details["examples"] = examples
    return details


def _cv_predict(kind: str, values: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold
    from sklearn.tree import DecisionTreeClassifier

    counts = np.bincount(labels)
    folds = max(2, min(FOLDS, int(counts[counts > 0].min())))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    pred = np.zeros_like(labels)
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        if kind == "categorical":
            pred[test] = _category_rule(values[train], labels[train], values[test])
        else:
            leaf = max(2, len(train) // 100)
            tree = DecisionTreeClassifier(
                max_depth=3, min_samples_leaf=leaf, class_weight="balanced", random_state=seed
            )
            tree.fit(values[train], labels[train])
            pred[test] = tree.predict(values[test])
    return pred


def _category_rule(train_v: np.ndarray, train_y: np.ndarray, test_v: np.ndarray) -> np.ndarray:
    """Each value -> the class it is most over-represented in; unseen values -> that of all."""
    classes = np.unique(train_y)
    size = {c: max(1, int(np.sum(train_y == c))) for c in classes}
    rule: dict[str, int] = {}
    for value in np.unique(train_v):
        here = Counter(train_y[train_v == value].tolist())
        rule[str(value)] = max(classes, key=lambda c: (here.get(int(c), 0) / size[c], -int(c)))
    fallback = max(classes, key=lambda c: (size[c], -int(c)))
    return np.array([rule.get(str(v), fallback) for v in test_v])


def _balanced_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    recalls = [np.mean(pred[labels == c] == c) for c in np.unique(labels)]
    return float(np.mean(recalls))


def _value_table(values: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The most common values and how each splits over the classes (for the report)."""
    table: dict[str, Any] = {}
    for value, _ in Counter(values.tolist()).most_common(6):
        here = Counter(labels[values == value].tolist())
        table[str(value)] = {classes[c]: int(here.get(c, 0)) for c in range(len(classes))}
    return table
