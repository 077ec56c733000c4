"""Find the images and their labels: the folder layout Keras users already have.

    DATA/train/<class>/*.png      (also: training, Train, TRAIN ...)
    DATA/val/<class>/*.png        (also: valid, validation, Kaggle's doubled Validation/Validation)
    DATA/test/<class>/*.png       (optional; also: testing)

A folder of class folders with no split folders is treated as `train`. Without a val split, a
stratified split of train is made (and saved in the run). Everything downstream works on the
`Sample` records produced here; nothing else walks the user's folders. (A CSV/TSV manifest is the
other source: `medfit.data.manifest`; both share `check_classes` and `stratified_val_split`.)

What the walk does with odd entries:
- a file directly in a split folder (train/x.png, not in a class folder) is listed in
  `ignored_files`, as are non-image files inside class folders; OS clutter is skipped silently;
- a symlinked class folder is followed, unless it points at its own split folder, above it or into
  it (it would list every class again, or one class's images under a second label); such a link
  and a symlinked folder *inside* a class folder (it could loop, or pull in another class's
  images) are not followed and are listed in `ignored_files`;
- a symlinked file is indexed under its link path; a dangling or looping one is indexed too, and
  the decode step reports it as unreadable (skipped with a count, fatal under --strict);
- file names that are not valid UTF-8 come through as surrogate-escaped `str` and still open;
- DICOM files get `Sample.group` from their header (PatientID, else StudyInstanceUID).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfit.data.decode import DICOM_SUFFIXES, _dicom_group, is_image_path, is_junk
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
    # Files seen but not used: non-images in class folders, files loose in a split folder,
    # symlinked sub-folders (not followed).
    ignored_files: list[str] = field(default_factory=list)
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
    # followlinks=False: a symlink loop (link -> . or -> a parent) cannot make the walk recurse.
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        kept = []
        for name in sorted(dirnames):
            if is_junk(Path(name)):
                continue
            if os.path.islink(os.path.join(dirpath, name)):
                ignored.append(os.path.join(dirpath, name))  # not followed; say so
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = Path(dirpath) / name
            # Judge the name alone: folders above the data root are not the user's to police.
            if is_image_path(Path(name)):
                images.append(path)
            elif not is_junk(Path(name)):
                ignored.append(str(path))
    return images


def _split_contents(split_dir: Path) -> tuple[list[Path], list[Path]]:
    """(class folders, other non-junk entries) directly inside a split folder."""
    folders: list[Path] = []
    loose: list[Path] = []
    for child in sorted(split_dir.iterdir()):
        if is_junk(Path(child.name)):
            continue
        # is_dir follows a symlinked class folder; a looping or dangling link is not a folder.
        is_class = child.is_dir() and not _links_into(child, split_dir)
        (folders if is_class else loose).append(child)
    return folders, loose


def _links_into(child: Path, split_dir: Path) -> bool:
    """True for a symlinked folder that points at `split_dir`, above it or inside it.

    Followed, it would list every class again under its own name (`train/all -> train`) or
    another class's images a second time (`train/a2 -> train/a`): one image, two labels.
    """
    if not child.is_symlink():
        return False
    target, split = os.path.realpath(child), os.path.realpath(split_dir)
    return (
        split == target
        or split.startswith(target.rstrip(os.sep) + os.sep)
        or target.startswith(split + os.sep)
    )


def dicom_group(path: str | Path) -> str | None:
    """PatientID, else StudyInstanceUID, from a DICOM file's header; None when not known.

    Reads the header only (no pixels). None for non-DICOM suffixes, without pydicom, and for any
    file whose header cannot be read: decoding reports unreadable files later, with the reason.
    """
    path = Path(path)
    if path.suffix.lower() not in DICOM_SUFFIXES or not path.is_file():  # is_file: no FIFOs
        return None
    try:
        import pydicom
    except ImportError:
        return None
    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID"]
        )
    except Exception:  # pydicom reports malformed files with many exception types
        return None
    return _dicom_group(ds)


def index_folder(root: str | Path, val_fraction: float = 0.15, seed: int = 0) -> DatasetIndex:
    """Index a flow_from_directory layout into Sample records."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data directory not found: {root}")
    if not root.is_dir():
        raise DataError(
            f"{root} is a file; pass the folder that holds train/<class>/ folders "
            "or a .csv/.tsv manifest"
        )
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
    loose_images: dict[str, int] = {}
    for split, folder in split_dirs.items():
        class_folders, loose = _split_contents(folder)
        ignored.extend(str(p) for p in loose)
        loose_images[split] = sum(is_image_path(Path(p.name)) for p in loose)
        per_split[split] = {c.name: _list_class_folder(c, ignored) for c in class_folders}

    no_train = "no class folders in the train split (expected train/<class>/)"
    if loose_images["train"]:
        no_train += (
            f"; {loose_images['train']} image(s) lie directly in {split_dirs['train']}: "
            "move them into one folder per class"
        )
    counts = {split: {c: len(ps) for c, ps in cs.items()} for split, cs in per_split.items()}
    classes = check_classes(str(root), counts, no_train)
    index = {name: i for i, name in enumerate(classes)}
    samples = [
        Sample(str(path), index[cls], split, dicom_group(path))
        for split in SPLITS
        for cls, paths in per_split.get(split, {}).items()
        for path in paths
    ]
    dataset = DatasetIndex(str(root), classes, samples, ignored)
    if "val" not in split_dirs:
        dataset = stratified_val_split(dataset, val_fraction, seed)
    return dataset


def check_classes(where: str, counts: Mapping[str, Mapping[str, int]], no_train: str) -> list[str]:
    """The classes (sorted train classes) from `{split: {class: n_images}}`, or a DataError.

    Shared by every source: train must have >= 2 classes, none of them empty, and val/test may
    not hold a class train lacks. `where` starts each message (the folder or manifest);
    `no_train` is the message when train holds no class at all.
    """
    train = counts.get("train", {})
    if not train:
        raise DataError(f"{where}: {no_train}")
    empty = [c for c, n in train.items() if not n]
    if empty:
        raise DataError(
            f"{where}: class(es) with no images in train: {', '.join(empty)}; "
            "add images or remove the class folder"
        )
    classes = sorted(train)
    if len(classes) < 2:
        raise DataError(f"{where}: only one class ({classes[0]}); a classifier needs at least two")
    for split in SPLITS:
        extra = sorted(set(counts.get(split, {})) - set(classes))
        if extra:
            raise DataError(
                f"{where}: class(es) {', '.join(extra)} in {split} but not in train; "
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
                "image(s); need at least 2 to split off a validation set (or give a val split: "
                "a val/ folder, or val rows in the manifest)"
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
