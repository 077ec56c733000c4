"""Findings that need to know which public data set a run trains on (datasets.py).

    found = known_findings(report.facts, report.framework, script, log_texts, answered)

A script rarely says how many images each class has or whether one patient has several images;
the data set it names does. Once the set is recognised (its folders, slug or class names in the
script, its "Found N images belonging to K classes" totals in the log), its documented counts and
structure decide four kinds the script alone cannot:

- class_imbalance: the training split is imbalanced (max/min >= 1.5) and nothing in the script
  balances it (class_weight, a weighted loss, a balanced sampler, oversampling) nor selects on an
  imbalance-aware metric;
- leakage: the set has several images per patient/slide/lesion and the script splits images at
  random (not by patient) into the parts it trains and validates on, or the set's own splits are
  known to share images;
- metric_mismatch: accuracy is the only metric, and on the images it is measured on a model that
  answers the majority class scores >= 2/3 (or a class is under a tenth);
- small_val: validation reads a published val folder known to be tiny.

Every rule stays silent when the script or the set leaves a precondition open; each finding
names the set, how it was recognised and where the numbers come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.datasets import (
    Match,
    mixes_patients,
    norm,
    official_split_of,
    recognise_run,
    tokens,
)
from medfit.diagnose.foreign.known_set import (
    IMBALANCE_RATIO,
    KnownSet,
    accuracy_misleads,
    composition,
)
from medfit.diagnose.foreign.read_text import found_totals
from medfit.diagnose.foreign.script.facts import ScriptFacts, SplitFact

# metrics that report accuracy and nothing about the rare class (names compared as norm()s:
# "categorical_accuracy" == "CategoricalAccuracy")
ACCURACY_ONLY = {
    "accuracy", "acc", "categoricalaccuracy", "sparsecategoricalaccuracy", "binaryaccuracy",
    "top1acc", "top5acc", "errorrate", "topkaccuracy", "topkcategoricalaccuracy",
    "sparsetopkcategoricalaccuracy",
}  # fmt: skip
# selection/monitor names that weigh the rare classes (AUC, F1, recall, balanced accuracy, ...)
AWARE = ("auc", "f1", "recall", "precision", "balanced", "kappa", "mcc", "prc", "sensitivity")
ORDER_TEXT = {
    "shuffled": "a random image-level split",
    "table_order": "a block of the label table's rows, which are not grouped by patient",
    "sorted_names": "a block of each class folder's sorted file names, which do not keep a "
    "patient's images together",
}
MAX_LOG_BYTES = 20_000_000


@dataclass
class KnownCtx:
    facts: ScriptFacts
    match: Match
    script: Path
    framework: str
    found: list[tuple[int, int, str]] = field(default_factory=list)  # the log's Found lines

    @property
    def known(self) -> KnownSet:
        return self.match.known

    def line(self) -> int:
        """The first line of the script whose strings recognised the set."""
        k = self.known
        wanted = set(k.markers) | {t for sig in k.signatures for t in sig}
        wanted |= {norm(s) for spellings in k.classes for s in spellings}
        for line, text in self.facts.names:
            if tokens([text]) & wanted:
                return line
        return 1

    def recognised(self) -> str:
        return f"{self.known.name}: {'; '.join(self.match.why)} (line {self.line()})"

    def finding(
        self,
        rule: str,
        severity: str,
        line: int,
        title: str,
        evidence: str,
        why: str,
        fix: str,
        medfit: str,
        strength: float,
        **numbers: Any,
    ) -> Finding:
        nums: dict[str, Any] = {
            **numbers,
            "source": "script",
            "file": str(self.script),
            "line": line,
            "why": why,
            "keras_fix" if self.framework == "keras" else "framework_fix": fix,
            "medfit": medfit,
            "dataset": self.known.key,
            "dataset_source": self.known.source,
        }
        return Finding(
            rule, severity, title, f"{self.script.name}:{line}: {evidence}", fix, nums, strength
        )


def log_found(log_texts: list[str]) -> list[tuple[int, int, str]]:
    return [t for text in log_texts for t in found_totals(text)]


def read_logs(paths: list[Path]) -> list[str]:
    """The text of the log files (for their `Found N images` lines); folders and large or binary
    files are skipped."""
    out = []
    for p in paths:
        try:
            if p.is_file() and p.stat().st_size <= MAX_LOG_BYTES:
                out.append(p.read_text(errors="replace"))
        except OSError:
            continue
    return out


def known_findings(
    facts: ScriptFacts,
    framework: str,
    script: Path,
    log_texts: list[str],
    answered: set[str],
) -> list[Finding]:
    """Findings for the recognised data set; `answered`: kinds the script reader already found
    (their findings say it better, from the script's own numbers)."""
    found = log_found(log_texts)
    match = recognise_run(facts, log_texts)
    if match is None:
        return []
    ctx = KnownCtx(facts, match, script, framework, found)
    out: list[Finding] = []
    for kind, rule in (
        ("class_imbalance", class_imbalance),
        ("leakage", leakage),
        ("metric_mismatch", metric_mismatch),
        ("small_val", small_val),
    ):
        if kind not in answered:
            out += rule(ctx)
    return out


# --- which images -------------------------------------------------------------------------------
def _pool(k: KnownSet, directory: str | None) -> str:
    """The published split a folder of the script holds (`chest_xray/train` -> train), else the
    training split when the set publishes one, else the whole set."""
    split = official_split_of(k, directory)
    if split:
        return split
    return "train" if "train" in k.counts else "all"


def training_split(ctx: KnownCtx) -> str:
    train = ctx.facts.data_dirs.get("train")
    return _pool(ctx.known, train)


def val_split(ctx: KnownCtx) -> tuple[str, str] | None:
    """The published split the validation images are drawn from, and how the script draws them;
    None when the script does not show it."""
    facts, k = ctx.facts, ctx.known
    split = next((s for s in facts.splits if s.role == "val"), None)
    if split is not None:
        pool = _pool(k, split.source_dir)
        return pool, f"{split.how} (line {split.line}) of {_split_text(pool)}"
    folders = next((s for s in facts.splits if s.role == "folders"), None)
    if folders is not None:
        pool = _pool(k, folders.source_dir)
        return pool, f"{folders.how} (line {folders.line}) of {_split_text(pool)}"
    val_dir = facts.data_dirs.get("val") if facts.val_source == "val" else None
    if facts.val_source == "test":
        val_dir = facts.data_dirs.get("test") or facts.data_dirs.get("val")
    published = official_split_of(k, val_dir)
    if published:
        return published, f"the published {published} folder {val_dir}"
    if k.official_split == "none" and not k.folders and len(k.counts) == 1:
        return "all", f"a part of {k.name.split(' (')[0]} (published without a split)"
    return None


def _split_text(split: str) -> str:
    return "the whole set" if split == "all" else f"its published {split} split"


def counts_usable(ctx: KnownCtx) -> bool:
    """The published class counts describe the script's data: same number of classes, and the
    log's `Found N images` totals (when the script does not re-split the images itself) are
    the set's own, not those of another set in a folder of the same name."""
    k = ctx.known
    if k.multilabel or ctx.match.classes_agree is False:
        return False
    if ctx.facts.splits:
        return True
    totals = k.totals()
    same_k = [n for n, classes, _ in ctx.found if classes == len(k.classes)]
    return not same_k or any(n in totals for n in same_k)


def aware(names: list[str]) -> list[str]:
    return [n for n in names if any(a in n.lower() for a in AWARE)]


# --- class_imbalance ----------------------------------------------------------------------------
def class_imbalance(ctx: KnownCtx) -> list[Finding]:
    facts, k = ctx.facts, ctx.known
    if not facts.fits or not counts_usable(ctx) or facts.balancing:
        return []
    if aware(facts.monitors):
        return []
    split = training_split(ctx)
    counts = k.split_counts(split)
    ratio = k.ratio(split)
    if counts is None or ratio is None or ratio < IMBALANCE_RATIO:
        return []
    fit = facts.fits[0]
    selects = (
        f"; selection on {', '.join(facts.monitors)}"
        if facts.monitors
        else "; nothing selects on a per-class metric"
    )
    return [
        ctx.finding(
            "class_imbalance",
            "medium",
            fit.line,
            f"the training data ({k.name.split(' (')[0]}) is imbalanced {ratio:.1f}:1 and nothing "
            "accounts for it",
            f"the data is {ctx.recognised()}; {_split_text(split)} holds {composition(counts)}, "
            f"{ratio:.1f}:1 ({k.source}); the fit at line {fit.line} has no class_weight, weighted "
            f"loss or balanced sampler{selects}",
            "the loss is dominated by the frequent class: the model learns to favour it and the "
            "rare class's recall stays low while accuracy looks fine",
            "fit(..., class_weight={k: total / (n_classes * count_k)}) or a weighted loss, and "
            "watch per-class recall",
            "`--balance auto` (the default: a class-balanced loss when classes are imbalanced)",
            1.5,
            counts=counts,
            ratio=round(ratio, 2),
            split=split,
        )
    ]


# --- metric_mismatch ----------------------------------------------------------------------------
def metric_mismatch(ctx: KnownCtx) -> list[Finding]:
    facts, k = ctx.facts, ctx.known
    metrics = facts.metrics
    if not facts.fits or not counts_usable(ctx) or not metrics:
        return []
    if any(norm(m) not in ACCURACY_ONLY for m in metrics) or aware(facts.monitors):
        return []
    drawn = val_split(ctx)
    if drawn is None:
        return []
    split, how = drawn
    counts = k.split_counts(split)
    reason = accuracy_misleads(counts) if counts else None
    if counts is None or reason is None:
        return []
    fit = facts.fits[0]
    return [
        ctx.finding(
            "metric_mismatch",
            "medium",
            fit.line,
            "accuracy is the only metric on an imbalanced medical set",
            f"metrics {metrics} only; validation is {how}, whose images are {composition(counts)} "
            f"({k.source}): {reason}; the data is {ctx.recognised()}",
            "the one number watched cannot tell a model that finds the rare class from one that "
            "ignores it, and whatever selects on it (checkpoints, early stopping, the epoch you "
            "report) chooses on the wrong target",
            "add AUC and per-class recall (keras.metrics.AUC(name='auc'), Recall(class_id=k)) and "
            "select on val_auc or balanced accuracy",
            "`--select-metric balanced_accuracy` (auto does it when classes are imbalanced)",
            1.2,
            metrics=metrics,
            counts=counts,
            split=split,
        )
    ]


# --- leakage ------------------------------------------------------------------------------------
def _leaky(ctx: KnownCtx, s: SplitFact) -> bool:
    k = ctx.known
    if s.grouped or s.role not in ("val", "folders", "named"):
        return False
    if official_split_of(k, s.source_dir) in ("val", "test"):
        return False  # it splits a held-out folder, not the training images
    return mixes_patients(s.order, k.names_group_patients)


def leakage(ctx: KnownCtx) -> list[Finding]:
    facts, k = ctx.facts, ctx.known
    if k.split_leaks:
        line = next((s.line for s in facts.splits), ctx.line())
        return [
            ctx.finding(
                "leakage",
                "high",
                line,
                f"{k.name.split(' (')[0]} shares images across any split",
                f"the data is {ctx.recognised()}; {k.split_leaks}",
                "near-copies of the same original image are on both sides, so validation and "
                "test scores measure memory, not generalisation",
                "split the original (pre-augmentation) images, by patient where known, and "
                "augment only the training part",
                "`medfit check DATA` flags near-duplicates across splits",
                2.5,
            )
        ]
    if not k.per_patient or facts.grouped_split:
        return []
    split = next((s for s in facts.splits if _leaky(ctx, s)), None)
    how = ""
    if split is not None:
        how = f"{split.how} at line {split.line} is {ORDER_TEXT[split.order]}" + (
            " into the parts it trains and validates on"
            if split.role == "val"
            else " into the train/val/test folders it then trains on"
            if split.role == "folders"
            else " into training and held-out images"
        )
    else:
        val_dir = facts.data_dirs.get("val")
        other = next((s for s in facts.splits if not s.grouped and s.order == "shuffled"), None)
        if (
            other is not None
            and val_dir
            and k.folders
            and official_split_of(k, val_dir) is None
            and official_split_of(k, other.source_dir) not in ("val", "test")
        ):
            split = other
            how = (
                f"validation reads {val_dir}, a folder the set does not publish, and the script "
                f"splits the images at random with {other.how} at line {other.line}"
            )
    if split is None:
        return []
    return [
        ctx.finding(
            "leakage",
            "medium",
            split.line,
            "images of one patient end up on both sides of the split",
            f"{how}; the data is {ctx.recognised()}, which has {k.per_patient} ({k.source})",
            "validation (and test) then score images of patients the model trained on: near-"
            "identical views or slices, so the reported accuracy is optimistic and early "
            "stopping/checkpoints choose on memory",
            "split by patient (GroupShuffleSplit / StratifiedGroupKFold on the patient id), or "
            "keep the set's published split",
            "`--group-pattern` (patient id from file names: the val split keeps each id on one "
            "side)",
            2.0,
            split_line=split.line,
        )
    ]


# --- small_val ----------------------------------------------------------------------------------
def small_val(ctx: KnownCtx) -> list[Finding]:
    facts, k = ctx.facts, ctx.known
    n = k.small_val()
    if n is None or not facts.fits or facts.val_source != "val":
        return []
    val_dir = facts.data_dirs.get("val")
    if official_split_of(k, val_dir) != "val":
        return []
    fit = facts.fits[0]
    selects = f"; {', '.join(facts.monitors)} select on it" if facts.monitors else ""
    return [
        ctx.finding(
            "small_val",
            "high" if facts.monitors else "medium",
            fit.line,
            f"validation on {n} images cannot tell epochs apart",
            f"validation reads {val_dir}, the published val folder of {k.name.split(' (')[0]}: "
            f"{composition(k.counts['val'])} ({k.source}){selects}",
            f"one image is {100 / n:.1f} points of val accuracy: the curve moves in steps of noise "
            "and whatever selects on it picks a lucky epoch",
            "validate on a real split (10-20% of train, split by patient), at least a few hundred "
            "images",
            "nothing to set: medfit makes a val split from train when the val folder is tiny "
            "(`--val-fraction`)",
            2.0,
            val_size=n,
        )
    ]
