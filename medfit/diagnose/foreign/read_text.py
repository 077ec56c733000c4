"""Training logs that are console text: Keras `fit` output, fastai's tables, printed epoch lines.

    Epoch 3/20                                     Keras 2 (verbose 1: the final bar line)
    163/163 [=====] - 45s 276ms/step - loss: 0.31 - accuracy: 0.90 - val_loss: ...
    163/163 - 1151s - 7s/step - accuracy: 0.79 - loss: 0.43 - val_accuracy: ...   (verbose 2)
    \\x1b[1m147/147\\x1b[0m ━━━━ \\x1b[1m101s\\x1b[0m 489ms/step - accuracy: ...   (Keras 3)
    epoch  train_loss  valid_loss  accuracy  time                  fastai (text, or its HTML table)
    Epoch 0/49 ... train Loss: 1.2066 Acc: 0.4037 ... val Loss: ...  any printed epoch lines

Terminal control is undone first: ANSI colour codes are removed, and carriage returns and
backspaces (progress bars redrawn in place; tf.keras in a notebook writes `\\b` runs) split the
text the way a terminal would show its lines. A new phase starts when the epoch counter restarts
(a second `fit()`, a notebook cell run again) or the planned total changes (`initial_epoch`
continuing the count into a new `fit()`); an elided stretch ("...") is a gap, not a new phase.
"""

from __future__ import annotations

import ast
import math
import re
from html.parser import HTMLParser
from pathlib import Path

from medfit.diagnose.foreign.history import SPLIT_WORDS, History, Phase, PhaseBuilder, canonical
from medfit.errors import MedfitError
from medfit.files import MAX_LINE_CHARS

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|NaN|inf|Inf|-inf)"
_HEADER = re.compile(r"^\s*Epoch\s+(\d+)\s*/\s*(\d+)\s*$")
_CALLBACK = re.compile(r"^\s*Epoch\s+0*(\d+):\s*(.*)$")
_PROGRESS = re.compile(r"^\s*(\d+)/(\d+)\b")
_KERAS_PAIR = re.compile(rf"(\w+): ({NUMBER})")
_TIME = re.compile(r"(?:^|\s|-\s)(\d+(?:\.\d+)?)s(?:\s+(\d+(?:\.\d+)?)(us|ms|s)/step)?\b")
_OLD_V2 = re.compile(rf"^\s*-\s+\d+(?:\.\d+)?s\s+-\s+\w+: {NUMBER}")  # TF 1.x verbose 2
_IMPROVED = re.compile(r"(\w+) improved from \S+ to (-?[\d.]+(?:e[+-]?\d+)?)")
_NOT_IMPROVED = re.compile(r"(\w+) did not improve from (-?[\d.]+(?:e[+-]?\d+)?)")
_STEP_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def terminal_lines(text: str) -> list[str]:
    """The lines a terminal would have shown: no ANSI codes, redraws and `\\b` runs split."""
    text = ANSI.sub("", text)
    lines = []
    for line in re.split(r"[\r\n]+|\x08+", text):
        if len(line) > MAX_LINE_CHARS:
            continue  # no log line is that long; the caller notes the file's long lines
        lines.append(line)
    return lines


# --- Keras ---------------------------------------------------------------------------------------


def looks_like_keras(text: str) -> bool:
    return bool(re.search(r"^\s*Epoch \d+/\d+\s*$", ANSI.sub("", text), re.MULTILINE))


