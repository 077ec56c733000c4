"""Inventory: what is there, per split and class, and what could not be read."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from medfit.check.context import Context
from medfit.data.sources import DatasetIndex

MAX_LISTED = 200  # unreadable / ignored paths listed in full (the counts are always complete)


def inventory(ctx: Context, index: DatasetIndex) -> dict[str, Any]:
    """Counts per split and class (multi-label: positives per label), sizes, modes, formats,
    what could not be read and what was ignored."""
    infos = ctx.scan.infos
    ok = [i for i in infos if i.ok]
    # Multi-label: `counts` are positives per label (an image counts under each of its labels),
    # the split totals are images, and "imbalance" is left to the label frequency section.
    counts = {split: index.counts(split) for split in ctx.present_splits()}
    train = [] if ctx.multilabel else [n for n in counts.get("train", {}).values() if n]
    totals = {split: sum(c.values()) for split, c in counts.items()}
    if ctx.multilabel:
        totals = {split: int(np.sum(ctx.splits == split)) for split in counts}
    widths = np.array([i.width for i in ok]) if ok else np.zeros(1)
    heights = np.array([i.height for i in ok]) if ok else np.zeros(1)
    unreadable = [
        {"path": s.path, "split": s.split, "error": i.error}
        for s, i in zip(ctx.samples, infos, strict=True)
        if not i.ok
    ]
    result: dict[str, Any] = {
        "root": index.root,
        "classes": index.classes,
        "images": len(ctx.samples),
        "counts": counts,
        "split_totals": totals,
        "imbalance_ratio": round(max(train) / min(train), 2) if train else None,
        "val_from_train": index.val_from_train,
        "sizes": {
            "distinct": len({(i.width, i.height) for i in ok}),
            "most_common": {
                f"{w}x{h}": n
                for (w, h), n in Counter((i.width, i.height) for i in ok).most_common(5)
            },
            "width": _spread(widths),
            "height": _spread(heights),
        },
        "modes": dict(Counter(i.shown_mode for i in ok).most_common()),
        "formats": dict(Counter(i.format for i in ok).most_common()),
        "conversions": dict(Counter(_kind(i.note) for i in ok if i.note).most_common()),
        "bytes": int(sum(i.file_bytes for i in infos)),
        "unreadable_count": len(unreadable),
        "unreadable": unreadable[:MAX_LISTED],
        "ignored_count": len(index.ignored_files),
        "ignored_files": index.ignored_files[:MAX_LISTED],
        "ignored_folders": index.ignored_folders,
    }
    if ctx.multilabel:
        result["multilabel"] = True
    return result


def _spread(values: np.ndarray) -> dict[str, float]:
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
    }


def _kind(note: str) -> str:
    """A decode note without the per-image numbers ('16-bit grayscale, window [..]' -> '16-bit
    grayscale'), so that notes of the same kind are counted together."""
    return "; ".join(part.split(",")[0].split(" [")[0] for part in note.split("; "))
