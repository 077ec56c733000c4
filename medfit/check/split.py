"""`medfit split`: leakage-free splits written as a manifest; the user's files never move.

    --by group        every image of a patient (group id) lands in one split, and each split
                      keeps the class mix (sklearn StratifiedGroupKFold: one fold is held out)
    --by stratified   images are split one by one, keeping the class mix (no ids needed)

What is re-split: train and val together (val too when medfit made it at random). An existing
test split is kept as it is, unless `--test-fraction` asks for a new one, in which case every
image is re-split. The manifest (`path,label,split,group`, paths relative to the manifest's
folder) is what `medfit train MANIFEST.csv` and `medfit check MANIFEST.csv` read.

Multi-label data (several labels per image) are stratified by each image's rarest label (the
index's `Sample.label` key), image by image as groups of one under `--by stratified`, and written
as one 0/1 column per label (`path,split,group,<label>...`): unambiguous to read back, whatever
the labels are called and however many an image has.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfit.check.groups import resolve_groups
from medfit.data.manifest import MANIFEST_SUFFIXES
from medfit.data.sources import SPLITS, DatasetIndex
from medfit.errors import ConfigError, DataError

BY = ("group", "stratified")


@dataclass
class SplitResult:
    manifest: Path
    counts: dict[str, dict[str, int]]  # split -> class -> images
    fractions: dict[str, float]  # split -> share of all images
    groups: int  # distinct ids used (0 for --by stratified)
    notes: list[str] = field(default_factory=list)
    # Images per split; multi-label `counts` are positives per label, so they cannot be summed.
    images: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = ", ".join(
            f"{split} {self.images.get(split, sum(c.values()))} ({self.fractions[split]:.1%})"
            for split, c in self.counts.items()
        )
        lines = [f"wrote {self.manifest}: {parts}"]
        if self.groups:
            lines[0] += f"; {self.groups} groups, none in two splits"
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _holdout(
    labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int, what: str
) -> np.ndarray:
    """Boolean mask of a held-out `fraction` (stratified; whole groups when `groups` is given)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    n = len(labels)
    if groups is not None:
        folds = max(2, round(1.0 / fraction))
        n_groups = len(np.unique(groups))
        if n_groups < folds:
            raise DataError(
                f"only {n_groups} group ids for a {fraction:.0%} {what} split (needs at least "
                f"{folds}); lower --{what}-fraction, or use --by stratified"
            )
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # "The least populated class in y has only n members": a rare multi-label key
            warnings.simplefilter("ignore", UserWarning)
            _, held = next(splitter.split(np.zeros(n), labels, groups))
    else:
        try:
            splitter_s = StratifiedShuffleSplit(1, test_size=fraction, random_state=seed)
            _, held = next(splitter_s.split(np.zeros(n), labels))
        except ValueError as err:
            raise DataError(f"cannot make a stratified {what} split: {err}") from None
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return mask


