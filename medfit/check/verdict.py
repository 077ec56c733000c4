"""The verdict: the few findings that matter, most serious first, each with what to do.

critical  the validation score is not trustworthy as the data stands (copies of training images
          in val/test, the same patient's alike images on both sides, an id the user gave in two
          splits); `--strict` fails on every one
warning   likely to mislead or hurt training (near duplicates across splits, shortcuts,
          unreadable files, labels that look wrong, ids shared across splits whose images are
          not alike or too few to judge, near copies inside a split whose labels disagree)
info      worth knowing (imbalance, near copies inside a split, checks that could not decide)

Multi-label data add one warning: labels with too few positives in val or test to measure (or
none at all); a copy whose label sets differ is a conflict like a copy whose class differs.
"""

from __future__ import annotations

from typing import Any

SEVERITIES = ("critical", "warning", "info")
SPLIT_FIX = "medfit split DATA --by group --out split.csv, then train on split.csv"
SHORTCUT_FIXES = {
    "image mode": "convert every image to one mode (e.g. all grayscale) and check whether the "
    "classes come from different sources",
    "file format": "re-encode every image in one format, and check whether the classes come "
    "from different sources",
    "image size": "check why the classes differ in size (different scanners or crops?); resize "
    "or crop all images the same way before training",
    "width/height": "check why the classes differ in size (different scanners or crops?); resize "
    "or crop all images the same way before training",
    "corner/border brightness": "look at the corners: padding, burned-in text or markers "
    "differ between classes; crop them off or make them uniform",
    "JPEG quality": "re-encode every image at one JPEG quality; the classes were saved differently",
    "burned-in text/markers": "look at the listed examples: letters, rulers or annotations in the "
    "corners differ between classes; crop or mask them (the same way in every class)",
}


# Where each finding's evidence lies in check.json (dotted path): what a report links or renders.
DETAILS = {
    "exact_cross_split": "exact_duplicates.cross_split_pairs",
    "exact_conflicting": "exact_duplicates.cluster_list",
    "group_leak": "groups.shared",
    "group_same_id": "groups.shared",
    "near_hash": "near_duplicates.hash.pairs",
    "near_embedding": "near_duplicates.embedding.pairs",
    "near_embedding_inconclusive": "near_duplicates.embedding_calibration",
    "near_within_split": "near_duplicates.within_split.pairs",
    "unreadable": "inventory.unreadable",
    "shortcut": "shortcuts.properties",
    "label_issues": "label_issues.issues",
    "label_unjudged": "label_issues",
    "imbalance": "inventory.counts",
    "no_groups": "groups",
    "ids_per_split": "groups",
    "rare_labels": "multilabel.rare",
}


def _finding(severity: str, title: str, fix: str, key: str) -> dict[str, str]:
    details = DETAILS[key.split(":", 1)[0]]
    return {"severity": severity, "title": title, "fix": fix, "key": key, "details": details}


def make_verdict(report: dict[str, Any]) -> list[dict[str, str]]:
    findings: list[dict[str, str]] = []
    findings += _exact(report["exact_duplicates"])
    findings += _groups(report["groups"], report["inventory"])
    findings += _near(report["near_duplicates"])
    findings += _unreadable(report["inventory"])
    findings += _shortcuts(report["shortcuts"])
    findings += _labels(report["label_issues"])
    findings += _rare_labels(report.get("multilabel"))
    findings += _info(report)
    findings.sort(key=lambda f: SEVERITIES.index(f["severity"]))
    return findings


def strict_failures(report: dict[str, Any]) -> list[str]:
    """What `--strict` fails on: every critical finding (each invalidates validation)."""
    return [f["title"] for f in report["verdict"] if f["severity"] == "critical"]


def ids_given(groups: dict[str, Any]) -> bool:
    """Whether the patient ids are the user's own (a --group-pattern, a manifest group column,
    DICOM PatientID) rather than a preset guessed from the file names."""
    return "auto-detected" not in str(groups.get("source", ""))


