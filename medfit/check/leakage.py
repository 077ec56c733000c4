"""Group (patient) leakage: the same id in two splits, and whether its images really are alike.

An id that recurs across splits is only *shown* to leak when its images in two splits are more
alike than images of different patients are. The null distribution comes from the data itself:
cross-split pairs of same-class images (multi-label: the same set of labels) of *different* ids,
measured two ways: the dihedral dHash distance and the cosine similarity of the features
(backbone embeddings, else standardised thumbnail features). It holds every such pair when they
are no more than the level tested needs (at least `NULL_MIN`, at most `NULL_MAX`), else the pairs
between random subsets of the images.

The test of one shared id takes its most alike cross-split pair by each measure. The empirical
p-value of a pair is (1 + null pairs at least as alike) / (1 + null pairs); the id's p-value is
the smaller of the two, times 2 (measures) and times its number of pairs (Bonferroni: the best of
n pairs beats the null more often than one pair does). A dHash within the near-duplicate
threshold (calibrated in `options.py`) is alike without a test and counts as p = 0. Across all
shared ids, Benjamini-Hochberg at false discovery rate `FDR` decides which are "leak".

A p-value cannot go below 2n / (1 + null pairs). An id that is not a leak, and whose smallest
reachable p-value is above the level it was tested at, is "not testable at this level": the data
hold too few pairs of different patients to tell. Neither that nor "same id, different content"
clears an id: one patient's X-rays taken weeks apart are not alike either.

With `ids_per_split` the user says ids are numbered per split (patient 7 of train is not patient
7 of val): an id in two splits is then two patients, and nothing is judged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfit.check.context import Context

# False discovery rate over the shared ids: the usual 5% of Benjamini-Hochberg; each id's test is
# conservative already (Bonferroni over its pairs and the two measures). BH (FDR) rather than a
# family-wise correction: with hundreds of shared ids, many of which may truly leak, Holm's level
# FDR/m per id would hide real leaks, while BH keeps the expected share of wrong "leak" verdicts
# among those listed at FDR; when no id leaks, FDR and family-wise error coincide, so a set
# without leaks gets any "leak" verdict with probability <= FDR.
FDR = 0.05
NULL_MIN = 20_000  # null pairs drawn at least (when the data hold that many)
# At most this many null pairs (memory 8 bytes each): 10^6 pairs of 1280-d embeddings took 0.7 s
# on 2 busy CPU cores (matrix products over grids of pairs).
NULL_MAX = 2_000_000
MAX_PER_SPLIT = 64  # images per id and split compared (a random subset beyond that)
GRID_CELLS = 1 << 22  # dot products held at once while measuring a grid of pairs (16 MiB)
LEAK = "leak"
DIFFERENT = "same id, different content"
UNTESTABLE = "not testable at this level"
STATUS_ORDER = (LEAK, DIFFERENT, UNTESTABLE)


@dataclass
class Null:
    """Sorted dHash distances and similarities of cross-split, same-class, different-id pairs."""

    distances: np.ndarray  # int32, ascending
    similarities: np.ndarray  # float32, ascending
    available: int  # such pairs in the data; the null holds all of them when equal to its size

    @property
    def size(self) -> int:
        return len(self.distances)

    def p_hash(self, distance: int) -> float:
        at_most = int(np.searchsorted(self.distances, distance, side="right"))
        return (1 + at_most) / (1 + self.size)

    def p_features(self, similarity: float) -> float:
        at_least = self.size - int(np.searchsorted(self.similarities, similarity, side="left"))
        return (1 + at_least) / (1 + self.size)


@dataclass
class Closest:
    """One shared id's most alike cross-split pairs (rows), by each measure."""

    distance: int
    similarity: float
    pairs: int  # cross-split pairs compared
    by_hash: tuple[int, int]
    by_features: tuple[int, int]


def group_leakage(ctx: Context, source: str) -> dict[str, Any]:
    """Group inventory and the verdict on every id that appears in more than one split."""
    ids = ctx.groups
    with_id = [i for i, g in enumerate(ids) if g is not None]
    if not with_id:
        return {"available": False, "source": source}
    per_split_ids = ctx.options.ids_per_split
    members: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in ctx.readable():
        group = ids[row]
        if group is not None:
            members[group][ctx.samples[row].split].append(int(row))
    per_split = {
        split: len({ids[r] for r in with_id if ctx.samples[r].split == split})
        for split in ctx.present_splits()
    }
    if per_split_ids:  # each (id, split) is a patient of its own
        sizes = [len(v) for by_split in members.values() for v in by_split.values()]
    else:
        sizes = [sum(len(v) for v in by_split.values()) for by_split in members.values()]
    n_groups = sum(per_split.values()) if per_split_ids else len({ids[r] for r in with_id})
    shared = {} if per_split_ids else {g: s for g, s in members.items() if len(s) > 1}
    verdicts, null = _judge_all(ctx, shared)
    leaks = [v for v in verdicts if v["status"] == LEAK]
    return {
        "available": True,
        "source": source,
        "ids_per_split": per_split_ids,
        "groups": n_groups,
        "images_with_id": len(with_id),
        "images_without_id": len(ids) - len(with_id),
        "groups_per_split": per_split,
        "images_per_group": {"median": float(np.median(sizes)), "max": int(max(sizes))}
        if sizes
        else {},
        "shared_groups": len(verdicts),
        "leaking_groups": len(leaks),
        "leaking_images": sum(v["images"] for v in leaks),
        "different_content_groups": sum(v["status"] == DIFFERENT for v in verdicts),
        "untestable_groups": sum(v["status"] == UNTESTABLE for v in verdicts),
        "fdr": FDR,
        "null_pairs": null.size,
        "null_available": null.available,
        "shared": verdicts[: ctx.options.max_pairs],
    }


