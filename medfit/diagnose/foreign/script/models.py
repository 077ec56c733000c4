"""Models as the rules need them: which backbones a model holds, how each is fed and called, and
the trainable state of each body when a training call runs.

Keras semantics kept here: `base.trainable = X` sets the container flag and every layer under it;
a base nested in a model (called as a layer, in a Sequential) with its flag False stays frozen
whatever its layers say; changes of `trainable` take effect at the next `compile()` (a fit
after a fit without recompiling trains what the first one trained).
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from medfit.diagnose.foreign.script.values import (
    Backbone,
    FitRec,
    Inst,
    Model,
    Obj,
    ParamSet,
    Pix,
    Seq,
    Step,
    Use,
    Val,
    const,
)

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.reader import Reader

State = tuple[str, bool, int, str, str]  # state, bn_frozen, unfrozen line, how, stage


def layer(kind: str, line: int, **attrs: object) -> Obj:
    return Obj("layer", line, {"cls": kind, **attrs})


def apply_layer(it: Reader, lay: Val, x: Val, training: bool | None, line: int) -> Val | None:
    """The output of calling a Keras layer/model/backbone on `x`; None when `lay` is not one."""
    pix = x if isinstance(x, Pix) else Pix(start="unknown", taint=x.taint)
    if isinstance(lay, Backbone):
        use = Use(lay, pix.steps, training, line, "call", pix.augs)
        return Pix(
            start=pix.start,
            order=pix.order,
            steps=pix.steps,
            augs=pix.augs,
            through=(*pix.through, use),
            taint=pix.taint,
        )
    if isinstance(lay, Model):
        if lay.kind == "sequential":
            out: Val = pix
            for item in list(lay.layers):
                nxt = apply_layer(it, item, out, training, line)
                out = nxt if isinstance(nxt, Pix) else out
            return out
        uses = [
            Use(
                u.base,
                (*pix.steps, *u.steps),
                training if training is not None else u.training,
                line,
                u.how if u.how != "flattened" else "call",
                (*pix.augs, *u.augs),
            )
            for u in lay.uses
        ]
        return Pix(
            start=pix.start,
            order=pix.order,
            steps=pix.steps,
            augs=(*pix.augs, *lay.augs),
            through=(*pix.through, *uses),
            head=lay.head or pix.head,
            taint=pix.taint,
        )
    if isinstance(lay, Inst):
        traced = trace(it, lay)
        if traced is not None:
            return apply_layer(it, traced, pix, training, line)
        return None
    if not (isinstance(lay, Obj) and lay.kind == "layer"):
        return None
    a = lay.attrs
    if a.get("fn") is not None:
        fn = a["fn"]
        out_fn = it.call_value(fn, [pix], {}, ast.Call(ast.Name("f"), [], [], lineno=line), False)
        return (
            out_fn if isinstance(out_fn, Pix) else pix.then(Step("unknown", None, line, "Lambda"))
        )
    new = pix
    for step in a.get("steps", ()):
        new = new.then(step)
    if a.get("augs"):
        new = Pix(
            start=new.start,
            order=new.order,
            steps=new.steps,
            through=new.through,
            augs=(*new.augs, *a["augs"]),
            head=new.head,
            taint=new.taint,
        )
    if a.get("cls") == "Dense":
        new = Pix(
            start=new.start,
            order=new.order,
            steps=new.steps,
            through=new.through,
            augs=new.augs,
            head=(a.get("units"), a.get("activation"), lay.line),
            taint=new.taint,
        )
    return new


def trace(it: Reader, inst: Inst) -> Model | None:
    """A subclassed model: its `call`/`forward` run on a symbolic input, or its attributes."""
    key = (id(inst), "__model__")
    cached = it.cache.get(key)
    if isinstance(cached, Model):
        return cached
    model = Model("subclass", inst.line, inst=inst)
    it.cache[key] = model
    f = it.method_of(inst, "call")
    if f is not None:
        out = it.call_func(f, [inst, Pix(start="input")], {}, inst.cls.node)
        if isinstance(out, Pix):
            model.uses, model.head, model.augs = list(out.through), out.head, out.augs
    if not model.uses:
        for v in _attr_values(inst):
            if isinstance(v, Backbone):
                model.uses.append(Use(v, (), None, inst.line, "direct"))
            elif isinstance(v, Model):
                model.uses += uses_of(it, v)
    return model


def _attr_values(inst: Inst) -> list[Val]:
    out: list[Val] = []
    for v in inst.attrs.values():
        out += v.items if isinstance(v, Seq) else [v]
    return out


def uses_of(it: Reader, v: Val | None) -> list[Use]:
    if isinstance(v, Backbone):
        return [Use(v, (), None, v.line, "direct")]
    if isinstance(v, Inst):
        traced = trace(it, v)
        return traced.uses if traced else []
    if not isinstance(v, Model):
        return []
    if v.kind == "sequential":
        out = apply_layer(it, v, Pix(start="input"), None, v.line)
        if isinstance(out, Pix):
            return [
                Use(
                    u.base,
                    u.steps,
                    u.training,
                    u.line,
                    "sequential" if u.how == "call" else u.how,
                    u.augs,
                )
                for u in out.through
            ]
        return []
    return v.uses


def head_of(it: Reader, v: Val | None) -> tuple[object, object, int] | None:
    if isinstance(v, Model):
        if v.kind == "sequential":
            out = apply_layer(it, v, Pix(start="input"), None, v.line)
            return out.head if isinstance(out, Pix) else None
        return v.head
    if isinstance(v, Inst):
        traced = trace(it, v)
        return traced.head if traced else None
    return None


def model_augs(it: Reader, v: Val | None) -> tuple:
    if isinstance(v, Model) and v.kind == "sequential":
        out = apply_layer(it, v, Pix(start="input"), None, v.line)
        return out.augs if isinstance(out, Pix) else ()
    return v.augs if isinstance(v, Model) else ()


def effective(u: Use) -> str:
    """The state a training call sees for a base used as `u` (its container flag counts when it
    is nested as a layer)."""
    base = u.base
    if base.lib == "keras" and not base.flag and u.how in ("call", "sequential", "direct"):
        return "frozen"
    return base.state


def states(it: Reader, model: Val | None) -> dict[int, State]:
    uses = uses_of(it, model)
    if not uses:
        uses = [Use(b, (), None, b.line, "direct") for b in it.world.backbones]
    return {
        id(u.base): (
            effective(u),
            u.base.bn_frozen,
            u.base.unfrozen_line,
            u.base.unfrozen_how,
            u.base.stage,
        )
        for u in uses
    }


def set_trainable(
    it: Reader, base: Backbone, scope: str, value: Val, node: ast.AST, text: str
) -> None:
    """`base.trainable = v` (scope container), a loop over all or some of its layers or
    parameters (all / part), inside a selection (`if "conv5" in layer.name`) or not."""
    flag = const(value, bool)
    line = getattr(node, "lineno", 0)
    seq = it.seq()
    if flag is None and it.loops and scope != "container":
        # `layer.trainable = layer.name.startswith("conv5_")` in a loop over the layers: a
        # selection made per layer, so part of the body trains
        base.state = "partial"
        base.unfrozen_line, base.unfrozen_how = line, it.where(line)
        base.stage = it.src.segment(node, 60)
        base.log.append((seq, line, "partial", it.where(line)))
        return
    if flag is None:
        base.state = "unknown"
        base.log.append((seq, line, "unknown", it.where(line)))
        return
    if it.bn_select is True:  # `if isinstance(layer, BatchNormalization): layer.trainable = ...`
        if not flag:
            base.bn_frozen, base.bn_line = True, line
        return
    old = base.state
    part = scope == "part" or it.selective > 0
    if flag and part and not base.flag and base.lib == "keras":
        it.world.note(
            f"line {line}: layers of {base.name} set trainable while {base.name}.trainable is "
            "False; nested in a model, Keras keeps them frozen (set the base trainable first)"
        )
    if scope == "container":
        base.flag = flag
        new = "all" if flag else "frozen"
    elif not part:
        new = "all" if flag else "frozen"
    elif flag:
        new = "partial" if old in ("frozen", "partial") else old
    else:
        new = "partial" if old in ("all", "partial") else old
    if it.bn_select is False and flag and old == "frozen":
        base.bn_frozen, base.bn_line = True, line  # only non-BN layers unfrozen
    if flag and new == "all" and it.bn_select is None and not part:
        base.bn_frozen = False
    if flag and new in ("all", "partial", "unknown"):
        base.unfrozen_line = line
        base.unfrozen_how = it.where(line)
        base.stage = (it.sel_text[-1] if it.sel_text else text) if part else ""
    base.state = new
    base.log.append((seq, line, new, it.where(line)))


def set_model_trainable(
    it: Reader, model: Val, scope: str, value: Val, node: ast.AST, text: str
) -> bool:
    uses = uses_of(it, model)
    for u in uses:
        sc = "container" if scope == "all" and u.how != "flattened" else scope
        set_trainable(it, u.base, sc, value, node, text)
    return bool(uses)


def params_of(it: Reader, owner: Val, scope: str, line: int, text: str) -> ParamSet:
    return ParamSet(owner, scope, line, text)


def record_fit(it: Reader, rec: FitRec) -> FitRec:
    """Snapshot the trainable state (Keras: as of the train function's build) and keep it."""
    model = rec.model
    if rec.api == "keras" and isinstance(model, Model):
        now = states(it, model)
        if model.snapshot is None:
            model.snapshot = now
        elif any(now[k][0] != v[0] for k, v in model.snapshot.items() if k in now):
            it.world.note(
                f"line {rec.line}: trainable changed since the last compile(); Keras trains "
                "with the state the model had when this train function was built (recompile)"
            )
        rec.states = dict(model.snapshot)
        rec.compiled = rec.compiled or model.compiled
    else:
        rec.states = states(it, model)
    if rec.compiled is not None and rec.optimizer is None:
        rec.optimizer = rec.compiled.optimizer
    if rec.device is None and it.device_ctx:
        rec.device = it.device_ctx[-1]
    it.world.fits.append(rec)
    return rec


def backbone_named(it: Reader, name: str) -> Backbone | None:
    low = name.lower().replace("_", "")
    for b in it.world.backbones:
        own = b.name.lower().replace("_", "")
        if own == low or low.startswith(own):
            return b
    return None
