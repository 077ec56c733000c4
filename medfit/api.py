"""The Python face of medfit; the CLI is a thin layer over these calls.

import medfit
run = medfit.train("DATA", out="runs/blood", img_size=128, epochs=10)
model = medfit.load(run.dir)
result = model.predict(["a.png", "b.png"])   # result.labels, result.probs
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from medfit.config import RunConfig, flat_to_dotted
from medfit.model.backbones import Preprocess
from medfit.model.checkpoint import load_checkpoint
from medfit.model.device import pick_device
from medfit.rundir import existing_run_dir
from medfit.training.fit import RunResult, fit


def train(
    data_dir: str | Path,
    out: str = "runs/run",
    config: str | Path | None = None,
    log: Callable[[str], None] = print,
    report: bool = True,
    **options: Any,
) -> RunResult:
    """Fine-tune on DATA_DIR (train/<class>/..., val/<class>/...); returns the finished run,
    with RUN/report.html written as `medfit train` writes it (`report=False`: skip it)."""
    cfg = RunConfig.load(Path(config)) if config else RunConfig()
    cfg.override(flat_to_dotted(options))
    cfg.data.root = str(data_dir)
    cfg.out = str(out)
    result = fit(cfg, log=log)
    if report and result.is_main:
        from medfit.report.cli import refresh_report

        refresh_report(result.dir, gradcam=False, log=log)
    return result


def resume(run_dir: str | Path, log: Callable[[str], None] = print) -> RunResult:
    """Continue an interrupted run from RUN/checkpoints/last.pt."""
    run = existing_run_dir(str(run_dir))
    return fit(RunConfig.load(run.config), resume_dir=str(run.path), log=log)


@dataclass
class Predictions:
    classes: list[str]
    labels: list[str]
    probs: np.ndarray  # (N, num_classes)


class Classifier:
    """A trained model with the exact preprocessing of its run."""

    def __init__(self, state: dict[str, Any], device: str = "auto") -> None:
        self.classes: list[str] = list(state["classes"])
        self.preprocess = Preprocess.from_dict(state["preprocess"])
        self.device = pick_device(device)
        self.model = timm.create_model(
            state["model_name"], pretrained=False, num_classes=len(self.classes)
        )
        self.model.load_state_dict(state["model"])
        self.model.to(self.device).eval()
        self._input = self.preprocess.input_fn(self.device)

    def _square(self, item: str | Path | np.ndarray) -> np.ndarray:
        if isinstance(item, np.ndarray):
            return self.preprocess.square(item)
        return self.preprocess.load(item)

    @torch.no_grad()
    def predict(
        self, items: Sequence[str | Path | np.ndarray], batch_size: int = 32
    ) -> Predictions:
        """Class probabilities for image paths or uint8 arrays (H, W[, C])."""
        probs = []
        for start in range(0, len(items), batch_size):
            batch = np.stack([self._square(i) for i in items[start : start + batch_size]])
            x = self._input(torch.from_numpy(batch))
            probs.append(torch.softmax(self.model(x).float(), 1).cpu().numpy())
        all_probs = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))
        labels = [self.classes[i] for i in all_probs.argmax(1)] if len(all_probs) else []
        return Predictions(self.classes, labels, all_probs)


def load(run_dir: str | Path, device: str = "auto", checkpoint: str = "best") -> Classifier:
    """Load a run's selected (best) or last weights for prediction."""
    run = existing_run_dir(str(run_dir))
    path = run.best if checkpoint == "best" else run.last
    return Classifier(load_checkpoint(path), device)
