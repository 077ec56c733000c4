"""PyTorch training calls: the plain epoch loop (`optimizer.step()` inside `for epoch in ...`),
Lightning `Trainer.fit`, the HF `Trainer`, Ultralytics `train()`, fastai `fine_tune` and
`fit_one_cycle`."""

from __future__ import annotations

import ast
import math
from typing import Any

from medfit.diagnose.foreign.script.models import record_fit, states
from medfit.diagnose.foreign.script.registry import Call, func, method
from medfit.diagnose.foreign.script.tables import (
    HF_DEFAULT_LR,
)
from medfit.diagnose.foreign.script.values import (
    Backbone,
    Const,
    Data,
    FitRec,
    Inst,
    Map,
    Obj,
    Optimizer,
    ParamSet,
    Seq,
    Val,
    const,
    number,
    pyval,
)


# --- training calls -----------------------------------------------------------------------------
@method("step", "backward")
def _step(c: Call) -> Val | None:
    opt = (
        c.recv
        if isinstance(c.recv, Optimizer)
        else c.arg(0)
        if isinstance(c.arg(0), Optimizer)
        else None
    )
    if c.name == "step" and opt is None:
        return None
    it = c.it
    epoch = next((lp for lp in it.loops if lp.is_epoch), None)
    batch = next((lp for lp in reversed(it.loops) if lp.data is not None), None)
    loop = epoch or batch
    if loop is None:
        return Const(None)
    if loop.fit is None:
        x = batch.data if batch else None
        rec = FitRec(
            loop.line, it.seq(), "torch", None, x, None, epochs=epoch.epochs if epoch else None
        )
        rec.batch = x.batch if isinstance(x, Data) else None
        loop.fit = record_fit(it, rec)
    if isinstance(opt, Optimizer) and loop.fit.optimizer is None:
        loop.fit.optimizer = opt
        loop.fit.model = _owner(opt.params)
        loop.fit.states = states(it, loop.fit.model)
        if head_only(opt.params):  # only the new head is optimized: the body does not move
            loop.fit.states = {k: ("frozen", *v[1:]) for k, v in loop.fit.states.items()}
    return Const(None)


def head_only(params: Val | None) -> bool:
    """`optim.Adam(model.fc.parameters())`: parameters of the head alone."""
    items = params.items if isinstance(params, Seq) else [params]
    sets = [i.items.get("params") if isinstance(i, Map) else i for i in items]
    return bool(sets) and all(isinstance(p, ParamSet) and p.scope == "head" for p in sets)


def _owner(params: Val | None) -> Val | None:
    if isinstance(params, ParamSet):
        return params.owner
    if isinstance(params, Seq):
        for i in params.items:
            p = i.items.get("params") if isinstance(i, Map) else i
            if isinstance(p, ParamSet):
                return p.owner
    return None


@func("Trainer", "TrainingArguments", "EarlyStoppingCallback")
def _trainer(c: Call) -> Val | None:
    if c.name == "TrainingArguments":
        attrs = {k: pyval(v) for k, v in c.kwargs.items()}
        attrs["__open__"] = c.open_
        if attrs.get("no_cuda") is True or attrs.get("use_cpu") is True:
            c.it.world.device.append((c.line, "cpu", c.text))
        return Obj("hfargs", c.line, attrs)
    if c.name == "EarlyStoppingCallback":
        return Obj("hf_early_stop", c.line)
    hf = "transformers" in c.dotted or "args" in c.kwargs or "train_dataset" in c.kwargs
    targs: dict[str, Any] = dict(c.kwargs)
    targs["hf"] = hf
    if not hf:
        acc = const(c.kwargs.get("accelerator"), str)
        gpus = pyval(c.kwargs.get("gpus"))
        if acc == "cpu":
            c.it.world.device.append((c.line, "cpu", c.text))
        elif acc in ("gpu", "cuda") or (isinstance(gpus, int) and gpus > 0):
            c.it.world.device.append((c.line, "gpu", c.text))
    return Obj("trainer", c.line, targs)


@method("train", "fit", "fine_tune", "fit_one_cycle", "fit_flat_cos")
def _train(c: Call) -> Val | None:
    recv = c.recv
    it = c.it
    if isinstance(recv, Backbone) and recv.lib == "ultralytics" and c.name == "train":
        kw = {k: pyval(v) for k, v in c.kwargs.items()}
        rec = FitRec(
            c.line, it.seq(), "ultralytics", recv, None, None, epochs=kw.get("epochs", 100)
        )
        rec.kwargs = {k: v for k, v in kw.items()}
        rec.kwargs["__lines__"] = {k: c.kwline(k) for k in c.kwargs}
        rec.batch = kw.get("batch", 16) if isinstance(kw.get("batch", 16), int) else None
        dev = kw.get("device")
        if dev is not None:
            kind = "cpu" if str(dev).lower() == "cpu" else "gpu"
            it.world.device.append((c.line, kind, c.kwtext("device")))
        size = kw.get("imgsz")
        if isinstance(size, int):
            it.world.sizes.append((c.line, size))
        record_fit(it, rec)
        return Obj("history", rec.line)
    if isinstance(recv, Obj) and recv.kind == "trainer":
        if recv.attrs.get("hf") and c.name == "train":
            return _hf_train(c, recv)
        if c.name == "fit" and not recv.attrs.get("hf"):
            return _lightning_fit(c, recv)
    if (
        isinstance(recv, Obj)
        and recv.kind == "learner"
        and c.name in ("fine_tune", "fit_one_cycle", "fit", "fit_flat_cos")
    ):
        base = recv.attrs.get("base")
        n = const(c.arg(0, "epochs" if c.name == "fine_tune" else "n_epoch"), int)
        first = {"fine_tune": ["base_lr"], "fit": ["lr"]}.get(c.name, [])
        names = [*first, "lr_max", "max_lr"]  # fastai v2 / v1 spelling
        key = next((k for k in names if k in c.kwargs), names[0])
        lr_v = c.arg(1, key)
        lr_node = next((k.value for k in c.node.keywords if k.arg == key), None)
        if lr_node is None and len(c.node.args) > 1:
            lr_node = c.node.args[1]
        dls = recv.attrs.get("dls")
        lr, src = number(lr_v), "given"
        spread = _fastai_slice(lr_node)
        if spread is not None:
            lr, src = spread
        elif lr is None and lr_v is None:
            v1 = isinstance(dls, Data) and dls.kind == "fastai1"
            lr, src = (
                (
                    3e-4,
                    "the fastai v1 default max_lr=slice(3e-3): 3e-4 on the body, 3e-3 on the head",
                )
                if v1 and c.name != "fine_tune"
                else (2e-3 if c.name == "fine_tune" else 1e-3, "the fastai default")
            )
        opt = Optimizer("adam", "torch", c.line, lr, src, c.line)
        valid = dls.valid if isinstance(dls, Data) else None
        rec = FitRec(c.line, it.seq(), "fastai", base, dls, valid, epochs=n, optimizer=opt)
        rec.kwargs = {"method": c.name, "metrics": recv.attrs.get("metrics") or []}
        record_fit(it, rec)
        return Obj("history", rec.line)
    return None


