"""A trained run, loaded for inference: its model plus exactly the preprocessing, test-time
augmentation and calibration of that run.

    predictor = Predictor("runs/blood")                    # or medfit.load("runs/blood")
    table = predictor.predict_files(paths, tta=True)       # one row per file, errors kept
    result = predictor.predict(["a.png", arr])             # result.labels, result.probs

The model comes from a weights-only checkpoint load (never pickled code) and the pixels go
through the pieces training used, owned by the run's `Preprocess`: `decode_image` -> `square`
(resized to the cache size, gray replicated to 3 channels) -> `input_fn` (resized to img_size,
(x - mean) / std). Predict, serve, eval, the report's Grad-CAM and diagnose's probes all use this
one object; it imports nothing from training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medfit.data.decode import DecodeError
from medfit.data.sources import LABEL_JOIN, NO_LABELS
from medfit.errors import MedfitError
from medfit.inference.scores import scaled_thresholds
from medfit.inference.tta import FLIP_DIMS, allowed_flips
from medfit.model.backbones import Preprocess
from medfit.model.checkpoint import load_checkpoint
from medfit.model.device import pick_device
from medfit.model.ensemble import FoldEnsemble, model_from_state
from medfit.rundir import RunDir, existing_run_dir

Temperature = float | tuple[float, ...]  # one T, or one per label (multi-label runs)


@dataclass
class Predictions:
    classes: list[str]
    labels: list[str]  # the class; multi-label: the labels at or above threshold, joined by |
    probs: np.ndarray  # (N, num_classes)


@dataclass
class PredictionTable:
    """One row per input, in input order; rows that failed have NaN probabilities and an error."""

    classes: list[str]
    paths: list[Path]
    probs: np.ndarray  # float (N, num_classes); NaN rows where `errors[i]` is set
    errors: list[str | None]
    views: tuple[str, ...]  # TTA views averaged ("identity" alone without TTA)
    temperature: Temperature | None  # applied temperature, None when uncalibrated
    # Multi-label runs: each label's operating threshold (the labels called are those at or
    # above theirs); None for a single-label run.
    thresholds: list[float] | None = None

    @property
    def labels(self) -> list[str | None]:
        return [
            None if err else called_labels(p, self.classes, self.thresholds)
            for p, err in zip(self.probs, self.errors, strict=True)
        ]

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return [(p, e) for p, e in zip(self.paths, self.errors, strict=True) if e]


def called_labels(probs: np.ndarray, classes: list[str], thresholds: list[float] | None) -> str:
    """The predicted label of one image: the argmax class, or (multi-label, `thresholds` given)
    the labels at or above their threshold joined by LABEL_JOIN, NO_LABELS when none is."""
    if thresholds is None:
        return classes[int(np.argmax(probs))]
    on = [c for c, p, t in zip(classes, probs, thresholds, strict=True) if p >= t]
    return LABEL_JOIN.join(on) if on else NO_LABELS


@dataclass(frozen=True)
class RunInfo:
    """What a run directory says about inference beyond the weights."""

    path: Path
    model_name: str  # the timm architecture
    aug_preset: str  # the resolved preset the model was trained with (decides the TTA flips)
    temperature: Temperature | None  # from calibration.json; None when not calibrated
    summary: dict[str, Any]  # summary.json ({} when absent)
    thresholds: list[float] | None = None  # multi-label: thresholds.json, once eval wrote it

    @property
    def tta_views(self) -> tuple[str, ...]:
        """'identity' plus each flip the training augmentation used (see `allowed_flips`)."""
        return ("identity", *allowed_flips(self.aug_preset))

    @classmethod
    def read(cls, run: RunDir) -> RunInfo:
        """The run's config, calibration and summary; a MedfitError when one is malformed."""
        config = run.read_config_mapping()
        summary = run.read_summary()
        return cls(
            run.path,
            str(config.get("model", {}).get("name", "")),
            str(config.get("data", {}).get("aug", "none")),
            run.read_temperature(),
            summary.to_dict() if summary else {},
            run.read_thresholds(),
        )


