"""`run_check`: index -> one scan -> every check -> a `CheckReport` (JSON-serialisable).

The check.json schema (`schema_version` 2)
------------------------------------------
`medfit check DATA --out RUN` writes `RUN/check.json` (`--json PATH` the same document). It is
what an HTML report renders, so its shape is a contract: keys are only ever added; renaming,
removing or changing the meaning of one bumps `SCHEMA_VERSION`. Lists of pairs/images are cut at
`options.max_pairs` (`max_label_issues` for label issues); the counts beside them are complete.

An image reference ("ref") is `{path, split, label, group}`: `path` as indexed (absolute for a
folder, as written in a manifest otherwise), `label` the class name, `group` the patient id or
null. For multi-label data `label` is the image's labels joined by "|" ("No Finding" for none;
two refs have the same labels exactly when their `label` strings are equal) and a ref adds
`labels` [str]. A pair is `{kind, a, b, conflicting_labels, ...}` with `a` the later-split image
(val/test; within a split, the one that was queried) and `b` its match; `kind` is "exact" /
"dhash" (with `distance` in bits and `transform`, one of `hashing.TRANSFORMS`, applied to `a`) /
"embedding" (with `similarity`, a cosine).

- `schema_version` int; `root` str (the data folder or manifest)
- `summary`: `findings` {critical, warning, info: int}, `strict_fails` bool
- `options`: the `CheckOptions` used (without `progress`)
- `verdict`: list, most severe first, of {`severity` ("critical"|"warning"|"info"), `title` (one
  line), `fix` (one line), `key` (stable id: "exact_cross_split", "group_leak", "near_hash",
  "near_within_split", "shortcut:<property>", ... see `verdict.DETAILS`), `details` (dotted path
  of the evidence in this document, e.g. "exact_duplicates.cross_split_pairs")}
- `inventory`: `classes` [str], `images`, `counts` {split: {class: n}}, `split_totals`
  {split: n}, `imbalance_ratio` (train, largest/smallest, or null), `val_from_train` bool,
  `sizes` {distinct, most_common {"WxH": n}, width/height {min, median, max}}, `modes`, `formats`,
  `conversions` {name: n}, `bytes`, `unreadable_count`, `unreadable` [{path, split, error}],
  `ignored_count`, `ignored_files` [str], `ignored_folders` [str] (top-level folders that are no
  split)
- `exact_duplicates`: counts (`clusters`, `images_in_clusters`, `extra_copies`,
  `cross_split_clusters`, `conflicting_clusters`, `conflicting_cross_split`),
  `cross_split_images` {"val->train": n}, `cross_split_pairs` [pair] (conflicting first),
  `cluster_list` [{hash, splits, labels, cross_split, conflicting_labels, members [ref]}]
- `near_duplicates`:
  - `hash` (across splits): `threshold_bits`, `hash_bits`, `per_split` {"val->train":
    {queries, with_near_duplicate}}, `pairs_total`, `rotated_or_flipped`, `pairs` [pair],
    `nearest_distance_histogram` {"val->train": {"0-7": n, ...}}
  - `within_split` (inside one split): `threshold_bits`, `hash_bits`, `per_split` {split:
    {images, queries, sampled, with_near_duplicate}}, `pairs_total`, `conflicting_pairs`,
    `rotated_or_flipped`, `pairs` [pair] (conflicting first)
  - `embedding_calibration`: `usable` bool, and `reason` when not usable; when calibrated also
    `threshold`, `copy_similarity_median`, `random_same_class_median`,
    `random_same_class_p999`, `random_pairs_above_threshold`
  - `embedding` (across splits): `checked` bool, `pairs_total`, `pairs` [pair], `per_split` as
    in `hash`; `threshold` when checked
- `groups`: `available` bool, `source` str; when available `groups`, `images_with_id`,
  `images_without_id`, `groups_per_split` {split: n}, `images_per_group` {median, max},
  `shared_groups`, `leaking_groups`, `leaking_images`, `different_content_groups`,
  `null_pairs`, `shared` [{group, status ("leak"|"same id, different content"), splits
  {split: n}, images, min_hash_distance, max_similarity, alike_by [str], pair {a: ref, b: ref}}]
- `shortcuts`: `checked` bool (`reason` when not); `images`, `chance`, `margin`, `flagged`
  [property], `properties` [{property, balanced_accuracy, above_chance, flagged,
  distinct_values; categorical ones add `by_class` {value: {class: n}}; "burned-in
  text/markers" adds `images_with_marks_by_class` {class: n} and, when flagged, `examples`
  [ref + stroke_fraction] (the most marked images of each class)}]
- `label_issues`: `checked` bool (`reason` when not); `features`, `method`, `probe_accuracy`,
  `probe_balanced_accuracy`, `chance`, `issues_total`, `issue_rate`, `issues` [ref +
  suggested, p_given, p_suggested] (most likely wrong first)
- `timing`: `images`, `seconds` {step: s}, `total_seconds`, `scan_images_per_second`,
  `images_per_second`, `embedding` (model and size, "" when none)

Multi-label data (each image a set of labels, `DatasetIndex.multilabel`) change these sections:
- `inventory`: `multilabel` true; `counts` {split: {label: positives}}; `split_totals` images;
  `imbalance_ratio` null (see `multilabel.frequency`)
- `exact_duplicates` / near pairs: `conflicting_labels` when the two label sets differ;
  `cluster_list[].labels` are label sets
- `groups`: the null pairs are of images with the same label set
- `shortcuts`: `target` "any finding vs no finding" (what each property is tested to predict);
  `by_class` and `images_with_marks_by_class` are keyed "no finding"/"any finding"
- `label_issues`: `multilabel` true; `probe_macro_auc`, `min_auc_lower`, `per_label` [{label,
  positives, auc, auc_ci95, judged}], `judged_labels`, `too_few_labels` (under
  labels.MIN_PER_CLASS images on or off), `judged_macro_auc` when judged; each issue is a ref +
  `suggested` (label set), `add` [str], `remove` [str], `p` {label: p}, `p_given`
and add a section, present only for them:
- `multilabel`: `labels` [str], `min_eval_positives`, `frequency` {split: {images, positives
  {label: n}, no_finding, two_or_more, labels_per_image}}, `rare` [{label, split (val|test),
  positives, problem ("absent"|"rare")}], `cooccurrence` {labels, `all` and `train` (K x K
  images with both; diagonal: positives), `pairs` [{a, b, images, train}] most frequent first}
"""

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
    within_split_near_duplicates,
)
from medfit.check.groups import resolve_groups
from medfit.check.inventory import inventory
from medfit.check.labels import label_issues
from medfit.check.leakage import group_leakage
from medfit.check.multilabel import multilabel_label_issues, multilabel_summary
from medfit.check.options import CheckOptions
from medfit.check.shortcuts import find_shortcuts
from medfit.check.verdict import SEVERITIES, make_verdict, strict_failures
from medfit.data.sources import DatasetIndex
from medfit.errors import MedfitError

