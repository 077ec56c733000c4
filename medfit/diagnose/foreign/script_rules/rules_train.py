"""Rules on how the body is trained: bn_training_mode, finetune_lr_high, metric_mismatch,
class_imbalance."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script.gather import events
from medfit.diagnose.foreign.script.models import head_of
from medfit.diagnose.foreign.script.tables import (
    ACCURACY_METRICS,
    ADAM_HIGH,
    ADAM_HIGH_NO_HEAD,
    ADAPTIVE,
    BINARY_ACCURACY,
    BN_MIN_BATCH,
    IMBALANCE_RATIO,
    KERAS_STAGES,
    SGD_HIGH,
    SGD_HIGH_MOMENTUM_NO_HEAD,
    STRONG_IMBALANCE,
    TORCH_STAGES,
)
from medfit.diagnose.foreign.script.values import Backbone, FitRec, Optimizer, Use
from medfit.diagnose.foreign.script_rules.context import Ctx

TRAINER_OWNED = ("hf", "ultralytics", "fastai")
BN_FREE = ("vit",)  # LayerNorm, no BatchNorm


def _how_used(use: Use) -> str:
    return {
        "call": f"called at line {use.line} without training=False",
        "sequential": f"a layer of a Sequential model (line {use.line}), never called with "
        "training=False",
        "flattened": "its layers are the model's own (Model(base.input, ...)), so there is no "
        "call to pass training=False to",
        "input_tensor": "built on the model's input tensor, so its layers are the model's own",
        "direct": "trained as the model itself",
    }.get(use.how, "used without training=False")


def _stage_hint(base: Backbone, keras: bool) -> str:
    table = KERAS_STAGES if keras else TORCH_STAGES
    stage = table.get(base.family)
    if stage is None:
        return ""
    return f"; unfreeze by stage name for {base.name}: {stage}"


def bn_training_mode(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    seen: set[int] = set()
    for rec in ctx.fits:
        if rec.api in TRAINER_OWNED:
            continue
        for use in ctx.uses(rec):
            base = use.base
            st = ctx.state(rec, base)
            if st is not None and st[0] == "frozen" and _bn_flags_only(base, rec, use, st):
                # weights frozen by the container flag, BN layers flagged trainable: they still
                # run in training mode
                st = ("bn_only", *st[1:])
            if (
                id(base) in seen
                or not base.pretrained
                or st is None
                or st[0] not in ("all", "partial", "bn_only")
            ):
                continue
            if st[1] or base.family in BN_FREE or base.lib == "hub":
                continue
            keras = base.lib == "keras"
            if keras and use.training is False:
                continue
            batch = rec.batch
            if not keras and (batch is None or batch >= BN_MIN_BATCH):
                continue
            seen.add(id(base))
            out.append(_bn_finding(ctx, rec, use, st, keras, batch))
    return out


def _bn_flags_only(base: Backbone, rec: FitRec, use: Use, st: tuple) -> bool:
    """Keras: layers of a base nested in a model set trainable (a loop over base.layers) while
    the base's own `trainable` is False. The optimizer trains none of them (the container is
    frozen), but a BatchNormalization layer picks its mode from its own flag, so the flagged BN
    layers normalise with batch statistics and overwrite their moving means during fit."""
    if base.lib != "keras" or use.training is False or use.how not in ("call", "sequential"):
        return False
    before = [e for e in base.log if e[0] < rec.seq]
    return bool(before) and before[-1][2] in ("partial", "all") and bool(st[2])


def _bn_finding(
    ctx: Ctx, rec: FitRec, use: Use, st: tuple, keras: bool, batch: int | None
) -> Finding:
    base = use.base
    state, _, line, how, stage = st
    if state == "bn_only":
        made = (
            f"{stage or 'layers of ' + base.name} set trainable at {how} while {base.name}."
            "trainable is False: whether their weights train depends on the Keras version "
            "(Keras 2 keeps them frozen), but the BatchNormalization layers among them follow "
            "their own flag and run in training mode"
        )
    elif line:
        made = f"{'part of ' if state == 'partial' else ''}{base.name} made trainable at {how}"
        if stage:
            made += f" (`{stage}`)"
    else:
        made = f"{base.name} (line {base.line}) trainable by default, never frozen"
        line = base.line
    small = (
        f"; batch {batch} (< {BN_MIN_BATCH}) makes the batch statistics noise"
        if batch and batch < BN_MIN_BATCH
        else ""
    )
    if keras:
        fix = (
            f"inputs = keras.Input(shape); x = {base.names[0] if base.names else 'base'}(inputs, "
            "training=False); build the head on x (BatchNorm stays in inference mode even when "
            "unfrozen), or keep every BatchNormalization layer at trainable=False"
            + _stage_hint(base, True)
        )
    else:
        fix = (
            "keep the BatchNorm layers in eval mode while fine-tuning (for m in model.modules(): "
            "if isinstance(m, nn.BatchNorm2d): m.eval() after model.train()), or a batch of at "
            f"least {BN_MIN_BATCH}" + _stage_hint(base, False)
        )
    return ctx.finding(
        "bn_training_mode",
        "high",
        line,
        "BatchNorm layers of the pretrained base run in training mode",
        f"{made}; {_how_used(use) if keras else 'BatchNorm layers not frozen'}, during the fit at "
        f"line {rec.line}{small}",
        "each trainable BatchNormalization normalises with the current batch's statistics and "
        "overwrites the ImageNet running means, so train and val see different networks (the val "
        "curve swings or collapses when fine-tuning starts)",
        fix,
        "`--bn auto` (the default: BN statistics frozen below batch 16, recalibrated on your "
        "images first)",
        3.0 + (0.5 if small else 0.0),
        fit_line=rec.line,
        batch=batch,
        trainable=state,
    )


# --- learning rate --------------------------------------------------------------------------------
def _too_high(opt: Optimizer, lr: float, head_stage: bool) -> bool:
    if opt.name == "sgd":
        momentum = opt.momentum or 0.0
        return lr >= SGD_HIGH or (
            lr >= SGD_HIGH_MOMENTUM_NO_HEAD and momentum > 0 and not head_stage
        )
    if opt.name in ADAPTIVE:
        return lr >= (ADAM_HIGH if head_stage else ADAM_HIGH_NO_HEAD)
    return False


def finetune_lr_high(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    asked = False
    for rec in ctx.fits:
        if rec.api == "ultralytics":
            out += _ultralytics_lr(ctx, rec)
            continue
        if rec.api == "fastai" and rec.kwargs.get("method") == "fine_tune":
            continue
        for use in ctx.uses(rec):
            base = use.base
            st = ctx.state(rec, base)
            if not base.pretrained or st is None or st[0] == "frozen":
                continue
            opt = rec.optimizer
            earlier = [r for r in ctx.fits if r.seq < rec.seq]
            head_stage = any((r.states.get(id(base)) or ("",))[0] == "frozen" for r in earlier)
            if opt is None or opt.lr is None:
                if (
                    not asked
                    and st[0] in ("all", "partial")
                    and opt is not None
                    and opt.lr_src.startswith("unresolved")
                ):
                    asked = True
                    out.append(
                        ctx.question(
                            "finetune_lr_high",
                            opt.lr_line or rec.line,
                            f"what learning rate does the fit at line {rec.line} use on the "
                            f"trainable {base.name}?",
                            f"{opt.name} learning rate {opt.lr_src[len('unresolved: ') :]}; its "
                            "value is not in the script",
                            f"look up the value: with {opt.name} on an unfrozen pretrained body, "
                            f"{ADAM_HIGH_NO_HEAD:g} or more (Adam) / "
                            f"{SGD_HIGH_MOMENTUM_NO_HEAD:g} with "
                            "momentum (SGD) wrecks the features unless a head-only stage came "
                            "first",
                        )
                    )
                continue
            if st[0] not in ("all", "partial") or not _too_high(opt, opt.lr, head_stage):
                continue
            out.append(_lr_finding(ctx, rec, base, opt, st[0], head_stage))
            break
    return out[:2]


LR_FIX = {
    "keras": "train the head with the base frozen first (Adam 1e-3, a few epochs), then unfreeze "
    "and recompile with Adam(learning_rate=1e-5)",
    "torch": "a head-only stage first, then the body at 1e-5..1e-4 (AdamW) or 1e-3 (SGD with "
    "momentum), or a lower LR for the body's parameter group",
    "hf": "TrainingArguments(learning_rate=2e-5..5e-5) with warmup_ratio=0.1",
    "ultralytics": "optimizer='AdamW' with lr0=0.001 or lower, or optimizer='auto' for small sets",
    "fastai": "learn.fine_tune(epochs) (a frozen epoch, then discriminative LRs), or "
    "fit_one_cycle(n, lr_max=slice(1e-6, 1e-4)) after unfreeze()",
}


def _lr_finding(
    ctx: Ctx, rec: FitRec, base: Backbone, opt: Optimizer, state: str, head_stage: bool
) -> Finding:
    lr = opt.lr or 0.0
    mom = f", momentum {opt.momentum:g}" if opt.momentum else ""
    src = "" if opt.lr_src == "given" else f" ({opt.lr_src})"
    stage = (
        "after a head-only stage"
        if head_stage
        else "with a new head trained jointly from the first step (no head-only stage first)"
    )
    fix = LR_FIX.get(rec.api, LR_FIX["torch"])
    return ctx.finding(
        "finetune_lr_high",
        "medium" if head_stage else "high",
        opt.lr_line or opt.line,
        f"{opt.name} at {lr:g} on the {'partly ' if state == 'partial' else ''}unfrozen "
        f"{base.name}",
        f"{opt.name} learning rate {lr:g}{src}{mom} for the fit at line {rec.line}, with the "
        f"pretrained body {'partly ' if state == 'partial' else ''}trainable, {stage}",
        "updates this large rewrite the pretrained filters in the first epochs (the features the "
        "transfer was for); a decayed LR later only fine-tunes the damage",
        fix,
        "the default recipe: `--head-epochs 1`, then AdamW with warmup and cosine decay "
        "(`--lr auto` runs a range test)",
        2.5 if not head_stage else 1.5,
        optimizer=opt.name,
        lr=lr,
        momentum=opt.momentum,
        head_stage=head_stage,
        fit_line=rec.line,
    )


def _ultralytics_lr(ctx: Ctx, rec: FitRec) -> list[Finding]:
    kw = rec.kwargs
    opt = str(kw.get("optimizer", "auto"))
    lines = kw.get("__lines__", {})
    if opt.lower() == "auto":
        lr0 = kw.get("lr0")
        return [
            ctx.question(
                "finetune_lr_high",
                lines.get("optimizer", rec.line),
                "which optimizer and learning rate did Ultralytics pick (optimizer=auto)?",
                f"train() at line {rec.line} leaves optimizer=auto"
                + (f"; lr0={lr0} is then ignored" if lr0 is not None else "")
                + ": the LR depends on the iteration count (AdamW at a small LR below 10k "
                "iterations, SGD 0.01 above)",
                "the run's log prints `optimizer: ... lr=...` at the start; SGD 0.01 with "
                "momentum on "
                "the whole pretrained network from step one is aggressive for small medical sets",
            )
        ]
    lr = kw.get("lr0", 0.01)
    if not isinstance(lr, (int, float)):
        return []
    o = Optimizer(
        opt.lower(),
        "torch",
        rec.line,
        float(lr),
        "given" if "lr0" in kw else "Ultralytics' default lr0",
        lines.get("lr0", rec.line),
        momentum=float(kw.get("momentum", 0.937)),
    )
    base = rec.model
    if not isinstance(base, Backbone) or not base.pretrained or not _too_high(o, float(lr), False):
        return []
    return [_lr_finding(ctx, rec, base, o, "all", False)]


# --- metrics and imbalance ----------------------------------------------------------------------
# Keys that name splits or settings, not classes: {"train": 5216, "val": 16} is not imbalance.
NOT_CLASSES = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}
NOT_CLASSES |= {"height", "width", "batch", "batch_size", "epochs", "total", "all"}
COUNT_NAME = re.compile(r"count|num|n_|freq|dist|size|samples|images", re.I)


def visible_counts(ctx: Ctx) -> tuple[int, dict[str, int]] | None:
    """Class counts written in the script (a dict of class name -> count), not in comments."""
    if not ctx.memo.get("counts"):
        ctx.memo["counts"] = [_counts(ctx)]
    return ctx.memo["counts"][0]


def _counts(ctx: Ctx) -> tuple[int, dict[str, int]] | None:
    body = ast.Module(body=ctx.it.src.body, type_ignores=[])
    for node in ast.walk(body):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Dict):
            continue
        names = " ".join(t.id for t in node.targets if isinstance(t, ast.Name))
        if not COUNT_NAME.search(names):
            continue
        keys = [
            k.value
            for k in node.value.keys
            if isinstance(k, ast.Constant)
            and isinstance(k.value, str)
            and k.value.lower() not in NOT_CLASSES
        ]
        vals = [
            v.value
            for v in node.value.values
            if isinstance(v, ast.Constant) and type(v.value) is int
        ]
        classes = ctx.facts.classes
        if classes and len(keys) != classes:
            continue
        if len(keys) == len(vals) == len(node.value.keys) >= 2 and min(vals) >= 10:
            return node.lineno, dict(zip(keys, vals, strict=True))
    return None


def balanced(ctx: Ctx) -> bool:
    w = ctx.it.world
    return (
        any(r.class_weight for r in w.fits)
        or any(weighted for _, _, weighted in w.losses)
        or any(c.weighted_loss for c in w.compiles)
        or bool(
            events(ctx.it, "sampler")
            or events(ctx.it, "class_weight")
            or events(ctx.it, "oversample")
        )
        or any(d.sampler == "weighted" for d in w.data)
    )


SELECTING = ("ModelCheckpoint", "EarlyStopping")
ONE_SIDED = re.compile(r"(^|_)(recall|precision|sensitivity|specificity|tpr|ppv)(_\d+)?$", re.I)


def one_sided_selection(ctx: Ctx) -> list[Finding]:
    """Checkpointing/early stopping that select on recall (or precision) alone: a model that
    answers the positive class for every image maximises it."""
    for rec in ctx.fits:
        selecting = [cb for cb in rec.callbacks if cb.kind in SELECTING and cb.monitor]
        if not selecting or not all(ONE_SIDED.search(cb.monitor or "") for cb in selecting):
            continue
        cb = selecting[0]
        shown = ", ".join(f"{c.kind}(monitor={c.monitor!r}) at line {c.line}" for c in selecting)
        return [
            ctx.finding(
                "metric_mismatch",
                "medium",
                cb.line,
                f"the model is selected on {cb.monitor} alone",
                f"{shown} choose the epoch/weights of the fit at line {rec.line} on "
                f"{cb.monitor} only",
                "recall alone is maximised by calling every image positive (precision alone by "
                "calling almost none): the checkpoint kept is the one that trades the other "
                "class away",
                "monitor a metric that weighs both sides: val_auc, an F1/F-beta, or balanced "
                "accuracy (mode='max')",
                "`--select-metric balanced_accuracy`",
                1.5,
                monitors=[c.monitor for c in selecting],
            )
        ]
    return []


def metric_mismatch(ctx: Ctx) -> list[Finding]:
    from medfit.diagnose.foreign.script.gather import compiled_for

    for rec in ctx.fits:
        comp = compiled_for(ctx.it, rec) if rec.api == "keras" else None
        if rec.api != "keras" or comp is None or comp.metrics is None:
            continue
        metrics = comp.metrics
        acc_only = bool(metrics) and all(m in ACCURACY_METRICS for m in metrics)
        head = head_of(ctx.it, rec.model)
        units = head[0] if head else None
        binary = [m for m in metrics if m in BINARY_ACCURACY]
        if "accuracy" in metrics and comp.loss and "binary" in comp.loss.lower():
            binary.append("'accuracy' with binary_crossentropy (Keras then means binary_accuracy)")
        if binary and isinstance(units, int) and units > 2:
            return [
                ctx.finding(
                    "metric_mismatch",
                    "high",
                    comp.line,
                    "binary accuracy on a multi-class softmax head",
                    f"compile(metrics={metrics}) at line {comp.line}: {binary[0]}, while the head "
                    "has "
                    f"{units} outputs (line {head[2] if head else '?'})",
                    "binary accuracy scores each of the one-hot outputs separately, so it reads "
                    f"{(units - 1) / units:.0%} for a model that always predicts nothing",
                    "metrics=['categorical_accuracy'] (or 'accuracy' with "
                    "categorical_crossentropy)",
                    "nothing to set: medfit reports accuracy, balanced accuracy and per-class "
                    "recall",
                    2.5,
                    metrics=metrics,
                )
            ]
        if rec.class_weight and acc_only:
            return [
                ctx.finding(
                    "metric_mismatch",
                    "medium",
                    rec.line,
                    "class weights with accuracy as the only metric",
                    f"fit(class_weight=...) at line {rec.line} while compile(metrics={metrics}) "
                    "at line "
                    f"{comp.line} reports accuracy only (checkpoints/early stopping can watch "
                    "only it or the loss)",
                    "class weights trade accuracy on the frequent classes for recall on the rare "
                    "ones, so "
                    "the one number shown punishes what they are for; the best epoch is chosen on "
                    "the wrong target",
                    "add keras.metrics.AUC(name='auc') and per-class Recall(class_id=k); monitor "
                    "'val_auc'",
                    "`--select-metric balanced_accuracy` (auto does it when classes are "
                    "imbalanced)",
                    1.2,
                    metrics=metrics,
                )
            ]
        counts = visible_counts(ctx)
        if acc_only and counts and not balanced(ctx):
            line, c = counts
            ratio = max(c.values()) / min(c.values())
            if ratio >= STRONG_IMBALANCE:
                return [
                    ctx.finding(
                        "metric_mismatch",
                        "medium",
                        comp.line,
                        "accuracy alone on a strongly imbalanced problem",
                        f"compile(metrics={metrics}) at line {comp.line}; the classes are {c} "
                        f"(line {line}, "
                        f"{ratio:.1f}:1)",
                        "predicting the majority class alone scores "
                        f"{max(c.values()) / sum(c.values()):.0%}",
                        "add per-class recall / AUC and monitor it",
                        "`--select-metric balanced_accuracy`",
                        1.2,
                        counts=c,
                    )
                ]
    return one_sided_selection(ctx)


def class_imbalance(ctx: Ctx) -> list[Finding]:
    counts = visible_counts(ctx)
    if counts is None or balanced(ctx) or not ctx.fits:
        return []
    line, c = counts
    ratio = max(c.values()) / min(c.values())
    if ratio < IMBALANCE_RATIO:
        return []
    return [
        ctx.finding(
            "class_imbalance",
            "medium",
            line,
            f"classes are imbalanced {ratio:.1f}:1 and nothing accounts for it",
            f"{c} (line {line}); no class_weight, weighted loss or balanced sampler anywhere",
            "the loss is dominated by the frequent class: the model learns to favour it and the "
            "rare "
            "class's recall stays low while accuracy looks fine",
            "fit(..., class_weight={k: total / (n_classes * count_k)}) or a weighted loss, and "
            "watch "
            "per-class recall",
            "`--balance auto` (the default: a class-balanced loss when classes are imbalanced)",
            1.5,
            counts=c,
            ratio=round(ratio, 2),
        )
    ]


RULES: tuple[Callable[[Ctx], list[Finding]], ...] = (
    bn_training_mode,
    finetune_lr_high,
    metric_mismatch,
    class_imbalance,
)
