"""One builder per report section: RunData -> the plain dict the template renders.

Every builder returns {"absent": "<what is missing and the command that produces it>"} when its
inputs are not in the run directory; otherwise the section's numbers, tables and base64 figures.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import yaml

from medfit.data.task import describe_task, resolve_task
from medfit.report import plots
from medfit.report.images import thumbnail
from medfit.report.rundata import RunData
from medfit.rundir import PredictionRow, RunDir
from medfit.rundir.jobs import folds_section, seeds_section

Section = dict[str, Any]
HEADLINE = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro F1"),
    ("auc", "ROC-AUC"),
)
# Ordinal (grade) runs: shown right after accuracy, only when the evaluation has them.
ORDINAL_HEADLINE = (
    ("quadratic_kappa", "Quadratic kappa"),
    ("mean_abs_error", "Mean grade error"),
)
VAL_HEADLINE = (
    ("val_acc", "Accuracy"),
    ("val_balanced_accuracy", "Balanced accuracy"),
    ("val_macro_f1", "Macro F1"),
)
TOP_LOSSES = 12  # a screenful: enough to see a pattern (one scanner, one label) without paging
PAIRS_SHOWN = 6  # per kind of cross-split pair; check.json keeps them all
LABEL_ISSUES_SHOWN = 8
SEVERITY_ORDER = ("high", "medium", "low", "info")
DATA_WAIT_WARN = 0.2  # share of an epoch spent waiting for data above which the input is the limit


def image_bases(data: RunData) -> list[Path]:
    """Where relative image paths may start: eval writes them as given on its command line."""
    bases = [Path.cwd(), data.path, data.path.parent]
    root = config_value(data, "data", "root")
    if isinstance(root, str):
        bases.append(Path(root).expanduser())
    return bases


def config_value(data: RunData, section: str, key: str) -> Any:
    try:
        config = yaml.safe_load(data.config_text or "") or {}
        return config.get(section, {}).get(key)
    except (yaml.YAMLError, AttributeError):
        return None


def eval_missing(data: RunData) -> str:
    split = data.split or "test"
    if data.split and data.eval_splits and data.split not in data.eval_splits:
        have = ", ".join(data.eval_splits)
        return (
            f"no {data.run.eval_json(split).name} (evaluated splits: {have}): run "
            f"`medfit eval {data.path} --split {split}`"
        )
    return f"not evaluated yet: run `medfit eval {data.path}` (held-out test split by default)"


# --- headline ---------------------------------------------------------------------------------


def headline(data: RunData) -> Section:
    s = data.summary
    facts = [
        ("model", s.get("model") or config_value(data, "model", "name")),
        ("classes", ", ".join(data.classes) if data.classes else None),
        ("task", _ordinal_task(data)),
        ("train / val images", _pair(s.get("train_images"), s.get("val_images"))),
        ("best epoch", _pair(s.get("best_epoch"), s.get("epochs_run"), " of ")),
        ("selected on", s.get("selected_metric")),
        ("device, wall time", _pair(s.get("device"), _seconds(s.get("wall_s")), ", ")),
    ]
    out: Section = {"facts": [(k, v) for k, v in facts if v not in (None, "")]}
    if data.evaluation:
        m = data.evaluation.get("metrics", {})
        ci = m.get("ci95", {})
        out["metrics"] = [
            (name, m.get(key), *(ci.get(key) or [None, None])) for key, name in _headline_keys(m)
        ]
        if "quadratic_kappa" in m:
            out["ordinal"] = True
        out["source"] = (
            f"{data.split} split, {data.evaluation.get('n_images', '?')} images, "
            "temperature-scaled probabilities; 95% bootstrap CIs"
        )
        cal = data.evaluation.get("calibration", {})
        out["calibration"] = (m.get("ece"), cal.get("temperature"))
        if data.split == "val":
            out["warning"] = "val was used to select the model: these numbers are optimistic"
        return out
    final = s.get("final") or {}
    if final:
        out["metrics"] = [(name, final.get(key), None, None) for key, name in VAL_HEADLINE]
        out["source"] = "validation set at the end of training (no CIs)"
    out["warning"] = eval_missing(data)
    return out


def _ordinal_task(data: RunData) -> str | None:
    """The grade order of an ordinal run (its evaluation's task, else its config's, else the class
    names decide); None for multiclass."""
    task = (data.evaluation or {}).get("task") or config_value(data, "data", "task") or "auto"
    if task == "auto":
        task = resolve_task("auto", data.classes)
    return describe_task("ordinal", data.classes) if task == "ordinal" and data.classes else None


def _headline_keys(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    if "quadratic_kappa" not in metrics:
        return list(HEADLINE)
    return [HEADLINE[0], *ORDINAL_HEADLINE, *HEADLINE[1:]]


def _pair(a: Any, b: Any, sep: str = " / ") -> str | None:
    return (
        None
        if a is None and b is None
        else f"{'?' if a is None else a}{sep}{'?' if b is None else b}"
    )


def _seconds(value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


# --- training ---------------------------------------------------------------------------------


def stage_changes(history: list[dict[str, Any]]) -> list[str]:
    """ "head -> full after epoch 1": where the training stage changed."""
    stages = [r.get("stage") for r in history]
    return [
        f"{a} -> {b} after epoch {r['epoch']}"
        for r, (a, b) in zip(history, itertools.pairwise(stages), strict=False)
        if a != b
    ]


def curves(data: RunData) -> Section:
    if not data.history:
        return {"absent": data.no_history}
    best = data.summary.get("best_epoch")
    changes = stage_changes(data.history)
    return {
        "png": plots.learning_curves(data.history, best if isinstance(best, int) else None),
        "stages": changes,
    }


SEED_COLUMNS = (
    ("seed", "seed"),
    ("best_epoch", "best epoch"),
    ("selection_score", "selection (smoothed)"),
    ("best_val_acc", "val acc"),
    ("best_val_balanced_accuracy", "val bal. acc"),
    ("best_val_macro_f1", "val macro-F1"),
    ("wall_s", "wall s"),
)
# Multi-label runs: the selection score is the smoothed val macro ROC-AUC; their val accuracy,
# balanced accuracy and macro F1 are label-wise numbers at p = 0.5, not worth a column.
MULTILABEL_SEED_COLUMNS = (
    ("seed", "seed"),
    ("best_epoch", "best epoch"),
    ("selection_score", "val macro AUC (smoothed)"),
    ("wall_s", "wall s"),
)


def seeds(data: RunData) -> Section:
    """The seeds this run belongs to (`medfit train --seeds N`): per-seed rows, mean ± sd."""
    found = seeds_section(data.path)
    if found is None:
        return {
            "absent": "a single seed: `medfit train DATA --seeds 3` shows how much the result "
            "moves between seeds"
        }
    columns = MULTILABEL_SEED_COLUMNS if data.multilabel else SEED_COLUMNS
    keys = [key for key, _ in columns]
    return {
        "titles": [title for _, title in columns],
        "rows": [
            ([_seed_cell(row.get(k), k) for k in keys], row.get("seed") == found.this_seed)
            for row in found.rows
        ],
        "mean": [_seed_cell(found.mean.get(k), _summary_format(k)) for k in keys[1:]],
        "sd": [_seed_cell(found.sd.get(k), _summary_format(k)) for k in keys[1:]],
        "note": found.note,
    }


def folds(data: RunData) -> Section:
    """The members of a k-fold run beside the ensemble: each on its held-out fold and, once
    `medfit eval RUN` ran, alone on the evaluated split."""
    found = folds_section(data.path)
    if found is None:  # only k-fold runs and their members have this section
        return {"not_applicable": True}
    evaluation = RunDir(found.run).read_json(RunDir(found.run).eval_json(data.split or "test"))
    alone = {r["dir"]: r for r in (evaluation or {}).get("members", [])}
    split = data.split or "test"

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    # (held-out key in folds.json, OOF key, evaluated-split key, title) per metric column.
    columns: list[tuple[str | None, str | None, str, str]]
    if data.multilabel:
        columns = [("val_macro_auc", "macro_auc", "macro_auc", "macro AUC")]
        columns += [(None, None, "map", "mAP")]
    else:
        columns = [("val_acc", "acc", "accuracy", "acc")]
        columns += [("val_balanced_accuracy", "balanced_accuracy", "balanced_accuracy", "bal. acc")]
    held = [(m, title) for m, _, _, title in columns if m is not None]
    rows = [
        (
            [
                m["dir"],
                m["status"],
                str(m.get("val_images", "")),
                *[cell(m.get(key)) for key, _ in held],
                *[cell(alone.get(m["dir"], {}).get(key)) for _, _, key, _ in columns],
            ],
            m["dir"] == found.this_member,
        )
        for m in found.members
    ]
    ensemble = (evaluation or {}).get("metrics", {})
    oof_keys = [oof for _, oof, _, _ in columns if oof is not None]
    rows.append(
        (
            [
                "ensemble (OOF: all folds)",
                "",
                str(found.oof.get("n_images", "")),
                *[cell(found.oof.get(key)) for key in oof_keys],
                *[cell(ensemble.get(key)) for _, _, key, _ in columns],
            ],
            found.this_member is None,
        )
    )
    titles = ["member", "status", "held-out n", *[f"held-out {title}" for _, title in held]]
    return {"titles": [*titles, *[f"{split} {title}" for *_, title in columns]], "rows": rows}


def _summary_format(key: str) -> str:
    """Mean and sd of epochs and seconds get one decimal, like wall_s; metrics get three."""
    return "wall_s" if key in ("best_epoch", "wall_s") else key


def _seed_cell(value: Any, key: str) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    if key in ("seed", "best_epoch"):
        return str(int(value))
    return f"{value:.1f}" if key == "wall_s" else f"{value:.3f}"


def time_to_accuracy(data: RunData) -> Section:
    """This run beside the `--compare` runs: val accuracy (multi-label runs: val macro ROC-AUC)
    against training seconds, and the seconds each took to first reach the value all of them
    reach (the lowest of their bests)."""
    key, what = ("val_macro_auc", "val macro AUC") if data.multilabel else ("val_acc", "val acc")
    if not data.compared:
        plotted = "val macro ROC-AUC" if data.multilabel else "val accuracy"
        return {
            "absent": f"one run: `medfit report RUN --compare OTHER_RUN ...` plots {plotted} "
            "against training seconds for several runs"
        }
    runs = {data.path.name: data.history, **data.compared}
    bests = {name: _best_val_acc(history, key) for name, history in runs.items()}
    target = min((b for b in bests.values() if b is not None), default=None)
    rows = [_time_row(name, history, bests[name], target, key) for name, history in runs.items()]
    ylabel = "val macro ROC-AUC" if data.multilabel else "val accuracy"
    return {
        "png": plots.time_to_accuracy(runs, target, key, ylabel),
        "rows": rows,
        "target": target,
        "best_title": f"best {what}",
    }


def _best_val_acc(history: list[dict[str, Any]], key: str = "val_acc") -> float | None:
    values = [float(r[key]) for r in history if isinstance(r.get(key), int | float)]
    return max(values, default=None)


def _time_row(
    name: str,
    history: list[dict[str, Any]],
    best: float | None,
    target: float | None,
    key: str = "val_acc",
) -> dict[str, Any]:
    """Epochs, training seconds, `best`, and the epoch / seconds at which `target` was first
    reached."""
    seconds, reached = 0.0, None
    for row in history:
        seconds += float(row.get("epoch_s") or 0.0)
        value = row.get(key)
        if reached is None and target is not None and isinstance(value, int | float):
            reached = (row["epoch"], seconds) if value >= target else None
    return {
        "name": name,
        "epochs": len(history),
        "seconds": seconds,
        "best": best,
        "epoch_to_target": reached[0] if reached else None,
        "seconds_to_target": reached[1] if reached else None,
    }


def timing(data: RunData) -> Section:
    if not data.history:
        return {"absent": data.no_history}
    keys = [*plots.TIMING, "epoch_s"]
    rows = [
        {"epoch": r["epoch"], "stage": r.get("stage", ""), **{k: r.get(k) for k in keys}}
        for r in data.history
    ]
    total = {k: sum(float(r.get(k) or 0) for r in data.history) for k in keys}
    wait = total["data_s"] / total["epoch_s"] if total["epoch_s"] else 0.0
    return {
        "png": plots.timing_chart(data.history),
        "rows": rows,
        "total": total,
        "data_share": wait,
        "input_bound": wait > DATA_WAIT_WARN,
    }


# --- evaluation -------------------------------------------------------------------------------


def confusion(data: RunData) -> Section:
    matrix = (data.evaluation or {}).get("metrics", {}).get("confusion_matrix")
    if not matrix:
        return {"absent": eval_missing(data)}
    classes = data.evaluation.get("classes") or data.classes  # type: ignore[union-attr]
    return {"png": plots.confusion_matrix(matrix, classes), "split": data.split}


def per_class(data: RunData) -> Section:
    table = (data.evaluation or {}).get("metrics", {}).get("per_class")
    if not table:
        return {"absent": eval_missing(data)}
    rows = []
    for name, row in table.items():
        ci = row.get("ci95") or {}
        cells = {
            k: (row.get(k), *(ci.get(k) or [None, None]))
            for k in ("precision", "recall", "f1", "auc")
        }
        rows.append({"name": name, "support": row.get("support"), **cells})
    return {
        "rows": rows,
        "has_ci": any(r["precision"][1] is not None for r in rows),
        "operating": operating_point(data),
    }


OPERATING_ROWS = (
    ("sensitivity", "Sensitivity (recall of the positive class)"),
    ("specificity", "Specificity (recall of the negative class)"),
    ("ppv", "PPV (precision: positive calls that are right)"),
    ("npv", "NPV (negative calls that are right)"),
)


def operating_point(data: RunData) -> Section | None:
    """A two-class evaluation's operating point: the four rates with CIs, the rule that picked the
    threshold, and the ROC curve (from predictions_<split>.csv) with the point marked."""
    op = (data.evaluation or {}).get("operating_point")
    if not isinstance(op, dict):
        return None
    ci = op.get("ci95") or {}
    rows = [(name, op.get(key), *(ci.get(key) or [None, None])) for key, name in OPERATING_ROWS]
    positive = op.get("positive")
    scored = [
        (p.label == positive, p.p_true if p.label == positive else 1.0 - p.p_true)
        for p in data.predictions
    ]
    png = None
    spec, sens = op.get("specificity"), op.get("sensitivity")
    both = {flag for flag, _ in scored} == {True, False}
    if both and isinstance(spec, float) and isinstance(sens, float):
        png = plots.roc_curve(
            [f for f, _ in scored], [s for _, s in scored], (1.0 - spec, sens), op["threshold"]
        )
    return {
        "positive": positive,
        "negative": op.get("negative"),
        "threshold": op.get("threshold"),
        "rule": op.get("rule"),
        "rows": rows,
        "counts": op.get("counts") or {},
        "png": png,
    }


def calibration(data: RunData) -> Section:
    ev = data.evaluation or {}
    after = ev.get("metrics", {}).get("reliability")
    if not after:
        return {"absent": eval_missing(data)}
    before = ev.get("uncalibrated", {}).get("reliability") or []
    cal = ev.get("calibration", {})
    return {
        "png": plots.reliability(before, after, cal.get("temperature")),
        "temperature": cal.get("temperature"),
        "fitted_on": cal.get("n_images"),
        "not_fitted": cal.get("reason") if cal.get("temperature") is None else None,
        "not_applied": cal.get("reason") if cal.get("applied") is False else None,
        "ece": (ev.get("uncalibrated", {}).get("ece"), ev["metrics"].get("ece")),
        "nll": (ev.get("uncalibrated", {}).get("nll"), ev["metrics"].get("nll")),
    }


def top_losses(data: RunData) -> Section:
    if not data.evaluation:
        return {"absent": eval_missing(data)}
    if not data.predictions:
        missing = data.run.predictions(str(data.split)).name
        return {"absent": f"no {missing}: re-run `medfit eval {data.path}`"}
    wrong = sorted((p for p in data.predictions if not p.correct), key=lambda p: -p.loss)
    bases = image_bases(data)
    return {
        "cards": [_card(p, bases) for p in wrong[:TOP_LOSSES]],
        "wrong": len(wrong),
        "total": len(data.predictions),
    }


def _card(p: PredictionRow, bases: list[Path]) -> dict[str, Any]:
    png, why = thumbnail(p.path, bases)
    return {"p": p, "png": png, "why": why}


def gradcam_unavailable(data: RunData, enabled: bool) -> str | None:
    """Why Grad-CAM cannot be drawn for this run, or None when it can. A k-fold run has no
    checkpoint of its own: its members' are looked for when the maps are drawn."""
    if not enabled:
        return "skipped (--no-gradcam)"
    if not data.evaluation or not data.predictions:
        return eval_missing(data)
    if not data.run.folds_json.is_file() and not data.checkpoint.is_file():
        return f"no {data.checkpoint}: the run has no selected weights yet"
    try:
        import captum  # noqa: F401
    except ImportError:
        return "captum is not installed: pip install captum (or medfit[report])"
    return None


