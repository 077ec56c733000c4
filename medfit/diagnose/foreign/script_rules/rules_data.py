"""Rules on which images are where: small_val, val_is_test, leakage, input_bound."""

from __future__ import annotations

from collections.abc import Callable

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.datasets import mixes_patients, recognise
from medfit.diagnose.foreign.script.fit_lib import val_of
from medfit.diagnose.foreign.script.gather import (
    TEST_WORDS,
    TRAIN_WORDS,
    events,
    known_small_val,
    split_side,
    val_size,
    val_source,
    words_of,
)
from medfit.diagnose.foreign.script.tables import SMALL_VAL
from medfit.diagnose.foreign.script.values import Data, FitRec, Pix, SplitRec, Val
from medfit.diagnose.foreign.script_rules.context import Ctx


def _first_val_fit(ctx: Ctx) -> FitRec | None:
    return next((r for r in ctx.fits if r.val is not None or r.val_split), None)


def small_val(ctx: Ctx) -> list[Finding]:
    rec = _first_val_fit(ctx)
    if rec is None:
        return []
    size = val_size(ctx.it, rec)
    v = val_of(rec.val)
    line, how = rec.line, ""
    if isinstance(v, Data):
        line = v.line
        if v.take is not None:
            how = f"the validation set is take()n down to {v.take} images (line {v.line})"
        elif v.directory and (known := known_small_val(v.directory)):
            how = (
                f"validation reads {v.directory} (line {v.line}), the published val folder of "
                f"{known[0]}: {known[1]} images"
            )
        elif rec.val_steps is not None and v.batch:
            how = f"validation_steps={rec.val_steps} x batch {v.batch} at line {rec.line}"
    elif isinstance(v, Pix) and v.rows is not None:
        how = f"validation_data holds {v.rows} samples (a slice at line {rec.line})"
    if size is None and isinstance(rec.x, Pix) and rec.x.rows and rec.val_split:
        size = int(rec.x.rows * rec.val_split)
        how = f"validation_split={rec.val_split:g} of {rec.x.rows} arrays (line {rec.line})"
    if size is None or size >= SMALL_VAL:
        return []
    monitors = [cb for cb in rec.callbacks if cb.monitor and cb.monitor.startswith("val")]
    watched = (
        f"; {', '.join(f'{cb.kind}(monitor={cb.monitor!r})' for cb in monitors)} choose on it"
        if monitors
        else ""
    )
    return [
        ctx.finding(
            "small_val",
            "high" if monitors else "medium",
            line,
            f"validation on {size} images cannot tell epochs apart",
            f"{how}{watched}",
            f"one image is {100 / size:.1f} points of val accuracy: the curve moves in steps of "
            "noise "
            "and whatever selects on it (early stopping, checkpoints) picks a lucky epoch",
            "validate on a real split (10-20% of train, or the larger test folder split in two), "
            "at least a few hundred images",
            "nothing to set: medfit makes a val split from train when the val folder is tiny "
            "(`--val-fraction`)",
            2.0,
            val_size=size,
        )
    ]


def _same_set(a: Val | None, b: Val | None, ctx: Ctx) -> bool:
    if a is None or b is None:
        return False
    if a is b:
        return True
    if isinstance(a, Data) and isinstance(b, Data) and a.directory and a.directory == b.directory:
        return True
    names_a, names_b = set(a.names), set(b.names)
    return bool(names_a & names_b)


