"""Training histories written by other tools, read into medfit's epoch model and diagnosed.

    medfit diagnose fit_log.txt            # Keras `fit` console output
    medfit diagnose log.csv                # Keras CSVLogger, Lightning metrics.csv, Ultralytics
    medfit diagnose history.json           # json.dump(model.fit(...).history)
    medfit diagnose trainer_state.json     # Hugging Face Trainer
    medfit diagnose logs/                  # TensorBoard event files (Keras or PyTorch names)

Every format is read as data (text, csv, json, TensorBoard's protobuf records); nothing in the
input is ever imported or executed. Each source column is mapped to an `EpochRow` field or listed
as ignored, and the rules that only need a history run on it. Rules that read medfit's own config
(normalisation, BN policy, the default LR) do not run: the foreign run's config is unknown, and a
default config would make them speak about a run that never happened.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medfit.config import RunConfig
from medfit.diagnose.facts import RunFacts
from medfit.diagnose.findings import Finding
from medfit.diagnose.fit_rules import underfitting
from medfit.diagnose.rules import (
    DROP_SIGMAS,
    JITTER_RATIO,
    MIN_TREND_EPOCHS,
    class_imbalance,
    lr_too_high,
    overfitting,
    val_instability,
)
from medfit.errors import MedfitError
from medfit.model.backbones import Preprocess
from medfit.rundir import EpochRow

TB_PREFIX = "events.out.tfevents"
# Files a tool writes into its log folder, tried in this order when a folder is given.
FOLDER_FILES = ("metrics.csv", "results.csv", "trainer_state.json", "history.json", "log.csv")

# Words around a metric name that say which split it was measured on.
SPLIT_WORDS = {
    "val": "val",
    "valid": "val",
    "validation": "val",
    "eval": "val",
    "metrics": "val",  # Ultralytics: metrics/accuracy_top1 is measured on val
    "train": "train",
    "training": "train",
}
# Decoration that does not change what a column is: Keras TensorBoard's `epoch_` prefix,
# Lightning's `_epoch` suffix.
NOISE_WORDS = {"epoch"}
# Per-step values are not epoch values (Lightning `_step`, Keras TensorBoard `batch_`).
STEP_WORDS = {"step", "batch", "iteration", "iter"}
KINDS = {
    ("loss",): "loss",
    ("acc",): "acc",
    ("accuracy",): "acc",
    ("categorical", "accuracy"): "acc",
    ("sparse", "categorical", "accuracy"): "acc",
    ("binary", "accuracy"): "acc",
    ("accuracy", "top1"): "acc",
    ("top1",): "acc",
    ("top1", "acc"): "acc",
    ("learning", "rate"): "lr",
    ("balanced", "accuracy"): "balanced",
    ("balanced", "acc"): "balanced",
    ("macro", "f1"): "f1",
    ("f1", "macro"): "f1",
}
FIELDS = {
    ("train", "loss"): "train_loss",
    ("val", "loss"): "val_loss",
    ("train", "acc"): "train_acc",
    ("val", "acc"): "val_acc",
    ("val", "balanced"): "val_balanced_accuracy",
    ("val", "f1"): "val_macro_f1",
}


def column_field(name: str, split: str = "train") -> str | None:
    """The EpochRow field a source column holds, or None. `split` is the default when the name
    does not say (a Keras TensorBoard run folder `validation/` holds `epoch_loss`)."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    if not tokens or STEP_WORDS & set(tokens):
        return None
    if tokens[0] in ("lr", "learning") and (tokens[0] == "lr" or tokens[1:2] == ["rate"]):
        return "lr"  # lr, lr-SGD, lr/pg0, learning_rate, epoch_learning_rate (after `epoch`)
    words = [t for t in tokens if t not in NOISE_WORDS]
    splits = [SPLIT_WORDS[t] for t in words if t in SPLIT_WORDS]
    rest = tuple(t for t in words if t not in SPLIT_WORDS)
    if rest[:1] == ("lr",) or rest == ("learning", "rate"):
        return "lr"
    kind = KINDS.get(rest)
    if kind is None:
        return None
    return FIELDS.get((splits[0] if splits else split, kind))


