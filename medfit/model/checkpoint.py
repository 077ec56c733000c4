"""Checkpoints that are never half-written and never execute code when read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from medfit.errors import MedfitError
from medfit.files import atomic_write_bytes, stale_temp_files
from medfit.model.backbones import Preprocess


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `path` atomically; first remove the half-written temps of earlier killed writes.

    Removing them is safe because one run holds the run directory's lock (`RunDir.acquire`), and
    it keeps a series of kills and resumes from filling the disk with dead temp files.
    """
    for stale in stale_temp_files(path):
        stale.unlink(missing_ok=True)
    existed = path.is_file()
    try:
        atomic_write_bytes(path, lambda f: torch.save(state, f))
    except OSError as exc:
        kept = "the previous one is intact" if existed else "none was written before this one"
        raise MedfitError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; {kept}; free disk space "
            f"and {_resume_hint(path, existed)}"
        ) from None


def _resume_hint(path: Path, existed: bool) -> str:
    """RUN/checkpoints/last.pt -> how to continue RUN; without a checkpoint, start again."""
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    if existed and path.name == "last.pt":
        return f"continue with: medfit train --resume {run}"
    return "run the command again"


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
    _check_medfit_state(path, state)
    return state


# What predict, eval, export and resume need beside the weights; a bare state dict lacks them.
MEDFIT_KEYS = ("model_name", "classes", "preprocess")


def _check_medfit_state(path: Path, state: dict[str, Any]) -> None:
    """A checkpoint medfit wrote: its architecture exists here and its weights fit it."""
    missing = [key for key in MEDFIT_KEYS if key not in state]
    if missing:
        raise MedfitError(
            f"{path}: not a checkpoint medfit wrote (no {', '.join(missing)}): a bare state dict "
            "does not say its architecture, classes and preprocessing; use a run's checkpoints/"
            "best.pt, or pass the state dict to training as --weights PATH"
        )
    name, classes = state["model_name"], state["classes"]
    if not isinstance(name, str) or not timm.is_model(name):
        raise MedfitError(
            f"{path}: model_name {name!r} is not a model of the installed timm "
            f"{timm.__version__}; use the timm version the run was trained with"
        )
    if not isinstance(classes, list) or len(classes) < 2:
        raise MedfitError(f"{path}: classes must be a list of 2 or more names, got {classes!r}")
    try:
        Preprocess.from_dict(state["preprocess"])
    except (KeyError, TypeError, ValueError):
        raise MedfitError(f"{path}: its preprocess record is malformed") from None
    _check_weights_fit(path, state["model"], name, len(classes))


def _check_weights_fit(path: Path, weights: Any, name: str, num_classes: int) -> None:
    """Compare names and shapes with the architecture built on the meta device (no memory, no
    initialisation: ~0.1-0.5 s), so that a mismatch is one line, not load_state_dict's page."""
    if not isinstance(weights, dict):
        raise MedfitError(f"{path}: its model entry is not a state dict")
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    except Exception:  # an architecture that cannot be built on meta: load_state_dict will judge
        return
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    got = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in weights.items()}
    problems = [f"missing {k}" for k in expected if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in expected]
    problems += [
        f"{k} {got[k]} instead of {shape}"
        for k, shape in expected.items()
        if k in got and got[k] != shape
    ]
    if problems:
        raise MedfitError(
            f"{path}: its weights do not fit {name} with {num_classes} classes "
            f"({len(problems)} problem(s), e.g. {'; '.join(problems[:2])}); the checkpoint was "
            "edited or written for another model"
        )
