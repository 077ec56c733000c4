"""What a run directory says, read once into typed records that the rules take as input.

The rules never open files: `read_run_facts` gathers (through `medfit.rundir`) the history
(metrics.jsonl), the resolved config, the preprocessing actually used, the normalisation the
weights expect, the split sizes, the training images' own pixel size, an optional check.json and
`medfit eval`'s predictions.
Everything a rule needs is a field here, so rules stay pure and testable on synthetic records.

Multi-label runs (`data.task: multilabel`, sigmoid outputs): split.csv label cells are the positive
labels joined by "|" (`medfit.data.sources.label_vector`), so the per-class counts become positives
per label, `n_val` counts images, and the val curve a rule reads (`val_score`) is the val macro
ROC-AUC that selected the epoch, not the label-wise accuracy.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from medfit.config import RunConfig
from medfit.data.decode import DecodeError, decode_image
from medfit.data.sources import label_vector
from medfit.errors import MedfitError
from medfit.files import csv_value
from medfit.model.backbones import Preprocess
from medfit.rundir import EpochRow, RunDir, existing_run_dir, read_run_text

T = TypeVar("T")
# Keyword weight sources: anything else is a path whose WEIGHTS.json sidecar may give mean/std.
WEIGHT_KEYWORDS = ("auto", "hub", "lite", "none")
# Images decoded to decide whether the data is grayscale: a handful is enough, the question is
# about the modality, not individual files.
GRAY_SAMPLE = 8
# Training files whose header (width, height) is read to learn the images' own size: a median of
# 32 is stable when most files share a size, and reading headers costs milliseconds.
SIZE_SAMPLE = 32
# `medfit eval` writes predictions_<split>.csv; test is held out and what users report, so it wins.
PREDICTION_SPLITS = ("test", "val")


@dataclass(frozen=True)
class ClassPredictions:
    """Per-class counts of one prediction pass, in the run's class order."""

    source: str  # where the predictions come from, for the evidence
    classes: list[str]
    support: list[int]  # images whose label is the class
    predicted: list[int]  # images predicted as the class
    correct: list[int]  # images of the class predicted as it

    @property
    def images(self) -> int:
        return sum(self.support)

    @classmethod
    def from_pairs(
        cls, source: str, classes: list[str], pairs: list[tuple[str, str]]
    ) -> ClassPredictions:
        """(label, predicted) class names; classes the run does not know are dropped."""
        known = [(y, p) for y, p in pairs if y in classes and p in classes]
        return cls(
            source=source,
            classes=list(classes),
            support=[sum(y == c for y, _ in known) for c in classes],
            predicted=[sum(p == c for _, p in known) for c in classes],
            correct=[sum(y == p == c for y, p in known) for c in classes],
        )


