"""Temperature scaling: one scalar T > 0 fitted on val logits, probabilities = softmax(z / T).

Logits come as (V, N, K): V test-time-augmentation views (V = 1 without TTA). The probabilities
are the mean over views of softmax(z_v / T), exactly what `Predictor.probabilities` computes, so
the T written to calibration.json is the one that minimises the NLL of what predict returns.

A temperature is only fitted on at least MIN_CALIBRATION_IMAGES readable val images (see
`medfit.deploy.runinfo` for why that many); with fewer, `calibrate` refuses and says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from medfit.deploy.runinfo import MIN_CALIBRATION_IMAGES
from medfit.errors import DataError
from medfit.evaluate.metrics import expected_calibration_error, json_safe
from medfit.rundir import RunDir

T_BOUNDS = (0.05, 20.0)


def _views(logits: np.ndarray) -> np.ndarray:
    return logits[None] if logits.ndim == 2 else logits


def log_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log(mean_v softmax(z_v / T)): (V, N, K) or (N, K) logits -> (N, K) log-probabilities."""
    z = _views(np.asarray(logits, dtype=np.float64))
    return logsumexp(log_softmax(z / temperature, axis=2), axis=0) - math.log(z.shape[0])


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_probs(logits, temperature))


def nll_at(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    lp = log_probs(logits, temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising val NLL (scipy's bounded scalar search on log T)."""
    lo, hi = (math.log(b) for b in T_BOUNDS)
    result = minimize_scalar(
        lambda log_t: nll_at(logits, labels, math.exp(log_t)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(result.x))


class TooFewToCalibrate(DataError):
    """Fewer readable val images than a stable temperature fit needs."""


def calibrate(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Fit T and report NLL and ECE before (T = 1) and after, on the same (val) logits; raises
    TooFewToCalibrate below MIN_CALIBRATION_IMAGES images."""
    if len(labels) < MIN_CALIBRATION_IMAGES:
        raise TooFewToCalibrate(
            f"temperature not fitted: {len(labels)} readable val image(s), and a stable fit of T "
            f"needs at least {MIN_CALIBRATION_IMAGES} (with fewer, T often lands on its search "
            "bound); make more val images readable or add some"
        )
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": temperature,
        "fitted_on": "val",
        "n_images": len(labels),
        "nll_before": nll_at(logits, labels, 1.0),
        "nll_after": nll_at(logits, labels, temperature),
        "ece_before": expected_calibration_error(labels, probabilities(logits, 1.0)),
        "ece_after": expected_calibration_error(labels, probabilities(logits, temperature)),
    }


def write_calibration(run_dir: Path, calibration: dict[str, Any]) -> Path:
    """RUN/calibration.json, read back by `medfit predict --temperature-scaled` (strict JSON:
    an undefined number is written as null, never NaN)."""
    run = RunDir(run_dir)
    path = run.calibration
    run.write_json(path, json_safe(calibration))
    return path
