"""Patient (group) ids from file names: one implementation for `medfit train --group-pattern`
and `medfit check --group-pattern`.

A pattern is a regular expression searched in each image's path relative to the data root (a
manifest's folder), with "/" separators; the id is its named group `group`, else its first group,
else the whole match. A preset name (`medfit.data.presets.PRESETS`) stands for the pattern of a
common public set. A path the pattern does not match has no id (each such image is a group of its
own when splitting).

`apply_group_pattern` gives an index the pattern's ids and, when medfit split val off train, makes
that split again by group, so that no id ends up in both train and val.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import replace

from medfit.data.presets import PRESETS
from medfit.data.sources import DatasetIndex, Sample, stratified_val_split
from medfit.errors import ConfigError


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A preset name or a regular expression; a ConfigError names what is wrong."""
    text = PRESETS[pattern][0] if pattern in PRESETS else pattern
    try:
        return re.compile(text)
    except re.error as err:
        presets = ", ".join(PRESETS)
        raise ConfigError(
            f"--group-pattern {pattern!r} is not a valid regular expression ({err}); "
            f"give one with (?P<group>...) or a preset: {presets}"
        ) from None


def relative(path: str, root: str) -> str:
    """The path relative to the data root (a manifest's folder), "/"-separated: the text a
    pattern is matched on."""
    base = root if os.path.isdir(root) else os.path.dirname(root)  # a manifest: its folder
    try:
        rel = os.path.relpath(path, base or ".")
    except ValueError:  # another drive on Windows
        rel = path
    return rel.replace(os.sep, "/")


def match_id(regex: re.Pattern[str], text: str) -> str | None:
    found = regex.search(text)
    if found is None:
        return None
    if "group" in regex.groupindex:
        return found.group("group")
    return found.group(1) if regex.groups else found.group(0)


def pattern_ids(samples: Sequence[Sample], root: str, pattern: str) -> list[str | None]:
    """The pattern's id for every sample (None where it does not match)."""
    regex = compile_pattern(pattern)
    return [match_id(regex, relative(s.path, root)) for s in samples]


def describe(pattern: str) -> str:
    return f"preset {pattern!r}" if pattern in PRESETS else f"pattern {pattern!r}"


def apply_group_pattern(
    index: DatasetIndex, pattern: str, val_fraction: float, seed: int
) -> DatasetIndex:
    """`index` with Sample.group from the pattern (it replaces manifest/DICOM ids); a val split
    medfit made off train is made again, by these groups."""
    resplit = index.val_from_train
    if resplit:  # undo it: that split only moved train samples to val
        back = [replace(s, split="train") if s.split == "val" else s for s in index.samples]
        index = replace(index, samples=back, val_from_train=False, val_groups=0)
    ids = pattern_ids(index.samples, index.root, pattern)
    samples = [replace(s, group=g) for s, g in zip(index.samples, ids, strict=True)]
    train = [g for s, g in zip(samples, ids, strict=True) if s.split == "train"]
    if resplit and train and all(g is None for g in train):
        example = relative(next(s.path for s in samples if s.split == "train"), index.root)
        raise ConfigError(
            f"--group-pattern {pattern!r} (data.group_pattern) matches none of the "
            f"{len(train)} train file names (e.g. {example!r}); fix the pattern so that it "
            "finds the patient id in such names, or leave it out"
        )
    index = replace(index, samples=samples)
    return stratified_val_split(index, val_fraction, seed) if resplit else index