def _judge_all(
    ctx: Context, shared: dict[str, dict[str, list[int]]]
) -> tuple[list[dict[str, Any]], Null]:
    """The verdict on every shared id (leaks first), and the null they were tested against."""
    if not shared:
        return [], Null(np.zeros(0, np.int32), np.zeros(0, np.float32), 0)
    vectors = _unit_features(ctx)
    rng = np.random.default_rng(ctx.options.seed)
    closest = {g: _closest(ctx, by_split, vectors, rng) for g, by_split in shared.items()}
    # Pairs needed for the strictest BH level (FDR / m) to be reachable by the id with most pairs.
    most = max(c.pairs for c in closest.values())
    needed = math.ceil(2 * most * len(shared) / FDR)
    null = _null(ctx, vectors, min(NULL_MAX, max(NULL_MIN, needed)))
    near = {g: c.distance <= ctx.options.near_bits for g, c in closest.items()}
    p_hash = {g: min(1.0, 2 * c.pairs * null.p_hash(c.distance)) for g, c in closest.items()}
    p_feat = {g: min(1.0, 2 * c.pairs * null.p_features(c.similarity)) for g, c in closest.items()}
    p = {g: 0.0 if near[g] else min(p_hash[g], p_feat[g]) for g in closest}
    found = benjamini_hochberg(p, FDR)
    cutoff = FDR * len(found) / len(shared)  # the BH level the leaks passed
    next_level = FDR * (len(found) + 1) / len(shared)  # what one more id would have had to pass
    verdicts = []
    for group, c in closest.items():
        floor = min(1.0, 2 * c.pairs / (1 + null.size))
        alike_by = [
            name
            for name, hit in (
                ("dhash", near[group] or (group in found and p_hash[group] <= cutoff)),
                ("features", group in found and p_feat[group] <= cutoff),
            )
            if hit
        ]
        if group in found:
            status = LEAK
        elif floor > next_level:
            status = UNTESTABLE
        else:
            status = DIFFERENT
        a, b = c.by_features if alike_by == ["features"] else c.by_hash
        by_split = shared[group]
        verdicts.append(
            {
                "group": group,
                "status": status,
                "splits": {s: len(by_split[s]) for s in ctx.present_splits() if s in by_split},
                "images": sum(len(v) for v in by_split.values()),
                "min_hash_distance": c.distance,
                "max_similarity": round(c.similarity, 4),
                "alike_by": alike_by,
                "p_value": float(f"{p[group]:.3g}"),
                "pair": {"a": ctx.ref(a), "b": ctx.ref(b)},
            }
        )
    verdicts.sort(key=lambda v: (STATUS_ORDER.index(v["status"]), v["group"]))
    return verdicts, null


def benjamini_hochberg(p_values: dict[str, float], q: float) -> set[str]:
    """The keys whose p-values Benjamini-Hochberg rejects at false discovery rate `q`."""
    keys = sorted(p_values, key=lambda k: p_values[k])
    m = len(keys)
    passed = [i for i, k in enumerate(keys, start=1) if p_values[k] <= q * i / m]
    return set(keys[: max(passed, default=0)])


def _unit_features(ctx: Context) -> np.ndarray:
    """Unit vectors to compare images by: embeddings, else standardised thumbnail features."""
    if ctx.scan.embeddings is not None:
        return ctx.scan.embeddings  # float16, unit length; cast where used
    feats = ctx.scan.features
    ok = ctx.readable()
    centred = feats - feats[ok].mean(0) if len(ok) else feats
    scaled = centred / (feats[ok].std(0) + 1e-6 if len(ok) else 1.0)
    return scaled / (np.linalg.norm(scaled, axis=1, keepdims=True) + 1e-9)