@dataclass
class ForeignHistory:
    """A foreign run's per-epoch history and what the reader understood of it."""

    path: Path
    format: str
    rows: list[EpochRow]
    understood: dict[str, str]  # source column -> EpochRow field
    ignored: list[str]
    total_epochs: int | None = None  # N of "Epoch k/N", when the log says it
    steps: int | None = None  # optimizer steps per epoch, when the log says it
    step_s: dict[int, float] = field(default_factory=dict)  # epoch -> seconds per step
    best_reported: tuple[str, float] | None = None  # (monitor, best) from checkpoint lines

    @property
    def epochs(self) -> list[int]:
        return [r.epoch for r in self.rows]

    def missing(self) -> list[tuple[int, int]]:
        """Ranges of epochs the history skips (elided console output, a resumed run)."""
        have = self.epochs
        gaps = [(a + 1, b - 1) for a, b in itertools.pairwise(have) if b > a + 1]
        if self.total_epochs and have and have[-1] < self.total_epochs:
            gaps.append((have[-1] + 1, self.total_epochs))
        return gaps

    def segments(self) -> list[list[EpochRow]]:
        """Runs of consecutive epochs: epoch-to-epoch changes are only measured inside one."""
        out: list[list[EpochRow]] = []
        for row in self.rows:
            if out and row.epoch == out[-1][-1].epoch + 1:
                out[-1].append(row)
            else:
                out.append([row])
        return out

    def describe(self) -> str:
        span = _ranges(self.epochs)
        of = f" of {self.total_epochs}" if self.total_epochs else ""
        gaps = self.missing()
        missing = f"; missing {_ranges_from(gaps)}" if gaps else ""
        cols = ", ".join(f"{k}->{v}" for k, v in self.understood.items())
        ignored = ", ".join(self.ignored) if self.ignored else "none"
        return (
            f"{self.path.name} read as {self.format}: {len(self.rows)} epochs ({span}{of}"
            f"{missing}); understood {cols}; ignored {ignored}"
        )


def _ranges(epochs: list[int]) -> str:
    spans: list[tuple[int, int]] = []
    for e in epochs:
        if spans and e == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], e)
        else:
            spans.append((e, e))
    return _ranges_from(spans)