def gradcam(data: RunData, enabled: bool) -> Section:
    why = gradcam_unavailable(data, enabled)
    if why is not None:
        return {"absent": why}
    from medfit.report.gradcam import overlays

    result = overlays(data.path, data.predictions, image_bases(data), member=data.member)
    if not result.images:
        return {"absent": result.note or "no images to explain"}
    return {"result": result}


# --- data check and diagnosis ------------------------------------------------------------------


def data_check(data: RunData) -> Section:
    if data.check is None:
        root = config_value(data, "data", "root") or "DATA"
        missing = data.run.check.name
        return {"absent": f"no {missing}: run `medfit check {root} --out {data.path}`"}
    c = data.check
    inv = c.get("inventory") or {}
    classes = inv.get("classes") or []
    counts = [
        (split, [row.get(name, 0) for name in classes], (inv.get("split_totals") or {}).get(split))
        for split, row in (inv.get("counts") or {}).items()
    ]
    near = c.get("near_duplicates") or {}
    bases = [*image_bases(data), Path(str(c.get("root", ".")))]
    kinds = [
        (
            "identical images in two splits",
            (c.get("exact_duplicates") or {}).get("cross_split_pairs"),
        ),
        ("near duplicates across splits (dHash)", (near.get("hash") or {}).get("pairs")),
        ("near duplicates across splits (embedding)", (near.get("embedding") or {}).get("pairs")),
        ("near duplicates inside a split (dHash)", (near.get("within_split") or {}).get("pairs")),
    ]
    pairs = [
        (title, [_pair_view(p, bases) for p in items[:PAIRS_SHOWN]], len(items))
        for title, items in kinds
        if items
    ]
    labels = c.get("label_issues") or {}
    return {
        "root": c.get("root"),
        "verdict": c.get("verdict") or [],
        "classes": classes,
        "counts": counts,
        "pairs": pairs,
        "label_issues": (labels.get("issues") or [])[:LABEL_ISSUES_SHOWN],
        "label_issues_total": labels.get("issues_total", 0),
    }


