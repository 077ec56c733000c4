"""The report's figures, drawn with matplotlib's Agg canvas and returned as base64 PNG.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot): no global backend or figure
state, so a report can be written from a server or a notebook without touching its plots.
User text (class names) has its `$` escaped: a class named `$x$` is drawn as typed, not as a
formula.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MAX_EPOCH_TICKS = 15  # up to here every epoch gets its tick; beyond, labels would collide
DPI = 110  # sharp on screen and in print, while a 4-panel figure stays under ~150 KB
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
TRAIN, VAL, EXTRA, LR = "#0072B2", "#D55E00", "#009E73", "#CC79A7"
TIMING = {"data_s": "#E69F00", "augment_s": "#56B4E9", "compute_s": "#0072B2", "eval_s": "#999999"}
TIMING_NAMES = {
    "data_s": "data wait",
    "augment_s": "augmentation",
    "compute_s": "compute",
    "eval_s": "validation",
}


def render_png(draw: Callable[[Figure], None], size: tuple[float, float]) -> str:
    """Draw into a fresh figure of `size` inches and return it as base64 PNG text."""
    with matplotlib.rc_context(
        {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
    ):
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        draw(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _column(history: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in history])


def stage_boundaries(history: Sequence[dict[str, Any]]) -> list[float]:
    """x positions (between epochs) where the stage changes, e.g. head -> full."""
    return [
        (prev["epoch"] + row["epoch"]) / 2
        for prev, row in itertools.pairwise(history)
        if prev.get("stage") != row.get("stage")
    ]


Panel = tuple[str, list[tuple[str, str, str]]]  # title, [(history key, legend name, colour)]
# Single-label runs: loss, accuracy, balanced accuracy and the learning rate.
CLASS_PANELS: list[Panel] = [
    ("loss", [("train_loss", "train", TRAIN), ("val_loss", "val", VAL)]),
    ("accuracy", [("train_acc", "train", TRAIN), ("val_acc", "val", VAL)]),
    (
        "balanced accuracy (val)",
        [
            ("val_balanced_accuracy", "val", VAL),
            ("selection_score", "selection score (smoothed)", EXTRA),
        ],
    ),
    ("learning rate", [("lr", "lr", LR)]),
]
# Multi-label runs: val_acc there is a label-wise accuracy at p = 0.5 (mostly the share of absent
# findings), so the panel that matters is the macro ROC-AUC that selects the epoch.
MULTILABEL_PANELS: list[Panel] = [
    ("loss (binary cross-entropy)", [("train_loss", "train", TRAIN), ("val_loss", "val", VAL)]),
    (
        "macro ROC-AUC (val)",
        [
            ("val_macro_auc", "val", VAL),
            ("selection_score", "selection score (smoothed)", EXTRA),
        ],
    ),
    ("learning rate", [("lr", "lr", LR)]),
]


def learning_curves(
    history: Sequence[dict[str, Any]], best_epoch: int | None, panels: Sequence[Panel] = ()
) -> str:
    """One panel per `panels` entry (default CLASS_PANELS) per epoch, the last being the learning
    rate (log scale); stage changes and the best epoch marked."""
    panels = list(panels or CLASS_PANELS)
    epochs = _column(history, "epoch")

    def draw(fig: Figure) -> None:
        axes = fig.subplots(1, len(panels), sharex=True)
        for ax, (title, series) in zip(axes, panels, strict=True):
            for key, name, colour in series:
                values = _column(history, key)
                if np.isfinite(values).any():
                    ax.plot(epochs, values, marker="o", ms=3, color=colour, label=name)
            if not ax.lines:  # an older run without this column: say so, not an empty frame
                ax.text(0.5, 0.5, "not recorded", ha="center", transform=ax.transAxes)
            for x in stage_boundaries(history):
                ax.axvline(x, color="#555555", ls="--", lw=1)
            if best_epoch is not None:
                ax.axvline(best_epoch, color=EXTRA, lw=4, alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            _epoch_axis(ax, epochs)
            ax.grid(alpha=0.3)
            if len(ax.get_legend_handles_labels()[0]) > 1:
                ax.legend(fontsize=7, loc="best")
        if np.nanmax(_column(history, "lr"), initial=0) > 0:
            axes[-1].set_yscale("log")

    return render_png(draw, (11 * len(panels) / 4, 2.8))


def _epoch_axis(ax: Axes, epochs: np.ndarray) -> None:
    """Whole epochs only, with room either side (one epoch would otherwise get ticks like 0.95)."""
    if len(epochs):
        ax.set_xlim(float(np.nanmin(epochs)) - 0.6, float(np.nanmax(epochs)) + 0.6)
    if len(epochs) <= MAX_EPOCH_TICKS:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def timing_chart(history: Sequence[dict[str, Any]]) -> str:
    """Stacked seconds per epoch: where the epoch went (waiting for data vs the model)."""
    epochs = _column(history, "epoch")

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        bottom = np.zeros(len(history))
        for key, colour in TIMING.items():
            values = np.nan_to_num(_column(history, key))
            ax.bar(epochs, values, bottom=bottom, color=colour, label=TIMING_NAMES[key])
            bottom += values
        ax.set_xlabel("epoch")
        ax.set_ylabel("seconds")
        _epoch_axis(ax, epochs)
        ax.legend(fontsize=7, ncols=4, loc="upper center", bbox_to_anchor=(0.5, 1.18))
        ax.grid(axis="y", alpha=0.3)

    return render_png(draw, (7, 2.6))


def time_to_accuracy(
    runs: Mapping[str, Sequence[dict[str, Any]]],
    target: float | None,
    key: str = "val_acc",
    ylabel: str = "val accuracy",
) -> str:
    """Val accuracy (or the metric `key`) against cumulative training seconds, one line per run;
    `target` dashed."""
    colours = itertools.cycle([VAL, TRAIN, EXTRA, LR, "#CC79A7", "#000000", "#D55E00"])

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        for (name, history), colour in zip(runs.items(), colours, strict=False):
            seconds = np.nancumsum(_column(history, "epoch_s"))
            ax.plot(seconds, _column(history, key), marker="o", ms=3, color=colour,
                    label=_short(name, 30))  # fmt: skip
        if target is not None:
            ax.axhline(target, color="#555555", ls="--", lw=1)
        ax.set_xlabel("training seconds (sum of epoch times)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")

    return render_png(draw, (7, 3.2))


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Counts with row percentages (recall of each true class) on a colour scale of the latter."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = len(classes)
    side = min(9.0, 2.2 + 0.7 * k)
    names = [_short(c) for c in classes]

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(
            range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center"
        )
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 20:  # beyond that the numbers are unreadable; the colours still tell the story
            for i in range(k):
                for j in range(k):
                    colour = "white" if share[i, j] > 0.6 else "black"
                    text = f"{int(counts[i, j])}\n{share[i, j]:.0%}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)

    return render_png(draw, (side, side))


def reliability(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], temperature: float | None
) -> str:
    """Accuracy vs confidence per bin, before and after temperature scaling, with bin counts."""

    def points(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kept = [r for r in rows if r.get("count")]
        return (
            np.array([r["confidence"] for r in kept], dtype=float),
            np.array([r["accuracy"] for r in kept], dtype=float),
            np.array([r["count"] for r in kept], dtype=float),
        )

    def draw(fig: Figure) -> None:
        ax, hist = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
        ax.plot([0, 1], [0, 1], color="#777777", ls=":", label="perfect calibration")
        t = f" (T = {temperature:.2f})" if temperature else ""
        pairs = ((before, "before", VAL, -0.008), (after, f"after{t}", TRAIN, 0.008))
        for rows, name, colour, shift in pairs:  # bars side by side, not on top of each other
            conf, acc, count = points(rows)
            if len(conf):
                ax.plot(conf, acc, marker="o", color=colour, label=name)
                hist.bar(conf + shift, count, width=0.016, color=colour, alpha=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        hist.set_xlabel("confidence (top class probability)")
        hist.set_ylabel("images")

    return render_png(draw, (5, 4.2))


def roc_curve(
    positive: Sequence[bool], scores: Sequence[float], point: tuple[float, float], threshold: float
) -> str:
    """The ROC curve of the positive class with the operating point (1 - specificity,
    sensitivity) at `threshold` marked."""
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    fpr, tpr, _ = sk_roc_curve(np.asarray(positive, dtype=int), np.asarray(scores, dtype=float))
    auc = roc_auc_score(np.asarray(positive, dtype=int), np.asarray(scores, dtype=float))

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="#777777", ls=":", label="chance")
        ax.plot(fpr, tpr, color=TRAIN, label=f"ROC (AUC {auc:.3f})")
        ax.plot(*point, "o", ms=8, color=VAL, label=f"operating point (p >= {threshold:.3f})")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_xlabel("1 - specificity (false positive rate)")
        ax.set_ylabel("sensitivity (true positive rate)")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)

    return render_png(draw, (4.4, 4.2))


@dataclass
class LabelCurve:
    """One label's scores on the evaluated split and its operating threshold (None: none)."""

    name: str
    positive: np.ndarray  # bool (N,)
    scores: np.ndarray  # float (N,): the label's (calibrated) probability
    threshold: float | None