def _ranges_from(spans: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


# --- reading ------------------------------------------------------------------------------------


def read_history(path: str | Path) -> ForeignHistory:
    """Detect the format of `path` (a file, or a folder of TensorBoard events / a tool's log
    files) and read it; a MedfitError says what was expected when nothing fits."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MedfitError(f"{p} does not exist; give a run directory or a training log")
    if p.is_dir():
        if _event_files(p):
            return read_tensorboard(p)
        for name in FOLDER_FILES:
            if (p / name).is_file():
                return read_history(p / name)
        raise MedfitError(
            f"{p} is not a medfit run directory (no config.yaml) and holds no TensorBoard "
            f"events or known log file ({', '.join(FOLDER_FILES)})"
        )
    if p.name.startswith(TB_PREFIX):
        return read_tensorboard(p)
    text = _text(p)
    if p.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        return _read_json(p, text)
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if re.search(r"^\s*Epoch \d+/\d+", text, re.MULTILINE):
        return read_keras_console(p, text)
    if p.suffix.lower() in (".csv", ".tsv") or first.count(",") >= 1:
        return read_csv_history(p, text)
    raise MedfitError(
        f"{p}: not a format medfit reads (Keras console log with 'Epoch k/N' lines, a CSV with "
        "an epoch column, history JSON, trainer_state.json, TensorBoard events)"
    )


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise MedfitError(f"cannot read {path}: {exc.strerror or exc}") from None


def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _build(
    path: Path,
    fmt: str,
    per_epoch: dict[int, dict[str, float]],
    columns: Iterable[str],
    split: str = "train",
    **extra: Any,
) -> ForeignHistory:
    """Rows from {epoch: {source column: value}}; columns map through `column_field`."""
    understood: dict[str, str] = {}
    ignored: list[str] = []
    for col in columns:
        target = column_field(col, split)
        if target is not None and target not in understood.values():
            understood[col] = target
        elif col not in ("epoch", "step", "time"):
            ignored.append(col)
    rows = []
    for epoch in sorted(per_epoch):
        values = per_epoch[epoch]
        row: dict[str, Any] = {"epoch": epoch, "stage": "full"}
        for col, target in understood.items():
            if col in values:
                row[target] = values[col]
        if "epoch_s" in values:
            row["epoch_s"] = values["epoch_s"]
        rows.append(EpochRow.from_dict(row))
    if not rows:
        raise MedfitError(f"{path}: read as {fmt}, but no epoch had any value")
    if not understood:
        raise MedfitError(
            f"{path}: read as {fmt}, but none of its columns ({', '.join(ignored)}) is a loss, "
            "accuracy or learning rate medfit knows"
        )
    return ForeignHistory(path, fmt, rows, understood, ignored, **extra)


# Keras `fit` console output (tf.keras 2.x and Keras 3, verbose 1 or 2).
_HEADER = re.compile(r"^\s*Epoch (\d+)/(\d+)\s*$")
_CALLBACK = re.compile(r"^\s*Epoch (\d+):\s*(.*)$")
_PROGRESS = re.compile(r"^\s*(\d+)/(\d+)\b")
_PAIR = re.compile(r"(\w+): (-?(?:\d+\.?\d*(?:e[+-]?\d+)?|nan|inf))", re.IGNORECASE)
_TIME = re.compile(r"\s(\d+(?:\.\d+)?)s(?:\s+(\d+(?:\.\d+)?)(us|ms|s)/step)?\b")
_IMPROVED = re.compile(r"(\w+) improved from \S+ to (-?[\d.]+(?:e[+-]?\d+)?)")
_NOT_IMPROVED = re.compile(r"(\w+) did not improve from (-?[\d.]+(?:e[+-]?\d+)?)")
_STEP_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def read_keras_console(path: Path, text: str) -> ForeignHistory:
    """`Epoch k/N` headers, progress lines (`ETA` ones skipped), the epoch's final metrics line,
    and ModelCheckpoint/EarlyStopping lines (`Epoch k: val_accuracy improved ...`), which also
    give the epoch number after an elision and the best value reached in elided epochs."""
    epoch: int | None = None
    total = steps = None
    per_epoch: dict[int, dict[str, float]] = {}
    columns: dict[str, None] = {}
    step_s: dict[int, float] = {}
    best: tuple[str, float] | None = None
    for line in re.split(r"[\r\n]+", text):
        if m := _HEADER.match(line):
            epoch, total = int(m.group(1)), int(m.group(2))
            continue
        if m := _CALLBACK.match(line):
            epoch = int(m.group(1))
            if c := _IMPROVED.search(m.group(2)) or _NOT_IMPROVED.search(m.group(2)):
                best = (c.group(1), float(c.group(2)))
            continue
        progress = _PROGRESS.match(line)
        if epoch is None or progress is None or "ETA" in line:
            continue
        if progress.group(1) != progress.group(2):
            continue  # Keras 3 progress updates (5/10) carry no ETA
        pairs = {k: float(v) for k, v in _PAIR.findall(line)}
        if not pairs or len(pairs) <= len(per_epoch.get(epoch, {})):
            continue  # the epoch's fullest final line wins (with val_*), not an evaluate()
        steps = int(progress.group(2))
        head = line[: _PAIR.search(line).start()]  # type: ignore[union-attr]  # pairs found
        if t := _TIME.search(head):
            pairs["epoch_s"] = float(t.group(1))
            if t.group(2):
                step_s[epoch] = float(t.group(2)) * _STEP_UNIT[t.group(3)]
        columns.update(dict.fromkeys(k for k in pairs if k != "epoch_s"))
        per_epoch[epoch] = pairs
    if not per_epoch:
        raise MedfitError(
            f"{path}: 'Epoch k/N' lines found but no finished epoch (a line like "
            "'2993/2993 [====] - 1486s 495ms/step - loss: 1.2 - accuracy: 0.48')"
        )
    for e, pairs in per_epoch.items():
        # Keras prints "1s/step" for 1.205 s; the epoch time over the steps is exact.
        if "epoch_s" in pairs and steps:
            step_s[e] = pairs["epoch_s"] / steps
    return _build(
        path,
        "Keras console log",
        per_epoch,
        columns,
        total_epochs=total,
        steps=steps,
        step_s=step_s,
        best_reported=best,
    )


def read_csv_history(path: Path, text: str) -> ForeignHistory:
    """Keras CSVLogger (epoch from 0), Lightning metrics.csv (one row per logging step, epoch
    from 0, blanks), Ultralytics results.csv (padded names, epoch from 1), or any CSV with an
    epoch column: per epoch, the last non-empty value of each column."""
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    fieldnames = [(f or "").strip() for f in reader.fieldnames or []]
    raw_rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
    if "epoch" not in fieldnames:
        # CSVLogger always writes `epoch`; without it each row is taken as one epoch.
        numbered = [{**r, "epoch": str(i)} for i, r in enumerate(raw_rows)]
        raw_rows, fieldnames = numbered, [*fieldnames, "epoch"]
    names = set(fieldnames)
    fmt = (
        "Ultralytics results.csv"
        if any(n.startswith(("train/", "metrics/")) for n in names)
        else "Lightning metrics.csv"
        if "step" in names
        else "Keras CSVLogger CSV"
        if names & {"loss", "val_loss", "accuracy", "val_accuracy"}
        else "CSV history"
    )
    per_epoch: dict[int, dict[str, float]] = {}
    for r in raw_rows:
        e = _num(r.get("epoch"))
        if e is None:
            continue
        values = per_epoch.setdefault(int(e), {})
        for k, v in r.items():
            if k not in ("epoch", "step") and (x := _num(v)) is not None:
                values[k] = x
    per_epoch = _one_based(per_epoch)
    return _build(path, fmt, per_epoch, [f for f in fieldnames if f])


def _one_based(per_epoch: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    """Keras, Lightning and TensorBoard count epochs from 0; medfit (and the console) from 1."""
    if per_epoch and min(per_epoch) == 0:
        return {e + 1: v for e, v in per_epoch.items()}
    return per_epoch


def _read_json(path: Path, text: str) -> ForeignHistory:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MedfitError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("log_history"), list):
        return read_trainer_state(path, data["log_history"])
    if isinstance(data, dict) and isinstance(data.get("history"), dict):
        data = data["history"]  # {"history": model.fit(...).history, "params": ...}
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        n = max(len(v) for v in data.values())
        per_epoch = {
            i + 1: {k: x for k, v in data.items() if i < len(v) and (x := _num(v[i])) is not None}
            for i in range(n)
        }
        return _build(path, "Keras History JSON", per_epoch, list(data))
    raise MedfitError(
        f"{path}: JSON that is neither a Keras history ({{'loss': [...], 'val_loss': [...]}}) "
        "nor a Hugging Face trainer_state.json (with log_history)"
    )


def read_trainer_state(path: Path, log_history: list[Any]) -> ForeignHistory:
    """HF Trainer: training-loss entries at fractional epochs, eval entries at epoch ends; an
    entry at epoch 1.4 belongs to the second epoch."""
    per_epoch: dict[int, dict[str, float]] = {}
    columns: dict[str, None] = {}
    for entry in log_history:
        if not isinstance(entry, dict) or "train_runtime" in entry:
            continue  # the end-of-training summary averages the whole run
        e = _num(entry.get("epoch"))
        if e is None:
            continue
        epoch = max(1, math.ceil(e - 1e-6))
        values = per_epoch.setdefault(epoch, {})
        for k, v in entry.items():
            if k not in ("epoch", "step") and (x := _num(v)) is not None:
                values[k] = x
                columns[k] = None
    return _build(path, "Hugging Face trainer_state.json", per_epoch, list(columns))


def _says_split(name: str) -> bool:
    return bool(set(re.split(r"[^a-z0-9]+", name.lower())) & set(SPLIT_WORDS))


def _event_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(f"{TB_PREFIX}*") if p.is_file())


def read_tensorboard(path: Path) -> ForeignHistory:
    """Scalars (PyTorch `add_scalar`) and scalar tensors (tf.summary / Keras' callback) from every
    event file under `path`; a run folder named validation/val/eval sets the split of Keras'
    `epoch_loss`-style tags. Steps are taken as epochs (Keras logs per epoch by default)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    files = [path] if path.is_file() else _event_files(path)
    root = path.parent if path.is_file() else path
    per_epoch: dict[int, dict[str, float]] = {}
    columns: dict[str, None] = {}
    for file in files:
        run = file.parent.relative_to(root).as_posix()
        split = "val" if run.split("/")[-1].lower() in ("validation", "val", "eval") else "train"
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0, "tensors": 0})
        try:
            acc.Reload()
        except Exception as exc:  # a truncated or foreign file: the protobuf reader's own error
            raise MedfitError(f"{file}: unreadable TensorBoard event file ({exc})") from None
        tags = acc.Tags()
        series: dict[str, list[tuple[int, float]]] = {}
        for tag in tags.get("scalars", []):
            series[tag] = [(ev.step, float(ev.value)) for ev in acc.Scalars(tag)]
        for tag in tags.get("tensors", []):
            points = []
            for ev in acc.Tensors(tag):
                value = tensor_util.make_ndarray(ev.tensor_proto)
                if value.size == 1 and value.dtype.kind in "fiu":
                    points.append((ev.step, float(value.reshape(-1)[0])))
            if points:
                series[tag] = points
        for tag, points in series.items():
            # Keras puts the split in the run folder (validation/epoch_loss); the name keeps it.
            name = f"validation/{tag}" if split == "val" and not _says_split(tag) else tag
            columns[name] = None
            for step, value in points:
                per_epoch.setdefault(step, {})[name] = value
    if not files:
        raise MedfitError(f"{path}: no TensorBoard event files ({TB_PREFIX}*) found")
    return _build(path, "TensorBoard events", _one_based(per_epoch), list(columns))