def _pair_view(pair: dict[str, Any], bases: list[Path]) -> dict[str, Any]:
    side = {}
    for key in ("a", "b"):
        ref = pair.get(key) or {}
        png, why = thumbnail(str(ref.get("path", "")), bases)
        side[key] = {**ref, "png": png, "why": why}
    how = pair.get("transform")
    detail = [
        f"{pair['distance']} bits" if pair.get("kind") == "dhash" and "distance" in pair else "",
        f"cosine {pair['similarity']:.3f}" if isinstance(pair.get("similarity"), float) else "",
        f"after {how}" if how and how != "identity" else "",
        "DIFFERENT LABELS" if pair.get("conflicting_labels") else "",
    ]
    return {**side, "detail": ", ".join(d for d in detail if d)}


def diagnosis(data: RunData) -> Section:
    if data.diagnosis is None:
        return {"absent": f"no {data.run.diagnosis.name}: run `medfit diagnose {data.path}`"}
    findings = [f for f in data.diagnosis.get("findings") or [] if isinstance(f, dict)]
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    findings.sort(key=lambda f: rank.get(str(f.get("severity")), len(rank)))  # stable: keeps the
    # diagnoser's own order (strongest evidence first) within a severity
    return {"findings": [{**f, "numbers": _numbers(f.get("numbers"))} for f in findings]}


def _numbers(numbers: Any) -> list[tuple[str, str]]:
    if not isinstance(numbers, dict):
        return []
    return [(str(k), _fmt(v)) for k, v in numbers.items()]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)
