"""Where a run will write, checked before any image is decoded or any model is built.

A run that fails on its first write after minutes of caching wastes those minutes, and Python's
own error (NotADirectoryError, PermissionError) would be a traceback, not a line.
"""

from __future__ import annotations

import os
from pathlib import Path

from medfit.errors import ConfigError
from medfit.rundir import RunDir, fresh_run_dir


def claim_fresh(out: str, flag: str = "--out") -> RunDir:
    """The new run directory `fresh_run_dir(out)` picks, once it is known to be creatable."""
    base = Path(out).expanduser()
    if base.name in ("", "..") or base.resolve() == Path.cwd().resolve():
        # A taken OUT is numbered OUT-2, OUT-3...: `.` has no name to number, and a run
        # directory filled inside the working directory would mix with the user's files.
        raise ConfigError(f"{flag} {out}: name a new folder for the run, e.g. {flag} runs/exp1")
    try:
        run = fresh_run_dir(out)
    except NotADirectoryError as exc:
        raise ConfigError(
            f"{flag} {out}: {exc.filename} is a file, not a folder; move it or pick another {flag}"
        ) from None
    check_writable(run.path, flag)
    return run


def check_writable(path: Path, flag: str) -> None:
    """`path` (existing or not) can be created and written: its nearest existing ancestor is a
    folder this process may write into (os.access also reports a read-only file system)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{flag} {path}: {existing} is a file, not a folder; move it or pick another {flag}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{flag} {path}: {existing} is not writable (permissions or a read-only file "
            f"system); pick another {flag}"
        )