# --- diagnosing ---------------------------------------------------------------------------------

# What a Keras user changes for each curve rule, and what medfit does about it.
KERAS_FIXES = {
    "overfitting": (
        "EarlyStopping(monitor='val_loss', patience=5, restore_best_weights=True); "
        "augmentation that keeps the images plausible; AdamW(weight_decay=...) or fewer epochs",
        "keeps the weights with the best smoothed val score and stops early (`--patience 5`)",
    ),
    "val_instability": (
        "the backbone's own preprocess_input, base(x, training=False) so BatchNorm keeps its "
        "statistics, a fine-tuning LR (Adam 1e-5 after a head-only stage), a larger val set",
        "weight EMA and selection on the mean of the last 3 epochs (defaults)",
    ),
    "lr_too_high": (
        "a 10x lower learning rate, after a head-only stage with the base frozen",
        "`--lr auto` (range test), head-only stage first (default)",
    ),
    "underfitting": (
        "more epochs, a higher LR for the head, lighter augmentation",
        "`--epochs 20`",
    ),
    "class_imbalance": (
        "class_weight plus a balanced metric (AUC, per-class recall) to select on",
        "`--balance sqrt --select-metric balanced_accuracy`",
    ),
    "epoch_time": (
        "tf.data with cache() and prefetch(), augmentation as layers on the GPU",
        "decoded images cached once, augmentation on the GPU, `--workers 8`",
    ),
}


