"""`read_history(paths)`: detect each file's format, read it, and join several files in order.

Every file is read through `medfit.files` (regular files only, size-capped, binary refused), as
data: nothing in it is imported or executed. A folder is searched for TensorBoard event files or
a tool's own log file (FOLDER_FILES). Several files (`medfit diagnose head.csv finetune.csv`) are
phases of one job, in the order given.
"""

from __future__ import annotations

import re
from pathlib import Path

from medfit.diagnose.foreign.history import History
from medfit.diagnose.foreign.read_files import event_files, read_csv, read_json, read_tensorboard
from medfit.diagnose.foreign.read_text import (
    html_tables,
    looks_like_keras,
    read_epoch_lines,
    read_keras_console,
    read_tables,
    terminal_lines,
    text_tables,
)
from medfit.errors import MedfitError
from medfit.files import MAX_LINE_CHARS, long_lines, read_text_file

# Files a tool writes into its log folder, tried in this order when a folder is given.
FOLDER_FILES = ("metrics.csv", "results.csv", "summary.csv", "trainer_state.json", "history.json")
FORMATS = (
    "Keras console log with 'Epoch k/N' lines, a CSV with an epoch column (CSVLogger, Lightning, "
    "Ultralytics, timm), history JSON, trainer_state.json, TensorBoard events, fastai tables, "
    "or printed 'Epoch k ... loss: x' lines"
)


def read_history(paths: list[str | Path]) -> History:
    """One History for one or more logs of the same job; a MedfitError says why not."""
    histories = [read_one(Path(p).expanduser()) for p in paths]
    if len(histories) == 1:
        return histories[0]
    first = histories[0]
    for h in histories:
        for phase in h.phases:
            phase.name = (
                f"{h.paths[0].name}: {phase.name}" if len(h.phases) > 1 else h.paths[0].name
            )
    formats = list(dict.fromkeys(h.format for h in histories))
    return History(
        paths=[p for h in histories for p in h.paths],
        format=" + ".join(formats),
        framework=first.framework,
        phases=[p for h in histories for p in h.phases],
        ignored=list(dict.fromkeys(c for h in histories for c in h.ignored)),
        notes=[n for h in histories for n in h.notes],
        best_reported=next((h.best_reported for h in histories if h.best_reported), None),
    )


def read_one(path: Path) -> History:
    if path.is_dir():
        return _read_folder(path)
    if path.name.startswith("events.out.tfevents"):
        return _checked(read_tensorboard(path), path)
    source = read_text_file(path, "training log")
    text = source.text
    notes = list(source.notes)
    if long := long_lines(text):
        # Dropped before any parser sees them: no log line is that long, and every regex pass
        # over a 50 MB line would cost seconds.
        notes.append(
            f"{path.name}: {len(long)} line(s) over the line-length limit "
            f"({MAX_LINE_CHARS:,} characters) skipped: line(s) {', '.join(map(str, long[:5]))}"
        )
        text = "\n".join(line if len(line) <= MAX_LINE_CHARS else "" for line in text.split("\n"))
    try:
        history = _dispatch(path, text)
    except MedfitError as exc:
        raise MedfitError("; ".join([str(exc), *notes])) from None
    history.notes[:0] = notes
    return _checked(history, path)


def _dispatch(path: Path, text: str) -> History:
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise MedfitError(f"{path}: empty; nothing to diagnose")
    if path.suffix.lower() == ".json":
        return read_json(path, text)
    json_error: MedfitError | None = None
    if stripped.startswith(("{", "[")):
        try:
            return read_json(path, text)
        except MedfitError as exc:  # "[2025-11-20 03:35:01] Epoch 3: ..." is a log, not JSON
            json_error = exc
    if looks_like_keras(text):
        try:
            return read_keras_console(path, text)
        except MedfitError:  # "Epoch 3/50" headers over printed lines of a plain loop
            if (history := read_epoch_lines(path, text)) is not None:
                return history
            raise
    if "<table" in text and (tables := [t for t in html_tables(text) if _epoch_table(t)]):
        return read_tables(path, tables, "fastai" if _fastai(tables) else "unknown")
    lines = terminal_lines(text)
    if tables := text_tables(lines):
        return read_tables(path, tables, "fastai" if _fastai(tables) else "unknown")
    if path.suffix.lower() in (".csv", ".tsv") or _csv_header(stripped.splitlines()[0]):
        return read_csv(path, text)
    if (history := read_epoch_lines(path, text)) is not None:
        return history
    if json_error is not None:
        raise json_error
    raise MedfitError(f"{path}: not a training log medfit reads ({FORMATS})")


def _csv_header(line: str) -> bool:
    """`epoch,loss,accuracy`-like: several short names and no `name: value` pairs."""
    for sep in (",", "\t", ";"):
        cells = [c.strip() for c in line.split(sep)]
        if len(cells) >= 2 and all(re.fullmatch(r"[\w/ .()-]{0,60}", c) for c in cells):
            return any(c.lower() in ("epoch", "step") for c in cells) or len(cells) >= 3
    return False


def _epoch_table(table: list[list[str]]) -> bool:
    return bool(table) and bool(table[0]) and table[0][0].strip().lower() == "epoch"


def _fastai(tables: list[list[list[str]]]) -> bool:
    header = {h.strip().lower() for h in tables[0][0]}
    return {"train_loss", "valid_loss"} <= header


def _read_folder(path: Path) -> History:
    if event_files(path):
        return _checked(read_tensorboard(path), path)
    for name in FOLDER_FILES:
        if (path / name).is_file():
            return read_one(path / name)
    raise MedfitError(
        f"{path} is not a medfit run directory (no config.yaml) and holds no TensorBoard "
        f"events or known log file ({', '.join(FOLDER_FILES)})"
    )


def _checked(history: History, path: Path) -> History:
    """Nothing usable left (every value dropped, no known column): one line, exit 2."""
    if not history.phases:
        why = (
            "; ".join(history.notes[-2:]) or "no column is a loss, accuracy or metric medfit knows"
        )
        ignored = f" (columns: {', '.join(history.ignored[:8])})" if history.ignored else ""
        raise MedfitError(f"{path}: read as {history.format}, but nothing usable{ignored}: {why}")
    return history
