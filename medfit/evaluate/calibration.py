"""Temperature scaling: one scalar T > 0 fitted on val logits, probabilities = softmax(z / T).

Logits come as (V, N, K): V test-time-augmentation views (V = 1 without TTA). The probabilities
are the mean over views of softmax(z_v / T), exactly what `Predictor.probabilities` computes, so
the T written to calibration.json is the one that minimises the NLL of what predict returns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from medfit.deploy.runinfo import CALIBRATION_FILE
from medfit.evaluate.metrics import expected_calibration_error
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


def calibrate(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Fit T and report NLL and ECE before (T = 1) and after, on the same (val) logits."""
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
    """RUN/calibration.json, read back by `medfit predict --temperature-scaled`."""
    path = run_dir / CALIBRATION_FILE
    RunDir(run_dir).write_json(path, calibration)
    return path