def foreign_facts(history: ForeignHistory, n_val: int | None, classes: int | None) -> RunFacts:
    """RunFacts for a foreign history: medfit's default config (never read by the rules that run
    on it), unknown normalisation/resolution/images as None, `n_val` from --val-size."""
    k = classes or 0
    return RunFacts(
        path=history.path,
        history=history.rows,
        config=RunConfig(),
        preprocess=Preprocess(0, (), (), "bilinear", 1.0),
        expected_mean=None,
        expected_std=None,
        native_size=None,
        classes=[f"class {i}" for i in range(k)],
        train_counts={},
        val_counts={"val": n_val} if n_val else {},
        grayscale=None,
        check=None,
    )


def foreign_findings(history: ForeignHistory, facts: RunFacts) -> list[Finding]:
    """The curve rules a history supports, with Keras fixes; unranked."""
    found = [f for rule in (overfitting, lr_too_high, class_imbalance) if (f := rule(facts))]
    if facts.classes and (u := underfitting(facts, None)):  # chance level needs K
        found.append(u)
    more = (_instability(history, facts), _epoch_time(history))
    out = [_keras_fix(f) for f in (*found, *more) if f is not None]
    return [*out, _source_note(history, facts)]


def _keras_fix(f: Finding) -> Finding:
    if f.rule not in KERAS_FIXES:
        return f
    keras, medfit = KERAS_FIXES[f.rule]
    numbers = {**f.numbers, "source": "log", "keras_fix": keras, "medfit": medfit}
    return replace(f, fix=f"in Keras: {keras}", numbers=numbers)