def val_is_test(ctx: Ctx) -> list[Finding]:
    rec = _first_val_fit(ctx)
    if rec is None or rec.val is None:
        return []
    if val_source(ctx.it, rec) != "test":
        return []
    v = val_of(rec.val)
    text = ctx.it.src.segment(rec.val_node) if rec.val_node is not None else "validation_data"
    monitors = [cb for cb in rec.callbacks if cb.monitor and cb.monitor.startswith("val")]
    scored = [
        e
        for e in (*events(ctx.it, "evaluate"), *events(ctx.it, "predict"))
        if e.seq > rec.seq and isinstance(val_of(e.data.get("x")), (Data, Pix))
    ]
    evals = [e for e in scored if _same_set(val_of(e.data.get("x")), v, ctx)]
    others = [e for e in scored if e not in evals]
    # with no other held-out images, whatever the script reports on unseen data is this curve,
    # which was watched (and acted on) epoch by epoch
    alone = not monitors and not evals and not others
    if not monitors and not evals and not alone:
        return []
    parts = [f"validation_data={text} at line {rec.line} is the test set ({words_of(v)[:60]})"]
    if monitors:
        parts.append(
            ", ".join(f"{cb.kind} (line {cb.line}) monitors {cb.monitor!r}" for cb in monitors[:2])
        )
    if evals:
        parts.append(
            f"evaluate() at line {evals[0].line} then reports the same images as the test result"
        )
    if alone:
        parts.append(
            "the script evaluates no other held-out images: the test numbers are the validation "
            "curve it watched while training"
        )
    return [
        ctx.finding(
            "val_is_test",
            "high" if monitors and evals else "medium",
            rec.line,
            "the test set is used as the validation set",
            "; ".join(parts),
            "whatever is chosen on the validation numbers (the epoch, early stopping, the "
            "checkpoint, the hyperparameters you tried) is fitted to those images, so the reported "
            "test accuracy is optimistic",
            "split a validation set off the training data and touch the test set once, at the end",
            "nothing to set: medfit selects on val and reports test separately (`medfit eval`)",
            2.0,
            monitors=[cb.monitor for cb in monitors],
            evaluate_line=evals[0].line if evals else None,
        )
    ]


def _split_tags(v: Val) -> list[str]:
    return sorted(t for t in v.taint if t.startswith(("oversampled@", "augmented@")))


def _dirs(v: Val) -> set[str]:
    return {t[4:] for t in v.taint if t.startswith("dir:")}


