"""Exact and near duplicates: the copies that make a validation score a memory test.

- Exact: identical decoded pixels (see `hashing.pixel_hash`), within and across splits; a copy
  whose labels disagree is called out (one of the two labels is wrong, and the model is scored on
  it both ways). For multi-label data a label is the set of an image's labels: copies whose sets
  differ conflict.
- Near, by hash: for every val/test image, the closest image of each earlier split by the dHash
  of its 8 dihedral transforms; listed at <= `near_bits` of 256 (see options.NEAR_DHASH_BITS for
  the calibration). Near pairs inside one split are listed apart (`within_split_near_duplicates`):
  they inflate a split and distort its class counts, but do not invalidate validation.
- Near, by embedding: cosine similarity of frozen-backbone features, with a threshold calibrated
  on the user's own data each run: 64 images get a synthetic augmented copy (rotated by any angle,
  flipped, shifted, brightened); the threshold is the similarity that 90% of those copies reach.
  The check only lists pairs when that threshold lies above 99.9% of similarities between random
  different images of the same class (multi-label: the same set of labels): otherwise the
  backbone cannot tell an augmented copy from a mere look-alike in this data and the section says
  so ("inconclusive"), instead of crying wolf.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from medfit.check.context import Context, split_pairs
from medfit.check.hashing import HASH_BITS, TRANSFORMS, hamming_search

COPY_QUANTILE = 10.0  # % of synthetic copies allowed below the embedding threshold
NULL_QUANTILE = 99.9  # % of random same-class pairs that must stay below it
NULL_PAIRS = 20_000  # random pairs drawn for that null distribution
NEIGHBOURS = 3  # nearest references kept per query
# Queries per split for the within-split search: beyond this a random sample of the split is
# compared with all of it, which keeps a 200,000-image train split at ~1/4 of the full N^2 work.
WITHIN_QUERIES = 50_000


def exact_duplicates(ctx: Context) -> dict[str, Any]:
    """Clusters of identical images; the cross-split and conflicting-label ones first."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for row in ctx.readable():
        by_hash[ctx.scan.hashes[row]].append(int(row))
    clusters: list[dict[str, Any]] = []
    for digest, rows in by_hash.items():
        if len(rows) < 2:
            continue
        splits = sorted({ctx.samples[r].split for r in rows})
        labels = sorted({ctx.label_name(r) for r in rows})  # multi-label: the label sets
        clusters.append(
            {
                "hash": digest,
                "splits": splits,
                "labels": labels,
                "cross_split": len(splits) > 1,
                "conflicting_labels": len(labels) > 1,
                "members": [ctx.ref(r) for r in rows],
            }
        )
    clusters.sort(key=lambda c: (not c["cross_split"], not c["conflicting_labels"], c["hash"]))
    pairs = _cross_split_exact_pairs(ctx, by_hash)
    per_split: defaultdict[str, int] = defaultdict(int)
    for pair in pairs:
        per_split[f"{pair['a']['split']}->{pair['b']['split']}"] += 1
    return {
        "clusters": len(clusters),
        "images_in_clusters": sum(len(c["members"]) for c in clusters),
        "extra_copies": sum(len(c["members"]) - 1 for c in clusters),
        "cross_split_clusters": sum(c["cross_split"] for c in clusters),
        "conflicting_clusters": sum(c["conflicting_labels"] for c in clusters),
        "conflicting_cross_split": sum(
            c["conflicting_labels"] and c["cross_split"] for c in clusters
        ),
        # val/test images with an identical image in an earlier split, per (later -> earlier)
        "cross_split_images": dict(per_split),
        "cross_split_pairs": pairs[: ctx.options.max_pairs],
        "cluster_list": clusters[: ctx.options.max_pairs],
    }


def _cross_split_exact_pairs(ctx: Context, by_hash: dict[str, list[int]]) -> list[dict[str, Any]]:
    """One pair per (later-split image, earlier split): the image and its first earlier copy."""
    order = {split: i for i, split in enumerate(ctx.present_splits())}
    pairs = []
    for rows in by_hash.values():
        for a in rows:
            split_a = ctx.samples[a].split
            firsts: dict[str, int] = {}
            for b in rows:
                split_b = ctx.samples[b].split
                if order[split_b] < order[split_a]:
                    firsts.setdefault(split_b, b)
            for b in firsts.values():
                pairs.append(_pair(ctx, a, b, "exact", distance=0, transform="identity"))
    pairs.sort(key=lambda p: (not p["conflicting_labels"], p["a"]["split"], p["a"]["path"]))
    return pairs


def _pair(ctx: Context, a: int, b: int, kind: str, **extra: Any) -> dict[str, Any]:
    ref_a, ref_b = ctx.ref(a), ctx.ref(b)
    return {
        "kind": kind,
        "a": ref_a,
        "b": ref_b,
        "conflicting_labels": ref_a["label"] != ref_b["label"],
        **extra,
    }


