"""The readable console summary of an evaluation result."""

from __future__ import annotations

import math
from typing import Any

from medfit.evaluate.calibration import T_BOUNDS

NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced acc",
    "macro_f1": "macro-F1",
    "auc": "ROC-AUC (ovr)",
}
ORDINAL_NAMES = {"quadratic_kappa": "quadratic kappa", "mean_abs_error": "grade error (MAE)"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: Any) -> str:
    return "  n/a" if _missing(value) else f"{value:.3f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Headline metrics with 95% CIs, a per-class table, calibration before/after, skipped."""
    m = result["metrics"]
    lines = [
        f"medfit eval: {result['run']} on {result['split']} ({result['n_images']} images"
        + (f", TTA {'+'.join(result['views'])}" if result["tta"] else "")
        + f") from {result['data']}",
    ]
    names = {**NAMES, **(ORDINAL_NAMES if "quadratic_kappa" in m else {})}
    pad = max(14, *(len(name) for name in names.values()))
    for key, name in names.items():
        lo, hi = m["ci95"].get(key, [None, None])
        ci = f"  (95% CI {_num(lo)}-{_num(hi)})" if lo is not None else ""
        lines.append(f"  {name:<{pad}} {_num(m[key])}{ci}")
    if m.get("auc_note"):
        lines.append(f"  note: {m['auc_note']}")
    if "quadratic_kappa" in m and _missing(m["quadratic_kappa"]):
        lines.append("  note: kappa undefined: labels and predictions hold a single grade")
    width = max(8, *(len(c) for c in result["classes"]))
    lines.append(f"  {'class':<{width}}  precision  recall     F1    AUC  support")
    for name, row in m["per_class"].items():
        lines.append(
            f"  {name:<{width}}  {_num(row['precision']):>9}  {_num(row['recall']):>6}"
            f"  {_num(row['f1']):>5}  {_num(row['auc']):>5}  {row['support']:>7}"
        )
    lines += _calibration_lines(result)
    if result["tta"] and len(result["views"]) == 1:
        lines.append("  note: --tta had no effect: the run's augmentation preset used no flips")
    return lines + _skipped(result)


def _calibration_lines(result: dict[str, Any]) -> list[str]:
    m, cal = result["metrics"], result["calibration"]
    if cal["temperature"] is None:  # too few readable val images: nothing was fitted
        return [
            f"  calibration: none — {cal['reason']}",
            f"  {result['split']} ECE {_num(m['ece'])}, NLL {_num(m['nll'])} (uncalibrated)",
        ]
    if cal.get("applied") is False:  # fitted, but it did not help on held-out halves of val
        return [
            f"  calibration: not applied — {cal['reason']}",
            f"  {result['split']} ECE {_num(m['ece'])}, NLL {_num(m['nll'])} (uncalibrated)",
        ]
    lines = [
        f"  calibration: T = {cal['temperature']:.3f} fitted on {_fitted_on(cal)} "
        f"({cal['n_images']} images); "
        f"{result['split']} ECE {_num(result['uncalibrated']['ece'])} -> {_num(m['ece'])}, "
        f"NLL {_num(result['uncalibrated']['nll'])} -> {_num(m['nll'])}"
    ]
    if not T_BOUNDS[0] * 1.01 < cal["temperature"] < T_BOUNDS[1] * 0.99:
        lines.append("  note: T hit its search bound: the model is near chance or val is too small")
    if result["split"] in ("val", "oof") and result["split"] == cal.get("fitted_on", "val"):
        lines.append("  note: T was fitted on these same images, so calibration is optimistic")
    return lines


def _fitted_on(cal: dict[str, Any]) -> str:
    """val, or for a k-fold ensemble its out-of-fold predictions."""
    return "out-of-fold predictions" if cal.get("fitted_on") == "oof" else "val"


def _skipped(result: dict[str, Any]) -> list[str]:
    if not result["skipped"]:
        return []
    lines = [f"  skipped {len(result['skipped'])} unreadable image(s):"]
    return lines + [f"    {s['path']}: {s['reason']}" for s in result["skipped"][:10]]
