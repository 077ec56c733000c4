"""What every check reads: the samples, their groups, the scan, the options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medfit.check.options import CheckOptions
from medfit.check.scan import ScanResult
from medfit.data.sources import SPLITS, Sample


@dataclass
class Context:
    samples: list[Sample]
    classes: list[str]
    groups: list[str | None]
    scan: ScanResult
    options: CheckOptions

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def splits(self) -> np.ndarray:
        return np.array([s.split for s in self.samples])

    def present_splits(self) -> list[str]:
        have = {s.split for s in self.samples}
        return [split for split in SPLITS if split in have]

    def readable(self, split: str | None = None) -> np.ndarray:
        """Row numbers of the decodable images (of one split, or all)."""
        ok = self.scan.ok
        if split is not None:
            ok &= self.splits == split
        return np.flatnonzero(ok)

    def ref(self, row: int) -> dict[str, Any]:
        """One image as the report names it (what a thumbnail view needs)."""
        s = self.samples[row]
        return {
            "path": s.path,
            "split": s.split,
            "label": self.classes[s.label],
            "group": self.groups[row],
        }


def split_pairs(splits: list[str]) -> list[tuple[str, str]]:
    """(later, earlier) split pairs: val->train, test->train, test->val (evaluation vs fitting)."""
    return [(later, earlier) for i, later in enumerate(splits) for earlier in splits[:i]]
