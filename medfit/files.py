"""Writing files so that a crash never leaves half of one (torch-free: `--help` imports it)."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, then rename over `path`.

    A crash (or kill -9) at any point leaves either the old file or the new one, never a mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stale_temp_files(path: Path) -> list[Path]:
    """Temp files `atomic_write_bytes` left beside `path` when a kill interrupted a write."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
