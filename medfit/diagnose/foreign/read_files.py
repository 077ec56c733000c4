"""Training histories written as files: CSV (Keras CSVLogger, Lightning, Ultralytics, timm),
JSON (Keras `history.history`, Hugging Face `trainer_state.json`) and TensorBoard event files.

    epoch,accuracy,loss,val_accuracy,val_loss        Keras CSVLogger (epoch from 0; with
    0,0.71,0.59,0.81,0.68                             append=True a restart is a new run)
    epoch,step,train_loss_step,val_acc,...           Lightning: a row per logging step
    epoch,train/loss,metrics/accuracy_top1,...       Ultralytics results.csv (epoch from 1)
    epoch,train_loss,eval_loss,eval_top1,...         timm summary.csv (top-1 in percent)

A column logged per step is not an epoch value: Lightning's `*_step` columns and any column with
several values in an epoch, or values in only some epochs, are averaged per epoch when every
epoch has some (and said so), else left out (and said so). Hugging Face logs the training loss
every `logging_steps` steps and evaluates once per epoch: the evaluations are the epochs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from medfit.diagnose.foreign.history import History, PhaseBuilder
from medfit.diagnose.foreign.read_text import _history
from medfit.errors import MedfitError
from medfit.files import json_depth_ok, read_bytes_bounded, tensorboard_without_tensorflow

TB_PREFIX = "events.out.tfevents"
# TensorBoard event files under a folder, all together: a run logged per epoch is kilobytes.
MAX_EVENT_BYTES = 256 * 1024 * 1024
# A per-step column counts as an epoch mean only when this share of the epochs has a value.
STEP_COVERAGE = 0.9


def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


# --- CSV ----------------------------------------------------------------------------------------


def csv_rows(path: Path, text: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """(field names, rows, line numbers of rows that could not be read)."""
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    delimiter = "\t" if "\t" in first else ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error):
        raise MedfitError(f"{path}: empty, or no CSV header line") from None
    rows, bad = [], []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error:
            bad.append(reader.line_num)
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            bad.append(reader.line_num)
            continue
        rows.append(dict(zip(header, cells, strict=False)))
    return header, rows, bad


def read_csv(path: Path, text: str) -> History:
    header, rows, bad = csv_rows(path, text)
    names = set(header)
    if not rows:
        raise MedfitError(f"{path}: a CSV header ({', '.join(header[:6])}) and no rows")
    if any(n.startswith(("train/", "metrics/")) for n in names):
        fmt, framework = "Ultralytics results.csv", "ultralytics"
    elif "step" in names:
        fmt, framework = "Lightning metrics.csv", "lightning"
    elif {"eval_top1", "eval_loss"} <= names:
        fmt, framework = "timm summary.csv", "timm"
    elif names & {"loss", "val_loss", "accuracy", "val_accuracy", "acc", "val_acc"}:
        fmt, framework = "Keras CSVLogger CSV", "keras"
    else:
        fmt, framework = "CSV history", "unknown"
    epoch_col = next((h for h in header if h.strip().lower() == "epoch"), None)
    if epoch_col is None and header and header[0] in ("", "Unnamed: 0"):
        epoch_col = header[0]  # pandas to_csv of a history DataFrame: the index is the epoch
    notes = [f"{path.name}: line(s) {_lines(bad)} could not be read as CSV rows"] if bad else []
    if framework == "lightning":
        history = _lightning(path, header, rows, fmt)
    else:
        history = _runs(path, header, rows, epoch_col, fmt, framework, notes)
    history.notes[:0] = notes
    return history


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:8]))
    return shown + (f" and {len(numbers) - 8} more" if len(numbers) > 8 else "")


def _runs(
    path: Path,
    header: list[str],
    rows: list[dict[str, str]],
    epoch_col: str | None,
    fmt: str,
    framework: str,
    notes: list[str],
) -> History:
    """One row per epoch; an epoch column that restarts (CSVLogger append=True) starts a run."""
    builders: list[PhaseBuilder] = []
    current: PhaseBuilder | None = None
    last: int | None = None
    unreadable: list[str] = []
    for i, row in enumerate(rows):
        e = _num(row.get(epoch_col)) if epoch_col else float(i)
        if e is None or not math.isfinite(e):
            unreadable.append(str(i + 2))
            continue
        epoch = int(e)
        if current is None or (last is not None and epoch <= last):
            current = PhaseBuilder("run")
            builders.append(current)
        last = epoch
        for name in header:
            if name == epoch_col or name.strip().lower() in ("time", "step"):
                continue
            value = _num(row.get(name))
            if value is None and (row.get(name) or "").strip():
                unreadable.append(f"{i + 2} ({name}={row.get(name)!r})")
            elif value is not None:
                current.add(epoch, name.strip(), value)
    if unreadable:
        notes.append(f"{path.name}: unreadable value(s) on line(s) {', '.join(unreadable[:8])}")
    history = _history(path, fmt, framework, builders, "train")
    if len(history.phases) > 1:
        history.notes.append(
            f"{path.name}: the epoch column restarts {len(history.phases) - 1} time(s): "
            f"{len(history.phases)} runs in one file (CSVLogger(append=True)), read apart"
        )
    return history


def _lightning(path: Path, header: list[str], rows: list[dict[str, str]], fmt: str) -> History:
    """Lightning's CSVLogger: epoch-level values appear once per epoch; per-step ones many times
    or in some epochs only (every `log_every_n_steps` steps)."""
    per_epoch: dict[int, dict[str, list[float]]] = {}
    for row in rows:
        e = _num(row.get("epoch"))
        if e is None:
            continue
        for name in header:
            if name in ("epoch", "step"):
                continue
            if (value := _num(row.get(name))) is not None:
                per_epoch.setdefault(int(e), {}).setdefault(name, []).append(value)
    epochs = sorted(per_epoch)
    b = PhaseBuilder("run")
    notes = []
    for name in header:
        if name in ("epoch", "step"):
            continue
        counts = [len(per_epoch[e].get(name, [])) for e in epochs]
        seen = sum(c > 0 for c in counts)
        if seen == 0:
            continue
        per_step = name.endswith("_step") or max(counts) > 1 or seen < len(epochs)
        if not per_step:
            for e in epochs:
                if name in per_epoch[e]:
                    b.add(e, name, per_epoch[e][name][0])
        elif seen >= STEP_COVERAGE * len(epochs) and not name.endswith("_step"):
            for e in epochs:
                if values := per_epoch[e].get(name):
                    b.add(e, name, sum(values) / len(values))
            notes.append(f"{name} is logged per step: its mean over each epoch is used")
        else:
            notes.append(
                f"{name} is logged per step ({sum(counts)} value(s) in {seen} of {len(epochs)} "
                "epochs), not per epoch: left out"
            )
    history = _history(path, fmt, "lightning", [b], "train")
    history.notes += notes
    return history


# --- JSON ---------------------------------------------------------------------------------------


def read_json(path: Path, text: str) -> History:
    if not json_depth_ok(text):
        raise MedfitError(f"{path}: JSON nested deeper than any training history; not read")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MedfitError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("log_history"), list):
        return read_trainer_state(path, data["log_history"])
    if isinstance(data, dict) and isinstance(data.get("history"), dict):
        data = data["history"]  # {"history": model.fit(...).history, "params": ...}
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return _keras_history(path, data)
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        header = list(dict.fromkeys(k for r in data for k in r))
        rows = [{k: str(v) for k, v in r.items()} for r in data]
        epoch = "epoch" if "epoch" in header else None
        notes: list[str] = []
        history = _runs(path, header, rows, epoch, "JSON history", "unknown", notes)
        history.notes[:0] = notes
        return history
    raise MedfitError(
        f"{path}: JSON that is neither a Keras history ({{'loss': [...], 'val_loss': [...]}}) "
        "nor a Hugging Face trainer_state.json (with log_history)"
    )


def _keras_history(path: Path, data: dict[str, list[Any]]) -> History:
    b = PhaseBuilder("fit")
    lengths = {len(v) for v in data.values()}
    for name, values in data.items():
        for i, v in enumerate(values):
            if (x := _num(v)) is not None:
                b.add(i + 1, name, x)
    history = _history(path, "Keras History JSON", "keras", [b], "train")
    if len(lengths) > 1:
        history.notes.append(
            f"{path.name}: the metric lists have different lengths ({sorted(lengths)}); "
            "epochs are aligned from the start"
        )
    return history


def read_trainer_state(path: Path, log_history: list[Any]) -> History:
    """HF Trainer: evaluation entries are the epochs (one per epoch with eval_strategy="epoch");
    training-loss entries come every `logging_steps` steps and are per-step values."""
    evals = [
        e
        for e in log_history
        if isinstance(e, dict)
        and any(str(k).startswith("eval_") for k in e)
        and isinstance(e.get("epoch"), (int, float))
    ]
    b = PhaseBuilder("run")
    labels = [max(1, math.ceil(float(e["epoch"]) - 1e-6)) for e in evals]
    by_step = len(set(labels)) < len(labels)
    for i, (entry, label) in enumerate(zip(evals, labels, strict=True)):
        point = i + 1 if by_step else label
        for name, value in entry.items():
            if name in ("epoch", "step") or not str(name).startswith("eval_"):
                continue
            if (x := _num(value)) is not None and not str(name).endswith(
                ("_runtime", "_per_second")
            ):
                b.add(point, str(name), x)
    train = [e for e in log_history if isinstance(e, dict) and "loss" in e and "epoch" in e]
    train_epochs = [max(1, math.ceil(float(e["epoch"]) - 1e-6)) for e in train]
    once_per_epoch = not by_step and len(set(train_epochs)) == len(train_epochs) == len(labels)
    if once_per_epoch:  # logging_strategy="epoch": the training loss is an epoch value
        for entry, label in zip(train, train_epochs, strict=True):
            if (x := _num(entry.get("loss"))) is not None:
                b.add(label, "train_loss", x)
    if not by_step:  # the peak LR of each epoch (the schedule moves it every step)
        peaks: dict[int, float] = {}
        for entry, label in zip(train, train_epochs, strict=True):
            if (lr := _num(entry.get("learning_rate"))) is not None and label in labels:
                peaks[label] = max(peaks.get(label, 0.0), lr)
        for label, lr in peaks.items():
            b.add(label, "learning_rate", lr)
    history = _history(path, "Hugging Face trainer_state.json", "hf", [b], "val")
    if train and not once_per_epoch:
        history.notes.append(
            f"the training loss is logged every few steps ({len(train)} entries), not per "
            "epoch: left out of the epoch table"
        )
    if by_step:
        history.notes.append(
            f"evaluated {len(evals)} times in {max(labels)} epoch(s): each evaluation is one point"
        )
    if not evals:
        raise MedfitError(f"{path}: a trainer_state.json with no evaluation (eval_*) entries")
    return history


# --- TensorBoard --------------------------------------------------------------------------------


def event_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob(f"{TB_PREFIX}*") if p.is_file() and "profile" not in p.name
    )


def read_tensorboard(path: Path) -> History:
    """Scalars from every event file under `path`, one phase per run folder (the folder holding
    `train/` and `validation/`, or the file's own folder), in the order they were written. A
    split folder (validation, val, eval) gives its split to Keras' `epoch_loss`-style tags."""
    tensorboard_without_tensorflow()
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    files = [path] if path.is_file() else event_files(path)
    if not files:
        raise MedfitError(f"{path}: no TensorBoard event files ({TB_PREFIX}*) found")
    total = sum(f.stat().st_size for f in files)
    if total > MAX_EVENT_BYTES:
        raise MedfitError(
            f"{path}: {total >> 20} MB of event files, over the {MAX_EVENT_BYTES >> 20} MB limit"
        )
    runs: dict[Path, dict[str, dict[int, float]]] = {}
    started: dict[Path, float] = {}
    for file in files:
        read_bytes_bounded(file, "TensorBoard event file", MAX_EVENT_BYTES)  # type and size
        split_dir = file.parent.name.lower()
        split = "val" if split_dir in ("validation", "val", "eval", "valid", "test") else "train"
        run = (
            file.parent.parent
            if split_dir in ("validation", "val", "eval", "valid", "test", "train")
            else file.parent
        )
        series = runs.setdefault(run, {})
        try:
            for event in EventFileLoader(str(file)).Load():
                started[run] = min(started.get(run, math.inf), event.wall_time)
                for value in event.summary.value:
                    x = _tb_value(value, tensor_util)
                    if x is None:
                        continue
                    tag = value.tag
                    name = f"val_{tag}" if split == "val" and not _says_split(tag) else tag
                    series.setdefault(name, {})[event.step] = x
        except Exception as exc:  # a truncated or foreign file: the protobuf reader's own error
            raise MedfitError(f"{file}: unreadable TensorBoard event file ({exc})") from None
    builders = []
    for run in sorted(runs, key=lambda r: started.get(r, math.inf)):
        b = PhaseBuilder(f"run {run.name}")
        for name, points in runs[run].items():
            for step, x in points.items():
                b.add(step, name, x)
        builders.append(b)
    history = _history(path, "TensorBoard events", "tensorboard", builders, "train")
    if len(history.phases) > 1:
        history.notes.append(f"{len(history.phases)} runs in {path.name}: read apart")
    return history


def _tb_value(value: Any, tensor_util: Any) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):
        array = tensor_util.make_ndarray(value.tensor)
        if array.size == 1 and array.dtype.kind in "fiu":
            return float(array.reshape(-1)[0])
    return None


def _says_split(tag: str) -> bool:
    words = set(re.split(r"[^a-z0-9]+", tag.lower()))
    return bool(words & {"val", "valid", "validation", "eval", "test", "train", "training"})
