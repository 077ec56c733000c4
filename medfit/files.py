"""Reading and writing files: every read bounded, every write atomic (torch-free: `--help`
imports it).

Reading a file a user hands medfit (a training log, a manifest, a config, a run's JSON) goes
through `read_text_file`: only a regular file is opened (a named pipe with no writer would block
forever, /dev/zero never ends), its size is capped before a byte is read and the read itself is
bounded (a file that grows while it is read), binary content is refused, and UTF-16 (Windows
PowerShell's `>` redirect) or non-UTF-8 text is decoded instead of failing. Each refusal is one
MedfitError naming the file, what it is, the limit and what to do.
"""

from __future__ import annotations

import codecs
import errno
import glob
import os
import stat
import sys
import tempfile
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfit.errors import MedfitError

# A file name that is not valid UTF-8 (b"caf\xe9.png") reaches Python as a str with surrogates
# ("caf\udce9.png"); text medfit writes encodes them back to the original bytes instead of failing.
TEXT_ERRORS = "surrogateescape"
# OWASP "CSV injection": a spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_UMASK_LOCK = threading.Lock()


def tensorboard_without_tensorflow() -> None:
    """Call before importing tensorboard (or torch.utils.tensorboard): event files are then read
    and written through tensorboard's own file-system stub instead of TensorFlow's.

    tensorboard imports TensorFlow when it is installed, as it is beside every Keras project:
    6.6 s of a medfit run's start-up on a 2-core CPU, for no use (time_to_accuracy.py, LOG.md).
    `tensorboard.compat.notf` is tensorboard's own marker for "do not import TensorFlow"
    (tensorboard/compat/__init__.py). A process that already imported TensorFlow keeps it.
    """
    marker = "tensorboard.compat.notf"
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault(marker, types.ModuleType(marker))


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, then rename over `path`.

    A crash (or kill -9) at any point leaves either the old file or the new one, never a mix.
    The file gets the mode `open()` would give it (0o666 less the umask), not mkstemp's 0o600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text; undecodable file names keep their original bytes."""
    data = text.encode("utf-8", errors=TEXT_ERRORS)
    atomic_write_bytes(path, lambda f: f.write(data))


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc, since 4.7).

    Elsewhere os.umask must set it to read it; the lock keeps this module's own threads from
    seeing the temporary value, and the old mask is back within two system calls.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def csv_cell(value: object) -> str:
    """A cell safe to open in a spreadsheet: text a formula could start with gets a leading '.

    A leading ' is itself doubled, so `csv_value` always gives back the original text.
    """
    text = str(value)
    return "'" + text if text.startswith((*_FORMULA_STARTS, "'")) else text


def csv_value(cell: str) -> str:
    """The original text of a cell written by `csv_cell`."""
    return cell[1:] if cell.startswith("'") else cell


def stale_temp_files(path: Path) -> list[Path]:
    """Temp files `atomic_write_bytes` left beside `path` when a kill interrupted a write."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


# --- bounded reading ------------------------------------------------------------------------------

# The largest text file medfit reads whole. A Keras console log of 100 epochs with progress bars
# is a few MB; a manifest of 1M images ~100 MB is the outlier this still allows.
MAX_TEXT_BYTES = 256 * 1024 * 1024
# Lines longer than this are not a log line, a CSV row or a config line anybody wrote by hand.
MAX_LINE_CHARS = 1024 * 1024
# JSON nesting deeper than this is refused before parsing (json's parser recurses per level).
MAX_JSON_DEPTH = 200
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class FileMissing(MedfitError):
    """The file does not exist (a reader of optional files treats it as absent)."""


@dataclass
class TextFile:
    """A file's text and what reading it had to change (said to the user as warnings)."""

    path: Path
    text: str
    encoding: str
    notes: list[str] = field(default_factory=list)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def describe_kind(path: Path) -> str:
    """What `path` is, in words ("a named pipe", "a device", ...), for an error line."""
    try:
        return _kind(os.stat(path).st_mode)
    except OSError as exc:
        return "a symbolic link loop" if exc.errno == errno.ELOOP else "unreadable"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: Path, what: str = "file") -> tuple[int, os.stat_result]:
    """An fd opened for reading on `path`, which must be a regular file, and its stat.

    O_NONBLOCK makes the open itself return at once on a named pipe with no writer (a plain
    open blocks until one appears), so the type is judged on the opened fd, not on a stat taken
    before it that a swap of the file could outdate.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileMissing(f"{path}: no such {what}; check the path") from None
    except OSError as exc:
        reason = "a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise MedfitError(f"{path}: cannot open the {what} ({reason})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise MedfitError(f"{path} is {_kind(info.st_mode)}, not a {what}; give a regular file")
    return fd, info


def read_bytes_bounded(path: Path, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of regular file `path`, refused in one line above `max_bytes`."""
    fd, info = open_regular(path, what)
    too_big = f"over the {_size(max_bytes)} limit for a {what}; give a smaller file"
    try:
        if info.st_size > max_bytes:
            raise MedfitError(f"{path}: {_size(info.st_size)}, {too_big}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)  # bounded even if the file grows while it is read
    except OSError as exc:
        raise MedfitError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise MedfitError(f"{path}: grew past {_size(max_bytes)} while being read; {too_big}")
    return data


def decode_text(data: bytes, path: Path, what: str = "file", errors: str = "replace") -> TextFile:
    """Text from bytes: a BOM decides (UTF-8/16/32), NULs at every other byte mean UTF-16 without
    one, other NULs mean binary (refused); invalid UTF-8 is replaced and noted, not fatal (or,
    with errors=TEXT_ERRORS, kept as surrogates: file names medfit wrote round-trip)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return TextFile(path, data[len(bom) :].decode(encoding, "replace"), encoding)
    head = data[:4096]
    if b"\x00" in head:
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) > 0.4 * len(head) / 2 and min(even, odd) < 0.05 * len(head) / 2:
            encoding = "utf-16-le" if odd > even else "utf-16-be"
            return TextFile(path, data.decode(encoding, "replace"), encoding)
        raise MedfitError(f"{path}: binary data (NUL bytes), not a text {what}")
    if errors != "replace":
        return TextFile(path, data.decode("utf-8", errors), "utf-8")
    text = data.decode("utf-8", "replace")
    notes = []
    if (bad := text.count("\ufffd") - data.decode("utf-8", "ignore").count("\ufffd")) > 0:
        notes.append(f"{path}: not UTF-8 text; {bad} undecodable byte sequence(s) replaced")
    return TextFile(path, text, "utf-8", notes)


def read_text_file(
    path: Path, what: str = "file", max_bytes: int = MAX_TEXT_BYTES, errors: str = "replace"
) -> TextFile:
    """A user's text file, bounded and decoded (see the module docstring)."""
    return decode_text(read_bytes_bounded(Path(path), what, max_bytes), Path(path), what, errors)


def long_lines(text: str, limit: int = MAX_LINE_CHARS) -> list[int]:
    """1-based numbers of the lines longer than `limit` characters (found without splitting)."""
    found, start, number = [], 0, 1
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if end - start > limit:
            found.append(number)
        start, number = end + 1, number + 1
    return found


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no array/object in `text` nests deeper than `limit` (a linear scan that skips
    strings), so that json.loads cannot be driven into a RecursionError."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True
