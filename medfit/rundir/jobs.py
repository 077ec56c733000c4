"""Readers of the files a multi-run job (`--seeds N`, `--folds K`) writes beside its members.

The job modules in medfit.training write them; the report reads them here, below training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfit.rundir.layout import RunDir


@dataclass
class SeedsSection:
    """What a report shows about the seeds a run belongs to."""

    rows: list[dict[str, Any]]
    mean: dict[str, float | None]
    sd: dict[str, float | None]
    note: str | None
    this_seed: int | None  # the seed of the run the report is about, None for the OUT dir


def seeds_section(run_dir: str | Path) -> SeedsSection | None:
    """The seeds table of RUN (an OUT of train_seeds) or of the OUT holding RUN; None if neither."""
    path = Path(run_dir)
    for folder, this in ((path, None), (path.parent, path.name)):
        run = RunDir(folder)
        data = run.read_json(run.seeds)
        if data is None:
            continue
        rows = data["seeds"]
        if this is not None and all(r["dir"] != this for r in rows):
            continue
        seed = next((r["seed"] for r in rows if r["dir"] == this), None)
        return SeedsSection(rows, data["mean"], data["sd"], data["note"], seed)
    return None


@dataclass
class FoldsSection:
    """What a report shows about the k-fold run a run is, or is a member of."""

    run: Path  # the k-fold RUN
    members: list[dict[str, Any]]  # folds.json rows: fold, dir, status, val_* on its held-out fold
    oof: dict[str, Any]  # n_images and the out-of-fold acc, balanced_accuracy, macro_f1
    this_member: str | None  # the member the report is about, None for RUN itself


def folds_section(run_dir: str | Path) -> FoldsSection | None:
    """folds.json of RUN (a `--folds K` run) or of the RUN holding this member; None if neither."""
    path = Path(run_dir)
    for folder, this in ((path, None), (path.parent, path.name)):
        data = RunDir(folder).read_json(RunDir(folder).folds_json)
        if not data or (this is not None and all(m["dir"] != this for m in data["members"])):
            continue
        return FoldsSection(folder, data["members"], data.get("oof", {}), this)
    return None
