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
from collections.abc import Callable, Mapping, Sequence
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


def learning_curves(history: Sequence[dict[str, Any]], best_epoch: int | None) -> str:
    """Loss, accuracy, balanced accuracy and LR per epoch; stage changes and best epoch marked."""
    epochs = _column(history, "epoch")
    panels = [
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

    def draw(fig: Figure) -> None:
        axes = fig.subplots(1, 4, sharex=True)
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
            axes[3].set_yscale("log")

    return render_png(draw, (11, 2.8))


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


def time_to_accuracy(runs: Mapping[str, Sequence[dict[str, Any]]], target: float | None) -> str:
    """Val accuracy against cumulative training seconds, one line per run; `target` dashed."""
    colours = itertools.cycle([VAL, TRAIN, EXTRA, LR, "#CC79A7", "#000000", "#D55E00"])

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        for (name, history), colour in zip(runs.items(), colours, strict=False):
            seconds = np.nancumsum(_column(history, "epoch_s"))
            ax.plot(seconds, _column(history, "val_acc"), marker="o", ms=3, color=colour,
                    label=_short(name, 30))  # fmt: skip
        if target is not None:
            ax.axhline(target, color="#555555", ls="--", lw=1)
        ax.set_xlabel("training seconds (sum of epoch times)")
        ax.set_ylabel("val accuracy")
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


def _short(name: str, limit: int = 18) -> str:
    """A tick label: at most `limit` characters, `$` escaped so mathtext never parses it."""
    short = name if len(name) <= limit else name[: limit - 1] + "…"
    return short.replace("$", r"\$")
