"""One line for a run whose data is no longer where training read it.

Runs store their data root and split.csv paths as absolute paths (medfit.training.fit), so a
missing path means the data moved or was deleted; runs from before that stored them relative to
the folder training ran in, which only works from that folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from medfit.errors import DataError

REMEDY = "pass --data with the data's current folder or manifest"


def _why(path: str) -> str:
    if os.path.isabs(os.path.expanduser(path)):
        return "moved or deleted?"
    return f"a path relative to the folder training ran in, not {Path.cwd()}"


def data_moved(run_dir: Path, root: str) -> DataError:
    """The run's data root `root` is not there."""
    return DataError(
        f"{run_dir} was trained on {root}, which is not there ({_why(root)}); {REMEDY}"
    )


def listed_files_missing(
    split_csv: Path, split: str, paths: list[str], remedy: str = REMEDY
) -> DataError | None:
    """A DataError when none of the listed `paths` of `split` exists, else None."""
    if not paths or any(os.path.exists(os.path.expanduser(p)) for p in paths):
        return None
    return DataError(
        f"{split_csv}: none of its {len(paths)} {split} images is at its listed path (e.g. "
        f"{paths[0]}: {_why(paths[0])}); {remedy}"
    )