LABELS_PER_ROW = 2  # each label is a ROC panel and a PR panel side by side: 4 panels a row


def roc_pr_grid(curves: Sequence[LabelCurve]) -> str:
    """Small multiples: for each label its ROC curve and its precision-recall curve, side by side,
    with the operating point at its threshold marked on both; the PR panel's dotted line is the
    label's prevalence (what a model without skill scores)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    cols = LABELS_PER_ROW * 2
    rows = math.ceil(len(curves) / LABELS_PER_ROW)

    def draw(fig: Figure) -> None:
        axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
        for ax in axes.ravel()[2 * len(curves) :]:
            ax.set_visible(False)
        for k, c in enumerate(curves):
            roc, pr = axes.ravel()[2 * k], axes.ravel()[2 * k + 1]
            y = np.asarray(c.positive, dtype=int)
            s = np.asarray(c.scores, dtype=float)
            fpr, tpr, _ = sk_roc_curve(y, s)
            precision, recall, _ = precision_recall_curve(y, s)
            name = _short(c.name, 22)
            roc.plot([0, 1], [0, 1], color="#777777", ls=":")
            roc.plot(fpr, tpr, color=TRAIN)
            roc.set_title(f"{name}: AUC {roc_auc_score(y, s):.3f}", fontsize=8)
            prevalence = float(y.mean())
            pr.axhline(prevalence, color="#777777", ls=":")
            pr.step(recall, precision, where="post", color=VAL)
            pr.set_title(f"{name}: AP {average_precision_score(y, s):.3f}", fontsize=8)
            if c.threshold is not None:
                called = s >= c.threshold
                tp = int((called & (y == 1)).sum())
                sens = tp / max(int(y.sum()), 1)
                fp_rate = int((called & (y == 0)).sum()) / max(int((y == 0).sum()), 1)
                roc.plot(fp_rate, sens, "o", ms=5, color=VAL)
                if called.any():
                    pr.plot(sens, tp / int(called.sum()), "o", ms=5, color=TRAIN)
            for ax in (roc, pr):
                ax.set_xlim(-0.02, 1.02)
                ax.set_ylim(-0.02, 1.02)
                ax.grid(alpha=0.3)
                ax.tick_params(labelsize=7)
            roc.set_xlabel("1 - specificity", fontsize=7)
            roc.set_ylabel("sensitivity", fontsize=7)
            pr.set_xlabel("recall (sensitivity)", fontsize=7)
            pr.set_ylabel("precision (PPV)", fontsize=7)

    return render_png(draw, (11, 2.6 * rows))


def cooccurrence(counts: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Images per pair of labels (symmetric; the diagonal, drawn grey, is each label's count), in
    class order, every cell annotated. Colour is the off-diagonal count, so that pairs are not
    washed out by the labels' own totals."""
    matrix = np.asarray(counts, dtype=float)
    k = len(classes)
    off = matrix.copy()
    np.fill_diagonal(off, np.nan)
    top = max(1.0, float(np.nanmax(off)) if k > 1 else 1.0)
    side = min(8.0, 2.0 + 0.42 * k)
    names = [_short(c) for c in classes]

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.imshow(np.ma.masked_invalid(off), cmap="Oranges", vmin=0, vmax=top)
        ax.imshow(
            np.ma.masked_where(~np.eye(k, dtype=bool), np.ones((k, k))),
            cmap="Greys", vmin=0, vmax=4,
        )  # fmt: skip
        ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0,
                      ha="right" if k > 3 else "center")  # fmt: skip
        ax.set_yticks(range(k), names)
        if k <= 24:  # beyond that the numbers are unreadable; the colours still tell the story
            size = 8 if k <= 10 else 7
            for i in range(k):
                for j in range(k):
                    diagonal = i == j
                    colour = "white" if not diagonal and off[i, j] > 0.6 * top else "black"
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                            fontsize=size, color=colour,
                            fontweight="bold" if diagonal else "normal")  # fmt: skip

    return render_png(draw, (side, side))


def _short(name: str, limit: int = 18) -> str:
    """A tick label: at most `limit` characters, `$` escaped so mathtext never parses it."""
    short = name if len(name) <= limit else name[: limit - 1] + "…"
    return short.replace("$", r"\$")
