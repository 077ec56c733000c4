"""The terminal summary of a `CheckReport`: verdict first, then one short block per section."""

from __future__ import annotations

from typing import Any

from medfit.check.run import CheckReport
from medfit.data.sources import ignored_folders_hint

MARK = {"critical": "!!", "warning": " !", "info": " i"}
SHOWN = 5  # pairs / images listed per section on the terminal (the JSON has them all)


def render_text(report: CheckReport, shown: int = SHOWN) -> str:
    r = report.to_dict()
    lines = [f"medfit check: {r['root']}", ""]
    lines += _verdict(r["verdict"])
    lines += _inventory(r["inventory"])
    lines += _exact(r["exact_duplicates"], shown)
    lines += _near(r["near_duplicates"], shown)
    lines += _groups(r["groups"], shown)
    lines += _shortcuts(r["shortcuts"])
    lines += _labels(r["label_issues"], shown)
    t = r["timing"]
    lines += [
        "",
        f"{t['images']} images in {t['total_seconds']:.1f} s ({t['images_per_second']:.0f} "
        f"images/s; scan {t['scan_images_per_second']:.0f} images/s)"
        + (f"; embeddings: {t['embedding']}" if t["embedding"] else ""),
    ]
    return "\n".join(lines)


def _name(ref: dict[str, Any]) -> str:
    return f"{ref['split']}/{ref['label']}/{ref['path'].rsplit('/', 1)[-1]}"


def _verdict(findings: list[dict[str, str]]) -> list[str]:
    if not findings:
        return ["VERDICT: no problems found", ""]
    lines = ["VERDICT"]
    for f in findings:
        lines.append(f"{MARK[f['severity']]} {f['severity'].upper()}: {f['title']}")
        lines.append(f"     fix: {f['fix']}")
    return [*lines, ""]


def _inventory(inv: dict[str, Any]) -> list[str]:
    lines = ["INVENTORY"]
    header = f"  {'':<10}" + "".join(f"{c[:14]:>15}" for c in inv["classes"]) + f"{'total':>9}"
    lines.append(header)
    for split, counts in inv["counts"].items():
        row = "".join(f"{counts.get(c, 0):>15}" for c in inv["classes"])
        lines.append(f"  {split:<10}{row}{inv['split_totals'][split]:>9}")
    if inv["val_from_train"]:
        lines.append("  (val is split off train by medfit: no val folder/rows given)")
    if inv["imbalance_ratio"] is not None:
        lines.append(f"  train imbalance {inv['imbalance_ratio']:g}:1")
    sizes = inv["sizes"]
    common = ", ".join(f"{k} ({v})" for k, v in sizes["most_common"].items())
    lines.append(f"  sizes: {sizes['distinct']} distinct; most common {common}")
    lines.append(f"  modes: {_counts(inv['modes'])}; formats: {_counts(inv['formats'])}")
    if inv["conversions"]:
        lines.append(f"  conversions: {_counts(inv['conversions'])}")
    if inv["unreadable_count"]:
        lines.append(f"  unreadable: {inv['unreadable_count']}")
        lines += [f"    {u['error']}" for u in inv["unreadable"][:SHOWN]]
    if inv["ignored_count"]:
        lines.append(
            f"  ignored (not images, hidden, outside class folders): {inv['ignored_count']}"
        )
    if inv.get("ignored_folders"):
        lines.append(f"  {ignored_folders_hint(inv['ignored_folders'])}")
    return [*lines, ""]


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.items()) or "-"


def _exact(exact: dict[str, Any], shown: int) -> list[str]:
    lines = [
        f"EXACT DUPLICATES: {exact['clusters']} set(s) of identical images "
        f"({exact['extra_copies']} extra copies); {exact['cross_split_clusters']} across splits, "
        f"{exact['conflicting_clusters']} with conflicting labels"
    ]
    for pair in exact["cross_split_pairs"][:shown]:
        flag = "  CONFLICTING LABELS" if pair["conflicting_labels"] else ""
        lines.append(f"  {_name(pair['a'])} == {_name(pair['b'])}{flag}")
    return [*lines, ""]


def _near(near: dict[str, Any], shown: int) -> list[str]:
    hashed = near["hash"]
    parts = ", ".join(
        f"{k}: {v['with_near_duplicate']}/{v['queries']}" for k, v in hashed["per_split"].items()
    )
    lines = [
        f"NEAR DUPLICATES (dHash of 8 flips/rotations <= {hashed['threshold_bits']}/"
        f"{hashed['hash_bits']} bits): {parts or 'one split only, nothing to compare'}"
    ]
    for pair in hashed["pairs"][:shown]:
        how = "" if pair["transform"] == "identity" else f" after {pair['transform']}"
        lines.append(f"  {_name(pair['a'])} ~ {_name(pair['b'])}  {pair['distance']} bits{how}")
    lines += _within(near.get("within_split", {}), shown)
    cal = near["embedding_calibration"]
    emb = near["embedding"]
    if emb.get("checked"):
        parts = ", ".join(
            f"{k}: {v['with_near_duplicate']}/{v['queries']}" for k, v in emb["per_split"].items()
        )
        lines.append(
            f"  by embedding (cosine >= {emb['threshold']:.3f}; synthetic copies median "
            f"{cal['copy_similarity_median']:.3f}, random same-class pairs 99.9% < "
            f"{cal['random_same_class_p999']:.3f}): {parts}"
        )
        for pair in emb["pairs"][:shown]:
            lines.append(f"  {_name(pair['a'])} ~ {_name(pair['b'])}  cos {pair['similarity']:.3f}")
    elif "reason" in cal:
        verdict = "inconclusive: " if "threshold" in cal else ""
        lines.append(f"  by embedding: {verdict}{cal['reason']}")
    return [*lines, ""]