def leakage(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    for rec in ctx.it.world.splits:
        tags = sorted({t for v in rec.inputs for t in _split_tags(v)})
        if tags:
            what = ", ".join(
                f"{'oversampling' if t.startswith('oversampled') else 'augmented copies'} at line "
                f"{t.split('@')[1]}"
                for t in tags
            )
            out.append(
                ctx.finding(
                    "leakage",
                    "high",
                    rec.line,
                    "the data is split after oversampling/augmentation",
                    f"train_test_split at line {rec.line} splits data made by {what}",
                    "copies and near-copies of the same image land on both sides: validation "
                    "scores "
                    "images the model has trained on",
                    "split first, then oversample/augment the training part only",
                    "nothing to set: medfit splits before it balances or augments",
                    3.0,
                    split_line=rec.line,
                )
            )
            continue
        dirs = {d for v in rec.inputs for d in _dirs(v)}
        train_dirs = sorted(
            d for d in dirs if TRAIN_WORDS.search(d.replace("\\", "/").rsplit("/", 1)[-1])
        )
        test_dirs = sorted(
            d for d in dirs if TEST_WORDS.search(d.replace("\\", "/").rsplit("/", 1)[-1])
        )
        if train_dirs and test_dirs and not rec.grouped and not events(ctx.it, "grouped_split"):
            out.append(
                ctx.finding(
                    "leakage",
                    "medium",
                    rec.line,
                    "the train and test folders are pooled and re-split image by image",
                    f"train_test_split at line {rec.line} splits images read from {train_dirs[0]} "
                    f"and {test_dirs[0]}",
                    "the published split kept patients apart; an image-level re-split puts slices "
                    "or "
                    "views of the same patient on both sides, so validation/test scores are "
                    "optimistic",
                    "keep the published train/test split, and split validation off train by "
                    "patient "
                    "(GroupShuffleSplit on a patient id)",
                    "`--group-pattern` (patient id from file names: the val split keeps each id "
                    "on one side)",
                    2.0,
                    split_line=rec.line,
                )
            )
    if not out:
        out += _val_from_train(ctx)
    return out[:2]


def _val_from_train(ctx: Ctx) -> list[Finding]:
    rec = _first_val_fit(ctx)
    if rec is None or events(ctx.it, "grouped_split"):
        return []
    v = val_of(rec.val)
    how = ""
    folder = ""
    order = "shuffled"
    if rec.val_split:
        how = f"validation_split={rec.val_split:g} at line {rec.line}"
        folder = rec.x.directory if isinstance(rec.x, Data) and rec.x.directory else ""
        order = "shuffled" if rec.api == "fastai" else "array_tail"
    elif isinstance(v, Data) and v.subset == "validation":
        how = f"subset='validation' of {v.directory or 'the training data'} (line {v.line})"
        folder = v.directory or ""
        if v.kind == "flow":
            order = "table_order" if v.sources else "sorted_names"
    elif v is not None and split_side(v) == "test" and val_source(ctx.it, rec) == "train_split":
        split = _split_of(ctx, v)
        how = f"a random split (line {split.line if split else rec.line}) of the training images"
        folder = next(iter(sorted(_dirs(v))), "")
    if not how:
        return []
    match = recognise([folder, *_all_dirs(ctx)])
    known = None
    if (
        match is not None
        and match.known.per_patient
        and mixes_patients(order, match.known.names_group_patients)
    ):
        known = f"{match.known.name} has several images per patient: {match.known.per_patient}"
    if known:
        return [
            ctx.finding(
                "leakage",
                "medium",
                rec.line,
                "validation is drawn image by image from a data set with several images per "
                "patient",
                f"{how}; {known}",
                "images of the same patient land in train and validation, so val accuracy is "
                "optimistic "
                "and early stopping/checkpoints choose on near-copies of training images",
                "split by patient (GroupShuffleSplit with the patient id from the file names)",
                "`--group-pattern` (patient id from file names: the val split keeps each id on "
                "one side)",
                1.5,
            )
        ]
    return [
        ctx.question(
            "leakage",
            rec.line,
            "does the data hold several images per patient? then this validation split leaks",
            f"{how}: a random image-level split; the script does not show patient ids",
            "check the file names or metadata for patient ids; if several images share one, split "
            "by "
            "patient (GroupShuffleSplit) or run `medfit check DATA` (it flags near-duplicates "
            "across splits)",
        )
    ]


def _split_of(ctx: Ctx, v: Val) -> SplitRec | None:
    seqs = {int(t.split(":")[1]) for t in v.taint if t.startswith("split:")}
    return next((s for s in ctx.it.world.splits if s.seq in seqs), None)


def _all_dirs(ctx: Ctx) -> list[str]:
    return [d.directory for d in ctx.it.world.data if d.directory] + [
        t[4:] for d in ctx.it.world.data for t in d.taint if t.startswith("dir:")
    ]


def input_bound(ctx: Ctx) -> list[Finding]:
    if ctx.facts.device != "gpu" or not ctx.fits:
        return []
    rec = ctx.fits[0]
    x = rec.x
    if not isinstance(x, Data) or not x.decodes or x.cached:
        return []
    if x.kind == "loader" and (x.workers or 0) > 0:
        return []
    gpu = next((f"line {n}: {t}" for n, k, t in ctx.it.world.device if k == "gpu"), "a GPU")
    what = {
        "flow": "ImageDataGenerator decodes, resizes and augments every image in Python, one "
        "batch at a time",
        "tfds": "the tf.data pipeline decodes every image each epoch with no cache()",
        "loader": "the DataLoader decodes every image in the main process (num_workers=0)",
        "torchds": "the data set decodes every image per step",
    }.get(x.kind, "images are decoded per step")
    # the pipeline is a suspect, not evidence (KEY_FORMAT.md input_bound: "with evidence, not a
    # guess"): the log's step times decide, so the script asks and a log finding answers
    return [
        ctx.question(
            "input_bound",
            x.line,
            "does the GPU wait for this per-step Python input pipeline?",
            f"{what} (line {x.line}) for a GPU run ({gpu}); the script cannot show how long a "
            "step waits for data",
            "compare the step time with the backbone frozen and trainable (or with a cached "
            "input): if they barely differ, the pipeline sets the pace; then "
            "image_dataset_from_directory(...).cache().prefetch(tf.data.AUTOTUNE) with "
            "augmentation layers in the model (Keras), or DataLoader(num_workers=4+, "
            "pin_memory=True) (PyTorch)",
            pipeline=x.kind,
        )
    ]


RULES: tuple[Callable[[Ctx], list[Finding]], ...] = (small_val, val_is_test, leakage, input_bound)
