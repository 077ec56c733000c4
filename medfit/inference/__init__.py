"""Inference on a trained run: `load(run)` / `Predictor(run)`, below training and beside it.

predict, serve, eval, the report's Grad-CAM and diagnose's probes load runs through this package;
it imports nothing from `medfit.training` (the import-linter contract in pyproject.toml says so).
"""

from medfit.inference.predictor import (
    Predictions,
    PredictionTable,
    Predictor,
    RunInfo,
    load,
)
from medfit.inference.tta import FLIP_DIMS, allowed_flips

__all__ = [
    "FLIP_DIMS",
    "PredictionTable",
    "Predictions",
    "Predictor",
    "RunInfo",
    "allowed_flips",
    "load",
]
