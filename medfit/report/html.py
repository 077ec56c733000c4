"""Assemble the sections into one self-contained HTML file and write it atomically.

The template is Jinja2 with autoescape on: class names, file names and paths come from the user's
folders and are always rendered as text. Figures are inline base64 PNG and the CSS is inline, so
the file opens anywhere (a USB stick, an air-gapped ward PC) with nothing fetched.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from medfit.data.sources import LABEL_JOIN
from medfit.errors import MedfitError
from medfit.files import atomic_write_bytes
from medfit.progress import Log
from medfit.report import multilabel, sections
from medfit.report.rundata import RunData, check_label, read_report_data
from medfit.rundir import RunDir

TEMPLATES = Path(__file__).parent / "templates"
TITLES = {
    "headline": "Headline",
    "curves": "Learning curves",
    "seeds": "Seeds",
    "folds": "Fold members and ensemble",
    "confusion": "Confusion matrix",
    "per_class": "Per-class metrics",
    "calibration": "Reliability (calibration)",
    "top_losses": "Top losses",
    "gradcam": "Grad-CAM",
    "check": "Data check",
    "diagnosis": "Diagnosis",
    "timing": "Timing",
    "time_to_accuracy": "Time to accuracy",
    "config": "Resolved config",
}
# A multi-label run (several findings per image): no accuracy, confusion matrix or softmax
# reliability; per-label AUCs, curves and label co-occurrence instead (medfit.report.multilabel).
MULTILABEL_TITLES = {
    "headline": "Headline",
    "curves": "Learning curves",
    "seeds": "Seeds",
    "folds": "Fold members and ensemble",
    "per_label": "Per-label metrics",
    "roc_pr": "ROC and precision-recall curves",
    "cooccurrence": "Label co-occurrence (train)",
    "label_calibration": "Calibration (per label)",
    "label_errors": "Largest errors",
    "gradcam": "Grad-CAM",
    "check": "Data check",
    "diagnosis": "Diagnosis",
    "timing": "Timing",
    "time_to_accuracy": "Time to macro AUC",
    "config": "Resolved config",
}


def titles_for(data: RunData) -> dict[str, str]:
    return MULTILABEL_TITLES if data.multilabel else TITLES


def write_report(
    run_dir: str | Path,
    log: Log = print,
    split: str | None = None,
    gradcam: bool = True,
    compare: Sequence[str | Path] = (),
    label: str | None = None,
    member: int | None = None,
) -> Path:
    """Render RUN/report.html from whatever RUN holds; `split` None = the newest evaluation;
    `compare`: other run directories whose val accuracy is plotted against time beside RUN's;
    `label`: the label a multi-label run's Grad-CAM explains (None: the measured label with the
    most positives); a MedfitError naming the valid labels when it is not one of them; `member`:
    the fold whose Grad-CAM a k-fold run shows (None: the mean of its members' maps), likewise."""
    data = read_report_data(run_dir, split, compare, member)
    check_label(data, label)
    parts = build_sections(data, gradcam, log, label)
    html = render(data, parts)
    path = RunDir(data.path).report
    write_atomic(path, html)
    log(f"wrote {path} ({len(html) / 1024:.0f} KB)")
    titles = titles_for(data)
    absent = [f"{titles[k]}: {v['absent']}" for k, v in parts.items() if v.get("absent")]
    for line in absent:
        log(f"  absent — {line}")
    return path


def write_atomic(path: Path, html: str) -> None:
    """Temp file beside `path`, then os.replace: a browser refreshing the report mid-write sees
    the old report or the new one, never half of one. Undecodable (non-UTF-8) file names become
    "?" instead of failing the whole report."""
    try:
        atomic_write_bytes(path, lambda f: f.write(html.encode("utf-8", errors="replace")))
    except OSError as exc:
        raise MedfitError(
            f"could not write {path}: {exc.strerror or exc}; any previous report is intact — "
            "free disk space or fix the folder's permissions and run `medfit report` again"
        ) from None


def build_sections(
    data: RunData, gradcam: bool, log: Log, label: str | None = None
) -> dict[str, dict[str, Any]]:
    if data.multilabel:
        return _build(multilabel_builders(data, gradcam, label), MULTILABEL_TITLES, log)
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "headline": lambda: sections.headline(data),
        "curves": lambda: sections.curves(data),
        "seeds": lambda: sections.seeds(data),
        "folds": lambda: sections.folds(data),
        "confusion": lambda: sections.confusion(data),
        "per_class": lambda: sections.per_class(data),
        "calibration": lambda: sections.calibration(data),
        "top_losses": lambda: sections.top_losses(data),
        "gradcam": lambda: sections.gradcam(data, gradcam),
        "check": lambda: sections.data_check(data),
        "diagnosis": lambda: sections.diagnosis(data),
        "timing": lambda: sections.timing(data),
        "time_to_accuracy": lambda: sections.time_to_accuracy(data),
        "config": lambda: {"text": data.config_text},
    }
    return _build(builders, TITLES, log)


def multilabel_builders(
    data: RunData, gradcam: bool, label: str | None
) -> dict[str, Callable[[], dict[str, Any]]]:
    """The sections of a multi-label run, in MULTILABEL_TITLES' order."""
    return {
        "headline": lambda: multilabel.headline(data),
        "curves": lambda: multilabel.curves(data),
        "seeds": lambda: sections.seeds(data),
        "folds": lambda: sections.folds(data),
        "per_label": lambda: multilabel.per_label(data),
        "roc_pr": lambda: multilabel.roc_pr(data),
        "cooccurrence": lambda: multilabel.cooccurrence(data),
        "label_calibration": lambda: multilabel.label_calibration(data),
        "label_errors": lambda: multilabel.label_errors(data),
        "gradcam": lambda: multilabel.gradcam(data, gradcam, label),
        "check": lambda: sections.data_check(data),
        "diagnosis": lambda: sections.diagnosis(data),
        "timing": lambda: sections.timing(data),
        "time_to_accuracy": lambda: sections.time_to_accuracy(data),
        "config": lambda: {"text": data.config_text},
    }


def _build(
    builders: dict[str, Callable[[], dict[str, Any]]], titles: dict[str, str], log: Log
) -> dict[str, dict[str, Any]]:
    return {name: _guarded(titles[name], build, log) for name, build in builders.items()}


def _guarded(title: str, build: Callable[[], dict[str, Any]], log: Log) -> dict[str, Any]:
    """A section that fails (a file from a newer medfit, a model that will not load) says so in
    its place: a report that renders nine sections of ten is worth more than a traceback."""
    try:
        return build()
    except Exception as exc:
        log(f"report: the {title} section failed: {type(exc).__name__}: {exc}")
        return {"absent": f"could not be rendered ({type(exc).__name__}: {exc})"}


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,  # a misspelt field fails the tests instead of rendering blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["commands"] = commands
    env.filters["labels"] = lambda v: str(v).replace(LABEL_JOIN, ", ")  # "A|B" -> "A, B"
    env.filters["pct"] = lambda v: "n/a" if not _finite(v) else f"{float(v):.1%}"
    env.filters["secs"] = lambda v: "n/a" if not _finite(v) else f"{float(v):.2f}"
    return env


def render(data: RunData, parts: dict[str, dict[str, Any]]) -> str:
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            run=data,
            s=parts,
            titles=titles_for(data),
            created=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        )
    )


def commands(text: str) -> Markup:
    """Escape `text`, then show its `backticked` commands as <code> (escaping first keeps any
    user text inside a command inert)."""
    return Markup(re.sub(r"`([^`]*)`", r"<code>\1</code>", str(escape(text))))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _num(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "n/a"
