"""What `medfit train --resume RUN` may change, and the record of each resume.

A resumed run keeps its recipe: RUN/config.yaml must still describe the model in
RUN/checkpoints/last.pt, and the data must have the classes it was trained on; both are checked
before any file of the run is rewritten. Allowed changes: more `train.epochs` (the extra epochs
are trained; the cosine schedule of the full stage is re-planned for the new length from the step
reached, so it is not the schedule of a run started with that many epochs), the runtime fields in
`config.RESUME_MAY_CHANGE`, and `data.root` (the data moved; its classes are still checked).

Every resume appends one JSON line to RUN/resumed.jsonl:
    {"time": "2025-01-01T12:00:00+00:00", "after_epoch": 3, "changes": {"train.epochs": [3, 5]}}
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from medfit.config import RESUME_MAY_CHANGE, RunConfig
from medfit.errors import ConfigError, DataError
from medfit.rundir import RunDir

RESUMED_FILE = "resumed.jsonl"
# Fields a resume may change beside RESUME_MAY_CHANGE; train.epochs only upward.
_ALSO_ALLOWED = ("data.root", "train.epochs")
# Scheduler entries derived from the stage's length; dropped so the new plan's length applies.
_PLAN_KEYS = ("t_initial", "warmup_t", "warmup_steps")

Changes = dict[str, list[Any]]


def check_resumable(
    state: dict[str, Any], cfg: RunConfig, classes: list[str], run: RunDir
) -> Changes:
    """The config changes since `state` (last.pt) was written; a change that would make the
    resumed run a different run is refused in one line."""
    last, where = run.last, run.config
    if state["model_name"] != cfg.model.name:
        raise ConfigError(
            f"{where} says model.name {cfg.model.name} but {last} holds a {state['model_name']} "
            f"model; restore model.name: {state['model_name']} there, or start a new run"
        )
    if list(state["classes"]) != list(classes):
        raise DataError(
            f"the data has classes {', '.join(classes)} but {last} was trained on "
            f"{', '.join(state['classes'])}; resume on the run's own data or start a new run"
        )
    changes = config_changes(state.get("config") or {}, cfg)
    for key, (old, new) in changes.items():
        if _allowed(key, old, new):
            continue
        raise ConfigError(
            f"{where}: {key} is {new} but {last} was trained with {old}; a resumed run keeps its "
            f"recipe: restore {key}: {old}, or start a new run with --config {where}"
        )
    return changes


def _allowed(key: str, old: Any, new: Any) -> bool:
    if key == "train.epochs":
        return bool(new >= old)
    if key in ("train.lr", "train.head_lr") and old == "auto":
        return True  # settled by the LR range test after this checkpoint was written
    return key in (*RESUME_MAY_CHANGE, *_ALSO_ALLOWED)


def config_changes(saved: dict[str, Any], cfg: RunConfig) -> Changes:
    """{"train.epochs": [saved, now], ...} over the sections' fields; a field the saved config
    predates (written by an older medfit) is not a change."""
    now = cfg.to_dict()
    changes: Changes = {}
    for section in ("data", "model", "train"):
        old_section = saved.get(section) or {}
        for name, value in now[section].items():
            if name in old_section and old_section[name] != value:
                changes[f"{section}.{name}"] = [old_section[name], value]
    return changes


def replan_schedule(state: dict[str, Any], changes: Changes) -> None:
    """With more epochs, the full stage's cosine schedule follows the new length: without this,
    the restored scheduler would keep the old length and train the extra epochs at its floor."""
    stage_state = state.get("stage_state") or {}
    if "train.epochs" in changes and stage_state.get("stage") == "full":
        scheduler = stage_state.get("scheduler") or {}
        for key in _PLAN_KEYS:
            scheduler.pop(key, None)


def describe(changes: Changes) -> str:
    """The log line of a resume's changes ("" when nothing changed)."""
    if not changes:
        return ""
    parts = [f"{key} {old} -> {new}" for key, (old, new) in changes.items()]
    return f"  changed on resume: {', '.join(parts)} (recorded in {RESUMED_FILE})"


def record_resume(run: RunDir, after_epoch: int, changes: Changes) -> None:
    """Append this resume to RUN/resumed.jsonl (rewritten atomically, like every run file)."""
    path = run.path / RESUMED_FILE
    before = path.read_text() if path.is_file() else ""
    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "after_epoch": after_epoch,
        "changes": changes,
    }
    run.write_text(path, before + json.dumps(entry) + "\n")
