"""What a run directory says about inference, beyond the weights.

The checkpoint carries the model and its preprocessing; the rest of what prediction needs lives in
small files of the run: the resolved augmentation preset (`config.yaml` `data.aug`), which decides
which flips test-time augmentation may use, and an optional `calibration.json`
(`{"temperature": T}`) written by calibration, which turns logits into calibrated probabilities
as softmax(logits / T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medfit.data import augment
from medfit.errors import MedfitError
from medfit.rundir import RunDir, existing_run_dir, read_json, read_run_text

# Fewest readable val images a temperature is fitted on. Simulated over-confident model (true
# T 2.0, 300 draws per size): with 5-10 images the fit hit its search bound in 24-10% of draws
# (interquartile T 0.79-3.01 at 8), at 20 in 2%; from 30 on never (interquartile 1.48-2.38).
MIN_CALIBRATION_IMAGES = 30
FLIP_DIMS = {"hflip": -1, "vflip": -2}  # NCHW: width is the last axis, height the one before


@dataclass(frozen=True)
class RunInfo:
    """Inference-relevant metadata of one run directory."""

    path: Path
    model_name: str  # the timm architecture
    aug_preset: str  # the resolved preset the model was trained with
    temperature: float | None  # from calibration.json; None when the run is not calibrated
    summary: dict[str, Any]  # summary.json ({} when absent)

    @property
    def tta_views(self) -> tuple[str, ...]:
        """'identity' plus each flip the training augmentation used (see `allowed_flips`)."""
        return ("identity", *allowed_flips(self.aug_preset))


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read the run's config, calibration and summary; a MedfitError when one is malformed."""
    run = existing_run_dir(str(run_dir))
    config = _config(run)
    return RunInfo(
        run.path,
        str(config.get("model", {}).get("name", "")),
        str(config.get("data", {}).get("aug", "none")),
        read_temperature(run.path),
        _summary(run),
    )


def allowed_flips(preset: str) -> tuple[str, ...]:
    """Flips the preset applied in training: TTA must not show the model views it never saw
    (a mirrored chest X-ray puts the heart on the wrong side)."""
    spec = augment.PRESETS.get(preset)  # the presets table is the single source of truth
    if spec is None:  # "none", or an unresolved/unknown name: no flips are known to be safe
        return ()
    return tuple(name for name, on in (("hflip", spec.hflip), ("vflip", spec.vflip)) if on)


def read_temperature(run_dir: Path) -> float | None:
    """The calibration temperature, or None when the run has no calibration.json, or one that
    says it was fitted on fewer than MIN_CALIBRATION_IMAGES images (older medfit wrote a T fitted
    on no images at all; such a T is noise, not a calibration)."""
    path = RunDir(run_dir).calibration
    saved = read_json(path)
    if saved is None:
        return None
    try:
        value = saved["temperature"]
        temperature = float(value)
        fitted_on = saved.get("n_images")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise MedfitError(f"{path}: expected a JSON object with a number 'temperature'") from None
    if isinstance(fitted_on, int) and fitted_on < MIN_CALIBRATION_IMAGES:
        return None
    if not (math.isfinite(temperature) and temperature > 0):
        raise MedfitError(f"{path}: temperature must be a positive number, got {value!r}")
    return temperature


def _config(run: RunDir) -> dict[str, Any]:
    """config.yaml as plain data (the resolved config: `data.aug` is never "auto" there)."""
    try:
        config = yaml.safe_load(read_run_text(run.config) or "") or {}
    except (MedfitError, yaml.YAMLError, RecursionError):
        config = None
    if not isinstance(config, dict) or not all(
        isinstance(config.get(k, {}), dict) for k in ("data", "model")
    ):
        raise MedfitError(f"{run.config}: not a readable run config")
    return config


def _summary(run: RunDir) -> dict[str, Any]:
    summary = run.read_summary()
    return summary.to_dict() if summary else {}
