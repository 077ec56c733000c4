"""Find the images and their labels: the folder layout Keras users already have.

    DATA/train/<class>/*.png      (also: training, Train, TRAIN ...)
    DATA/val/<class>/*.png        (also: valid, validation, Kaggle's doubled Validation/Validation)
    DATA/test/<class>/*.png       (optional; also: testing)

A folder of class folders with no split folders is treated as `train`. Without a val split, a
stratified split of train is made (and saved in the run). Everything downstream works on the
`Sample` records produced here; nothing else walks the user's folders.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfit.data.decode import is_image_path, is_junk
from medfit.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_SYNONYMS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # index into DatasetIndex.classes
    split: str  # one of SPLITS
    group: str | None = None  # patient/study id, when known


@dataclass
class DatasetIndex:
    root: str
    classes: list[str]
    samples: list[Sample]
    ignored_files: list[str] = field(default_factory=list)  # non-image files inside class folders
    val_from_train: bool = False  # True when val was split off train by medfit

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self, split: str) -> dict[str, int]:
        counter = Counter(s.label for s in self.split(split))
        return {c: counter.get(i, 0) for i, c in enumerate(self.classes)}


def split_name(folder_name: str) -> str | None:
    lowered = folder_name.lower()
    for split, names in SPLIT_SYNONYMS.items():
        if lowered in names:
            return split
    return None


def find_split_dirs(root: Path) -> dict[str, Path]:
    """Map split -> folder, matching names case-insensitively with the usual synonyms."""
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        split = split_name(child.name) if child.is_dir() else None
        if split is None:
            continue
        if split in found:
            raise DataError(
                f"{root}: both {found[split].name!r} and {child.name!r} look like the {split} "
                "split; rename or remove one"
            )
        found[split] = _unnest(child, split)
    return found


def _unnest(folder: Path, split: str) -> Path:
    # Kaggle zips hold Validation/Validation/<class>: descend while the only child is the split.
    while True:
        children = [c for c in folder.iterdir() if c.is_dir() and not is_junk(Path(c.name))]
        if len(children) == 1 and split_name(children[0].name) == split:
            folder = children[0]
        else:
            return folder


def _list_class_folder(folder: Path, ignored: list[str]) -> list[Path]:
    images: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(Path(d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            # Judge the name alone: folders above the data root are not the user's to police.
            if is_image_path(Path(name)):
                images.append(path)
            elif not is_junk(Path(name)):
                ignored.append(str(path))
    return images


def _class_folders(split_dir: Path) -> list[Path]:
    return sorted(c for c in split_dir.iterdir() if c.is_dir() and not is_junk(Path(c.name)))


def index_folder(root: str | Path, val_fraction: float = 0.15, seed: int = 0) -> DatasetIndex:
    """Index a flow_from_directory layout into Sample records."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data directory not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is a file; pass the folder that holds train/<class>/ folders")
    split_dirs = find_split_dirs(root)
    if "train" not in split_dirs:
        if split_dirs:
            raise DataError(
                f"{root} has {', '.join(sorted(split_dirs))} but no train folder "
                "(expected train/, training/ ...)"
            )
        split_dirs = {"train": root}  # a plain folder of class folders

    per_split: dict[str, dict[str, list[Path]]] = {}
    ignored: list[str] = []
    for split, folder in split_dirs.items():
        per_split[split] = {c.name: _list_class_folder(c, ignored) for c in _class_folders(folder)}

    classes = _check_classes(root, per_split)
    index = {name: i for i, name in enumerate(classes)}
    samples = [
        Sample(str(path), index[cls], split)
        for split in SPLITS
        for cls, paths in per_split.get(split, {}).items()
        for path in paths
    ]
    dataset = DatasetIndex(str(root), classes, samples, ignored)
    if "val" not in split_dirs:
        dataset = stratified_val_split(dataset, val_fraction, seed)
    return dataset


def _check_classes(root: Path, per_split: dict[str, dict[str, list[Path]]]) -> list[str]:
    train = per_split["train"]
    if not train:
        raise DataError(f"{root}: no class folders in the train split (expected train/<class>/)")
    empty = [c for c, paths in train.items() if not paths]
    if empty:
        raise DataError(
            f"{root}: class folder(s) with no images in train: {', '.join(empty)}; "
            "add images or remove the folder"
        )
    classes = sorted(train)
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]}); a classifier needs at least two")
    for split, folders in per_split.items():
        extra = sorted(set(folders) - set(classes))
        if extra:
            raise DataError(
                f"{root}: class(es) {', '.join(extra)} in {split} but not in train; "
                "add training images for them or remove them"
            )
    return classes


def stratified_val_split(dataset: DatasetIndex, val_fraction: float, seed: int) -> DatasetIndex:
    """Move a stratified `val_fraction` of train to val (at least one image per class)."""
    rng = np.random.default_rng(seed)
    train = dataset.split("train")
    to_val: set[str] = set()
    for label in range(len(dataset.classes)):
        paths = sorted(s.path for s in train if s.label == label)
        if len(paths) < 2:
            raise DataError(
                f"{dataset.root}: class {dataset.classes[label]!r} has {len(paths)} training "
                "image(s); need at least 2 to split off a validation set (or add a val/ folder)"
            )
        n_val = min(len(paths) - 1, max(1, round(len(paths) * val_fraction)))
        to_val.update(rng.choice(paths, size=n_val, replace=False).tolist())
    samples = [
        Sample(s.path, s.label, "val", s.group) if s.path in to_val else s for s in dataset.samples
    ]
    return DatasetIndex(dataset.root, dataset.classes, samples, dataset.ignored_files, True)


def stratified_subset(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    """At most `limit` samples with the class proportions kept (for quick experiments)."""
    if limit is None or limit >= len(samples):
        return samples
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[Sample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    labels = sorted(by_label)
    shares = np.array([limit * len(by_label[label]) / len(samples) for label in labels])
    counts = np.floor(shares).astype(int)
    # Largest remainders get the leftover slots, so the total is exactly `limit`.
    for i in np.argsort(-(shares - counts), kind="stable")[: limit - counts.sum()]:
        counts[i] += 1
    chosen: list[Sample] = []
    for label, n in zip(labels, counts, strict=True):
        group = by_label[label]
        picks = rng.choice(len(group), size=min(int(n), len(group)), replace=False)
        chosen.extend(group[i] for i in sorted(picks))
    return chosen
