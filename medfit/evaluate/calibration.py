"""Temperature scaling: one scalar T > 0 fitted on val logits, probabilities = softmax(z / T).

Logits come as (V, N, K): V test-time-augmentation views (V = 1 without TTA). The probabilities
are the mean over views of softmax(z_v / T), exactly what `Predictor.probabilities` computes, so
the T written to calibration.json is the one that minimises the NLL of what predict returns.

A temperature is only fitted on at least MIN_CALIBRATION_IMAGES readable val images (see
`medfit.rundir.records` for why that many); with fewer, `calibrate` refuses and says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from medfit.errors import DataError
from medfit.evaluate.metrics import expected_calibration_error, json_safe
from medfit.rundir import MIN_CALIBRATION_IMAGES, RunDir

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


def per_image_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    lp = log_probs(logits, temperature)
    return -lp[np.arange(len(labels)), labels]


def cross_fitted_gain(
    logits: np.ndarray, labels: np.ndarray, seed: int = 0
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """The NLL a temperature gains on images it was not fitted on: val split into two halves
    (stratified by class), T fitted on each half and scored on the other. Returns the mean gain
    per image (NLL at T = 1 minus NLL at the other half's T; > 0 helps), its 95% interval over
    images (the per-image gains are paired), and the two halves' temperatures."""
    rng = np.random.default_rng(seed)
    halves = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        halves[idx[: len(idx) // 2]] = True
    z = _views(np.asarray(logits, dtype=np.float64))
    gains = np.empty(len(labels))
    temps = []
    for fit_on in (halves, ~halves):
        t = fit_temperature(z[:, fit_on], labels[fit_on])
        temps.append(t)
        held = ~fit_on
        gains[held] = per_image_nll(z[:, held], labels[held], 1.0) - per_image_nll(
            z[:, held], labels[held], t
        )
    mean = float(gains.mean())
    half = 1.96 * float(gains.std(ddof=1)) / math.sqrt(len(gains))
    return mean, (mean - half, mean + half), (temps[0], temps[1])


def calibrate(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Fit T on val and apply it only if it proves itself: its NLL gain on held-out halves of
    val (`cross_fitted_gain`) must be positive with a 95% interval above 0. A temperature fitted
    on 120 images can sharpen an already over-confident model (T = 0.32 raised a fundus set's
    test NLL from 1.31 to 1.43); then T = 1 is kept and `reason` says why. NLL and ECE before
    and after are on the val logits. Raises TooFewToCalibrate below MIN_CALIBRATION_IMAGES.

    This is the one calibration rule: every caller (eval, fold ensembles) goes through it."""
    if len(labels) < MIN_CALIBRATION_IMAGES:
        raise TooFewToCalibrate(
            f"temperature not fitted: {len(labels)} readable val image(s), and a stable fit of T "
            f"needs at least {MIN_CALIBRATION_IMAGES} (with fewer, T often lands on its search "
            "bound); make more val images readable or add some"
        )
    fitted = fit_temperature(logits, labels)
    gain, ci, halves = cross_fitted_gain(logits, labels)
    applied = ci[0] > 0
    temperature = fitted if applied else 1.0
    result: dict[str, Any] = {
        "temperature": temperature,
        "fitted_temperature": fitted,
        "applied": applied,
        "fitted_on": "val",
        "n_images": len(labels),
        "held_out_nll_gain": gain,
        "held_out_nll_gain_ci95": list(ci),
        "half_temperatures": list(halves),
        "nll_before": nll_at(logits, labels, 1.0),
        "nll_after": nll_at(logits, labels, temperature),
        "ece_before": expected_calibration_error(labels, probabilities(logits, 1.0)),
        "ece_after": expected_calibration_error(labels, probabilities(logits, temperature)),
    }
    if not applied:
        result["reason"] = (
            f"T = {fitted:.3f} fitted on {len(labels)} val images did not prove itself: fitted on "
            f"one half of val and scored on the other, it changed the NLL by {gain:+.4f} per "
            f"image (95% CI {ci[0]:+.4f} to {ci[1]:+.4f}, needs to be above 0); probabilities "
            "stay uncalibrated (T = 1)"
        )
    return result


def write_calibration(run_dir: Path, calibration: dict[str, Any]) -> Path:
    """RUN/calibration.json, read back by `medfit predict --temperature-scaled` (strict JSON:
    an undefined number is written as null, never NaN)."""
    run = RunDir(run_dir)
    path = run.calibration
    run.write_json(path, json_safe(calibration))
    return path
