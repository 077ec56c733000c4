"""Group (patient) leakage: the same id in two splits, and whether its images really are alike.

An id that recurs across splits is only *proven* leakage when its images in the two splits are
more alike than images of different patients are: ids are sometimes numbered per split (patient
"7" of train is not patient "7" of test), and calling that leakage would be crying wolf. So for
every shared id we compare its cross-split image pairs with a null distribution drawn from the
data itself: random cross-split pairs of *different* ids within the same class.

A shared id counts as alike when its closest pair beats the null at level ALPHA after a Bonferroni
correction for the number of pairs it had (the minimum of m draws is lower than one draw), by
either measure: the dihedral dHash distance, or the cosine similarity of the features (backbone
embeddings, else standardised thumbnail features). A dHash within the near-duplicate threshold is
alike without further ado. Otherwise it is reported as "same id, different content".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from medfit.check.context import Context
from medfit.check.hashing import hamming_search

ALPHA = 0.01  # per shared id, split between the two measures
NULL_PAIRS = 20_000  # random pairs drawn; those that qualify (cross-split, same class) are kept
MAX_PER_SPLIT = 64  # images per id and split compared (a random subset beyond that)
LEAK = "leak"
DIFFERENT = "same id, different content"


def group_leakage(ctx: Context, source: str) -> dict[str, Any]:
    """Group inventory and the verdict on every id that appears in more than one split."""
    ids = ctx.groups
    with_id = [i for i, g in enumerate(ids) if g is not None]
    if not with_id:
        return {"available": False, "source": source}
    members: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in ctx.readable():
        group = ids[row]
        if group is not None:
            members[group][ctx.samples[row].split].append(int(row))
    per_split = {
        split: len({ids[r] for r in with_id if ctx.samples[r].split == split})
        for split in ctx.present_splits()
    }
    sizes = [sum(len(v) for v in by_split.values()) for by_split in members.values()]
    shared = {g: by_split for g, by_split in members.items() if len(by_split) > 1}
    vectors = _unit_features(ctx)
    null_d, null_s = _null(ctx, vectors)
    rng = np.random.default_rng(ctx.options.seed)
    verdicts = [
        _judge(ctx, g, by_split, vectors, null_d, null_s, rng) for g, by_split in shared.items()
    ]
    verdicts.sort(key=lambda v: (v["status"] != LEAK, v["group"]))
    leaks = [v for v in verdicts if v["status"] == LEAK]
    return {
        "available": True,
        "source": source,
        "groups": len({ids[r] for r in with_id}),
        "images_with_id": len(with_id),
        "images_without_id": len(ids) - len(with_id),
        "groups_per_split": per_split,
        "images_per_group": {"median": float(np.median(sizes)), "max": int(max(sizes))}
        if sizes
        else {},
        "shared_groups": len(verdicts),
        "leaking_groups": len(leaks),
        "leaking_images": sum(v["images"] for v in leaks),
        "different_content_groups": len(verdicts) - len(leaks),
        "null_pairs": len(null_d),
        "shared": verdicts[: ctx.options.max_pairs],
    }


def _unit_features(ctx: Context) -> np.ndarray:
    """Unit vectors to compare images by: embeddings, else standardised thumbnail features."""
    if ctx.scan.embeddings is not None:
        return ctx.scan.embeddings  # float16, unit length; cast where used
    feats = ctx.scan.features
    ok = ctx.readable()
    centred = feats - feats[ok].mean(0) if len(ok) else feats
    scaled = centred / (feats[ok].std(0) + 1e-6 if len(ok) else 1.0)
    return scaled / (np.linalg.norm(scaled, axis=1, keepdims=True) + 1e-9)


def _null(ctx: Context, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dHash distances and similarities of random cross-split, same-class, different-id pairs."""
    ok = ctx.readable()
    if len(ok) < 2:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng(ctx.options.seed + 1)
    i = ok[rng.integers(len(ok), size=NULL_PAIRS)]
    j = ok[rng.integers(len(ok), size=NULL_PAIRS)]
    labels, splits = ctx.labels, ctx.splits
    groups = np.array([g if g is not None else f"\0{r}" for r, g in enumerate(ctx.groups)])
    keep = (splits[i] != splits[j]) & (labels[i] == labels[j]) & (groups[i] != groups[j])
    i, j = i[keep], j[keep]
    xor = np.bitwise_xor(ctx.scan.dhash[i], ctx.scan.dhash[j][:, :1])
    distances = np.unpackbits(xor, axis=-1).sum(axis=-1).min(axis=1).astype(np.int32)
    similarities = np.sum(vectors[i].astype(np.float32) * vectors[j].astype(np.float32), axis=1)
    return distances, similarities


def _judge(
    ctx: Context,
    group: str,
    by_split: dict[str, list[int]],
    vectors: np.ndarray,
    null_d: np.ndarray,
    null_s: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Status of one shared id, from its most alike cross-split pair."""
    rows = {s: _subset(r, rng) for s, r in by_split.items()}
    splits = [s for s in ctx.present_splits() if s in rows]
    best_d, best_s, n_pairs = 10**6, -2.0, 0
    pair_d: tuple[int, int] = (0, 0)
    pair_s: tuple[int, int] = (0, 0)
    for x, later in enumerate(splits):
        for earlier in splits[:x]:
            qa, rb = np.array(rows[later]), np.array(rows[earlier])
            n_pairs += len(qa) * len(rb)
            near = hamming_search(ctx.scan.dhash[qa], ctx.scan.dhash[rb], k=1)
            k = int(np.argmin(near.distance[:, 0]))
            if near.distance[k, 0] < best_d:
                best_d = int(near.distance[k, 0])
                pair_d = (int(qa[k]), int(rb[near.index[k, 0]]))
            sims = vectors[qa].astype(np.float32) @ vectors[rb].astype(np.float32).T
            flat = int(np.argmax(sims))
            if sims.flat[flat] > best_s:
                best_s = float(sims.flat[flat])
                pair_s = (int(qa[flat // len(rb)]), int(rb[flat % len(rb)]))
    level = ALPHA / 2 / max(1, n_pairs)  # Bonferroni over the pairs, split over 2 measures
    by_hash = best_d <= ctx.options.near_bits or (
        len(null_d) >= 100 and best_d < np.quantile(null_d, level)
    )
    by_features = len(null_s) >= 100 and best_s > np.quantile(null_s, 1 - level)
    status = LEAK if by_hash or by_features else DIFFERENT
    a, b = pair_d if by_hash or not by_features else pair_s
    return {
        "group": group,
        "status": status,
        "splits": {s: len(by_split[s]) for s in splits},
        "images": sum(len(v) for v in by_split.values()),
        "min_hash_distance": best_d,
        "max_similarity": round(best_s, 4),
        "alike_by": [m for m, hit in (("dhash", by_hash), ("features", by_features)) if hit],
        "pair": {"a": ctx.ref(a), "b": ctx.ref(b)},
    }


def _subset(rows: list[int], rng: np.random.Generator) -> list[int]:
    if len(rows) <= MAX_PER_SPLIT:
        return rows
    return sorted(rng.choice(rows, MAX_PER_SPLIT, replace=False).tolist())
