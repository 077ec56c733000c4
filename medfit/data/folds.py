"""Grouped, stratified k-fold assignment of a labelled pool.

Every image gets a fold in 0..k-1 such that images of one group (patient, lesion, slide: the
ids the auto-split keeps apart, `Sample.group`) share a fold, and each fold's class mix is as
close to the pool's as the groups allow (scikit-learn's StratifiedGroupKFold). An image without
a group id is its own group. The assignment depends only on the pool, k and the seed.

Multi-label pools (`Sample.targets` set) are stratified on `Sample.label`, the stratification key
the manifest reader gives each image (its rarest positive label, or "none"), and every fold's
training part must hold a positive of every label, so that each member learns every label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medfit.data.sources import Sample
from medfit.errors import DataError

# Seeds tried (seed, seed+1, ...) until every fold's training part holds every class.
_ATTEMPTS = 20


def assign_folds(
    samples: Sequence[Sample],
    n_classes: int,
    k: int,
    seed: int,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """(N,) int fold of each sample; a DataError when the pool cannot make k grouped folds.
    `classes` (the label names) only words the error of a multi-label pool."""
    labels = np.array([s.label for s in samples])
    groups = np.array([s.group if s.group is not None else f"path:{s.path}" for s in samples])
    n_groups = len(set(groups.tolist()))
    if n_groups < k:
        raise DataError(
            f"--folds {k} needs at least {k} groups of images; the pool has {n_groups}: "
            "use fewer folds"
        )
    multilabel = bool(samples) and samples[0].targets is not None
    targets = (
        np.array([s.targets for s in samples], dtype=int).reshape(len(samples), n_classes)
        if multilabel
        else None
    )
    folds = np.full(len(samples), -1)
    for attempt in range(_ATTEMPTS):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + attempt)
        for fold, (_, held_out) in enumerate(splitter.split(labels, labels, groups)):
            folds[held_out] = fold
        if targets is not None:
            if not _labels_missing(targets, folds, k):
                return folds
        elif all(len(set(labels[folds != f].tolist())) == n_classes for f in range(k)):
            return folds
    if targets is not None:
        raise DataError(_multilabel_failure(targets, groups, folds, k, classes))
    raise DataError(
        f"--folds {k}: no grouped split in {_ATTEMPTS} tries leaves every class in every fold's "
        f"training part (class counts {np.bincount(labels, minlength=n_classes).tolist()}); "
        "use fewer folds"
    )


def _labels_missing(targets: np.ndarray, folds: np.ndarray, k: int) -> list[int]:
    """The labels (indices) that have no positive in some fold's training part."""
    missing: set[int] = set()
    for f in range(k):
        missing.update(np.flatnonzero(targets[folds != f].sum(0) == 0).tolist())
    return sorted(missing)


def _multilabel_failure(
    targets: np.ndarray,
    groups: np.ndarray,
    folds: np.ndarray,
    k: int,
    classes: Sequence[str] | None,
) -> str:
    missing = _labels_missing(targets, folds, k)
    named = []
    for j in missing:
        on = targets[:, j] == 1
        name = classes[j] if classes is not None else f"label {j}"
        n_groups = len(set(groups[on].tolist()))
        named.append(f"{name} (positive on {int(on.sum())} image(s) in {n_groups} group(s))")
    return (
        f"--folds {k}: no grouped split in {_ATTEMPTS} tries leaves a positive of every label in "
        f"every fold's training part: {', '.join(named)}; use fewer folds, or add images of "
        "those labels (a member that never sees a label cannot learn it)"
    )
