"""Where patient (group) ids come from: the manifest, DICOM headers, or a file-name pattern.

`--group-pattern` takes a regular expression searched in each image's path relative to the data
root (with "/" separators); the id is its named group `group`, else its first group, else the
whole match. A preset name stands for a pattern of a common public set (`PRESETS`). Without
either, and without any id from the manifest or DICOM, a preset that matches at least
`AUTO_MATCH` of the file names is used and the report says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from medfit.check.presets import PRESETS
from medfit.data.sources import Sample
from medfit.errors import ConfigError

AUTO_MATCH = 0.95  # share of file names a preset must match to be used without being asked


@dataclass
class Groups:
    ids: list[str | None]  # one per sample
    source: str  # where the ids came from, for the report
    matched: int = 0  # how many paths the pattern matched (when a pattern was used)


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


def resolve_groups(samples: Sequence[Sample], root: str, pattern: str | None) -> Groups:
    """Group ids for every sample: the pattern, else Sample.group, else an auto-detected preset."""
    texts = [relative(s.path, root) for s in samples]
    if pattern:
        regex = compile_pattern(pattern)
        ids = [match_id(regex, t) for t in texts]
        matched = sum(i is not None for i in ids)
        name = f"preset {pattern!r}" if pattern in PRESETS else f"pattern {pattern!r}"
        return Groups(ids, f"file names ({name}: {matched}/{len(ids)} match)", matched)
    if any(s.group for s in samples):
        return Groups([s.group for s in samples], "manifest group column / DICOM PatientID")
    for name, (text, _) in PRESETS.items():
        regex = re.compile(text)
        ids = [match_id(regex, t) for t in texts]
        matched = sum(i is not None for i in ids)
        if texts and matched >= AUTO_MATCH * len(texts):
            source = f"file names (preset {name!r}, auto-detected: {matched}/{len(ids)} match)"
            return Groups(ids, source, matched)
    return Groups([None] * len(samples), "none")
