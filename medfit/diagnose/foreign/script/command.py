"""The one medfit command that trains the script's data: its data root, backbone and size."""

from __future__ import annotations

import posixpath
import shlex
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from medfit.diagnose.foreign.script.pylib import windows

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.report import ScriptReport


def _pure(path: str) -> PurePath:
    return PureWindowsPath(path) if windows(path) else PurePosixPath(path)


def _strip_splits(path: str) -> PurePath:
    """`data/train/train` -> `data`, `C:\\x\\chest_xray\\val` -> `C:\\x\\chest_xray`."""
    from medfit.data.sources import split_name

    p = _pure(path)
    while p.name and split_name(p.name) is not None:
        p = p.parent
    return p


def data_root(dirs: dict[str, str], script_dir: Path) -> tuple[str, bool]:
    """The folder medfit should get: the common parent of the train/val(/test) folders once their
    split folder names are stripped (PureWindowsPath for paths with a drive or backslashes); and
    whether it exists (tried as given and relative to the script)."""
    if not dirs:
        return "DATA", False
    roots = [_strip_splits(d) for d in dirs.values()]
    if all(type(r) is type(roots[0]) for r in roots):
        parts = [r.parts for r in roots]
        common = []
        for group in zip(*parts, strict=False):
            if all(g == group[0] for g in group):
                common.append(group[0])
            else:
                break
        root: PurePath = type(roots[0])(*common) if common else roots[0]
    else:
        root = roots[0]
    text = str(root) if str(root) not in ("", ".") else posixpath.curdir
    if not isinstance(root, PureWindowsPath):
        for candidate in (Path(text), script_dir / text):
            if candidate.is_dir():
                return str(candidate), True
    return text, False


def medfit_command(report: ScriptReport, data: str | None = None) -> tuple[str, str]:
    """The medfit train command for the script's data, and a note on what was resolved."""
    facts = report.facts
    root, exists = (data, True) if data else data_root(facts.data_dirs, report.path.parent)
    parts = ["medfit", "train", root]
    notes = []
    if facts.timm_name and facts.pretrained is not False:
        parts += ["--model", facts.timm_name]
        notes.append(f"{facts.backbone} -> timm {facts.timm_name}")
    elif facts.backbone and facts.family == "yolo":
        notes.append(
            f"{facts.backbone} is an Ultralytics model: medfit trains its default backbone"
        )
    elif facts.pretrained is False:
        notes.append("the script trains from scratch: medfit starts from ImageNet weights")
    if facts.img_size:
        parts += ["--img-size", str(facts.img_size)]
    parts += ["--out", "runs/" + (facts.timm_name or "run")]
    if not data:
        where = ", ".join(f"{k} {v}" for k, v in facts.data_dirs.items()) or "none found"
        notes.append(
            f"data folder from the script ({where})"
            + ("" if exists else ": not found from here, use your path")
        )
    return " ".join(shlex.quote(p) for p in parts), "; ".join(notes)
