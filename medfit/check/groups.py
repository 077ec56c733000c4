"""Where patient (group) ids come from: the manifest, DICOM headers, or a file-name pattern.

`--group-pattern` takes a regular expression or a preset name (`PRESETS`), matched on each image's
path relative to the data root; `medfit.data.groups` holds that logic, shared with
`medfit train --group-pattern`. Without a pattern, and without any id from the manifest or DICOM,
a preset that matches at least `AUTO_MATCH` of the file names is used and the report says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from medfit.data.groups import describe, match_id, pattern_ids, relative
from medfit.data.presets import PRESETS
from medfit.data.sources import Sample

AUTO_MATCH = 0.95  # share of file names a preset must match to be used without being asked


@dataclass
class Groups:
    ids: list[str | None]  # one per sample
    source: str  # where the ids came from, for the report
    matched: int = 0  # how many paths the pattern matched (when a pattern was used)


def resolve_groups(samples: Sequence[Sample], root: str, pattern: str | None) -> Groups:
    """Group ids for every sample: the pattern, else Sample.group, else an auto-detected preset."""
    if pattern:
        ids = pattern_ids(samples, root, pattern)
        matched = sum(i is not None for i in ids)
        return Groups(ids, f"file names ({describe(pattern)}: {matched}/{len(ids)} match)", matched)
    if any(s.group for s in samples):
        return Groups([s.group for s in samples], "manifest group column / DICOM PatientID")
    texts = [relative(s.path, root) for s in samples]
    for name, (text, _) in PRESETS.items():
        regex = re.compile(text)
        ids = [match_id(regex, t) for t in texts]
        matched = sum(i is not None for i in ids)
        if texts and matched >= AUTO_MATCH * len(texts):
            source = f"file names (preset {name!r}, auto-detected: {matched}/{len(ids)} match)"
            return Groups(ids, source, matched)
    return Groups([None] * len(samples), "none")