def _instability(history: ForeignHistory, facts: RunFacts) -> Finding | None:
    """val_instability inside each run of consecutive epochs (a jump across an elided stretch is
    not an epoch-to-epoch swing); without --val-size the swings are stated, not weighed."""
    segments = [s for s in history.segments() if len(s) >= MIN_TREND_EPOCHS]
    if facts.n_val > 0:
        found = [val_instability(replace(facts, history=s)) for s in segments]
        real = [f for f in found if f is not None]
        return max(real, key=lambda f: f.strength) if real else None
    stats = [_swing(s) for s in segments]
    if not stats:
        return None
    seg, jitter, drop, n_needed = min(stats, key=lambda s: s[3])  # the clearest swings
    accs = " ".join(f"{r.val_acc:.2f}" for r in history.rows)
    best = history.best_reported
    best_note = (
        f"; best {best[0]} {best[1]:.3f} per the checkpoint lines" if best is not None else ""
    )
    return Finding(
        rule="val_instability",
        severity="medium",
        title="validation accuracy swings; without --val-size they cannot be weighed",
        evidence=(
            f"epochs {seg[0].epoch}-{seg[-1].epoch}: std of epoch-to-epoch Δval acc "
            f"{jitter:.3f}, worst drop {drop:.3f}; that is beyond binomial noise "
            f"({JITTER_RATIO:g}x and a {DROP_SIGMAS:g}-sigma drop) for any val set over "
            f"{n_needed:,} images; val acc {accs}{best_note}"
        ),
        fix="give `--val-size N` (images in the validation set) to weigh the swings",
        numbers={"jitter": jitter, "worst_drop": drop, "n_val_break_even": n_needed},
        strength=1.0,
    )


def _swing(seg: list[EpochRow]) -> tuple[list[EpochRow], float, float, int]:
    """(segment, std of Δacc, worst drop, smallest n_val at which both exceed the noise)."""
    acc = np.array([r.val_acc for r in seg])
    diffs = np.diff(acc)
    jitter, drop = float(np.std(diffs)), float(max(0.0, -diffs.min()))
    p = float(acc[-1])
    sigma = min(jitter / JITTER_RATIO, drop / DROP_SIGMAS)
    n = math.ceil(p * (1 - p) / sigma**2) if sigma > 0 else 0
    return seg, jitter, drop, n


# Epoch times that vary this much for the same number of steps point at the input pipeline or a
# shared machine, not the model (compute per step is constant).
EPOCH_TIME_SPREAD = 2.0


def _epoch_time(history: ForeignHistory) -> Finding | None:
    if not history.step_s:
        return None
    times = list(history.step_s.values())
    lo, hi = min(times), max(times)
    if hi < EPOCH_TIME_SPREAD * lo:
        return None
    epoch_s = [r.epoch_s for r in history.rows if r.epoch_s > 0]
    return Finding(
        rule="epoch_time",
        severity="low",
        title=f"the same epoch takes {hi / lo:.1f}x longer from one epoch to the next",
        evidence=(
            f"{lo * 1000:.0f}-{hi * 1000:.0f} ms per step"
            + (f", epochs {min(epoch_s):.0f}-{max(epoch_s):.0f} s" if epoch_s else "")
            + (f" for {history.steps} steps each" if history.steps else "")
            + ": the model's work per step is constant, so the wait is the input pipeline "
            "(decoding, augmentation on the CPU) or a shared machine"
        ),
        fix="",
        numbers={"step_s_min": lo, "step_s_max": hi, "steps": history.steps},
        strength=hi / lo / EPOCH_TIME_SPREAD,
    )