def hash_near_duplicates(ctx: Context) -> dict[str, Any]:
    """Val/test images whose dihedral dHash is within `near_bits` of an earlier split's image."""
    limit = ctx.options.near_bits
    device = _device(ctx)
    pairs: list[dict[str, Any]] = []
    per_split: dict[str, dict[str, int]] = {}
    nearest: dict[str, list[int]] = {}
    for later, earlier in split_pairs(ctx.present_splits()):
        q_rows, r_rows = ctx.readable(later), ctx.readable(earlier)
        if not len(q_rows) or not len(r_rows):
            continue
        found = hamming_search(
            ctx.scan.dhash[q_rows], ctx.scan.dhash[r_rows], NEIGHBOURS, device=device
        )
        key = f"{later}->{earlier}"
        nearest[key] = found.distance[:, 0].tolist()
        with_near = 0
        for qi, a in enumerate(q_rows):
            hit = False
            for j in range(found.index.shape[1]):
                d, ri = int(found.distance[qi, j]), int(found.index[qi, j])
                if ri < 0 or d > limit:
                    break
                b = int(r_rows[ri])
                if ctx.scan.hashes[a] == ctx.scan.hashes[b]:
                    continue  # an exact copy, reported as such
                hit = True
                t = TRANSFORMS[int(found.transform[qi, j])]
                pairs.append(_pair(ctx, int(a), b, "dhash", distance=d, transform=t))
            with_near += hit
        per_split[key] = {"queries": len(q_rows), "with_near_duplicate": with_near}
    pairs.sort(key=lambda p: (p["distance"], p["a"]["path"]))
    return {
        "threshold_bits": limit,
        "hash_bits": HASH_BITS,
        "per_split": per_split,
        "pairs_total": len(pairs),
        "rotated_or_flipped": sum(p["transform"] != "identity" for p in pairs),
        "pairs": pairs[: ctx.options.max_pairs],
        "nearest_distance_histogram": {k: _histogram(v) for k, v in nearest.items()},
    }


def within_split_near_duplicates(ctx: Context) -> dict[str, Any]:
    """Pairs inside one split within `near_bits` by dihedral dHash (exact copies excluded).

    Listed apart from the cross-split pairs: they do not make validation a memory test, but they
    inflate the effective size of a split and distort its class counts (a class of augmented
    copies looks bigger than it is). A split larger than WITHIN_QUERIES is queried with a random
    sample of that many images (against all of it), and the counts say so.
    """
    limit = ctx.options.near_bits
    device = _device(ctx)
    rng = np.random.default_rng(ctx.options.seed)
    seen: set[tuple[int, int]] = set()
    pairs: list[dict[str, Any]] = []
    per_split: dict[str, dict[str, Any]] = {}
    for split in ctx.present_splits():
        rows = ctx.readable(split)
        if len(rows) < 2:
            continue
        queries = np.arange(len(rows))
        if len(rows) > WITHIN_QUERIES:
            queries = np.sort(rng.choice(len(rows), WITHIN_QUERIES, replace=False))
        found = hamming_search(
            ctx.scan.dhash[rows[queries]], ctx.scan.dhash[rows], NEIGHBOURS + 1, device=device
        )
        involved: set[int] = set()
        for qi, q in enumerate(queries):
            a = int(rows[q])
            for j in range(found.index.shape[1]):
                d, ri = int(found.distance[qi, j]), int(found.index[qi, j])
                if ri < 0 or d > limit:
                    break
                b = int(rows[ri])
                if b == a or ctx.scan.hashes[a] == ctx.scan.hashes[b]:
                    continue  # itself, or an exact copy (listed with the exact duplicates)
                involved.update((a, b))
                key = (min(a, b), max(a, b))
                if key not in seen:
                    seen.add(key)
                    t = TRANSFORMS[int(found.transform[qi, j])]
                    pairs.append(_pair(ctx, a, b, "dhash", distance=d, transform=t))
        per_split[split] = {
            "images": len(rows),
            "queries": len(queries),
            "sampled": len(queries) < len(rows),
            "with_near_duplicate": len(involved),
        }
    pairs.sort(key=lambda p: (not p["conflicting_labels"], p["distance"], p["a"]["path"]))
    return {
        "threshold_bits": limit,
        "hash_bits": HASH_BITS,
        "per_split": per_split,
        "pairs_total": len(pairs),
        "conflicting_pairs": sum(p["conflicting_labels"] for p in pairs),
        "rotated_or_flipped": sum(p["transform"] != "identity" for p in pairs),
        "pairs": pairs[: ctx.options.max_pairs],
    }


def _histogram(values: list[int]) -> dict[str, int]:
    """Counts of nearest distances in 8-bit bins (how close the closest other image is)."""
    bins = np.arange(0, HASH_BITS + 9, 8)
    counts, _ = np.histogram(values, bins=bins)
    return {f"{lo}-{lo + 7}": int(c) for lo, c in zip(bins[:-1], counts, strict=True) if c}


def _device(ctx: Context) -> str:
    from medfit.check.embed import resolve_device

    return resolve_device(ctx.options.device)


