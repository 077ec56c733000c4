"""One known public data set as a record (`KnownSet`: how it is recognised, its images per class in
each published split, its patients and its known flaws) and what its class counts say about
accuracy. The entries are known_scans.py and known_photos.py; datasets.py recognises them."""

from __future__ import annotations

from dataclasses import dataclass, field

# A class is imbalanced for class_imbalance at this max/min ratio (bench KEY_FORMAT.md).
IMBALANCE_RATIO = 1.5
# Accuracy alone says little about a set whose majority class is two thirds of it (a model that
# answers the majority scores 67%), or where a class is under a tenth of it (all of that class
# wrong moves accuracy by less than 0.1).
MAJORITY_SHARE = 2 / 3
MINORITY_SHARE = 0.10
SMALL_VAL = 100  # KEY_FORMAT.md small_val: under ~100 images


@dataclass(frozen=True, eq=False)
class KnownSet:
    key: str
    name: str
    source: str  # where the numbers below come from
    modality: str
    # Each class: its spellings as folder names/labels (compared lower-case, letters and digits
    # only: "Mild_Demented" == "MildDemented"); the first is shown.
    classes: tuple[tuple[str, ...], ...]
    # Images per class in each published split: train | val | test | all (no official split).
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Folder names of the published splits ("Training", "Testing").
    folders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    markers: tuple[str, ...] = ()  # a folder/slug/file name that alone identifies the set
    signatures: tuple[tuple[str, ...], ...] = ()  # names that together identify it
    class_match: int = 0  # class names enough to recognise it (0: never by class names alone)
    extra_totals: tuple[int, ...] = ()  # other published versions' split totals
    per_patient: str | None = None  # why several images share a patient/slide/lesion
    names_group_patients: bool | None = None  # sorted file names keep a patient's images together
    official_split: str = "unknown"  # patient-disjoint | unknown | none
    split_leaks: str | None = None  # the set's own images/splits known to leak
    flaws: tuple[str, ...] = ()
    multilabel: bool = False

    def split_counts(self, split: str | None) -> dict[str, int] | None:
        """Images per class of one split; `all` (or None) is the whole set."""
        if split in self.counts:
            return self.counts[split]
        if split in (None, "all"):
            whole: dict[str, int] = {}
            for counts in self.counts.values():
                for k, v in counts.items():
                    whole[k] = whole.get(k, 0) + v
            return whole or None
        return None

    def ratio(self, split: str | None) -> float | None:
        c = self.split_counts(split)
        if not c or min(c.values()) <= 0:
            return None
        return max(c.values()) / min(c.values())

    def totals(self) -> dict[int, str]:
        out = {sum(c.values()): split for split, c in self.counts.items() if c}
        if len(self.counts) > 1:
            whole = self.split_counts("all")
            out.setdefault(sum(whole.values()) if whole else 0, "all")
        for t in self.extra_totals:
            out.setdefault(t, "a published version")
        return out

    def small_val(self) -> int | None:
        val = self.counts.get("val")
        n = sum(val.values()) if val else None
        return n if n is not None and n < SMALL_VAL else None


def composition(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return ", ".join(f"{k} {v}" for k, v in counts.items()) + f" ({total} images)"


def accuracy_misleads(counts: dict[str, int]) -> str | None:
    """Why accuracy alone says little on a set of this composition, or None."""
    total = sum(counts.values())
    if total <= 0 or len(counts) < 2:
        return None
    top = max(counts, key=lambda k: counts[k])
    low = min(counts, key=lambda k: counts[k])
    if counts[top] / total >= MAJORITY_SHARE:
        return f"answering {top} for every image already scores {counts[top] / total:.0%}"
    if counts[low] / total < MINORITY_SHARE:
        return (
            f"{low} is {counts[low] / total:.1%} of the images: the model can miss all of them "
            f"and lose {counts[low] / total:.3f} accuracy"
        )
    return None