def _source_note(history: ForeignHistory, facts: RunFacts) -> Finding:
    unknown = [] if facts.n_val else ["--val-size (swings cannot be weighed)"]
    unknown += [] if facts.classes else ["--classes (chance level unknown)"]
    return Finding(
        rule="history_source",
        severity="info",
        title=f"read {history.format}",
        evidence=history.describe(),
        fix=(
            f"not given: {'; '.join(unknown)}"
            if unknown
            else "config-dependent rules (normalisation, BN policy) need the script: --script"
        ),
        numbers={
            "format": history.format,
            "understood": history.understood,
            "ignored": history.ignored,
            "missing_epochs": history.missing(),
        },
        strength=0.0,
    )


# --- tying log, script and data together ------------------------------------------------------

# At equal severity a cause read in the script outranks what the data check found, which outranks
# the log's symptoms: the symptoms are what the causes produce.
SOURCE_ORDER = {"script": 0, "data": 1, "log": 2}
SEVERITY_ORDER = ("high", "medium", "low", "info")


@dataclass
class ForeignDiagnosis:
    source: Path
    findings: list[Finding]
    command: str
    command_note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.source),
            "findings": [f.to_dict() for f in self.findings],
            "probes": {"skipped": "a foreign history has no medfit checkpoint to probe"},
            "command": self.command,
            "command_note": self.command_note,
        }


def rank_all(findings: list[Finding]) -> list[Finding]:
    return sorted(
        findings,
        key=lambda f: (
            SEVERITY_ORDER.index(f.severity),
            SOURCE_ORDER.get(str(f.numbers.get("source", "log")), 2),
            -f.strength,
        ),
    )


def diagnose_foreign(
    path: str | Path | None,
    script: str | Path | None = None,
    data: str | None = None,
    val_size: int | None = None,
    classes: int | None = None,
) -> ForeignDiagnosis:
    """A foreign history (and/or a Keras script, and/or a data folder) in one ranked list, with
    the medfit command that trains the same data. Nothing in the inputs is executed."""
    from medfit.diagnose.keras_script import medfit_command, read_script

    if path is None and script is None:
        raise MedfitError("give a training log, a run directory or --script train.py")
    history = read_history(path) if path is not None else None
    grayscale = _data_grayscale(data) if data else None
    report = read_script(script, history.step_s if history else None, grayscale) if script else None
    k = classes or (report.classes if report else None)
    found: list[Finding] = []
    if history is not None:
        facts = foreign_facts(history, val_size, k)
        found += foreign_findings(history, facts)
    if report is not None:
        found += [f.to_finding(report.path) for f in report.findings]
        found = _merge_timing(found)
    if data:
        found += _check_data(data)
    if report is not None:
        command, note = medfit_command(report, data)
    else:
        command, note = f"medfit train {data or 'DATA'}", "give --script to carry over the backbone"
    source = Path(path) if path is not None else Path(str(script))
    return ForeignDiagnosis(source, rank_all(found), command, note)


def _merge_timing(found: list[Finding]) -> list[Finding]:
    """The log's epoch-time spread is the script's input-bound pipeline: one finding, not two."""
    timing = next((f for f in found if f.rule == "epoch_time"), None)
    bound = next((f for f in found if f.rule == "input_bound"), None)
    if timing is None or bound is None:
        return found
    epochs = timing.evidence.split(":")[0].split(", ", 1)[-1]  # "epochs 527-4022 s for ..."
    merged = replace(bound, evidence=f"{bound.evidence}; {epochs}")
    return [merged if f is bound else f for f in found if f is not timing]