@dataclass(frozen=True)
class RunFacts:
    """Everything the history/config rules look at."""

    path: Path
    history: list[EpochRow]  # metrics.jsonl (train_acc is measured on augmented batches)
    config: RunConfig
    preprocess: Preprocess
    expected_mean: tuple[float, ...] | None  # the weights' own normalisation; None: unknown
    expected_std: tuple[float, ...] | None
    native_size: int | None  # the input size the weights were trained at; None: unknown
    classes: list[str]
    train_counts: dict[str, int]  # images per class in train (split.csv)
    val_counts: dict[str, int]
    grayscale: bool | None  # None when no training image could be read
    check: dict[str, Any] | None  # check.json, when `medfit check DATA --out RUN` was run
    train_paths: list[tuple[str, str]] = field(default_factory=list)  # (path, class) of train
    source_size: int | None = None  # the training images' own size (median longer side, px)
    predictions: ClassPredictions | None = None  # from predictions_<split>.csv (medfit eval)
    best_epoch: int | None = None  # the epoch of the selected checkpoint (summary.json)
    # Multi-label runs: train_counts/val_counts are positives per label, val_images the images
    # in val, and evals each eval_<split>.json's "metrics" (macro_auc, per_label, ...).
    multilabel: bool = False
    val_images: int | None = None
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_val(self) -> int:
        """Val images (single-label: the sum of the per-class counts)."""
        return self.val_images if self.val_images is not None else sum(self.val_counts.values())

    @property
    def val_metric(self) -> str:
        """What `val_score` reads, for evidence texts."""
        return "val macro AUC" if self.multilabel else "val accuracy"

    def val_score(self, row: EpochRow) -> float:
        """The val curve the rules read: macro ROC-AUC for a multi-label run (NaN where the row
        has none), accuracy otherwise."""
        if not self.multilabel:
            return row.val_acc
        return math.nan if row.val_macro_auc is None else float(row.val_macro_auc)

    @property
    def full(self) -> list[EpochRow]:
        """Full fine-tuning epochs (the head stage is a linear probe: a different regime)."""
        return [e for e in self.history if e.stage == "full"]

    @property
    def selected(self) -> EpochRow:
        """The epoch whose weights were kept (checkpoints/best.pt); the last one when unknown."""
        return next((e for e in self.history if e.epoch == self.best_epoch), self.history[-1])


def read_run_facts(run_dir: str | Path) -> RunFacts:
    """Read a run directory into `RunFacts`; a MedfitError names the file that is missing."""
    run = existing_run_dir(str(run_dir))
    config = RunConfig.load(run.config)
    history = _history(run)
    preprocess = Preprocess.from_dict(_required(run, run.preprocess, run.read_json(run.preprocess)))
    classes = _required(run, run.classes, run.read_classes())
    rows = [r for r in _required(run, run.split, run.read_split_rows()) if r.ok]
    train = [(r.path, r.label) for r in rows if r.split == "train"]
    val_labels = [r.label for r in rows if r.split == "val"]
    expected = pretrained_preprocess(config)
    check = run.read_json(run.check)
    multilabel = config.data.task == "multilabel" or any(
        e.val_macro_auc is not None for e in history
    )
    if multilabel:
        train_counts = positives_per_label([label for _, label in train], classes)
        val_counts = positives_per_label(val_labels, classes)
    else:
        train_counts = dict(Counter(label for _, label in train))
        val_counts = dict(Counter(val_labels))
    return RunFacts(
        path=run.path,
        history=history,
        config=config,
        preprocess=preprocess,
        expected_mean=expected.mean if expected else None,
        expected_std=expected.std if expected else None,
        native_size=expected.img_size if expected else None,
        classes=classes,
        train_counts=train_counts,
        val_counts=val_counts,
        grayscale=_grayscale([p for p, _ in train]),
        check=check,
        train_paths=train,
        source_size=_check_size(check) or _header_size([p for p, _ in train]),
        # A multi-label predictions CSV holds label sets, not one class per image.
        predictions=None if multilabel else _predictions(run, classes),
        best_epoch=_best_epoch(run),
        multilabel=multilabel,
        val_images=len(val_labels) if multilabel else None,
        evals=_multilabel_evals(run) if multilabel else {},
    )


def positives_per_label(cells: list[str], classes: list[str]) -> dict[str, int]:
    """Images on which each label is positive, from split.csv's "A|B" / "(none)" cells; a cell
    naming a label the run does not know is skipped."""
    counts = dict.fromkeys(classes, 0)
    for cell in cells:
        vector = label_vector(cell, classes)
        for name, on in zip(classes, vector or [], strict=False):
            counts[name] += on
    return counts


def _multilabel_evals(run: RunDir) -> dict[str, dict[str, Any]]:
    """{split: eval_<split>.json "metrics"} for each multi-label evaluation of the run."""
    out = {}
    for split in run.eval_splits():
        try:
            raw = run.read_json(run.eval_json(split))
        except MedfitError:
            continue  # a damaged eval file is eval's to report; the history is what counts here
        if not isinstance(raw, dict):
            continue
        metrics = raw.get("metrics")
        if isinstance(metrics, dict) and metrics.get("task", raw.get("task")) == "multilabel":
            out[split] = metrics
    return out