SCHEMA_VERSION = 2  # bump on any change a reader of check.json must know about


class StrictCheckFailed(MedfitError):
    """`medfit check --strict` found what invalidates validation (the CLI exits with 2)."""


@dataclass
class CheckReport:
    """Everything `medfit check` found; `to_json` is the `check.json` a run directory keeps.

    Image pairs carry both images' path, split, label and group: what a thumbnail view needs.
    """

    schema_version: int
    root: str
    summary: dict[str, Any]
    options: dict[str, Any]
    verdict: list[dict[str, str]]
    inventory: dict[str, Any]
    exact_duplicates: dict[str, Any]
    near_duplicates: dict[str, Any]
    groups: dict[str, Any]
    shortcuts: dict[str, Any]
    label_issues: dict[str, Any]
    timing: dict[str, Any]
    multilabel: dict[str, Any] | None = None  # multi-label data only (absent from the JSON else)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["multilabel"] is None:
            del out["multilabel"]
        return out

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
    ctx = Context(samples, index.classes, groups.ids, scan, options, index.multilabel)
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
            "within_split": timed("near_within", lambda: within_split_near_duplicates(ctx)),
        },
        "groups": timed("groups", lambda: group_leakage(ctx, groups.source)),
        "shortcuts": timed("shortcuts", lambda: find_shortcuts(ctx)),
        "label_issues": timed(
            "label_issues",
            lambda: multilabel_label_issues(ctx) if ctx.multilabel else label_issues(ctx),
        ),
    }
    if ctx.multilabel:
        parts["multilabel"] = timed("multilabel", lambda: multilabel_summary(ctx))
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
    parts["summary"] = _summary(parts["verdict"])
    return CheckReport(SCHEMA_VERSION, index.root, options=_options_dict(options), **parts)


def _summary(verdict: list[dict[str, str]]) -> dict[str, Any]:
    """Findings per severity and whether `--strict` would fail: the report's headline."""
    counts = {s: sum(f["severity"] == s for f in verdict) for s in SEVERITIES}
    return {"findings": counts, "strict_fails": counts["critical"] > 0}


def _options_dict(options: CheckOptions) -> dict[str, Any]:
    raw = asdict(options)
    raw.pop("progress", None)
    return raw
