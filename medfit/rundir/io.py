"""Reading a run directory's files: bounded (medfit.files), with one error policy.

An absent optional file reads as None; a file that exists but cannot be parsed is a one-line
MedfitError naming it and the command that writes it again (`_remedy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medfit.errors import MedfitError
from medfit.files import TEXT_ERRORS, FileMissing, json_depth_ok, read_text_file

# The command that writes each file again, for the error that says a file cannot be read.
_REMEDY = {
    "check.json": "run `medfit check DATA --out {run}` again",
    "diagnosis.json": "run `medfit diagnose {run}` again",
    "calibration.json": "run `medfit eval {run}` again",
    "seeds.json": "run the same `medfit train --seeds N --out {run}` again",
}
_DAMAGED = "it was damaged after training: restore it from a copy, or train again"


def _remedy(path: Path) -> str:
    if path.name.startswith(("eval_", "predictions_")):
        return f"run `medfit eval {path.parent}` again"
    return _REMEDY.get(path.name, _DAMAGED).format(run=path.parent)


def read_run_text(path: Path) -> str | None:
    """A run file's text, read bounded (medfit.files); None when it does not exist, a one-line
    MedfitError naming the command that writes it again when it cannot be read."""
    try:
        return read_text_file(path, "run file", errors=TEXT_ERRORS).text
    except FileMissing:
        return None
    except MedfitError as exc:
        raise MedfitError(f"{exc}; {_remedy(path)}") from None


def read_json(path: Path) -> Any | None:
    """The JSON in `path`; None when it does not exist, a one-line MedfitError when unreadable."""
    text = read_run_text(path)
    if text is None:
        return None
    if not json_depth_ok(text):
        raise MedfitError(f"{path}: JSON nested deeper than medfit writes; {_remedy(path)}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MedfitError(f"{path}: not valid JSON ({exc}); {_remedy(path)}") from None


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc).splitlines()[0]
