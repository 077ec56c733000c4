"""Read the pieces of a run directory the report renders, tolerating any that are absent.

The files are read by `medfit.rundir` (one policy for every reader). A piece that exists but
cannot be read (truncated JSON, a CSV without its columns) is treated as absent with a `problems`
note carrying the reader's one-line error, so one damaged file costs one section, never the whole
report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medfit.data.sources import LABEL_JOIN, NO_LABELS
from medfit.errors import ConfigError, MedfitError
from medfit.rundir import EpochRow, PredictionRow, RunDir, read_run_text
from medfit.rundir.jobs import folds_section

T = TypeVar("T")


@dataclass
class RunData:
    path: Path
    config_text: str | None = None
    classes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_splits: list[str] = field(default_factory=list)
    split: str | None = None
    evaluation: dict[str, Any] | None = None
    predictions: list[PredictionRow] = field(default_factory=list)
    check: dict[str, Any] | None = None
    diagnosis: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    # Other runs to set beside this one (`medfit report RUN --compare OTHER ...`): name -> rows.
    compared: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Several findings per image, sigmoid outputs (config `data.task: multilabel`, or an
    # evaluation that says so): the report shows per-label AUCs instead of accuracy.
    multilabel: bool = False
    # A k-fold run's Grad-CAM: the fold whose map is drawn (`medfit report RUN --member K`);
    # None draws the mean of the members' maps.
    member: int | None = None

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)

    @property
    def no_history(self) -> str:
        """What sections that plot epochs say when there are none."""
        if self.run.folds_json.is_file():
            return "a fold ensemble trains no epochs itself: see each member's report (fold<k>/)"
        return f"no {self.run.metrics_jsonl.name} rows: the run has not finished an epoch yet"

    @property
    def checkpoint(self) -> Path:
        return self.run.best


def read_report_data(
    run_dir: str | Path,
    split: str | None = None,
    compare: Sequence[str | Path] = (),
    member: int | None = None,
) -> RunData:
    """Everything the report needs; a MedfitError only when RUN (or a run in `compare`) is not a
    run directory, or `member` is not a fold of RUN (`check_member`)."""
    run = _run_dir(run_dir)
    others = [_run_dir(path) for path in compare]
    data = RunData(run.path, config_text=read_run_text(run.config) or "")
    for other in others:
        rows: list[EpochRow] = _tolerant(data, other.read_history, [])
        name = _unique_name(other.path, {run.path.name, *data.compared})
        data.compared[name] = [r.to_dict() for r in rows]
    data.classes = _tolerant(data, run.read_classes, [])
    data.summary = _as(dict, _tolerant(data, lambda: run.read_json(run.summary), None), {})
    if not data.classes:
        data.classes = [str(c) for c in data.summary.get("classes", [])]
    # The report's plots and tables take plain rows; EpochRow fills what older runs lack.
    history: list[EpochRow] = _tolerant(data, run.read_history, [])
    data.history = [row.to_dict() for row in history]
    data.eval_splits = run.eval_splits()
    data.split = split or (data.eval_splits[0] if data.eval_splits else None)
    if data.split is not None:
        evaluation = _tolerant(data, lambda: run.read_json(run.eval_json(str(data.split))), None)
        data.evaluation = _as(dict, evaluation, None)
        data.predictions = _predictions(data, run, data.split)
    data.multilabel = _is_multilabel(data)
    data.check = _as(dict, _tolerant(data, lambda: run.read_json(run.check), None), None)
    data.diagnosis = _as(dict, _tolerant(data, lambda: run.read_json(run.diagnosis), None), None)
    check_member(data, member)
    data.member = member
    return data


def positive_labels(text: str) -> set[str]:
    """The labels a multi-label cell of split.csv or predictions_<split>.csv names
    ("Effusion|Mass" -> {"Effusion", "Mass"}; "(none)" -> {})."""
    return set() if text in (NO_LABELS, "") else set(text.split(LABEL_JOIN))


def check_label(data: RunData, label: str | None) -> None:
    """`medfit report --label NAME`: a label of this multi-label run, else a one-line error."""
    if label is None:
        return
    if not data.multilabel:
        raise MedfitError(
            f"--label chooses the label Grad-CAM explains in a multi-label run; {data.path} is "
            "single-label (its Grad-CAM explains each image's predicted class): drop --label"
        )
    if label not in data.classes:
        valid = ", ".join(data.classes) or "(none: the run has no classes.json)"
        raise MedfitError(f"--label {label!r} is not a label of {data.path}; valid labels: {valid}")


def check_member(data: RunData, member: int | None) -> None:
    """`medfit report RUN --member K`: a fold listed in RUN's folds.json, else a one-line error
    naming the folds there are (a failed one included: the Grad-CAM section then says why it
    cannot be drawn)."""
    if member is None:
        return
    found = folds_section(data.path)
    if found is None:
        raise ConfigError(
            f"--member chooses the fold member whose Grad-CAM is drawn in a k-fold run (medfit "
            f"train DATA --folds K); {data.path} has no {data.run.folds_json.name}: drop --member"
        )
    if found.this_member is not None:
        raise ConfigError(
            f"{data.path} is member {found.this_member} of the k-fold run {found.run}: drop "
            f"--member, or run `medfit report {found.run} --member K`"
        )
    folds = [m.get("fold") for m in found.members]
    if member not in folds:
        valid = ", ".join(str(f) for f in folds) or "(none: folds.json lists no members)"
        raise ConfigError(f"--member {member} is not a fold of {data.path}; valid members: {valid}")


def _is_multilabel(data: RunData) -> bool:
    """The evaluation's task when there is one, else the config's `data.task`."""
    task = (data.evaluation or {}).get("task")
    if task is None:
        try:
            config = yaml.safe_load(data.config_text or "") or {}
            task = config.get("data", {}).get("task")
        except (yaml.YAMLError, AttributeError):
            task = None
    return task == "multilabel"


def _run_dir(path: str | Path) -> RunDir:
    run = RunDir(Path(path).expanduser())
    if not run.path.is_dir():
        raise MedfitError(
            f"run directory not found: {run.path}; pass the --out folder of a training run"
        )
    if not run.config.is_file():
        raise MedfitError(f"{run.path} is not a medfit run directory (no {run.config.name})")
    return run


def _unique_name(path: Path, taken: set[str]) -> str:
    """The folder's name, or parent/name when two compared runs share it (seeds/seed_0 ...)."""
    name = path.name
    return name if name not in taken else f"{path.parent.name}/{path.name}"


def _tolerant(data: RunData, read: Callable[[], T], default: T) -> T:
    """`read()`, or `default` with the reader's one-line error noted in `data.problems`."""
    try:
        return read()
    except MedfitError as exc:
        data.problems.append(str(exc))
        return default


def _as(kind: type, value: Any, default: Any) -> Any:
    return value if isinstance(value, kind) else default


def _predictions(data: RunData, run: RunDir, split: str) -> list[PredictionRow]:
    """predictions_<split>.csv through the contract; rows that cannot be read are left out."""
    try:
        found = run.read_predictions(split)
    except MedfitError as exc:
        data.problems.append(f"{exc}")
        return []
    return found[0] if found else []