def _data_grayscale(data: str) -> bool | None:
    """Whether the data's training images are grayscale (a sample of 8), for the augmentation
    question; None when the folder cannot be indexed."""
    from medfit.config import DataConfig
    from medfit.data.dataset import load_index
    from medfit.data.decode import DecodeError, decode_image

    index = load_index(DataConfig(root=data), 0)
    train = index.split("train")
    seen = 0
    for sample in train[:: max(1, len(train) // 8)][:8]:
        try:
            pixels = decode_image(sample.path).pixels
        except (DecodeError, OSError):
            continue
        seen += 1
        if pixels.shape[2] == 3 and not (
            np.array_equal(pixels[..., 0], pixels[..., 1])
            and np.array_equal(pixels[..., 1], pixels[..., 2])
        ):
            return False
    return True if seen else None


def _check_data(data: str) -> list[Finding]:
    """`medfit check DATA` (thumbnail features: no model download) as findings."""
    from medfit.check import CheckOptions, run_check
    from medfit.config import DataConfig
    from medfit.data.dataset import load_index
    from medfit.diagnose.rules import check_findings

    report = run_check(load_index(DataConfig(root=data), 0), CheckOptions(features="thumbnail"))
    stub = _check_stub(report.to_dict())
    return [replace(f, numbers={**f.numbers, "source": "data"}) for f in check_findings(stub)]


def _check_stub(check: dict[str, Any]) -> RunFacts:
    """check_findings reads only `check` and the last val accuracy (unknown here: NaN)."""
    row = EpochRow.from_dict({"epoch": 1})
    history = ForeignHistory(Path(str(check.get("root", "DATA"))), "check", [row], {}, [])
    return replace(foreign_facts(history, None, None), check=check)


def render_foreign(diagnosis: ForeignDiagnosis) -> str:
    lines = [f"diagnosis of {diagnosis.source}: {len(diagnosis.findings)} finding(s)"]
    for i, f in enumerate(diagnosis.findings, 1):
        lines.append(f"{i}. [{f.severity}] {f.title}  ({f.rule})")
        lines.append(f"   evidence: {f.evidence}")
        if f.numbers.get("why"):
            lines.append(f"   why: {f.numbers['why']}")
        if f.fix:
            lines.append(f"   fix: {f.fix}")
        if f.numbers.get("medfit"):
            lines.append(f"   medfit: {f.numbers['medfit']}")
    lines.append("train it with medfit:")
    lines.append(f"   {diagnosis.command}")
    if diagnosis.command_note:
        lines.append(f"   ({diagnosis.command_note})")
    return "\n".join(lines)


def render_html(diagnosis: ForeignDiagnosis) -> str:
    """A self-contained page: the same list, severity-coloured, and the command."""
    from html import escape

    colour = {"high": "#c62828", "medium": "#ef6c00", "low": "#546e7a", "info": "#90a4ae"}
    items = []
    for f in diagnosis.findings:
        extra = "".join(
            f"<div><b>{label}:</b> {escape(str(f.numbers[key]))}</div>"
            for label, key in (("why", "why"), ("medfit", "medfit"))
            if f.numbers.get(key)
        )
        items.append(
            f'<li><span style="color:{colour[f.severity]}"><b>[{f.severity}]</b></span> '
            f"<b>{escape(f.title)}</b> <code>{escape(f.rule)}</code>"
            f"<div><b>evidence:</b> {escape(f.evidence)}</div>"
            + (f"<div><b>fix:</b> {escape(f.fix)}</div>" if f.fix else "")
            + f"{extra}</li>"
        )
    return (
        "<!doctype html><meta charset='utf-8'><title>medfit diagnose</title>"
        "<body style='font-family:sans-serif;max-width:60em'>"
        f"<h1>medfit diagnose: {escape(str(diagnosis.source))}</h1><ol>{''.join(items)}</ol>"
        f"<h2>Train it with medfit</h2><pre>{escape(diagnosis.command)}</pre>"
        f"<p>{escape(diagnosis.command_note)}</p></body>\n"
    )
