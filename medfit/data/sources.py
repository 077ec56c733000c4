"""Find the images and their labels: the folder layout Keras users already have.

    DATA/train/<class>/*.png      (also: training, Train, TRAIN ...)
    DATA/val/<class>/*.png        (also: valid, validation, Kaggle's doubled Validation/Validation)
    DATA/test/<class>/*.png       (optional; also: testing)

A folder of class folders with no split folders is treated as `train`. Without a val split, a
stratified (and, with patient ids, grouped) split of train is made (and saved in the run).
Everything downstream works on the `Sample` records produced here; nothing else walks the user's
folders. (A CSV/TSV manifest is the other source: `medfit.data.manifest`; both share
`check_classes` and `stratified_val_split`.)

What the walk does with odd entries:
- a file directly in a split folder (train/x.png, not in a class folder) is listed in
  `ignored_files`, as are non-image files inside class folders; OS clutter (`is_junk`) is skipped
  silently;
- a folder or file whose name starts with `.` (`.Trash-1000`, `.git`, `.x.png`) is never a class
  or a sample; the files it holds are listed in `ignored_files`;
- a split or class folder that is a symlink (or sits below one) resolving inside the data set
  (`train/m2 -> ../val/m`, `val -> train`, `train/a2 -> a`) is a DataError naming the link: its
  images would be used twice, in two splits or under two labels. One resolving outside the data
  set is followed and listed in `followed_links`, unless two such folders resolve onto each other
  (also a DataError);
- a symlinked folder *inside* a class folder (it could loop, or pull in another class's images) is
  not followed and is listed in `ignored_files`; a symlinked class folder that is no folder
  (dangling, looping) is listed there too;
- a symlinked file is indexed under its link path; a dangling or looping one is indexed too, and
  the decode step reports it as unreadable (skipped with a count, fatal under --strict). One
  file reached from two splits (or under two labels), through links, is a DataError;
- file names that are not valid UTF-8 come through as surrogate-escaped `str` and still open;
- DICOM files get `Sample.group` from their header (PatientID, else StudyInstanceUID).

`stratified_val_split` keeps a patient out of both train and val: when train samples carry a
`group`, whole groups go to val (scikit-learn's StratifiedGroupKFold, seeded; a sample without a
group is a group of its own); without any group it draws images per class at random.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medfit.data.decode import DICOM_SUFFIXES, _dicom_group, is_image_path, is_junk
from medfit.errors import DataError
from medfit.files import describe_kind

SPLITS = ("train", "val", "test")
GROUPED_SPLIT_TRIES = 10  # seeds tried for a grouped val split with every class on both sides
SPLIT_SYNONYMS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}


@dataclass(frozen=True)
class Sample:
    path: str
    # Single-label: the index into DatasetIndex.classes. Multi-label: a stratification key only
    # (the sample's rarest positive label, or len(classes) for no finding); `targets` holds the
    # labels.
    label: int
    split: str  # one of SPLITS
    group: str | None = None  # patient/study id, when known
    targets: tuple[int, ...] | None = None  # multi-label only: 0/1 per class


@dataclass
class DatasetIndex:
    root: str
    classes: list[str]
    samples: list[Sample]
    # Files seen but not used: non-images in class folders, files loose in a split folder,
    # hidden files and what hidden folders hold, symlinked sub-folders (not followed).
    ignored_files: list[str] = field(default_factory=list)
    val_from_train: bool = False  # True when val was split off train by medfit
    val_groups: int = 0  # group ids that split kept apart; 0 when it went image by image
    # "link -> target" for each split/class folder link followed out of the data set.
    followed_links: list[str] = field(default_factory=list)
    # Top-level folders beside the split folders that are no split (`test_simple/`, `original/`).
    ignored_folders: list[str] = field(default_factory=list)

    # True when each image carries a 0/1 vector over `classes` (Sample.targets).
    multilabel: bool = False

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self, split: str) -> dict[str, int]:
        """Images per class; multi-label: images on which each label is positive."""
        samples = self.split(split)
        if self.multilabel:
            rows = [s.targets for s in samples if s.targets is not None]
            totals = np.sum(rows, axis=0) if rows else None
            return {
                c: int(totals[i]) if totals is not None else 0 for i, c in enumerate(self.classes)
            }
        counter = Counter(s.label for s in samples)
        return {c: counter.get(i, 0) for i, c in enumerate(self.classes)}


# How RUN/split.csv and prediction files write a multi-label target: positive labels joined by
# LABEL_JOIN, or NO_LABELS for the all-zero target.
LABEL_JOIN = "|"
NO_LABELS = "(none)"


def label_text(label: Any, classes: Sequence[str]) -> str:
    """A cached label as text: the class name, or for a 0/1 multi-label row its positive labels
    joined ("Effusion|Infiltration", or NO_LABELS)."""
    values = np.asarray(label)
    if values.ndim == 0:
        return classes[int(values)]
    names = [name for name, on in zip(classes, values, strict=True) if on]
    return LABEL_JOIN.join(names) if names else NO_LABELS


def label_vector(text: str, classes: Sequence[str]) -> list[int] | None:
    """The 0/1 row `label_text` wrote; None when it names a label that is not in `classes`."""
    names = set() if text == NO_LABELS else set(text.split(LABEL_JOIN))
    if not names <= set(classes):
        return None
    return [int(name in names) for name in classes]


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
        children = [c for c in folder.iterdir() if c.is_dir() and not _skipped(c.name)]
        if len(children) == 1 and split_name(children[0].name) == split:
            folder = children[0]
        else:
            return folder


def _skipped(name: str) -> bool:
    """Clutter or a dot-name: never a split, a class or a sample."""
    return name.startswith(".") or is_junk(Path(name))


@dataclass
class _Walk:
    """What the folder walk sets aside, and the real folders no link may lead into."""

    guarded: list[str]  # real paths: the data set, then its split folders
    ignored: list[str] = field(default_factory=list)
    followed: list[tuple[str, str]] = field(default_factory=list)  # (link, real target)


def _check_split_folders(root: Path, split_dirs: dict[str, Path], walk: _Walk) -> None:
    """Refuse a split folder reached through a link into the data set, or two split folders
    that resolve onto each other; links out of the data set are followed (and noted)."""
    for split, folder in split_dirs.items():
        link = _first_link(root, folder)
        if link is not None:
            target = os.path.realpath(link)
            if _overlaps(os.path.realpath(folder), walk.guarded[0]):
                raise DataError(
                    f"the {split} folder {link} is a symlink to {target}, "
                    f"{_relation(target, walk.guarded[0])}: "
                    f"{split} would reuse images of another split (a leak); remove the link, or "
                    "copy the files into a real folder"
                )
            walk.followed.append((str(link), target))
    reals = [
        (f"{folder} ({split})", os.path.realpath(folder)) for split, folder in split_dirs.items()
    ]
    _refuse_overlaps(reals)
    walk.guarded += [real for _, real in reals]


def _first_link(root: Path, folder: Path) -> Path | None:
    """The first symlink on the way down from `root` (not counted) to `folder`."""
    path = root
    for part in folder.relative_to(root).parts:
        path = path / part
        if path.is_symlink():
            return path
    return None


def _overlaps(a: str, b: str) -> bool:
    """True when real paths `a` and `b` are one folder, or one lies inside the other."""
    return a == b or _inside(a, b) or _inside(b, a)


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def _relation(target: str, root: str) -> str:
    """How a link's real target sits against the data set's real root, for a message."""
    return "a folder that holds this data set" if _inside(root, target) else "inside this data set"


def _refuse_overlaps(folders: list[tuple[str, str]]) -> None:
    """DataError when two (name, real path) folders resolve onto each other through links."""
    for i, (first, a) in enumerate(folders):
        for second, b in folders[i + 1 :]:
            if _overlaps(a, b):
                raise DataError(
                    f"{first} and {second} resolve to the same images ({a} and {b}) through a "
                    "symlink; remove the link, or copy the files into a real folder"
                )


def _class_folders(split_dir: Path, walk: _Walk) -> tuple[list[tuple[Path, str]], int]:
    """(class folder, real path) directly inside a split folder, and how many images lie loose
    in it; every other entry but clutter is added to `walk.ignored`."""
    folders: list[tuple[Path, str]] = []
    loose_images = 0
    for child in sorted(split_dir.iterdir()):
        if is_junk(Path(child.name)):
            continue
        if child.name.startswith("."):
            walk.ignored.extend(_hidden_files(child))
        elif child.is_dir():  # follows a link; a dangling or looping link is no folder
            folders.append((child, _class_target(child, walk)))
        else:
            walk.ignored.append(str(child))
            loose_images += is_image_path(Path(child.name))
    return folders, loose_images


def _class_target(folder: Path, walk: _Walk) -> str:
    """The real path of a class folder; a link into the data set is a DataError.

    Followed, `train/m2 -> ../val/m` would train on val images, `train/a2 -> a` would give a's
    images a second label, `train/all -> .` would list every class again.
    """
    real = os.path.realpath(folder)
    if folder.is_symlink():
        if any(_overlaps(real, guarded) for guarded in walk.guarded):
            raise DataError(
                f"class folder {folder} is a symlink to {real}, "
                f"{_relation(real, walk.guarded[0])}: its images "
                "would be used twice (in two splits, or under two labels); remove the link, or "
                "copy the files into a real folder"
            )
        walk.followed.append((str(folder), real))
    return real


def _hidden_files(path: Path) -> list[str]:
    """A hidden entry as files not used: itself, or (a real folder) every file below it."""
    if path.is_symlink() or not path.is_dir():
        return [str(path)]
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(Path(d)))
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if not is_junk(Path(f))]
    return found


def _list_class_folder(folder: Path, real: str, ignored: list[str]) -> list[tuple[Path, str]]:
    """(image, its real path) for every image below a class folder whose real path is `real`;
    other entries but clutter are added to `ignored`."""
    images: list[tuple[Path, str]] = []
    top = str(folder)
    # followlinks=False: a symlink loop (link -> . or -> a parent) cannot make the walk recurse.
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = _subfolders(dirpath, dirnames, ignored)
        real_dir = real + dirpath[len(top) :]
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_junk(Path(name)):
                continue
            # Judge the name alone: folders above the data root are not the user's to police.
            if is_image_path(Path(name)) and not name.startswith("."):
                linked = path.is_symlink()
                images.append(
                    (path, os.path.realpath(path) if linked else os.path.join(real_dir, name))
                )
            else:
                ignored.append(str(path))
    return images


def _subfolders(dirpath: str, names: list[str], ignored: list[str]) -> list[str]:
    """The sub-folders of a class folder to walk into; links and hidden ones go to `ignored`."""
    kept = []
    for name in sorted(names):
        path = os.path.join(dirpath, name)
        if is_junk(Path(name)):
            continue
        if os.path.islink(path):
            ignored.append(path)  # not followed; say so
        elif name.startswith("."):
            ignored.extend(_hidden_files(Path(path)))
        else:
            kept.append(name)
    return kept


def _refuse_shared_files(root: Path, listed: dict[str, dict[str, list[tuple[Path, str]]]]) -> None:
    """DataError when one real file is listed in two splits, or under two classes (via links)."""
    first: dict[str, tuple[str, str, Path]] = {}
    clashes: list[str] = []
    for split, classes in listed.items():
        for cls, files in classes.items():
            for path, real in files:
                seen_split, seen_class, seen = first.setdefault(real, (split, cls, path))
                if seen_split != split:
                    clashes.append(
                        f"{seen} ({seen_split}) and {path} ({split}) are one file, {real}: "
                        f"a leak between {seen_split} and {split}"
                    )
                elif seen_class != cls:
                    clashes.append(
                        f"{seen} and {path} are one file, {real}, under two labels "
                        f"({seen_class}, {cls})"
                    )
    if clashes:
        more = f" ({len(clashes) - 1} more such file(s))" if len(clashes) > 1 else ""
        raise DataError(
            f"{root}: {clashes[0]}{more}; keep each image in one split and one class folder "
            "(remove the link or the duplicate)"
        )


def _walk_splits(
    root: Path, split_dirs: dict[str, Path]
) -> tuple[dict[str, dict[str, list[tuple[Path, str]]]], dict[str, int], _Walk]:
    """{split: {class: [(image, real path)]}}, {split: images loose in it}, and what was set aside;
    a DataError for a link that would reuse images (see the module docstring)."""
    walk = _Walk([os.path.realpath(root)])
    _check_split_folders(root, split_dirs, walk)
    split_links = len(walk.followed)
    listed: dict[str, dict[str, list[tuple[Path, str]]]] = {}
    loose_images: dict[str, int] = {}
    for split, folder in split_dirs.items():
        class_folders, loose_images[split] = _class_folders(folder, walk)
        listed[split] = {
            c.name: _list_class_folder(c, real, walk.ignored) for c, real in class_folders
        }
    _refuse_overlaps(walk.followed[split_links:])  # two class links onto the same folder
    _refuse_shared_files(root, listed)
    return listed, loose_images, walk


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
        what = "a file" if root.is_file() else describe_kind(root)
        raise DataError(
            f"{root} is {what}; pass the folder that holds train/<class>/ folders "
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

    listed, loose_images, walk = _walk_splits(root, split_dirs)

    no_train = "no class folders in the train split (expected train/<class>/)"
    if loose_images["train"]:
        no_train += (
            f"; {loose_images['train']} image(s) lie directly in {split_dirs['train']}: "
            "move them into one folder per class"
        )
    counts = {split: {c: len(ps) for c, ps in cs.items()} for split, cs in listed.items()}
    classes = check_classes(str(root), counts, no_train)
    index = {name: i for i, name in enumerate(classes)}
    samples = [
        Sample(str(path), index[cls], split, dicom_group(path))
        for split in SPLITS
        for cls, files in listed.get(split, {}).items()
        for path, _ in files
    ]
    followed = [f"{link} -> {real}" for link, real in walk.followed]
    dataset = DatasetIndex(str(root), classes, samples, walk.ignored, followed_links=followed)
    dataset.ignored_folders = _non_split_folders(root, split_dirs)
    if "val" not in split_dirs:
        dataset = stratified_val_split(dataset, val_fraction, seed)
    return dataset


def _non_split_folders(root: Path, split_dirs: dict[str, Path]) -> list[str]:
    """Top-level folders that are not splits, when the data has split folders (else every
    top-level folder is a class)."""
    if split_dirs.get("train") == root:
        return []
    used = {folder.relative_to(root).parts[0] for folder in split_dirs.values()}
    return [
        child.name
        for child in sorted(root.iterdir())
        if child.is_dir() and child.name not in used and not _skipped(child.name)
    ]


def ignored_folders_hint(folders: list[str]) -> str:
    """What to do with top-level folders that are no split: one clause for a message."""
    names = ", ".join(f"{name}/" for name in folders[:5]) + (", ..." if len(folders) > 5 else "")
    return (
        f"{len(folders)} top-level folder(s) not used, as they are not train/val/test: {names} "
        "(rename one to test/ or val/ to use it as that split, or list its images in a CSV "
        "manifest with path,label,split columns and pass the manifest as DATA)"
    )


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
    """Move a stratified `val_fraction` of train to val: whole groups when train samples carry a
    group (no id in both), else images drawn per class (at least one image per class)."""
    train = dataset.split("train")
    if dataset.multilabel:
        to_val, n_ids = _multilabel_val(train, val_fraction, seed)
    elif any(s.group is not None for s in train):
        to_val = _grouped_val(dataset, train, val_fraction, seed)
        n_ids = len({s.group for s in train if s.group is not None})
    else:
        to_val, n_ids = _random_val(dataset, train, val_fraction, seed), 0
    samples = [replace(s, split="val") if s.path in to_val else s for s in dataset.samples]
    return replace(dataset, samples=samples, val_from_train=True, val_groups=n_ids)


def _multilabel_val(train: list[Sample], val_fraction: float, seed: int) -> tuple[set[str], int]:
    """Whole groups (an image without one is its own) for val, stratified by each image's rarest
    label: the first fold of a seeded StratifiedGroupKFold. No label is required on both sides:
    a rare finding may only be in train (eval then says it is too rare to measure)."""
    from sklearn.model_selection import StratifiedGroupKFold

    keys = np.array([s.label for s in train])
    groups = np.array([s.group if s.group is not None else f"\0{s.path}" for s in train])
    n_groups = len(np.unique(groups))
    folds = max(2, min(round(1 / val_fraction), n_groups))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has N members"
        _, held = next(splitter.split(np.zeros(len(train)), keys, groups))
    n_ids = len({s.group for s in train if s.group is not None})
    return {train[i].path for i in held}, n_ids


def _random_val(
    dataset: DatasetIndex, train: list[Sample], val_fraction: float, seed: int
) -> set[str]:
    rng = np.random.default_rng(seed)
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
    return to_val


def _grouped_val(
    dataset: DatasetIndex, train: list[Sample], val_fraction: float, seed: int
) -> set[str]:
    """Paths of whole groups for val, every class in both train and val: the first such fold of
    a seeded StratifiedGroupKFold (a sample without a group is a group of its own)."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.array([s.label for s in train])
    groups = np.array([s.group if s.group is not None else f"\0{s.path}" for s in train])
    _need_two_groups(dataset, labels, groups)
    n_groups = len(np.unique(groups))
    # StratifiedGroupKFold needs n_splits <= n_groups and <= the largest class's count.
    folds = max(2, min(round(1 / val_fraction), n_groups, int(np.bincount(labels).max())))
    for attempt in range(GROUPED_SPLIT_TRIES):
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed + attempt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class has N members"
            for _, held in splitter.split(np.zeros(len(train)), labels, groups):
                if _every_class_on_both_sides(labels, held, len(dataset.classes)):
                    return {train[i].path for i in held}
    raise DataError(
        f"{dataset.root}: cannot split {n_groups} group ids into train and val with every class "
        "on both sides; give a val split (a val/ folder, or val rows in a manifest: "
        "`medfit split --by group` writes one)"
    )


def _need_two_groups(dataset: DatasetIndex, labels: np.ndarray, groups: np.ndarray) -> None:
    for label, name in enumerate(dataset.classes):
        n = len(np.unique(groups[labels == label]))
        if n < 2:
            raise DataError(
                f"{dataset.root}: class {name!r} has training images of {n} group id(s); need at "
                "least 2 to split off a validation set that shares no id with train (or give a "
                "val split: a val/ folder, or val rows in the manifest)"
            )


def _every_class_on_both_sides(labels: np.ndarray, held: np.ndarray, n_classes: int) -> bool:
    in_val = np.bincount(labels[held], minlength=n_classes)
    total = np.bincount(labels, minlength=n_classes)
    return bool(np.all(in_val > 0) and np.all(in_val < total))


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
