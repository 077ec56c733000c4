"""Grouped, stratified k-fold assignment of a labelled pool.

Every image gets a fold in 0..k-1 such that images of one group (patient, lesion, slide: the
ids the auto-split keeps apart, `Sample.group`) share a fold, and each fold's class mix is as
close to the pool's as the groups allow (scikit-learn's StratifiedGroupKFold). An image without
a group id is its own group. The assignment depends only on the pool, k and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medfit.data.sources import Sample
from medfit.errors import DataError

# Seeds tried (seed, seed+1, ...) until every fold's training part holds every class.
_ATTEMPTS = 20


def assign_folds(samples: Sequence[Sample], n_classes: int, k: int, seed: int) -> np.ndarray:
    """(N,) int fold of each sample; a DataError when the pool cannot make k grouped folds."""
    labels = np.array([s.label for s in samples])
    groups = np.array([s.group if s.group is not None else f"path:{s.path}" for s in samples])
    n_groups = len(set(groups.tolist()))
    if n_groups < k:
        raise DataError(
            f"--folds {k} needs at least {k} groups of images; the pool has {n_groups}: "
            "use fewer folds"
        )
    folds = np.full(len(samples), -1)
    for attempt in range(_ATTEMPTS):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed + attempt)
        for fold, (_, held_out) in enumerate(splitter.split(labels, labels, groups)):
            folds[held_out] = fold
        if all(len(set(labels[folds != f].tolist())) == n_classes for f in range(k)):
            return folds
    raise DataError(
        f"--folds {k}: no grouped split in {_ATTEMPTS} tries leaves every class in every fold's "
        f"training part (class counts {np.bincount(labels, minlength=n_classes).tolist()}); "
        "use fewer folds"
    )