def read_keras_console(path: Path, text: str) -> History:
    """`Epoch k/N` headers, each epoch's final metrics line (the fullest one: with val_*), and
    checkpoint/early-stopping callback lines (which also carry the best value reached)."""
    phases: list[PhaseBuilder] = []
    current: PhaseBuilder | None = None
    epoch: int | None = None
    best: tuple[str, float] | None = None
    keras3 = "━" in text
    for line in terminal_lines(text):
        if m := _HEADER.match(line):
            k, total = int(m.group(1)), int(m.group(2))
            if current is None or k <= (epoch or 0) or total != current.planned:
                current = PhaseBuilder(f"fit {len(phases) + 1}")
                current.planned = total
                phases.append(current)
            epoch = k
            continue
        if m := _CALLBACK.match(line):
            if c := _IMPROVED.search(m.group(2)) or _NOT_IMPROVED.search(m.group(2)):
                best = (c.group(1), float(c.group(2)))
            if current is not None and epoch is not None and int(m.group(1)) > epoch:
                epoch = int(m.group(1))  # the header was elided ("..."); the callback says where
            continue
        if current is None or epoch is None:
            continue
        progress = _PROGRESS.match(line)
        if progress is None and not _OLD_V2.match(line):
            continue
        if "ETA" in line or (progress is not None and progress.group(1) != progress.group(2)):
            continue  # a bar still being drawn
        pairs = {k: _float(v) for k, v in _KERAS_PAIR.findall(line)}
        if not pairs or len(pairs) < len(current.rows.get(epoch, {})):
            continue  # the epoch's fullest final line wins (with val_*), not an evaluate()
        for name, value in pairs.items():
            current.add(epoch, name, value)
        head = line[: _KERAS_PAIR.search(line).start()]  # type: ignore[union-attr]
        if t := _TIME.search(head):
            steps = int(progress.group(2)) if progress else None
            current.steps = steps or current.steps
            step_s = float(t.group(2)) * _STEP_UNIT[t.group(3)] if t.group(2) else math.nan
            if steps:  # Keras prints "1s/step" for 1.205 s; the epoch over the steps is exact
                step_s = float(t.group(1)) / steps
            current.time(epoch, float(t.group(1)), step_s)
    fmt = "Keras console log" + (" (Keras 3)" if keras3 else "")
    history = _history(path, fmt, "keras", phases, "train")
    history.best_reported = best
    if not history.phases:
        raise MedfitError(
            f"{path}: 'Epoch k/N' lines found but no finished epoch (a line like "
            "'2993/2993 [====] - 1486s 495ms/step - loss: 1.2 - accuracy: 0.48')"
        )
    return history


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # pragma: no cover - NUMBER only matches what float() takes
        return math.nan


def _history(
    path: Path, fmt: str, framework: str, builders: list[PhaseBuilder], split: str
) -> History:
    notes: list[str] = []
    ignored: dict[str, None] = {}
    phases: list[Phase] = []
    for b in builders:
        if b:
            b.default_split = split
            phases.append(b.build(notes, ignored))
    phases = [p for p in phases if p.values]
    if len(phases) > 1:
        for i, p in enumerate(phases, 1):
            p.name = f"{p.name.split(' ')[0]} {i}"
    return History([path], fmt, framework, phases, list(ignored), notes)


# --- tables: fastai, pandas ----------------------------------------------------------------------


class _Tables(HTMLParser):
    """Rows of every <table> in an HTML fragment (fastai's progress tables in a notebook)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(text: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return [t for t in parser.tables if t]


def text_tables(lines: list[str]) -> list[list[list[str]]]:
    """Whitespace-aligned tables whose header starts with `epoch` (fastai's text output, a
    printed DataFrame): header, then rows whose first cell is the epoch number."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in lines:
        cells = line.split()
        if cells and cells[0].lower() == "epoch" and len(cells) >= 3 and "/" not in line:
            current = [cells]
            tables.append(current)
        elif current is not None and cells and re.fullmatch(r"\d+", cells[0]):
            current.append(cells)
        elif current is not None and line.strip():
            current = None
    return [t for t in tables if len(t) > 1]


def read_tables(path: Path, tables: list[list[list[str]]], framework: str) -> History:
    """One phase per table (fastai prints one per fit call; its epochs restart at 0). fastai's
    metrics (accuracy, error_rate) are computed on the validation set."""
    builders = []
    for table in tables:
        header = [h.strip().lower() for h in table[0]]
        b = PhaseBuilder("fit")
        for row in table[1:]:
            if len(row) < len(header) or not re.fullmatch(r"\d+", row[0].strip()):
                continue
            epoch = int(row[0])
            for name, cell in zip(header[1:], row[1:], strict=False):
                if name == "time":
                    if m := re.fullmatch(r"(?:(\d+):)?(\d+):(\d+)", cell.strip()):
                        h, mnt, sec = (int(x) if x else 0 for x in m.groups())
                        b.time(epoch, epoch_s=h * 3600 + mnt * 60 + sec)
                    continue
                value = _cell(cell)
                if value is None:
                    continue
                if name == "error_rate":
                    name, value = "accuracy", 1.0 - value
                b.add(epoch, "valid_loss" if name == "valid_loss" else name, value)
        builders.append(b)
    return _history(
        path, "fastai table" if framework == "fastai" else "table", framework, builders, "val"
    )


def _cell(cell: str) -> float | None:
    try:
        return float(cell.strip().rstrip("%"))
    except ValueError:
        return None


# --- printed epoch lines (plain PyTorch loops, loggers) -----------------------------------------

