"""Checkpoints that are never half-written and never execute code when read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medfit.errors import MedfitError
from medfit.files import atomic_write_bytes, stale_temp_files


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `path` atomically; first remove the half-written temps of earlier killed writes.

    Removing them is safe because one run holds the run directory's lock (`RunDir.acquire`), and
    it keeps a series of kills and resumes from filling the disk with dead temp files.
    """
    for stale in stale_temp_files(path):
        stale.unlink(missing_ok=True)
    try:
        atomic_write_bytes(path, lambda f: torch.save(state, f))
    except OSError as exc:
        raise MedfitError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; the previous checkpoint "
            "is intact — free disk space and resume with --resume"
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Tensors, numbers, strings and containers only (`weights_only=True`): no pickled code."""
    if not path.is_file():
        raise MedfitError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MedfitError(
            f"{path}: not a medfit checkpoint or contains disallowed objects "
            f"({type(exc).__name__}); refusing to load"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise MedfitError(f"{path}: not a medfit checkpoint (no model state)")
    return state