def _fastai_slice(node: ast.AST | None) -> tuple[float, str] | None:
    """`slice(lo, hi)` as fastai's LR: spread geometrically over the layer groups (a
    cnn_learner has three: two body groups and the head), so the body's highest group gets
    sqrt(lo * hi); `slice(hi)` gives the body hi / 10 and the head hi."""
    if not (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "slice"
    ):
        return None
    vals = [
        float(a.value)
        for a in node.args
        if isinstance(a, ast.Constant) and isinstance(a.value, (int, float))
    ]
    if len(vals) != len(node.args) or not 1 <= len(vals) <= 2 or min(vals) <= 0:
        return None
    if len(vals) == 1:
        hi = vals[0]
        return hi / 10, f"slice({hi:g}): {hi / 10:g} on the body groups, {hi:g} on the head"
    lo, hi = vals
    body = math.sqrt(lo * hi)
    return body, (
        f"slice({lo:g}, {hi:g}): {lo:g}..{body:.2g} on the body groups, {hi:g} on the head"
    )


def _hf_train(c: Call, trainer: Obj) -> Val:
    it = c.it
    args = trainer.attrs.get("args")
    a = args.attrs if isinstance(args, Obj) and args.kind == "hfargs" else {}
    lr = a.get("learning_rate")
    if lr is None and a and not a.get("__open__"):
        lr, src = HF_DEFAULT_LR, "the HF TrainingArguments default"
    else:
        src = "given" if isinstance(lr, float) else ""
    opt = Optimizer(
        "adamw", "torch", c.line, lr if isinstance(lr, (int, float)) else None, src, c.line
    )
    model = trainer.attrs.get("model")
    rec = FitRec(
        c.line,
        it.seq(),
        "hf",
        model,
        trainer.attrs.get("train_dataset"),
        trainer.attrs.get("eval_dataset"),
        epochs=a.get("num_train_epochs", 3),
        optimizer=opt,
    )
    rec.batch = a.get("per_device_train_batch_size", 8)
    record_fit(it, rec)
    return Obj("history", rec.line)


def _lightning_fit(c: Call, trainer: Obj) -> Val:
    it = c.it
    model = c.arg(0, "model")
    dm = c.kwargs.get("datamodule")
    train = c.arg(1, "train_dataloaders")
    val = c.arg(2, "val_dataloaders")
    for holder in (dm, model):
        if isinstance(holder, Inst):
            # Lightning runs prepare_data() and setup() before it asks for the loaders
            it.call_method_of(holder, "prepare_data", c.node)
            it.call_method_of(holder, "setup", c.node)
            train = train or it.call_method_of(holder, "train_dataloader", c.node)
            val = val or it.call_method_of(holder, "val_dataloader", c.node)
    opt = (
        it.call_method_of(model, "configure_optimizers", c.node)
        if isinstance(model, Inst)
        else None
    )
    found = _find_opt(opt)
    epochs = const(trainer.attrs.get("max_epochs"), int)
    rec = FitRec(c.line, it.seq(), "lightning", model, train, val, epochs=epochs, optimizer=found)
    rec.batch = train.batch if isinstance(train, Data) else None
    record_fit(it, rec)
    return Obj("history", rec.line)


def _find_opt(v: Val | None, depth: int = 0) -> Optimizer | None:
    if isinstance(v, Optimizer) or depth > 4:
        return v if isinstance(v, Optimizer) else None
    items = v.items if isinstance(v, Seq) else list(v.items.values()) if isinstance(v, Map) else []
    for i in items:
        found = _find_opt(i, depth + 1)
        if found:
            return found
    return None


@method("save_hyperparameters")
def _save_hparams(c: Call) -> Val | None:
    """Lightning: `self.hparams` holds the arguments `__init__` was called with."""
    if not isinstance(c.recv, Inst) or not c.it.frames or c.it.frames[-1].env is None:
        return None
    env = c.it.frames[-1].env
    c.recv.attrs["hparams"] = Map({k: v for k, v in env.vars.items() if k != "self"}, src="hparams")
    return Const(None)