_EPOCH = re.compile(r"\bepoch\b\s*[\[(#:]?\s*(\d+)(?:\s*(?:/|of)\s*(\d+))?\s*[\])]?\s*:?", re.I)
_STEPWORD = re.compile(r"\b(?:step|batch|iter(?:ation)?)\b\s*[\[(#:]?\s*\d+", re.I)
_PAIR = re.compile(rf"((?:[A-Za-z][\w./-]*)(?:\s[A-Za-z][\w./-]*){{0,2}})\s*[:=]\s*({NUMBER})(%?)")
_TIMESTAMP = re.compile(
    r"^\s*\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[.,\d]*\]?\s*"
    r"(?:\[?(?:INFO|DEBUG|WARNING|WARN|ERROR|CRITICAL)\]?\b\s*[:-]?\s*)?"
)
_DICT = re.compile(r"^\s*\{.*'epoch'.*\}\s*$")


def read_epoch_lines(path: Path, text: str) -> History | None:
    """Epoch markers (`Epoch 3`, `epoch [3/50]`, `Epoch 3:`) and `name: value` / `name = value`
    pairs on the same line or the lines under the marker; a line starting with a split word
    (`train Loss: .. Acc: ..`, `val Loss: ..`) gives that split to the names after it. Lines
    about a step or batch are per-step values and skipped. None when nothing like it is there."""
    phases: list[PhaseBuilder] = []
    current: PhaseBuilder | None = None
    epoch: int | None = None
    for raw in terminal_lines(text):
        line = _TIMESTAMP.sub("", raw)
        if _DICT.match(line):  # Hugging Face Trainer's printed log dicts
            epoch, current = _hf_dict(line, phases, current, epoch)
            continue
        marker = _EPOCH.search(line)
        if marker and len(line[: marker.start()].split()) > 2:
            marker = None  # "saved the best model at epoch 3": a mention, not a new epoch
        if marker:
            k = int(marker.group(1))
            total = int(marker.group(2)) if marker.group(2) else None
            new = current is None or k < (epoch if epoch is not None else -1)
            if current is not None and total is not None and current.planned not in (None, total):
                new = True
            if new:
                current = PhaseBuilder(f"run {len(phases) + 1}")
                phases.append(current)
            assert current is not None
            current.planned = total or current.planned
            epoch = k
            line = line[: marker.start()] + " " + line[marker.end() :]
        if current is None or epoch is None or _STEPWORD.search(line):
            continue
        _pairs_into(line, current, epoch)
    history = _history(path, "printed epoch lines", "pytorch", phases, "train")
    if not history.phases:
        return None
    return history


def _pairs_into(line: str, builder: PhaseBuilder, epoch: int) -> None:
    first = line.strip().split(" ", 1)[0].lower().rstrip(":")
    context = SPLIT_WORDS.get(first)
    for m in _PAIR.finditer(line):
        name, value, percent = m.group(1).strip(), _float(m.group(2)), m.group(3)
        if context and canonical(name, "x") is None and canonical(f"{context} {name}") is not None:
            name = f"{context} {name}"
        if canonical(name) is None:
            continue
        builder.add(epoch, name, value / 100.0 if percent else value)


def _hf_dict(
    line: str, phases: list[PhaseBuilder], current: PhaseBuilder | None, epoch: int | None
) -> tuple[int | None, PhaseBuilder | None]:
    """`{'eval_loss': 0.3, 'eval_accuracy': 0.9, 'epoch': 1.0}`: eval dicts are epochs."""
    try:
        entry = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return epoch, current
    if not isinstance(entry, dict) or not any(str(k).startswith("eval_") for k in entry):
        return epoch, current
    e = entry.get("epoch")
    if not isinstance(e, (int, float)):
        return epoch, current
    k = max(1, math.ceil(e - 1e-6))
    if current is None or k < (epoch or 0):
        current = PhaseBuilder(f"run {len(phases) + 1}")
        phases.append(current)
    for name, value in entry.items():
        if isinstance(value, (int, float)) and name not in ("epoch", "step"):
            current.add(k, str(name), float(value))
    return k, current


# --- data set sizes a log prints -------------------------------------------------------------
_FOUND = re.compile(
    r"Found (\d+) (?:validated )?(?:images?|files?|image filenames)(?: belonging to| in) (\d+) "
    r"class(?:es)?",
    re.I,
)


def found_totals(text: str) -> list[tuple[int, int, str]]:
    """(images, classes, the text) of each `Found N images belonging to K classes.` line a log
    prints (Keras flow_from_directory / image_dataset_from_directory, Ultralytics' `found N
    images in K classes`): what the data set is, for datasets.recognise."""
    found = _FOUND.finditer(ANSI.sub("", text))
    return [(int(m.group(1)), int(m.group(2)), m.group(0)) for m in found]
