"""Training calls and what they train with: compile/fit/evaluate (Keras), optimizers (Keras and
PyTorch), learning-rate changes, callbacks, metrics, losses, class weights, `trainable` and
`requires_grad` assignments."""

from __future__ import annotations

import ast
from typing import Any

from medfit.diagnose.foreign.script.models import (
    params_of,
    record_fit,
    set_model_trainable,
    set_trainable,
    uses_of,
)
from medfit.diagnose.foreign.script.registry import ATTRS, SETATTRS, Call, func, method
from medfit.diagnose.foreign.script.tables import KERAS_DEFAULT_LR, TORCH_DEFAULT_LR
from medfit.diagnose.foreign.script.values import (
    Backbone,
    Callback,
    Compile,
    Const,
    Data,
    Event,
    FitRec,
    Generator,
    Inst,
    Map,
    Model,
    Obj,
    Optimizer,
    ParamSet,
    Pix,
    Ref,
    Seq,
    Unknown,
    Val,
    const,
    number,
)

OPTIMIZERS = {
    "Adam": "adam", "AdamW": "adamw", "SGD": "sgd", "RMSprop": "rmsprop", "Nadam": "nadam",
    "NAdam": "nadam", "Adamax": "adamax", "Adagrad": "adagrad", "Adadelta": "adadelta",
    "Lion": "lion", "RAdam": "radam", "Ftrl": "ftrl", "LAMB": "lamb", "Lamb": "lamb",
}  # fmt: skip
SCHEDULES = {"ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay", "InverseTimeDecay"}
SCHEDULES |= {"PolynomialDecay", "CosineDecayRestarts"}
CALLBACKS = {"EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "LearningRateScheduler"}
CALLBACKS |= {"CSVLogger", "TensorBoard"}
METRICS = {"AUC", "Precision", "Recall", "F1Score", "FBetaScore", "BinaryAccuracy"}
METRICS |= {"CategoricalAccuracy", "SparseCategoricalAccuracy", "Accuracy", "AUROC"}
METRICS |= {"TopKCategoricalAccuracy", "MeanIoU", "BalancedAccuracy", "MulticlassAccuracy"}
LOSSES = {"CategoricalCrossentropy", "BinaryCrossentropy", "SparseCategoricalCrossentropy"}
LOSSES |= {"BinaryFocalCrossentropy", "CategoricalFocalCrossentropy", "CrossEntropyLoss"}
LOSSES |= {"BCEWithLogitsLoss", "BCELoss", "NLLLoss", "FocalLoss", "SigmoidFocalCrossEntropy"}


def _lr_of(c: Call, v: Val | None) -> tuple[float | None, str]:
    if isinstance(v, Obj) and v.kind == "schedule":
        return v.attrs.get("lr"), "the schedule's initial_learning_rate"
    lr = number(v)
    text = const(v, str)
    if lr is None and text is not None:
        try:  # YAML reads `1e-4` (no dot) as a string; the script's float() would convert it
            lr = float(text)
        except ValueError:
            return None, ""
    if lr is not None and 0 < lr < 10:
        src = v.src if isinstance(v, Const) else ""
        return lr, src or "given"
    return None, ""


@func(*OPTIMIZERS)
def _optimizer(c: Call) -> Val | None:
    torch_like = (
        "torch" in c.dotted
        or c.dotted.startswith("optim.")
        or (isinstance(c.arg(0), (ParamSet, Seq)) and not isinstance(c.arg(0), Const))
    )
    if "keras" in c.dotted or "tensorflow" in c.dotted:
        torch_like = False
    name = OPTIMIZERS[c.name]
    lib = "torch" if torch_like else "keras"
    opt = Optimizer(name, lib, c.line)
    lr_node = (
        c.arg(1, "lr")
        if torch_like
        else c.kwargs.get("learning_rate", c.kwargs.get("lr", c.arg(0)))
    )
    if torch_like:
        params = c.arg(0, "params")
        opt.params = params
        if isinstance(params, Seq):
            for g in params.items:
                if isinstance(g, Map):
                    lr_g, _ = _lr_of(c, g.items.get("lr"))
                    opt.groups.append((g.items.get("params", Unknown("params")), lr_g))
    opt.lr, opt.lr_src = _lr_of(c, lr_node)
    opt.lr_line = c.line
    if lr_node is None and not c.open_:
        defaults = TORCH_DEFAULT_LR if torch_like else KERAS_DEFAULT_LR
        if name in defaults:
            opt.lr, opt.lr_src = (
                defaults[name],
                f"the {'PyTorch' if torch_like else 'Keras'} default of {c.name}()",
            )
    elif opt.lr is None:
        why = lr_node.why if isinstance(lr_node, Unknown) and lr_node.why else "not resolvable"
        shown = c.argtext(1 if torch_like else 0, "lr" if torch_like else "learning_rate")
        opt.lr_src = f"unresolved: {shown} = {why}, {c.it.where(c.line)}"
    body = [lr for p, lr in opt.groups if not (isinstance(p, ParamSet) and p.scope == "head")]
    if body and body[0] is not None:
        opt.lr, opt.lr_src = body[0], "the body's parameter group"
    opt.momentum = number(c.kwargs.get("momentum"))
    if name == "rmsprop" and opt.momentum is None:
        opt.momentum = 0.0
    return opt


@func(*SCHEDULES)
def _schedule(c: Call) -> Val:
    return Obj("schedule", c.line, {"lr": number(c.arg(0, "initial_learning_rate"))})


@func(*CALLBACKS)
def _callback(c: Call) -> Val:
    monitor = c.kwargs.get("monitor")
    default = (
        None if c.name in ("LearningRateScheduler", "CSVLogger", "TensorBoard") else "val_loss"
    )
    cb = Callback(c.name, c.line, const(monitor, str) if monitor is not None else default)
    if c.name == "ModelCheckpoint":
        cb.path = const(c.arg(0, "filepath"), str)
    c.it.world.callbacks.append(cb)
    return cb


def _saved_key(path: str) -> tuple[int, str]:
    # the interpreter's cache is keyed (id(value), name); no value has id 0
    return (0, "saved:" + path.replace("\\", "/").rsplit("/", 1)[-1])


@method("save", "save_weights")
def _save(c: Call) -> Val | None:
    """`model.save("m.h5")`: a later `load_model("m.h5")` is this model again."""
    path = const(c.arg(0, "filepath"), str)
    if isinstance(c.recv, (Model, Inst)) and path:
        c.it.cache[_saved_key(path)] = c.recv
    return None


@func("load_model")
def _load_model(c: Call) -> Val | None:
    """A model this script saved (model.save or a ModelCheckpoint of its fit) comes back as that
    model, with its layers' trainable flags as they were."""
    path = const(c.arg(0, "filepath"), str)
    if not path:
        return None
    saved = c.it.cache.get(_saved_key(path))
    return saved if isinstance(saved, (Model, Inst)) else None


@func(*METRICS)
def _metric(c: Call) -> Val:
    return Obj("metric", c.line, {"name": c.name})


@func(*LOSSES)
def _loss(c: Call) -> Val:
    weighted = "Focal" in c.name or any(
        k in c.kwargs and not (isinstance(c.kwargs[k], Const) and c.kwargs[k].value is None)  # type: ignore[attr-defined]
        for k in ("weight", "pos_weight", "class_weight", "alpha")
    )
    c.it.world.losses.append((c.line, c.name, weighted))
    return Obj("loss", c.line, {"name": c.name, "weighted": weighted})


def _metric_names(v: Val | None) -> list[str] | None:
    if v is None:
        return []
    items = v.items if isinstance(v, Seq) else [v]
    if isinstance(v, Map):
        items = list(v.items.values())
    out = []
    for i in items:
        if isinstance(i, Const) and isinstance(i.value, str):
            out.append(i.value)
        elif isinstance(i, Obj) and i.kind == "metric":
            out.append(str(i.attrs["name"]))
        elif isinstance(i, Ref):
            out.append(i.last)
        else:
            return None
    return out


@method("compile")
def _compile(c: Call) -> Val | None:
    model = c.recv
    opt_v = c.arg(0, "optimizer")
    opt = opt_v if isinstance(opt_v, Optimizer) else None
    name = const(opt_v, str)
    if name is not None:
        key = name.lower()
        opt = Optimizer(key, "keras", c.line)
        if key in KERAS_DEFAULT_LR:
            opt.lr, opt.lr_src, opt.lr_line = (
                KERAS_DEFAULT_LR[key],
                f"the Keras default for compile(optimizer={name!r})",
                c.line,
            )
    loss_v = c.arg(1, "loss")
    loss = const(loss_v, str) or (
        str(loss_v.attrs["name"]) if isinstance(loss_v, Obj) and loss_v.kind == "loss" else None
    )
    if isinstance(loss_v, Ref):
        loss = loss_v.last
    weighted = isinstance(loss_v, Obj) and bool(loss_v.attrs.get("weighted"))
    if loss and ("focal" in loss.lower() or "weight" in loss.lower()):
        weighted = True
    comp = Compile(c.line, c.it.seq(), opt, loss, _metric_names(c.arg(2, "metrics")), weighted)
    c.it.world.compiles.append(comp)
    if isinstance(model, Model):
        model.compiled, model.snapshot = comp, None
    elif isinstance(model, (Backbone, Inst)):
        holder = _holder(c, model)
        holder.compiled, holder.snapshot = comp, None
    return Const(None)


def _holder(c: Call, v: Val) -> Model:
    """A Model record for a backbone or subclass instance trained directly."""
    key = (id(v), "__holder__")
    m = c.it.cache.get(key)
    if isinstance(m, Model):
        return m
    from medfit.diagnose.foreign.script.models import uses_of

    m = Model("direct", getattr(v, "line", c.line), uses=uses_of(c.it, v))
    c.it.cache[key] = m
    return m


@method("fit", "fit_generator")
def _fit(c: Call) -> Val | None:
    recv = c.recv
    if isinstance(recv, (Obj, Data, Pix, Optimizer, Map, Generator, Seq, Const)):
        return None
    keras_kw = {"epochs", "validation_data", "callbacks", "steps_per_epoch", "validation_split"}
    if not isinstance(recv, (Model, Backbone, Inst)) and not (
        keras_kw & set(c.kwargs) or isinstance(c.arg(0, "x"), Data)
    ):
        return None  # scaler.fit(X), a sklearn model: not a training call
    model: Val | None = recv
    if isinstance(recv, (Backbone, Inst)) and not (
        isinstance(recv, Backbone) and recv.lib != "keras"
    ):
        model = _holder(c, recv) if isinstance(recv, Backbone) else recv
    if isinstance(recv, Backbone) and recv.lib not in ("keras", "hub"):
        return None
    x = c.arg(0, "x") or c.arg(0, "generator")
    val = c.kwargs.get("validation_data") or (c.args[6] if len(c.args) > 6 else None)
    val_node = next((k.value for k in c.node.keywords if k.arg == "validation_data"), None)
    x_node = (
        c.node.args[0]
        if c.node.args
        else next((k.value for k in c.node.keywords if k.arg in ("x", "generator")), None)
    )
    cbs = c.kwargs.get("callbacks")
    callbacks = [
        cb for cb in (cbs.items if isinstance(cbs, Seq) else []) if isinstance(cb, Callback)
    ]
    cw = c.kwargs.get("class_weight")
    epochs = c.arg(3 if c.name == "fit" and len(c.args) > 3 else -1, "epochs")
    batch = const(c.kwargs.get("batch_size"), int)
    if batch is None and isinstance(x, Data):
        batch = x.batch
    if batch is None and isinstance(x, Pix) and "batch_size" not in c.kwargs:
        batch = 32  # Keras' default batch for arrays
    rec = FitRec(
        c.line,
        c.it.seq(),
        "keras",
        model,
        x,
        val,
        val_node,
        x_node,
        val_split=number(c.kwargs.get("validation_split")),
        epochs=const(epochs, int) if epochs is not None else 1,
        initial_epoch=const(c.kwargs.get("initial_epoch"), int),
        batch=batch,
        class_weight=cw is not None and not (isinstance(cw, Const) and cw.value is None),
        callbacks=callbacks,
        val_steps=const(c.kwargs.get("validation_steps"), int),
        kwargs={k: c.kwtext(k) for k in c.kwargs},
    )
    if isinstance(model, Model):
        rec.compiled = model.compiled
    elif isinstance(model, Inst):
        holder = _holder(c, model)
        rec.compiled = holder.compiled
    record_fit(c.it, rec)
    for cb in callbacks:
        if cb.kind == "ModelCheckpoint" and cb.path and isinstance(model, (Model, Inst)):
            c.it.cache[_saved_key(cb.path)] = model
    return Obj("history", c.line)


@method("predict", "predict_generator")
def _predict(c: Call) -> Val | None:
    """Record `model.predict(data)` (which set the script scores after training); the value is
    left to the other handlers."""
    if not isinstance(c.recv, (Model, Backbone, Inst, Unknown)):
        return None
    x = c.arg(0, "x")
    if isinstance(x, (Data, Pix)):
        node = (
            c.node.args[0]
            if c.node.args
            else next((k.value for k in c.node.keywords if k.arg == "x"), None)
        )
        c.it.world.events.append(
            Event("predict", c.line, c.it.seq(), {"x": x, "node": node, "text": c.text})
        )
    return None


@method("evaluate", "evaluate_generator")
def _evaluate(c: Call) -> Val | None:
    if isinstance(c.recv, (Data, Pix, Obj)) and not (
        isinstance(c.recv, Obj) and c.recv.kind == "learner"
    ):
        return None
    x = c.arg(0, "x")
    node = (
        c.node.args[0]
        if c.node.args
        else next((k.value for k in c.node.keywords if k.arg == "x"), None)
    )
    c.it.world.events.append(
        Event("evaluate", c.line, c.it.seq(), {"x": x, "node": node, "text": c.text})
    )
    return Unknown("evaluation")


@func("compute_class_weight", "compute_sample_weight")
def _class_weight(c: Call) -> Val:
    c.it.world.events.append(Event("class_weight", c.line, c.it.seq(), {"text": c.text}))
    return Unknown("class weights")


# --- learning-rate changes ------------------------------------------------------------------------
def _opt_attr(it: Any, recv: Val, name: str, node: ast.AST) -> Val | None:
    if (
        isinstance(recv, Model)
        and name == "optimizer"
        and recv.compiled
        and recv.compiled.optimizer
    ):
        return recv.compiled.optimizer
    if isinstance(recv, Optimizer) and name in ("lr", "learning_rate"):
        return Obj("lrvar", getattr(node, "lineno", 0), {"opt": recv})
    return None


def _set_lr(opt: Optimizer, value: Val, line: int) -> None:
    lr = number(value)
    opt.lr, opt.lr_line = lr, line
    opt.lr_src = "set" if lr is not None else "unresolved"


@func("set_value")
def _set_value(c: Call) -> Val | None:
    var = c.arg(0)
    if isinstance(var, Obj) and var.kind == "lrvar" and len(c.args) > 1:
        _set_lr(var.attrs["opt"], c.args[1], c.line)
        return Const(None)
    return None


@method("assign")
def _assign(c: Call) -> Val | None:
    if isinstance(c.recv, Obj) and c.recv.kind == "lrvar" and c.args:
        _set_lr(c.recv.attrs["opt"], c.args[0], c.line)
        return Const(None)
    return None


# --- trainable / requires_grad ------------------------------------------------------------------
def _set_trainable_attr(it: Any, recv: Val, name: str, value: Val, node: ast.AST) -> bool:
    if name not in ("trainable", "requires_grad"):
        if isinstance(recv, Optimizer) and name in ("lr", "learning_rate"):
            _set_lr(recv, value, getattr(node, "lineno", 0))
            return True
        return False
    text = it.src.segment(node, 60)
    if isinstance(recv, Backbone):
        scope = "container" if name == "trainable" and recv.lib in ("keras", "hub") else "all"
        set_trainable(it, recv, scope, value, node, text)
        return True
    if isinstance(recv, ParamSet):
        owner = recv.owner
        scope = {"all": "all", "body": "all"}.get(recv.scope, "part")
        if recv.scope in ("head", "ignore"):
            return True
        if recv.scope == "unknown":
            flag = const(value, bool)
            for u in uses_of(it, owner):
                if (u.base.state, flag) not in (("all", True), ("frozen", False)):
                    u.base.state, u.base.flag = "unknown", True  # it may be the base itself
            return True
        if isinstance(owner, Backbone):
            set_trainable(it, owner, scope, value, node, recv.text or text)
            return True
        if isinstance(owner, (Model, Inst)):
            set_model_trainable(
                it, owner, scope if scope == "part" else "all", value, node, recv.text or text
            )
            return True
    if isinstance(recv, (Model, Inst)) and name == "trainable":
        if isinstance(recv, Inst):
            recv.attrs[name] = value
        set_model_trainable(it, recv, "all", value, node, text)
        return True
    return False


SETATTRS.append(_set_trainable_attr)
ATTRS.append(_opt_attr)


@method("parameters", "named_parameters", "children", "modules", "named_children", "named_modules")
def _parameters(c: Call) -> Val | None:
    owner = c.recv
    if isinstance(owner, ParamSet):
        return owner
    if isinstance(owner, (Backbone, Model, Inst)):
        if c.name in ("children", "modules", "named_children", "named_modules"):
            return params_of(c.it, owner, "all", c.line, c.text)
        return params_of(c.it, owner, "all", c.line, c.text)
    return None


@method("requires_grad_")
def _requires_grad(c: Call) -> Val | None:
    target = c.recv
    value = c.arg(0, "requires_grad") or Const(True)
    if isinstance(target, (Backbone, ParamSet, Model, Inst)):
        _set_trainable_attr(c.it, target, "requires_grad", value, c.node)
        return target
    return None


@method("freeze", "unfreeze", "freeze_to")
def _freeze(c: Call) -> Val | None:
    owner = c.recv
    if isinstance(owner, Obj) and owner.kind == "learner":
        base = owner.attrs.get("base")
        if isinstance(base, Backbone):
            scope = "part" if c.name == "freeze_to" else "all"
            set_trainable(
                c.it,
                base,
                scope,
                Const(c.name == "unfreeze" or c.name == "freeze_to"),
                c.node,
                c.text,
            )
        return Const(None)
    return None


def val_of(v: Val | None) -> Val | None:
    """The images of a validation_data value: the data set, or the first array of a tuple."""
    if isinstance(v, Seq) and v.items:
        return v.items[0]
    return v


def first_data(v: Val | None) -> Data | Pix | None:
    v = val_of(v)
    return v if isinstance(v, (Data, Pix)) else None


__all__ = ["FitRec", "first_data", "val_of"]
