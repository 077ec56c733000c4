"""The terminal summary of a `CheckReport`: verdict first, then one short block per section."""

from __future__ import annotations

from typing import Any

from medfit.check.run import CheckReport
from medfit.data.sources import ignored_folders_hint

MARK = {"critical": "!!", "warning": " !", "info": " i"}
SHOWN = 5  # pairs / images listed per section on the terminal (the JSON has them all)
TOP_PAIRS = 10  # co-occurring label pairs listed for multi-label data


def render_text(report: CheckReport, shown: int = SHOWN) -> str:
    r = report.to_dict()
    lines = [f"medfit check: {r['root']}", ""]
    lines += _verdict(r["verdict"])
    lines += _inventory(r["inventory"])
    if r.get("multilabel"):
        lines += _multilabel(r["multilabel"], TOP_PAIRS)
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
    if "labels" in ref:  # multi-label: the label set after the file name
        return f"{ref['split']}/{ref['path'].rsplit('/', 1)[-1]} [{ref['label']}]"
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
    if inv.get("multilabel"):  # positives per label: a table of their own (LABELS, below)
        totals = ", ".join(f"{split} {n}" for split, n in inv["split_totals"].items())
        lines.append(f"  multi-label, {len(inv['classes'])} labels; images: {totals}")
    else:
        header = f"  {'':<10}" + "".join(f"{c[:14]:>15}" for c in inv["classes"])
        lines.append(header + f"{'total':>9}")
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


def _multilabel(ml: dict[str, Any], top: int) -> list[str]:
    """Positives per label and split, rare labels, the most frequent co-occurring pairs."""
    freq = ml["frequency"]
    splits = list(freq)
    width = min(24, max(len(c) for c in [*ml["labels"], "images with 2+ labels"]))
    rare = {(f["label"], f["split"]) for f in ml["rare"]}
    lines = [
        f"LABELS (positives per split; * fewer than {ml['min_eval_positives']} in val/test: "
        "its AUC there is noise)",
        f"  {'':<{width}}" + "".join(f"{s:>8}" for s in splits),
    ]
    for label in ml["labels"]:
        cells = "".join(
            f"{freq[s]['positives'][label]:>7}{'*' if (label, s) in rare else ' '}" for s in splits
        )
        lines.append(f"  {label[:width]:<{width}}{cells}")
    for name, key in (("no finding", "no_finding"), ("images with 2+ labels", "two_or_more")):
        lines.append(f"  {name:<{width}}" + "".join(f"{freq[s][key]:>7} " for s in splits))
    lines.append(f"  {'images':<{width}}" + "".join(f"{freq[s]['images']:>7} " for s in splits))
    flagged: dict[str, list[str]] = {}
    for f in ml["rare"]:
        flagged.setdefault(f["label"], []).append(f"{f['split']} {f['positives']}")
    if flagged:
        parts = [f"{label} ({', '.join(where)})" for label, where in flagged.items()]
        lines.append(f"  too few positives to measure: {'; '.join(parts)}")
    absent = [f"{f['label']} ({f['split']})" for f in ml["rare"] if f["problem"] == "absent"]
    if absent:
        lines.append(f"  absent, no AUC at all: {', '.join(absent)}")
    pairs = ml["cooccurrence"]["pairs"]
    if pairs:
        lines.append(
            f"  co-occurring (images with both, all splits; train in brackets; "
            f"{min(top, len(pairs))} of {len(pairs)} pairs):"
        )
        for p in pairs[:top]:
            lines.append(f"    {p['a']} + {p['b']}: {p['images']} ({p['train']})")
    else:
        lines.append("  no image carries two labels")
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
    target = f" at predicting {shortcuts['target']}" if "target" in shortcuts else ""
    lines = [
        f"SHORTCUTS (balanced accuracy of one property alone{target}; chance "
        f"{shortcuts['chance']:.2f}, flagged at +{shortcuts['margin']:.2f})"
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
    if labels.get("multilabel"):
        return _multilabel_issues(labels, shown)
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


def _multilabel_issues(labels: dict[str, Any], shown: int) -> list[str]:
    judged = ", ".join(f"{e['label']} {e['auc']:.2f}" for e in labels["per_label"] if e["judged"])
    lines = [
        f"LABEL ISSUES ({labels['method']} on out-of-fold one-vs-rest probabilities from "
        f"{labels['features']}; probe macro AUC {labels['probe_macro_auc']:.2f}; judged on the "
        f"labels whose AUC 95% CI lies above {labels['min_auc_lower']:.2f}: {judged}): "
        f"{labels['issues_total']} likely mislabeled"
    ]
    for issue in labels["issues"][:shown]:
        changes = [f"add {n} (p {issue['p'][n]:.2f})" for n in issue["add"]]
        changes += [f"remove {n} (p {issue['p'][n]:.2f})" for n in issue["remove"]]
        lines.append(f"  {_name(issue)}: {'; '.join(changes)}")
    return lines