class Predictor:
    """A run's model with the exact eval preprocessing, TTA views and calibration of that run.

    `Predictor(run)` reads the run's info (config, calibration, summary) before the model, so a
    damaged file is named before minutes of loading; `load(run)` reads it when first needed.
    """

    def __init__(
        self,
        run_dir: str | Path,
        device: str = "auto",
        checkpoint: str = "best",
        read_info: bool = True,
    ) -> None:
        self.run = existing_run_dir(str(run_dir))
        if read_info:
            _ = self.info
        # A k-fold run (RUN/folds.json) is its members as one model; any other run is itself.
        self.members = self.run.fold_members()
        states = [_checkpoint(RunDir(p), checkpoint) for p in self.members or [self.run.path]]
        self.classes: list[str] = list(states[0]["classes"])
        # Multi-label runs have sigmoid outputs (one independent probability per label).
        task = states[0].get("config", {}).get("data", {}).get("task")
        self.multilabel = task == "multilabel"
        self.preprocess = Preprocess.from_dict(states[0]["preprocess"])
        _check_members_agree(self.members, states)
        self.device = pick_device(device)
        models = [model_from_state(state) for state in states]
        self.model = FoldEnsemble(models, self.multilabel) if self.members else models[0]
        self.model.to(self.device).eval()
        self._input = self.preprocess.input_fn(self.device)

    @cached_property
    def info(self) -> RunInfo:
        return RunInfo.read(self.run)

    # --- preprocessing -------------------------------------------------------------------------

    def square(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W[, C]) -> uint8 (S, S, 3) at the run's cache size, as training stored it."""
        return self.preprocess.square(pixels)

    def model_input(self, squares: np.ndarray) -> torch.Tensor:
        """uint8 (B, S, S, 3) -> the normalised float (B, 3, img_size, img_size) the model takes."""
        return self._input(
            torch.from_numpy(np.require(squares, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]))
        )

    def load_square(self, path: str | Path) -> np.ndarray:
        """Decode one file and bring it to the cache square; DecodeError when unreadable."""
        return self.preprocess.load(path)

    def _try_square(self, path: Path) -> tuple[np.ndarray | None, str | None]:
        try:
            return self.load_square(path), None
        except DecodeError as exc:
            return None, str(exc).removeprefix(f"{path}: ")  # the row already names the path

    # --- inference -----------------------------------------------------------------------------

    def activate(
        self, logits: torch.Tensor, temperature: Temperature | None = None
    ) -> torch.Tensor:
        """(B, K) logits -> probabilities: softmax over classes, or a sigmoid per label for a
        multi-label run; divided first by the temperature (one, or one per label)."""
        t = torch.as_tensor(temperature or 1.0, dtype=logits.dtype, device=logits.device)
        z = logits / t
        return torch.sigmoid(z) if self.multilabel else torch.softmax(z, dim=1)

    @property
    def thresholds(self) -> list[float] | None:
        """Multi-label runs: each label's operating threshold (eval's, chosen on val; 0.5 before
        the first eval), on uncalibrated probabilities. None for single-label runs."""
        if not self.multilabel:
            return None
        return self.info.thresholds or [0.5] * len(self.classes)

    def thresholds_at(self, temperature: Temperature | None) -> list[float] | None:
        """`thresholds` for probabilities scaled by `temperature` (the same images called)."""
        thresholds = self.thresholds
        return None if thresholds is None else scaled_thresholds(thresholds, temperature)

    def temperature(self, scaled: bool) -> Temperature | None:
        """The temperature to apply, or None; asking for one the run lacks is an error, because
        silently returning uncalibrated probabilities would mislead whoever reads them."""
        if not scaled:
            return None
        if self.info.temperature is None:
            raise MedfitError(
                f"temperature scaling is not available for {self.info.path}: it has no "
                f"{self.run.calibration.name} (calibrate the run first, or drop the "
                "temperature option)"
            )
        return self.info.temperature

    def views(self, tta: bool) -> tuple[str, ...]:
        return self.info.tta_views if tta else ("identity",)

    @torch.no_grad()
    def view_logits(self, x: torch.Tensor, tta: bool) -> np.ndarray:
        """(V, B, K) logits of a normalised batch for each TTA view (eval fits T on these)."""
        out = []
        for view in self.views(tta):
            xv = x if view == "identity" else torch.flip(x, dims=(FLIP_DIMS[view],))
            out.append(self.model(xv).float().cpu().numpy())
        return np.stack(out)

    @torch.no_grad()
    def probabilities(
        self, x: torch.Tensor, tta: bool = False, temperature: Temperature | None = None
    ) -> np.ndarray:
        """softmax(logits / T) (multi-label: sigmoid) for a normalised batch, averaged over the
        TTA views."""
        total = torch.zeros(x.shape[0], len(self.classes), device=self.device)
        views = self.views(tta)
        for view in views:
            xv = x if view == "identity" else torch.flip(x, dims=(FLIP_DIMS[view],))
            total += self.activate(self.model(xv).float(), temperature)
        return (total / len(views)).cpu().numpy()

    @torch.no_grad()
    def predict(
        self, items: Sequence[str | Path | np.ndarray], batch_size: int = 32
    ) -> Predictions:
        """Class probabilities for image paths or uint8 arrays (H, W[, C]); no TTA, no T."""
        probs = []
        for start in range(0, len(items), batch_size):
            batch = np.stack(
                [
                    self.square(i) if isinstance(i, np.ndarray) else self.load_square(i)
                    for i in items[start : start + batch_size]
                ]
            )
            x = self._input(torch.from_numpy(batch))
            probs.append(self.activate(self.model(x).float()).cpu().numpy())
        all_probs = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))
        labels = [called_labels(p, self.classes, self.thresholds) for p in all_probs]
        return Predictions(self.classes, labels, all_probs)

    def predict_pixels(
        self,
        images: Sequence[np.ndarray],
        tta: bool = False,
        temperature_scaled: bool = False,
    ) -> np.ndarray:
        """Probabilities (N, num_classes) for uint8 arrays (H, W[, C]) already decoded."""
        if not images:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        squares = np.stack([self.square(img) for img in images])
        temperature = self.temperature(temperature_scaled)
        return self.probabilities(self.model_input(squares), tta, temperature)

    def predict_files(
        self,
        paths: Sequence[Path],
        batch_size: int = 32,
        tta: bool = False,
        temperature_scaled: bool = False,
        progress: bool = False,
        workers: int | None = None,
    ) -> PredictionTable:
        """Predict every file; unreadable ones get an error instead of probabilities."""
        if batch_size < 1:
            raise MedfitError(f"batch size must be >= 1, got {batch_size}")
        temperature = self.temperature(temperature_scaled)
        probs = np.full((len(paths), len(self.classes)), np.nan, dtype=np.float32)
        errors: list[str | None] = [None] * len(paths)
        bar = tqdm(total=len(paths), unit="img", desc="predict", disable=not progress)
        with bar, ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = range(start, min(start + batch_size, len(paths)))
                # Pillow and pydicom release the GIL for much of a decode: threads overlap them.
                results = pool.map(self._try_square, [paths[i] for i in chunk])
                rows, squares = [], []
                for i, (square, reason) in zip(chunk, results, strict=True):
                    errors[i] = reason
                    if square is not None:
                        rows.append(i)
                        squares.append(square)
                if squares:
                    x = self.model_input(np.stack(squares))
                    probs[rows] = self.probabilities(x, tta, temperature)
                bar.update(len(chunk))
        return PredictionTable(
            self.classes,
            list(paths),
            probs,
            errors,
            self.views(tta),
            temperature,
            self.thresholds_at(temperature),
        )


def _checkpoint(run: RunDir, which: str) -> dict[str, Any]:
    return load_checkpoint(run.best if which == "best" else run.last)


def _check_members_agree(members: list[Path], states: list[dict[str, Any]]) -> None:
    """The members of an ensemble must share classes and preprocessing to be averaged."""
    for path, state in zip(members[1:], states[1:], strict=True):
        for key in ("classes", "preprocess"):
            if state[key] != states[0][key]:
                raise MedfitError(
                    f"{path} differs from {members[0]} in its {key}; the fold members cannot "
                    "be averaged (retrain the odd one: medfit train --resume RUN --folds K)"
                )


def load(run_dir: str | Path, device: str = "auto", checkpoint: str = "best") -> Predictor:
    """Load a run's selected (best) or last weights for prediction; its info (calibration,
    summary) is read when first used."""
    return Predictor(run_dir, device, checkpoint, read_info=False)
