"""What every check reads: the samples, their groups, the scan, the options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medfit.check.options import CheckOptions
from medfit.check.scan import ScanResult
from medfit.data.sources import SPLITS, Sample

# How a multi-label image without any positive label is named in the report (the manifest's
# `none_label` default, NIH ChestX-ray14's own word).
NO_FINDING = "No Finding"
LABEL_JOIN = "|"  # between the labels of one multi-label image in the report


@dataclass
class Context:
    samples: list[Sample]
    classes: list[str]
    groups: list[str | None]
    scan: ScanResult
    options: CheckOptions
    # True when each sample carries `targets` (0/1 per class): `Sample.label` is then only a
    # stratification key (it may equal len(classes)), never a class index.
    multilabel: bool = False

    @property
    def labels(self) -> np.ndarray:
        """Class index per sample (single-label only: a multi-label set has `targets`)."""
        if self.multilabel:
            raise ValueError("Context.labels is single-label only; use targets or label_keys")
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def targets(self) -> np.ndarray:
        """(N, K) uint8, 1 where the label is positive; one-hot rows for single-label data."""
        if not self.multilabel:
            return np.eye(len(self.classes), dtype=np.uint8)[self.labels]
        if not self.samples:
            return np.zeros((0, len(self.classes)), dtype=np.uint8)
        return np.array([s.targets for s in self.samples], dtype=np.uint8)

    @property
    def label_keys(self) -> np.ndarray:
        """An int per sample, equal exactly when two samples carry the same label (the class;
        for multi-label the same set of labels): what "same class" means to a null model."""
        if not self.multilabel:
            return self.labels
        _, codes = np.unique(self.targets, axis=0, return_inverse=True)
        return np.asarray(codes, dtype=np.int64).reshape(-1)

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

    def label_names(self, row: int) -> list[str]:
        """The names of one image's labels: its class, or its positive labels (maybe none)."""
        s = self.samples[row]
        if not self.multilabel:
            return [self.classes[s.label]]
        return [c for c, on in zip(self.classes, s.targets or (), strict=True) if on]

    def label_name(self, row: int) -> str:
        """One image's label as the report names it: the class, or for multi-label its labels
        joined by LABEL_JOIN (NO_FINDING for none); equal names mean equal labels."""
        return LABEL_JOIN.join(self.label_names(row)) or NO_FINDING

    def ref(self, row: int) -> dict[str, Any]:
        """One image as the report names it (what a thumbnail view needs); a multi-label image
        adds `labels`, the list of its positive labels."""
        s = self.samples[row]
        ref: dict[str, Any] = {
            "path": s.path,
            "split": s.split,
            "label": self.label_name(row),
            "group": self.groups[row],
        }
        if self.multilabel:
            ref["labels"] = self.label_names(row)
        return ref


def split_pairs(splits: list[str]) -> list[tuple[str, str]]:
    """(later, earlier) split pairs: val->train, test->train, test->val (evaluation vs fitting)."""
    return [(later, earlier) for i, later in enumerate(splits) for earlier in splits[:i]]
