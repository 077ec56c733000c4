"""`run_check`: index -> one scan -> every check -> a `CheckReport` (JSON-serialisable)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medfit.check.collect import scan_dataset
from medfit.check.context import Context
from medfit.check.duplicates import (
    calibrate_embeddings,
    embedding_near_duplicates,
    exact_duplicates,
    hash_near_duplicates,
)
from medfit.check.groups import resolve_groups
from medfit.check.inventory import inventory
from medfit.check.labels import label_issues
from medfit.check.leakage import group_leakage
from medfit.check.options import CheckOptions
from medfit.check.shortcuts import find_shortcuts
from medfit.check.verdict import make_verdict, strict_failures
from medfit.data.sources import DatasetIndex
from medfit.errors import MedfitError

REPORT_VERSION = 1


class StrictCheckFailed(MedfitError):
    """`medfit check --strict` found what invalidates validation (the CLI exits with 2)."""


@dataclass
class CheckReport:
    """Everything `medfit check` found; `to_json` is the `check.json` a run directory keeps.

    Image pairs carry both images' path, split, label and group: what a thumbnail view needs.
    """

    version: int
    root: str
    options: dict[str, Any]
    verdict: list[dict[str, str]]
    inventory: dict[str, Any]
    exact_duplicates: dict[str, Any]
    near_duplicates: dict[str, Any]
    groups: dict[str, Any]
    shortcuts: dict[str, Any]
    label_issues: dict[str, Any]
    timing: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, default=_plain)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)
        return path

    @property
    def failures(self) -> list[str]:
        """The critical findings (what `--strict` fails on)."""
        return strict_failures(self.to_dict())

    def finding(self, key: str) -> dict[str, str] | None:
        """The verdict entry with this key (e.g. "exact_cross_split"), if any."""
        return next((f for f in self.verdict if f["key"] == key), None)


def _plain(value: Any) -> Any:
    """numpy scalars and the like, for json.dumps."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run_check(index: DatasetIndex, options: CheckOptions | None = None) -> CheckReport:
    """Decode every image once and run every check; see `medfit.check` for what they mean."""
    options = options or CheckOptions()
    options.validate()
    start = time.perf_counter()
    samples = list(index.samples)
    groups = resolve_groups(samples, index.root, options.group_pattern)
    scan = scan_dataset(samples, options)
    ctx = Context(samples, index.classes, groups.ids, scan, options)
    seconds: dict[str, float] = {"scan": round(scan.seconds, 2)}

    def timed(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        t0 = time.perf_counter()
        result = fn()
        seconds[name] = round(time.perf_counter() - t0, 2)
        return result

    calibration = timed("embedding_calibration", lambda: calibrate_embeddings(ctx))
    parts: dict[str, Any] = {
        "inventory": timed("inventory", lambda: inventory(ctx, index)),
        "exact_duplicates": timed("exact_duplicates", lambda: exact_duplicates(ctx)),
        "near_duplicates": {
            "hash": timed("near_hash", lambda: hash_near_duplicates(ctx)),
            "embedding_calibration": calibration,
            "embedding": timed(
                "near_embedding", lambda: embedding_near_duplicates(ctx, calibration)
            ),
        },
        "groups": timed("groups", lambda: group_leakage(ctx, groups.source)),
        "shortcuts": timed("shortcuts", lambda: find_shortcuts(ctx)),
        "label_issues": timed("label_issues", lambda: label_issues(ctx)),
    }
    total = time.perf_counter() - start
    parts["timing"] = {
        "images": len(samples),
        "seconds": seconds,
        "total_seconds": round(total, 2),
        "scan_images_per_second": round(scan.images_per_second, 1),
        "images_per_second": round(len(samples) / total, 1) if total > 0 else 0.0,
        "embedding": scan.embed_note,
    }
    parts["verdict"] = make_verdict(parts)
    return CheckReport(REPORT_VERSION, index.root, _options_dict(options), **parts)


def _options_dict(options: CheckOptions) -> dict[str, Any]:
    raw = asdict(options)
    raw.pop("progress", None)
    return raw