def _within(within: dict[str, Any], shown: int) -> list[str]:
    """Near copies inside one split (same dHash threshold), apart from the cross-split ones."""
    if not within.get("per_split"):
        return []
    parts = ", ".join(
        f"{k}: {v['with_near_duplicate']}/{v['images']}" + (" (sampled)" if v["sampled"] else "")
        for k, v in within["per_split"].items()
    )
    lines = [f"  inside one split: {parts} ({within['pairs_total']} pairs)"]
    for pair in within["pairs"][:shown]:
        how = "" if pair["transform"] == "identity" else f" after {pair['transform']}"
        flag = "  CONFLICTING LABELS" if pair["conflicting_labels"] else ""
        lines.append(
            f"  {_name(pair['a'])} ~ {_name(pair['b'])}  {pair['distance']} bits{how}{flag}"
        )
    return lines


def _groups(groups: dict[str, Any], shown: int) -> list[str]:
    if not groups.get("available"):
        return [
            "GROUPS: no patient ids (--group-pattern REGEX|PRESET, or a manifest group column)",
            "",
        ]
    per_split = ", ".join(f"{k} {v}" for k, v in groups["groups_per_split"].items())
    lines = [
        f"GROUPS from {groups['source']}: {groups['groups']} ids ({per_split}); "
        f"{groups['images_without_id']} images without an id",
    ]
    if groups.get("ids_per_split"):
        lines.append(
            "  ids are numbered per split (--ids-per-split): an id in two splits is two "
            "patients; leakage by id not checked"
        )
        return [*lines, ""]
    untestable = groups.get("untestable_groups", 0)
    lines.append(
        f"  in more than one split: {groups['shared_groups']} — alike images (leak): "
        f"{groups['leaking_groups']}, same id but different content: "
        f"{groups['different_content_groups']}"
        + (f", not testable at this level: {untestable}" if untestable else "")
        + f" (FDR {groups.get('fdr', 0.01):g}, {groups['null_pairs']} pairs of different ids)"
    )
    if groups["different_content_groups"] or untestable:
        lines.append(
            "  not cleared: one patient's images weeks apart are not alike either; unless ids "
            "are numbered per split (--ids-per-split), keep each id in one split"
        )
    for v in groups["shared"][:shown]:
        splits = ", ".join(f"{k} {n}" for k, n in v["splits"].items())
        lines.append(
            f"  {v['group']}: {v['status']} ({splits}; closest dHash {v['min_hash_distance']} "
            f"bits, cosine {v['max_similarity']:.3f}, p {v.get('p_value', 1.0):.3g})"
        )
    return [*lines, ""]


def _shortcuts(shortcuts: dict[str, Any]) -> list[str]:
    if not shortcuts.get("checked"):
        return [f"SHORTCUTS: not checked ({shortcuts.get('reason', '')})", ""]
    lines = [
        f"SHORTCUTS (balanced accuracy of one property alone; chance {shortcuts['chance']:.2f}, "
        f"flagged at +{shortcuts['margin']:.2f})"
    ]
    for prop in shortcuts["properties"]:
        flag = "  <- FLAGGED" if prop["flagged"] else ""
        marked = prop.get("images_with_marks_by_class")
        if marked is not None and any(marked.values()):
            flag += f"  (images with strokes: {_counts(marked)})"
        lines.append(f"  {prop['property']:<26}{prop['balanced_accuracy']:.2f}{flag}")
    return [*lines, ""]


def _labels(labels: dict[str, Any], shown: int) -> list[str]:
    if not labels.get("checked"):
        return [f"LABEL ISSUES: not checked ({labels.get('reason', '')})"]
    lines = [
        f"LABEL ISSUES ({labels['method']} on out-of-fold probabilities from {labels['features']}; "
        f"probe balanced accuracy {labels['probe_balanced_accuracy']:.2f}): "
        f"{labels['issues_total']} likely mislabeled"
    ]
    for issue in labels["issues"][:shown]:
        lines.append(
            f"  {_name(issue)}: given {issue['label']} (p {issue['p_given']:.2f}), "
            f"looks like {issue['suggested']} (p {issue['p_suggested']:.2f})"
        )
    return lines