def calibrate_embeddings(ctx: Context) -> dict[str, Any]:
    """The copy threshold and whether it separates copies from random same-class pairs."""
    emb = ctx.scan.embeddings
    rows = ctx.scan.extra.get("copy_rows")
    copies = ctx.scan.extra.get("copy_embeddings")
    if emb is None or not isinstance(rows, np.ndarray) or not isinstance(copies, np.ndarray):
        return {"usable": False, "reason": "skipped (needs --features backbone)"}
    if len(rows) < 8:
        return {"usable": False, "reason": "too few images to calibrate (need 8)"}
    copy_sim = np.sum(emb[rows].astype(np.float32) * copies.astype(np.float32), axis=1)
    null = _null_similarities(ctx, emb)
    if len(null) < 100:
        return {"usable": False, "reason": "too few same-class image pairs to calibrate"}
    tau = float(np.percentile(copy_sim, COPY_QUANTILE))
    null_hi = float(np.percentile(null, NULL_QUANTILE))
    result: dict[str, Any] = {
        "threshold": round(tau, 4),
        "copy_similarity_median": round(float(np.median(copy_sim)), 4),
        "random_same_class_median": round(float(np.median(null)), 4),
        "random_same_class_p999": round(null_hi, 4),
        "random_pairs_above_threshold": round(float(np.mean(null >= tau)), 5),
        "usable": tau > null_hi,
    }
    if not result["usable"]:
        result["reason"] = (
            f"synthetic augmented copies (median cosine {result['copy_similarity_median']:.3f}) "
            "are no more alike than random images of the same class (median "
            f"{result['random_same_class_median']:.3f}, 99.9% below {null_hi:.3f})"
        )
    return result


def _null_similarities(ctx: Context, emb: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(ctx.options.seed)
    ok = ctx.readable()
    if len(ok) < 2:
        return np.zeros(0, dtype=np.float32)
    i = ok[rng.integers(len(ok), size=NULL_PAIRS)]
    j = ok[rng.integers(len(ok), size=NULL_PAIRS)]
    labels = ctx.label_keys  # the class; for multi-label the set of labels
    keep = (i != j) & (labels[i] == labels[j])
    keep &= np.array([ctx.scan.hashes[a] != ctx.scan.hashes[b] for a, b in zip(i, j, strict=True)])
    a, b = emb[i[keep]].astype(np.float32), emb[j[keep]].astype(np.float32)
    return np.sum(a * b, axis=1)


def embedding_near_duplicates(ctx: Context, calibration: dict[str, Any]) -> dict[str, Any]:
    """Cross-split pairs at or above the calibrated cosine threshold (when it is usable)."""
    emb = ctx.scan.embeddings
    if emb is None or not calibration.get("usable"):
        return {"checked": False, "pairs_total": 0, "pairs": [], "per_split": {}}
    tau = float(calibration["threshold"])
    device = _device(ctx)
    pairs: list[dict[str, Any]] = []
    per_split: dict[str, dict[str, int]] = {}
    for later, earlier in split_pairs(ctx.present_splits()):
        q_rows, r_rows = ctx.readable(later), ctx.readable(earlier)
        if not len(q_rows) or not len(r_rows):
            continue
        sims, idx = cosine_top(emb[q_rows], emb[r_rows], NEIGHBOURS, device)
        hits = 0
        for qi, a in enumerate(q_rows):
            found = False
            for s, ri in zip(sims[qi], idx[qi], strict=True):
                b = int(r_rows[ri])
                if s < tau or ctx.scan.hashes[int(a)] == ctx.scan.hashes[b]:
                    continue
                found = True
                pairs.append(_pair(ctx, int(a), b, "embedding", similarity=round(float(s), 4)))
            hits += found
        per_split[f"{later}->{earlier}"] = {"queries": len(q_rows), "with_near_duplicate": hits}
    pairs.sort(key=lambda p: (-p["similarity"], p["a"]["path"]))
    return {
        "checked": True,
        "threshold": tau,
        "per_split": per_split,
        "pairs_total": len(pairs),
        "pairs": pairs[: ctx.options.max_pairs],
    }


def cosine_top(
    queries: np.ndarray, refs: np.ndarray, k: int, device: str, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of the k most similar unit-vector refs for each query.

    Both sides are cast to float32 a chunk at a time (the embeddings stay float16 in memory).
    """
    import torch

    k = min(k, len(refs))
    sims, idx = [], []
    with torch.inference_mode():
        for q0 in range(0, len(queries), chunk):
            q = torch.from_numpy(queries[q0 : q0 + chunk].astype(np.float32)).to(device)
            best_s = torch.full((q.shape[0], k), -2.0, device=device)
            best_i = torch.zeros((q.shape[0], k), dtype=torch.int64, device=device)
            for r0 in range(0, len(refs), 4 * chunk):
                r = torch.from_numpy(refs[r0 : r0 + 4 * chunk].astype(np.float32)).to(device)
                s, i = torch.topk(q @ r.T, min(k, r.shape[0]), dim=1)
                all_s, all_i = torch.cat([best_s, s], 1), torch.cat([best_i, i + r0], 1)
                best_s, order = torch.topk(all_s, k, dim=1)
                best_i = all_i.gather(1, order)
            sims.append(best_s.cpu().numpy())
            idx.append(best_i.cpu().numpy())
    return np.concatenate(sims), np.concatenate(idx)