def _exact(exact: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    cross = exact["cross_split_images"]
    if cross:
        parts = ", ".join(
            f"{n} {key.split('->')[0]} image(s) identical to {key.split('->')[1]} images"
            for key, n in cross.items()
        )
        conflicting = sum(p["conflicting_labels"] for p in exact["cross_split_pairs"])
        title = f"exact copies across splits: {parts}"
        if conflicting:
            title += f"; {conflicting} of them with a different label"
        fix = (
            "delete the val/test copies (or keep each image in one split); for a copy whose "
            "labels differ, decide the right label first"
        )
        out.append(_finding("critical", title, fix, "exact_cross_split"))
    within = exact["conflicting_clusters"] - exact["conflicting_cross_split"]
    if within:
        out.append(
            _finding(
                "warning",
                f"{within} set(s) of identical images inside one split carry different labels",
                "decide the right label and keep one copy",
                "exact_conflicting",
            )
        )
    return out


def _groups(groups: dict[str, Any], inventory: dict[str, Any]) -> list[dict[str, str]]:
    if not groups.get("available") or groups.get("ids_per_split"):
        return []
    out = []
    random_val = " (val was split off train by medfit)" if inventory["val_from_train"] else ""
    if groups["leaking_groups"]:
        fix = SPLIT_FIX
        if inventory["val_from_train"]:
            fix += "; or train with --group-pattern REGEX|PRESET so that medfit's val split keeps "
            fix += "each id on one side"
        out.append(
            _finding(
                "critical",
                f"patient leakage: {groups['leaking_groups']} id(s) have alike images in more "
                f"than one split ({groups['leaking_images']} images){random_val}",
                fix,
                "group_leak",
            )
        )
    different = groups["different_content_groups"]
    untestable = groups.get("untestable_groups", 0)
    if different or untestable:
        parts = []
        if different:
            parts.append(f"{different} with images that are not alike (same id, different content)")
        if untestable:
            parts.append(
                f"{untestable} that the data are too few to judge (not testable at FDR "
                f"{groups.get('fdr', 0.01):g})"
            )
        # Ids the user gave (pattern, manifest, DICOM) say who is who: short of --ids-per-split,
        # one in two splits is the same patient on both sides, which is proven leakage.
        given = ids_given(groups)
        out.append(
            _finding(
                "critical" if given else "warning",
                ("patient leakage: " if given else "")
                + f"{different + untestable} id(s) occur in more than one split: "
                f"{'; '.join(parts)} — this does not clear them: one patient's images taken weeks "
                "apart are not alike either",
                "if ids are numbered per split (patient 7 of train is not patient 7 of val), say "
                f"so with --ids-per-split; otherwise treat them as the same patients: {SPLIT_FIX}",
                "group_same_id",
            )
        )
    return out


def _near(near: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    hashed = near["hash"]
    hits = {k: v for k, v in hashed["per_split"].items() if v["with_near_duplicate"]}
    if hits:
        parts = ", ".join(f"{v['with_near_duplicate']}/{v['queries']} {k}" for k, v in hits.items())
        turned = hashed["rotated_or_flipped"]
        title = (
            f"near duplicates across splits: {parts} have a near-identical image "
            f"(dHash <= {hashed['threshold_bits']}/{hashed['hash_bits']} bits"
            + (f"; {turned} pair(s) only when flipped or rotated" if turned else "")
            + ")"
        )
        fix = (
            "look at the pairs; if they show the same image or lesion, give each pair one group "
            f"id (manifest group column) and {SPLIT_FIX}"
        )
        out.append(_finding("warning", title, fix, "near_hash"))
    emb = near["embedding"]
    hits = {k: v for k, v in emb.get("per_split", {}).items() if v["with_near_duplicate"]}
    if hits:
        parts = ", ".join(f"{v['with_near_duplicate']}/{v['queries']} {k}" for k, v in hits.items())
        out.append(
            _finding(
                "warning",
                f"near duplicates by embedding: {parts} are as alike as augmented copies "
                f"(cosine >= {emb['threshold']:.3f}, calibrated on synthetic copies)",
                "look at the pairs; if one is an augmented copy of the other, keep copies of one "
                f"source image in one split: {SPLIT_FIX}",
                "near_embedding",
            )
        )
    out += _near_within(near.get("within_split", {}))
    calibration = near["embedding_calibration"]
    if not calibration.get("usable") and "threshold" in calibration:
        out.append(
            _finding(
                "info",
                "embedding near-duplicate check inconclusive (augmented copies rotated by any "
                "angle cannot be ruled out): " + calibration["reason"],
                "if the set was built by augmenting source images, split by source image "
                f"(a group id per source): {SPLIT_FIX}",
                "near_embedding_inconclusive",
            )
        )
    return out


def _near_within(within: dict[str, Any]) -> list[dict[str, str]]:
    """Near copies inside one split: info (they do not invalidate validation), a warning when a
    pair's labels disagree (one of the two labels is likely wrong)."""
    hits = {k: v for k, v in within.get("per_split", {}).items() if v["with_near_duplicate"]}
    if not hits:
        return []
    parts = ", ".join(
        f"{v['with_near_duplicate']}/{v['images']} {k}" + (" (sampled)" if v["sampled"] else "")
        for k, v in hits.items()
    )
    conflicting = within["conflicting_pairs"]
    title = (
        f"near duplicates inside a split: {parts} images have a near-identical image in the same "
        f"split (dHash <= {within['threshold_bits']}/{within['hash_bits']} bits; "
        f"{within['pairs_total']} pairs, {within['rotated_or_flipped']} flipped or rotated)"
        + (f"; {conflicting} pair(s) with different labels" if conflicting else "")
    )
    fix = (
        "they inflate the split and its class counts (augmented copies?); keep one image per "
        "source, or give copies one group id so that they stay together"
        + ("; decide the right label of the conflicting pairs" if conflicting else "")
    )
    return [_finding("warning" if conflicting else "info", title, fix, "near_within_split")]


def _unreadable(inventory: dict[str, Any]) -> list[dict[str, str]]:
    n = inventory["unreadable_count"]
    if not n:
        return []
    first = inventory["unreadable"][0]["error"]
    return [
        _finding(
            "warning",
            f"{n} file(s) cannot be decoded (first: {first})",
            "fix or delete them; training skips them (and fails under --strict)",
            "unreadable",
        )
    ]


def _shortcuts(shortcuts: dict[str, Any]) -> list[dict[str, str]]:
    if not shortcuts.get("checked"):
        return []
    out = []
    for prop in shortcuts["properties"]:
        if not prop["flagged"]:
            continue
        target = shortcuts.get("target", "the class")
        title = (
            f"shortcut: {prop['property']} alone predicts {target} (balanced accuracy "
            f"{prop['balanced_accuracy']:.2f} vs chance {shortcuts['chance']:.2f}; flagged above "
            f"+{shortcuts['margin']:.2f})"
        )
        fix = SHORTCUT_FIXES.get(prop["property"], "make the property uniform across classes")
        out.append(_finding("warning", title, fix, f"shortcut:{prop['property']}"))
    return out


def _labels(labels: dict[str, Any]) -> list[dict[str, str]]:
    if labels.get("judged") is False:  # a probe too close to chance: no list, and say so
        return [
            _finding(
                "info",
                f"label issues {labels['reason']}",
                "nothing to fix in the labels on this evidence",
                "label_unjudged",
            )
        ]
    if not labels.get("checked") or not labels["issues_total"]:
        return []
    if labels.get("multilabel"):
        return [_multilabel_issues(labels)]
    # A probe that gets at most halfway from chance to perfect, or that flags more than a quarter
    # of the images, says more about the features than about the labels.
    chance = labels["chance"]
    weak = labels["probe_balanced_accuracy"] < chance + 0.5 * (1 - chance)
    weak = weak or labels["issue_rate"] > 0.25
    lo, hi = labels.get("probe_ci95") or [None, None]
    ci = f", 95% CI {lo:.2f}-{hi:.2f}" if lo is not None else ""
    title = (
        f"{labels['issues_total']} image(s) may be mislabeled ({labels['issue_rate']:.1%}; "
        f"frozen-feature probe balanced accuracy {labels['probe_balanced_accuracy']:.2f}{ci} "
        f"vs chance {chance:.2f})"
    )
    if weak:
        title += " — the probe is weak here, so treat the list as a hint"
    return [
        _finding(
            "info" if weak else "warning",
            title,
            "review the listed images (most likely first); fix or remove wrong labels",
            "label_issues",
        )
    ]


def _multilabel_issues(labels: dict[str, Any]) -> dict[str, str]:
    """Label issues of multi-label data: judged only on the labels the probe can see."""
    judged = labels["judged_labels"]
    shown = ", ".join(judged[:4]) + (f" and {len(judged) - 4} more" if len(judged) > 4 else "")
    title = (
        f"{labels['issues_total']} image(s) may carry a wrong label set "
        f"({labels['issue_rate']:.1%}; one-vs-rest frozen-feature probe, judged on "
        f"{len(judged)} of {len(labels['per_label']) + len(labels['too_few_labels'])} labels "
        f"whose out-of-fold AUC clears {labels['min_auc_lower']:.2f}: {shown})"
    )
    # As for one label per image: a probe at most halfway from chance (0.5) to a perfect AUC on
    # the labels it judges, or one that flags over a quarter of the images, says more about the
    # features than about the labels.
    weak = labels["judged_macro_auc"] < 0.75 or labels["issue_rate"] > 0.25
    if weak:
        title += " — the probe is weak here, so treat the list as a hint"
    return _finding(
        "info" if weak else "warning",
        title,
        "review the listed images (most likely first): add or remove the named labels",
        "label_issues",
    )


def _rare_labels(multilabel: dict[str, Any] | None) -> list[dict[str, str]]:
    """Multi-label: labels whose val/test positives are too few to measure, or none."""
    if not multilabel or not multilabel["rare"]:
        return []
    by_label: dict[str, list[str]] = {}
    for flag in multilabel["rare"]:
        by_label.setdefault(flag["label"], []).append(f"{flag['split']} {flag['positives']}")
    parts = [f"{label} ({', '.join(where)})" for label, where in by_label.items()]
    shown = "; ".join(parts[:6]) + (f"; {len(parts) - 6} more" if len(parts) > 6 else "")
    absent = sum(f["problem"] == "absent" for f in multilabel["rare"])
    title = (
        f"{len(by_label)} label(s) have fewer than {multilabel['min_eval_positives']} positives "
        f"in val or test, so their AUC there is noise"
        + (f" ({absent} (label, split) with none: no AUC at all)" if absent else "")
        + f": {shown}"
    )
    fix = (
        "say so instead of reporting their AUC (average over the labels that have enough); to "
        f"measure them, re-split whole patients so that val and test hold at least "
        f"{multilabel['min_eval_positives']} positives of each, or gather more images with them"
    )
    return [_finding("warning", title, fix, "rare_labels")]


def _info(report: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    ratio = report["inventory"]["imbalance_ratio"]
    if ratio is not None and ratio >= 3:
        out.append(
            _finding(
                "info",
                f"train is imbalanced {ratio:g}:1 (largest : smallest class)",
                "medfit train weighs rare classes up by default (--balance auto); watch balanced "
                "accuracy, not accuracy",
                "imbalance",
            )
        )
    groups = report["groups"]
    if groups.get("ids_per_split"):
        out.append(
            _finding(
                "info",
                "ids are numbered per split (--ids-per-split): an id in two splits is taken as "
                "two patients, so patient leakage by id was not checked",
                "near duplicates across splits are still checked above; for a leakage check by "
                "patient, give ids that are the same for one patient in every split",
                "ids_per_split",
            )
        )
    elif not groups.get("available"):
        out.append(
            _finding(
                "info",
                "no patient ids: group leakage was not checked",
                "give ids with --group-pattern REGEX (or a preset) or a manifest group column",
                "no_groups",
            )
        )
    return out