def _null(ctx: Context, vectors: np.ndarray, wanted: int) -> Null:
    """Every qualifying pair when there are at most `wanted`; else all pairs between random
    subsets of the rows (per class and pair of splits) that hold about `wanted` pairs. Grids, not
    single pairs, so that matrix products measure them; drawing more pairs than exist would only
    repeat pairs, never give finer p-values."""
    codes = _id_codes(ctx.groups)
    blocks = _blocks(ctx)
    available = sum(_different_id_pairs(codes[x], codes[y]) for x, y in blocks)
    if available == 0:
        return Null(np.zeros(0, np.int32), np.zeros(0, np.float32), 0)
    cells = sum(len(x) * len(y) for x, y in blocks)  # same-id pairs too: what memory holds
    if cells > wanted:
        rng = np.random.default_rng(ctx.options.seed + 1)
        share = math.sqrt(wanted / cells)
        blocks = [(_some(x, share, rng), _some(y, share, rng)) for x, y in blocks]
    distances, similarities = [], []
    for x, y in blocks:
        d, s = _grid(ctx.scan.dhash, vectors, x, y)
        keep = codes[x][:, None] != codes[y][None, :]
        distances.append(d[keep])
        similarities.append(s[keep])
    return Null(
        np.sort(np.concatenate(distances)), np.sort(np.concatenate(similarities)), available
    )


def _id_codes(groups: list[str | None]) -> np.ndarray:
    """An int per row, equal for rows of one id; a row without an id gets a code of its own."""
    known: dict[str, int] = {}
    codes = [-1 - r if g is None else known.setdefault(g, len(known)) for r, g in enumerate(groups)]
    return np.array(codes, dtype=np.int64)


def _blocks(ctx: Context) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows of a later split, rows of an earlier one) per class (multi-label: per set of
    labels): where the null's pairs lie."""
    ok = ctx.readable()
    labels, splits = ctx.label_keys[ok], ctx.splits[ok]
    present = ctx.present_splits()
    blocks = []
    for label in np.unique(labels):
        for n, later in enumerate(present):
            for earlier in present[:n]:
                x = ok[(labels == label) & (splits == later)]
                y = ok[(labels == label) & (splits == earlier)]
                if len(x) and len(y):
                    blocks.append((x, y))
    return blocks


def _different_id_pairs(x: np.ndarray, y: np.ndarray) -> int:
    """Pairs (one code from x, one from y) whose codes differ."""
    ux, cx = np.unique(x, return_counts=True)
    uy, cy = np.unique(y, return_counts=True)
    _, ix, iy = np.intersect1d(ux, uy, assume_unique=True, return_indices=True)
    return len(x) * len(y) - int(np.sum(cx[ix] * cy[iy]))


def _some(rows: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    n = max(1, min(len(rows), round(share * len(rows))))
    return np.sort(rng.choice(rows, n, replace=False))


def _signs(packed: np.ndarray) -> np.ndarray:
    return np.unpackbits(packed, axis=-1).astype(np.float32) * 2.0 - 1.0


def _grid(
    dhash: np.ndarray, vectors: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(len(x), len(y)) dHash distances (min over x's 8 transforms vs y's identity hash) and
    cosine similarities. For ±1 bits, Hamming = (bits - dot) / 2: matrix products do it all."""
    refs = _signs(dhash[y, 0])  # (ny, bits)
    bits = refs.shape[1]
    ref_vectors = vectors[y].astype(np.float32)
    distances = np.empty((len(x), len(y)), dtype=np.int32)
    similarities = np.empty((len(x), len(y)), dtype=np.float32)
    step = max(1, GRID_CELLS // (8 * len(y)))
    for start in range(0, len(x), step):
        rows = x[start : start + step]
        dot = (_signs(dhash[rows]).reshape(-1, bits) @ refs.T).reshape(len(rows), 8, len(y))
        distances[start : start + len(rows)] = np.rint((bits - dot.max(axis=1)) / 2)
        similarities[start : start + len(rows)] = vectors[rows].astype(np.float32) @ ref_vectors.T
    return distances, similarities


def _closest(
    ctx: Context, by_split: dict[str, list[int]], vectors: np.ndarray, rng: np.random.Generator
) -> Closest:
    """The most alike cross-split pair of one id by each measure, and how many pairs there were
    (measured as the null's pairs are)."""
    rows = {s: _subset(r, rng) for s, r in by_split.items()}
    splits = [s for s in ctx.present_splits() if s in rows]
    best = Closest(10**6, -2.0, 0, (0, 0), (0, 0))
    for n, later in enumerate(splits):
        for earlier in splits[:n]:
            x, y = np.array(rows[later]), np.array(rows[earlier])
            best.pairs += len(x) * len(y)
            distances, similarities = _grid(ctx.scan.dhash, vectors, x, y)
            a, b = np.unravel_index(int(np.argmin(distances)), distances.shape)
            if distances[a, b] < best.distance:
                best.distance, best.by_hash = int(distances[a, b]), (int(x[a]), int(y[b]))
            a, b = np.unravel_index(int(np.argmax(similarities)), similarities.shape)
            if similarities[a, b] > best.similarity:
                best.similarity = float(similarities[a, b])
                best.by_features = (int(x[a]), int(y[b]))
    return best


def _subset(rows: list[int], rng: np.random.Generator) -> list[int]:
    if len(rows) <= MAX_PER_SPLIT:
        return rows
    return sorted(rng.choice(rows, MAX_PER_SPLIT, replace=False).tolist())
