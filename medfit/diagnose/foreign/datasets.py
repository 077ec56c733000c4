"""Public medical image-classification data sets that tutorials and notebooks train on, as data.

    from medfit.diagnose.foreign.datasets import recognise_run
    match = recognise_run(report.facts, [log_text])
    if match: print(match.known.name, match.known.ratio("train"), match.why)

Each entry says how a reader recognises the set in a script or a log (folder names, Kaggle
slugs, class-folder names as they appear in paths, the totals Keras prints as "Found N images
belonging to K classes."), its images per class in each published split, whether several images
come from one patient/slide/lesion (so an image-level random split leaks) and what is known to be
wrong with it. Every number cites its source in a comment: the data set's own page or paper, a
public copy of its files (folder listing or label file) or dataset-loading code that hard-codes
it, never a run that used it; a number no public source could be found for is marked
"(unverified: from the dataset page as remembered)". Nothing here reads files or imports a
framework. The record is known_set.py, the entries are known_scans.py and known_photos.py; this
module gathers them (`KNOWN`) and recognises them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medfit.diagnose.foreign.known_photos import PHOTOS
from medfit.diagnose.foreign.known_scans import SCANS
from medfit.diagnose.foreign.known_set import KnownSet

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.facts import ScriptFacts

# The table, scans first: recognise() ranks every entry by its score, so the order is not a rule.
KNOWN: tuple[KnownSet, ...] = (*SCANS, *PHOTOS)

BY_KEY = {k.key: k for k in KNOWN}


# --- recognising a set ---------------------------------------------------------------------------
def norm(text: str) -> str:
    """Lower-case letters and digits only: `Mild_Demented` and `MildDemented` are one name."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def tokens(strings: Iterable[str]) -> set[str]:
    """Every path component of `strings` (with and without its extension), and every string,
    as normalised names."""
    out: set[str] = set()
    for s in strings:
        if len(s) > 300:
            continue
        for part in re.split(r"[/\\]+", s):
            part = part.strip()
            if not part:
                continue
            out.add(norm(part))
            stem, dot, ext = part.rpartition(".")
            if dot and stem and 1 <= len(ext) <= 5:
                out.add(norm(stem))
                out.add(norm(ext))
    out.discard("")
    return out


@dataclass
class Match:
    known: KnownSet
    why: list[str]  # what recognised it, as a reader can check it
    score: int
    found_split: dict[int, str] = field(default_factory=dict)  # images -> split, from the log
    # the script's class count is the set's (None: either unknown); when not, the script uses
    # a subset or a relabelling and the published counts do not describe its data
    classes_agree: bool | None = None


def _class_hits(known: KnownSet, names: set[str]) -> list[str]:
    hits = []
    for spellings in known.classes:
        if any(norm(s) in names for s in spellings):
            hits.append(spellings[0])
    return hits


def recognise(
    strings: Iterable[str],
    found: Iterable[tuple[int, int, str]] = (),
    classes: int | None = None,
) -> Match | None:
    """The known set a script's strings (paths, slugs, class names) and a log's `Found N images
    belonging to K classes` lines point to; None when none, or two equally well."""
    strings = list(strings)
    names = tokens(strings)
    found = list(found)
    best: list[Match] = []
    for known in KNOWN:
        why: list[str] = []
        score = 0
        marker = next((m for m in known.markers if m in names), None)
        if marker:
            shown = _shown(strings, marker)
            why.append(f"'{shown}' names it")
            score += 100
        sig = next((s for s in known.signatures if all(t in names for t in s)), None)
        if sig and not marker:
            why.append("the names " + " and ".join(f"'{_shown(strings, t)}'" for t in sig))
            score += 60
        hits = _class_hits(known, names)
        if known.class_match and len(hits) >= known.class_match:
            why.append(f"class folders {', '.join(hits)}")
            score += 10 * len(hits)
        elif hits and score:
            score += 2 * len(hits)
        seen: dict[int, str] = {}
        totals = known.totals()
        for n, k, _text in found:
            if n in totals and (not known.classes or k == len(known.classes)):
                seen[n] = totals[n]
        if seen:
            shown = "; ".join(f"'Found {n} ...' = its {s} split" for n, s in seen.items())
            why.append(f"the log: {shown}")
            score += 30 * len(seen)
        if not why:
            continue
        agree = None if classes is None or not known.classes else len(known.classes) == classes
        score += 5 if agree else 0
        best.append(Match(known, why, score, seen, agree))
    if not best:
        return None
    best.sort(key=lambda m: -m.score)
    if len(best) > 1 and best[1].score == best[0].score:
        return None
    return best[0]


def recognise_run(facts: ScriptFacts | None, log_texts: Iterable[str] = ()) -> Match | None:
    """The known set of a foreign run: the script's strings and folders (ScriptFacts.names,
    data_dirs), its class count, and the log's `Found N images belonging to K classes` lines."""
    from medfit.diagnose.foreign.read_text import found_totals

    strings = [s for _, s in facts.names] + list(facts.data_dirs.values()) if facts else []
    found = [t for text in log_texts for t in found_totals(text)]
    return recognise(strings, found, facts.classes if facts else None)


def _shown(strings: list[str], token: str) -> str:
    """The string of the script a normalised token came from (for the evidence)."""
    for s in strings:
        for part in re.split(r"[/\\]+", s):
            stem = part.rpartition(".")[0] or part
            if norm(part) == token or norm(stem) == token:
                return part
    return token


def mixes_patients(order: str, names_group_patients: bool | None) -> bool:
    """Whether an image-level split of this kind puts images of one patient on both sides:
    a random draw does; a block of each class folder's sorted file names (Keras
    ImageDataGenerator's validation_split) does only where the names do not keep a patient's
    images together; a block of a table's rows unless the table is ordered by patient; the last
    rows of arrays (fit(validation_split)) cannot be told."""
    if order == "shuffled":
        return True
    if order == "sorted_names":
        return names_group_patients is False
    if order == "table_order":
        return names_group_patients is not True
    return False


def official_split_of(known: KnownSet, directory: str | None) -> str | None:
    """train | val | test when `directory` ends in one of the set's published split folders."""
    if not directory:
        return None
    parts = [norm(p) for p in re.split(r"[/\\]+", directory.rstrip("/\\")) if p]
    if not parts:
        return None
    leaf = parts[-1]
    for split, names in known.folders.items():
        if leaf in {norm(n) for n in names}:
            return split
    return None