def _required(run: RunDir, path: Path, value: T | None) -> T:
    """`value` read from `path`, a file training writes before its first epoch."""
    if not value:
        raise MedfitError(f"{path} is missing or empty; is {run.path} a complete medfit run?")
    return value


def _history(run: RunDir) -> list[EpochRow]:
    history = run.read_history()
    if not history and run.fold_members():
        members = " ".join(str(p) for p in run.fold_members())
        raise MedfitError(
            f"{run.path} is a k-fold ensemble, which trains no epochs itself: diagnose its "
            f"members, e.g. medfit diagnose {members.split()[0]} (all: {members})"
        )
    if not history:
        raise MedfitError(
            f"{run.metrics_jsonl} has no epoch rows: the run has not finished one yet"
        )
    return history


def pretrained_preprocess(config: RunConfig) -> Preprocess | None:
    """Input size and mean/std the pretrained weights were trained with: timm's pretrained config
    for the architecture, overridden by a WEIGHTS.json sidecar (the same sources training reads).
    None for random initialisation, where nothing is "expected"."""
    import timm

    from medfit.model.backbones import preprocess_for, sidecar_config

    weights = config.model.weights
    if weights == "none" or not timm.is_model(config.model.name):
        return None
    sidecar = {} if weights in WEIGHT_KEYWORDS else sidecar_config(weights)
    model = timm.create_model(config.model.name, pretrained=False, num_classes=2)
    return preprocess_for(model, None, sidecar)


def _grayscale(paths: list[str]) -> bool | None:
    """True when the sampled training images are single-channel or have R == G == B."""
    seen = 0
    for path in paths[:: max(1, len(paths) // GRAY_SAMPLE)][:GRAY_SAMPLE]:
        try:
            pixels = decode_image(path).pixels
        except (DecodeError, OSError):
            continue
        seen += 1
        if pixels.shape[2] == 3 and not np.array_equal(pixels[..., 0], pixels[..., 1]):
            return False
        if pixels.shape[2] == 3 and not np.array_equal(pixels[..., 1], pixels[..., 2]):
            return False
    return True if seen else None


def _check_size(check: dict[str, Any] | None) -> int | None:
    """The larger of the median width and height that `medfit check` measured on every image."""
    try:
        sizes = check["inventory"]["sizes"] if check else None
        return int(max(sizes["width"]["median"], sizes["height"]["median"])) if sizes else None
    except (KeyError, TypeError, ValueError):
        return None


def _header_size(paths: list[str]) -> int | None:
    """Median longer side of a sample of training files, from their headers (no decoding)."""
    sides = []
    for path in paths[:: max(1, len(paths) // SIZE_SAMPLE)][:SIZE_SAMPLE]:
        try:
            with Image.open(path) as image:
                sides.append(max(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # DICOM, a moved file: the size stays unknown rather than guessed
    return int(np.median(sides)) if sides else None


def _predictions(run: RunDir, classes: list[str]) -> ClassPredictions | None:
    """The first readable predictions_<split>.csv (path, label, predicted, p_<class>...)."""
    for split in PREDICTION_SPLITS:
        path = run.predictions(split)
        try:
            rows = list(csv.DictReader((read_run_text(path) or "").splitlines()))
            pairs = [(csv_value(r["label"]), csv_value(r["predicted"])) for r in rows]
        except (MedfitError, KeyError, csv.Error):
            continue
        if pairs:
            return ClassPredictions.from_pairs(f"{path.name} (medfit eval)", classes, pairs)
    return None


def _best_epoch(run: RunDir) -> int | None:
    summary = run.read_summary()
    return summary.best_epoch if summary else None
