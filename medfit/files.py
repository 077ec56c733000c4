"""Writing files so that a crash never leaves half of one (torch-free: `--help` imports it)."""

from __future__ import annotations

import glob
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

# A file name that is not valid UTF-8 (b"caf\xe9.png") reaches Python as a str with surrogates
# ("caf\udce9.png"); text medfit writes encodes them back to the original bytes instead of failing.
TEXT_ERRORS = "surrogateescape"
# OWASP "CSV injection": a spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_UMASK_LOCK = threading.Lock()


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
