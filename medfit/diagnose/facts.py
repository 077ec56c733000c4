"""What a run directory says, read once into typed records that the rules take as input.

The rules never open files: `read_run` gathers the history (metrics.jsonl), the resolved config,
the preprocessing actually used, the normalisation the weights expect, the split sizes, the
training images' own pixel size, an optional check.json and `medfit eval`'s predictions.
Everything a rule needs is a field here, so rules stay pure and testable on synthetic records.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medfit.config import RunConfig
from medfit.data.decode import DecodeError, decode_image
from medfit.errors import MedfitError
from medfit.model.backbones import Preprocess
from medfit.rundir import RunDir, existing_run_dir

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
class Epoch:
    """One row of metrics.jsonl (train_acc is measured on augmented batches)."""

    epoch: int
    stage: str
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    val_balanced_accuracy: float
    lr: float
    data_s: float = 0.0
    augment_s: float = 0.0
    compute_s: float = 0.0
    eval_s: float = 0.0
    epoch_s: float = 0.0
    skipped_steps: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Epoch:
        def num(key: str) -> float:
            value = row.get(key)
            return float(value) if value is not None else math.nan

        return cls(
            epoch=int(row["epoch"]),
            stage=str(row.get("stage", "full")),
            train_loss=num("train_loss"),
            train_acc=num("train_acc"),
            val_loss=num("val_loss"),
            val_acc=num("val_acc"),
            val_balanced_accuracy=num("val_balanced_accuracy"),
            lr=num("lr"),
            data_s=float(row.get("data_s") or 0.0),
            augment_s=float(row.get("augment_s") or 0.0),
            compute_s=float(row.get("compute_s") or 0.0),
            eval_s=float(row.get("eval_s") or 0.0),
            epoch_s=float(row.get("epoch_s") or 0.0),
            skipped_steps=int(row.get("skipped_steps") or 0),
        )


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
    history: list[Epoch]
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

    @property
    def n_val(self) -> int:
        return sum(self.val_counts.values())

    @property
    def full(self) -> list[Epoch]:
        """Full fine-tuning epochs (the head stage is a linear probe: a different regime)."""
        return [e for e in self.history if e.stage == "full"]

    @property
    def selected(self) -> Epoch:
        """The epoch whose weights were kept (checkpoints/best.pt); the last one when unknown."""
        return next((e for e in self.history if e.epoch == self.best_epoch), self.history[-1])


def read_run(run_dir: str | Path) -> RunFacts:
    """Read a run directory into `RunFacts`; a MedfitError names the file that is missing."""
    run = existing_run_dir(str(run_dir))
    config = RunConfig.load(run.config)
    history = _history(run)
    preprocess = Preprocess.from_dict(_json(run.preprocess))
    classes = [str(c) for c in _json(run.classes)]
    rows = _split_rows(run)
    train = [(r["path"], r["label"]) for r in rows if r["split"] == "train"]
    val_counts = Counter(r["label"] for r in rows if r["split"] == "val")
    expected = pretrained_preprocess(config)
    check_path = run.path / "check.json"
    check = _json(check_path) if check_path.is_file() else None
    return RunFacts(
        path=run.path,
        history=history,
        config=config,
        preprocess=preprocess,
        expected_mean=expected.mean if expected else None,
        expected_std=expected.std if expected else None,
        native_size=expected.img_size if expected else None,
        classes=classes,
        train_counts=dict(Counter(label for _, label in train)),
        val_counts=dict(val_counts),
        grayscale=_grayscale([p for p, _ in train]),
        check=check,
        train_paths=train,
        source_size=_check_size(check) or _header_size([p for p, _ in train]),
        predictions=_predictions(run.path, classes),
        best_epoch=_best_epoch(run),
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MedfitError(f"{path} is missing; is this a complete medfit run?") from None
    except ValueError as exc:
        raise MedfitError(f"{path}: not valid JSON ({exc})") from None


def _history(run: RunDir) -> list[Epoch]:
    try:
        lines = run.metrics_jsonl.read_text().splitlines()
    except FileNotFoundError:
        raise MedfitError(
            f"{run.metrics_jsonl} is missing: the run has not finished an epoch yet"
        ) from None
    try:
        history = [Epoch.from_row(json.loads(line)) for line in lines if line.strip()]
    except (ValueError, KeyError, TypeError) as exc:
        raise MedfitError(f"{run.metrics_jsonl}: unreadable row ({exc})") from None
    if not history:
        raise MedfitError(f"{run.metrics_jsonl} is empty: the run has not finished an epoch yet")
    return history


def _split_rows(run: RunDir) -> list[dict[str, str]]:
    try:
        text = run.split.read_text()
    except FileNotFoundError:
        raise MedfitError(f"{run.split} is missing; is this a complete medfit run?") from None
    return [r for r in csv.DictReader(text.splitlines()) if r.get("status") == "ok"]


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


def _predictions(run_path: Path, classes: list[str]) -> ClassPredictions | None:
    """The first readable predictions_<split>.csv (path, label, predicted, p_<class>...)."""
    for split in PREDICTION_SPLITS:
        path = run_path / f"predictions_{split}.csv"
        try:
            rows = list(csv.DictReader(path.read_text().splitlines()))
            pairs = [(r["label"], r["predicted"]) for r in rows]
        except (OSError, KeyError, csv.Error):
            continue
        if pairs:
            return ClassPredictions.from_pairs(f"{path.name} (medfit eval)", classes, pairs)
    return None


def _best_epoch(run: RunDir) -> int | None:
    try:
        return int(json.loads(run.summary.read_text())["best_epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