def make_split(
    index: DatasetIndex,
    out: str | Path,
    by: str = "group",
    val_fraction: float = 0.15,
    test_fraction: float = 0.0,
    seed: int = 0,
    group_pattern: str | None = None,
    force: bool = False,
) -> SplitResult:
    """Re-split `index` (see the module docstring) and write the manifest to `out`."""
    out = _check_args(out, by, val_fraction, test_fraction, force)
    samples = index.samples
    resolved = resolve_groups(samples, index.root, group_pattern)
    notes: list[str] = []
    ids = resolved.ids
    if by == "group":
        if all(g is None for g in ids):
            raise DataError(
                f"{index.root}: no group ids to split by; pass --group-pattern REGEX|PRESET, give "
                "a manifest with a group column, or use --by stratified"
            )
        missing = sum(g is None for g in ids)
        if missing:
            notes.append(f"{missing} image(s) without a group id are each their own group")
        notes.append(f"group ids from {resolved.source}")
    labels = np.array([s.label for s in samples])  # multi-label: the stratification key
    group_arr = np.array(
        [g if g is not None else f"\0{s.path}" for s, g in zip(samples, ids, strict=True)]
    )
    # Multi-label keys can be held by one image (StratifiedShuffleSplit refuses those): split
    # image by image as groups of one, which StratifiedGroupKFold stratifies as well as it can.
    one_each = np.array([f"\0{s.path}" for s in samples]) if index.multilabel else None
    grouping = group_arr if by == "group" else one_each
    keep_test = test_fraction == 0.0
    splits = np.array(["train"] * len(samples), dtype=object)
    pool = np.ones(len(samples), dtype=bool)
    if keep_test:
        is_test = np.array([s.split == "test" for s in samples])
        splits[is_test], pool = "test", ~is_test
    else:
        sub = _holdout(labels, grouping, test_fraction, seed, "test")
        splits[sub] = "test"
        pool = ~sub
    rows = np.flatnonzero(pool)
    share = val_fraction * len(samples) / max(1, len(rows))  # val as a share of all images
    sub = _holdout(
        labels[rows],
        grouping[rows] if grouping is not None else None,
        min(share, 0.5),
        seed + 1,
        "val",
    )
    splits[rows[sub]] = "val"
    if by == "group" and keep_test:
        notes += _test_overlap(group_arr, splits)
    _write(out, index, splits.tolist(), ids)
    counts = {
        split: _counts(index, np.flatnonzero(splits == split))
        for split in SPLITS
        if np.any(splits == split)
    }
    fractions = {split: float(np.mean(splits == split)) for split in counts}
    images = {split: int(np.sum(splits == split)) for split in counts}
    n_groups = len(np.unique(group_arr)) if by == "group" else 0
    return SplitResult(out, counts, fractions, n_groups, notes, images)


def _counts(index: DatasetIndex, rows: np.ndarray) -> dict[str, int]:
    """Images per class of these rows; multi-label: positives per label."""
    if index.multilabel:
        totals = np.sum([index.samples[i].targets for i in rows], axis=0)
        return {c: int(n) for c, n in zip(index.classes, totals, strict=True)}
    return dict(Counter(index.classes[index.samples[i].label] for i in rows))


def _check_args(
    out: str | Path, by: str, val_fraction: float, test_fraction: float, force: bool
) -> Path:
    out = Path(out).expanduser()
    if by not in BY:
        raise ConfigError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    if out.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError(f"--out {out}: write a manifest file ending in .csv or .tsv")
    if out.exists() and not force:
        raise ConfigError(f"--out {out} exists; choose another name or pass --force")
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
        raise ConfigError("--val-fraction must be in (0, 1) and --test-fraction in [0, 1)")
    if val_fraction + test_fraction >= 0.9:
        raise ConfigError("--val-fraction + --test-fraction must leave at least 10% to train")
    return out


def _test_overlap(groups: np.ndarray, splits: np.ndarray) -> list[str]:
    """The kept test split may share ids with the re-split pool; say so (it cannot be fixed
    without changing test)."""
    test_ids = set(groups[splits == "test"].tolist())
    overlap = {g for g in groups[splits != "test"].tolist() if g in test_ids}
    if not overlap:
        return []
    return [
        f"{len(overlap)} group id(s) of the kept test split also occur in train/val; pass "
        "--test-fraction to re-split test too"
    ]


def _write(out: Path, index: DatasetIndex, splits: list[str], ids: list[str | None]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    delimiter = "\t" if out.suffix.lower() == ".tsv" else ","
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f, delimiter=delimiter)
        if index.multilabel:  # one 0/1 column per label (see the module docstring)
            writer.writerow(["path", "split", "group", *index.classes])
        else:
            writer.writerow(["path", "label", "split", "group"])
        for sample, split, group in zip(index.samples, splits, ids, strict=True):
            path = _manifest_path(sample.path, out)
            if index.multilabel:
                writer.writerow([path, split, group or "", *(sample.targets or ())])
            else:
                writer.writerow([path, index.classes[sample.label], split, group or ""])
    os.replace(tmp, out)


def _manifest_path(path: str, out: Path) -> str:
    """Relative to the manifest's folder (how the manifest reader resolves it), else absolute."""
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(out.parent))
    except ValueError:
        return os.path.abspath(path)
