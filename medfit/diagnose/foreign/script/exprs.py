"""Expressions: names, attributes, calls, arithmetic, subscripts, f-strings, comprehensions
(constants and pixel arithmetic in arith.py)."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

from medfit.diagnose.foreign.script.arith import (
    BUILTINS,
    CMP,
    HUGE_FORMAT,
    MAX_TEXT,
    fold,
    hashable,
    pix_op,
    stat_of,
)
from medfit.diagnose.foreign.script.registry import (
    ATTRS,
    CALLABLE,
    FUNCS,
    LIBRARIES,
    MAX_EXPR_DEPTH,
    METHODS,
    Call,
    Handler,
)
from medfit.diagnose.foreign.script.values import (
    Bound,
    Cls,
    Const,
    Env,
    Func,
    Inst,
    Map,
    Pix,
    Ref,
    Seq,
    Step,
    Unknown,
    Val,
    World,
    taint_of,
)

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.source import Source


class Exprs:
    src: Source
    world: World
    files: dict[str, str]
    undefined: dict[str, int]

    # provided by Interp
    def tick(self) -> None:
        raise NotImplementedError

    def call_func(
        self,
        f: Func,
        args: list[Val],
        kwargs: dict[str, Val],
        node: ast.AST,
        open_: bool = False,
    ) -> Val:
        raise NotImplementedError

    def instantiate(self, cls: Cls, args: list[Val], kwargs: dict[str, Val], node: ast.Call) -> Val:
        raise NotImplementedError

    def assign(self, t: ast.expr, value: Val, env: Env) -> None:
        raise NotImplementedError

    def elements(self, v: Val) -> tuple[list[Val], Any]:
        raise NotImplementedError

    # --- expressions --------------------------------------------------------------------------
    def ev(self, node: ast.expr | None, env: Env, depth: int = 0) -> Val:
        if node is None:
            return Const(None)
        self.tick()
        if depth > MAX_EXPR_DEPTH:
            return Unknown("too deeply nested")
        d = depth + 1
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and len(self.world.strings) < 2000:
                self.world.strings.append(node.value[:300])
            return Const(node.value)
        if isinstance(node, ast.Name):
            return self.ev_name(node, env)
        if isinstance(node, ast.Attribute):
            return self.getattr(self.ev(node.value, env, d), node.attr, node)
        if isinstance(node, ast.Call):
            return self.ev_call(node, env, d)
        if isinstance(node, ast.BinOp):
            return self.binop(
                self.ev(node.left, env, d), node.op, self.ev(node.right, env, d), node
            )
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand, env, d)
            if isinstance(v, Const):
                try:
                    if isinstance(node.op, ast.USub):
                        return Const(-v.value, v.src)
                    if isinstance(node.op, ast.UAdd):
                        return Const(+v.value, v.src)
                    if isinstance(node.op, ast.Not):
                        return Const(not v.value)
                except TypeError:
                    return Unknown("operand")
            if isinstance(v, Pix) and isinstance(node.op, ast.USub):
                return v.then(Step("unknown", None, node.lineno, "-x"))
            return Unknown("operand", taint=v.taint)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items: list[Val] = []
            complete = True
            for e in node.elts:
                if isinstance(e, ast.Starred):
                    inner = self.ev(e.value, env, d)
                    complete &= isinstance(inner, Seq) and inner.complete
                    items += inner.items if isinstance(inner, Seq) else []
                else:
                    items.append(self.ev(e, env, d))
            return Seq(items, isinstance(node, ast.Tuple), complete)
        if isinstance(node, ast.Dict):
            out: dict[Any, Val] = {}
            complete = True
            for k, vnode in zip(node.keys, node.values, strict=True):
                val = self.ev(vnode, env, d)
                if k is None:
                    complete &= isinstance(val, Map) and val.complete
                    out.update(val.items if isinstance(val, Map) else {})
                    continue
                key = self.ev(k, env, d)
                if isinstance(key, Const) and hashable(key.value):
                    out[key.value] = val
                else:
                    complete = False
            return Map(out, complete)
        if isinstance(node, ast.Compare):
            return self.compare(node, env, d)
        if isinstance(node, ast.BoolOp):
            vals = [self.ev(v, env, d) for v in node.values]
            if all(isinstance(v, Const) for v in vals):
                pick = all if isinstance(node.op, ast.And) else any
                return Const(pick(bool(v.value) for v in vals))  # type: ignore[attr-defined]
            # a known bool decides a test: `isinstance(x, str) and x == "none"` with x an
            # unresolved value is false when one side is False (values such as `path or "x"`
            # are left to the rules below)
            decided = not isinstance(node.op, ast.And)
            if any(_known_truth(v) is decided for v in vals):
                return Const(decided)
            if isinstance(node.op, ast.Or) and isinstance(vals[0], Const) and not vals[0].value:
                return vals[1] if len(vals) == 2 else Unknown("or")
            return Unknown("boolean", taint=taint_of(*vals))
        if isinstance(node, ast.IfExp):
            test = self.ev(node.test, env, d)
            if isinstance(test, Const):
                return self.ev(node.body if test.value else node.orelse, env, d)
            a, b = self.ev(node.body, env, d), self.ev(node.orelse, env, d)
            if isinstance(a, Const) and isinstance(b, Const) and a.value == b.value:
                return a
            return Unknown(f"chosen at run time (line {node.lineno})", taint=taint_of(a, b))
        if isinstance(node, ast.Subscript):
            return self.subscript(self.ev(node.value, env, d), node, env, d)
        if isinstance(node, ast.JoinedStr):
            return self.fstring(node, env, d)
        if isinstance(node, ast.Lambda):
            return Func(node, env)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self.comprehension(node, env, d)
        if isinstance(node, ast.NamedExpr):
            v = self.ev(node.value, env, d)
            self.assign(node.target, v, env)
            return v
        if isinstance(node, (ast.Starred, ast.Await)):
            return self.ev(node.value, env, d)
        if isinstance(node, (ast.Yield, ast.YieldFrom)) and node.value is not None:
            self.ev(node.value, env, d)
        return Unknown(type(node).__name__)

    def ev_name(self, node: ast.Name, env: Env) -> Val:
        v = env.lookup(node.id)
        if v is not None:
            return v
        if node.id == "__name__":
            return Const("__main__")
        if node.id in BUILTINS:
            return Ref(node.id)
        if node.id[:1].islower() and node.id not in self.undefined and len(self.undefined) < 50:
            self.undefined[node.id] = node.lineno
        return Ref(node.id, undefined=True)

    def compare(self, node: ast.Compare, env: Env, d: int) -> Val:
        left = self.ev(node.left, env, d)
        rights = [self.ev(c, env, d) for c in node.comparators]
        if len(rights) == 1 and isinstance(left, Const) and isinstance(rights[0], Const):
            a, b, op = left.value, rights[0].value, type(node.ops[0])
            try:
                if op in CMP:
                    return Const(bool(CMP[op](a, b)))
                if op in (ast.In, ast.NotIn) and isinstance(b, (str, tuple, list, dict)):
                    return Const((a in b) == (op is ast.In))
                if op in (ast.Is, ast.IsNot) and (a is None or b is None):
                    return Const((a is b) == (op is ast.Is))
            except TypeError:
                pass
        if len(rights) == 1 and isinstance(rights[0], (Seq, Map)) and isinstance(left, Const):
            box = rights[0]
            keys = (
                [i.value for i in box.items if isinstance(i, Const)]
                if isinstance(box, Seq)
                else list(box.items)
            )
            if box.complete and hashable(left.value) and len(keys) == len(box.items):
                return Const((left.value in keys) == isinstance(node.ops[0], ast.In))
        is_none = isinstance(rights[0], Const) and rights[0].value is None
        known = not isinstance(left, (Const, Unknown, Ref))  # an object: never None
        if isinstance(node.ops[0], (ast.Is, ast.IsNot)) and is_none and known:
            return Const(isinstance(node.ops[0], ast.IsNot))
        return Unknown("comparison", taint=taint_of(left, *rights))

    def fstring(self, node: ast.JoinedStr, env: Env, d: int) -> Val:
        parts: list[str] = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
                continue
            assert isinstance(v, ast.FormattedValue)
            val = self.ev(v.value, env, d)
            spec = self.ev(v.format_spec, env, d) if v.format_spec is not None else Const("")
            if not (isinstance(val, Const) and isinstance(spec, Const)):
                self.world.note(
                    f"line {node.lineno}: f-string {self.src.segment(node, 60)} left unresolved"
                )
                return Unknown("f-string", taint=val.taint)
            if HUGE_FORMAT.search(":" + str(spec.value) + "}"):
                return Unknown("f-string")
            try:
                text = repr(val.value) if v.conversion == ord("r") else val.value
                parts.append(format(text, str(spec.value)))
            except (ValueError, TypeError):
                parts.append(str(val.value))
        return Const("".join(parts)[:MAX_TEXT])

    def comprehension(self, node: ast.expr, env: Env, d: int) -> Val:
        """One element per item of a short literal (`{x: ... for x in ["train", "val"]}`),
        else one representative element and an incomplete container."""
        gens = node.generators  # type: ignore[attr-defined]
        first = self.ev(gens[0].iter, env, d)
        items = first.items if isinstance(first, Seq) and first.complete else None
        if len(gens) == 1 and not gens[0].ifs and items is not None and 0 < len(items) <= 4:
            keys, values = [], []
            for item in items:
                inner = Env(env)
                self.assign(gens[0].target, item, inner)
                if isinstance(node, ast.DictComp):
                    keys.append(self.ev(node.key, inner, d))
                    values.append(self.ev(node.value, inner, d))
                else:
                    values.append(self.ev(node.elt, inner, d))  # type: ignore[attr-defined]
            if isinstance(node, ast.DictComp):
                if all(isinstance(k, Const) and hashable(k.value) for k in keys):
                    return Map({k.value: v for k, v in zip(keys, values, strict=True)})  # type: ignore[attr-defined]
                return Map({}, complete=False, taint=taint_of(*values))
            return Seq(values, complete=True)
        inner = Env(env)
        for i, gen in enumerate(gens):
            it = first if i == 0 else self.ev(gen.iter, inner, d)
            elems, _ = self.elements(it)
            self.assign(gen.target, elems[0] if elems else Unknown("element"), inner)
            for cond in gen.ifs:
                self.ev(cond, inner, d)
        if isinstance(node, ast.DictComp):
            self.ev(node.key, inner, d)
            value = self.ev(node.value, inner, d)
            return Map({}, complete=False, taint=value.taint)
        elt = self.ev(node.elt, inner, d)  # type: ignore[attr-defined]
        return Seq([elt], complete=False, taint=elt.taint)

    # --- calls --------------------------------------------------------------------------------
    def ev_call(self, node: ast.Call, env: Env, d: int) -> Val:
        args: list[Val] = []
        open_ = False
        for a in node.args:
            if isinstance(a, ast.Starred):
                v = self.ev(a.value, env, d)
                open_ |= not (isinstance(v, Seq) and v.complete)
                args += v.items if isinstance(v, Seq) else []
            else:
                args.append(self.ev(a, env, d))
        kwargs: dict[str, Val] = {}
        for k in node.keywords:
            v = self.ev(k.value, env, d)
            if k.arg is None:
                open_ |= not (isinstance(v, Map) and v.complete)
                if isinstance(v, Map):
                    kwargs.update({str(key): val for key, val in v.items.items()})
            else:
                kwargs[k.arg] = v
        f = node.func
        if isinstance(f, ast.Attribute):
            recv = self.ev(f.value, env, d)
            return self.call_method(recv, f.attr, args, kwargs, node, open_)
        return self.call_value(self.ev(f, env, d), args, kwargs, node, open_)

    def call_method(
        self,
        recv: Val,
        name: str,
        args: list[Val],
        kwargs: dict[str, Val],
        node: ast.Call,
        open_: bool,
    ) -> Val:
        if isinstance(recv, Ref):
            out = self.call_value(self.getattr(recv, name, node), args, kwargs, node, open_)
            if recv.undefined and isinstance(out, Unknown) and name in METHODS:
                # `model.fit(...)` where `model` was built in a part of the script not shown
                unknown = Unknown(recv.dotted, taint=recv.taint)
                call = Call(self, node, name, name, unknown, args, kwargs, open_)  # type: ignore[arg-type]
                return _dispatch(METHODS[name], call) or out
            return out
        if isinstance(recv, Inst):
            f = recv.attrs.get(name) or recv.cls.attrs.get(name)
            if isinstance(f, Func):
                bound = name in recv.cls.attrs and name not in recv.attrs
                return self.call_func(f, [recv, *args] if bound else args, kwargs, node, open_)
            if f is not None:
                return self.call_value(f, args, kwargs, node, open_)
        if isinstance(recv, Cls):
            f = recv.attrs.get(name)
            if isinstance(f, Func):
                return self.call_func(f, args, kwargs, node, open_)
        call = Call(self, node, name, name, recv, args, kwargs, open_)  # type: ignore[arg-type]
        res = _dispatch(METHODS.get(name, ()), call)
        if res is not None:
            return res
        return Unknown(f".{name}()", taint=taint_of(recv, *args, *kwargs.values()))

    def call_value(
        self, fv: Val, args: list[Val], kwargs: dict[str, Val], node: ast.Call, open_: bool
    ) -> Val:
        if isinstance(fv, Func):
            return self.call_func(fv, args, kwargs, node, open_)
        if isinstance(fv, Bound):
            return self.call_func(fv.func, [fv.self_, *args], kwargs, node, open_)
        if isinstance(fv, Cls):
            return self.instantiate(fv, args, kwargs, node)
        if isinstance(fv, Ref):
            local = self.local_def(fv)
            if local is not None:
                return self.call_value(local, args, kwargs, node, open_)
            call = Call(self, node, fv.last, fv.dotted, None, args, kwargs, open_)  # type: ignore[arg-type]
            out = _dispatch(FUNCS.get(fv.last, ()), call)
            if out is not None:
                return out
            return Unknown(f"{fv.last}()", taint=taint_of(*args, *kwargs.values()))
        if isinstance(fv, Inst):
            f = fv.cls.attrs.get("__call__") or fv.cls.attrs.get("forward")
            if isinstance(f, Func) and "__call__" in fv.cls.attrs:
                return self.call_func(f, [fv, *args], kwargs, node, open_)
        call = Call(self, node, "__call__", "__call__", fv, args, kwargs, open_)  # type: ignore[arg-type]
        out = _dispatch(CALLABLE, call)
        if out is not None:
            return out
        return Unknown("call", taint=taint_of(fv, *args, *kwargs.values()))

    def local_def(self, ref: Ref) -> Val | None:
        """A name imported from the script's own modules (`from src.utils import f`)."""
        if ref.dotted.split(".")[0] in LIBRARIES or "." not in ref.dotted:
            return None
        v = self.src_module_lookup(ref.last)
        return v if isinstance(v, (Func, Cls)) else None

    def src_module_lookup(self, name: str) -> Val | None:
        raise NotImplementedError

    # --- attributes, subscripts, operators ----------------------------------------------------
    def getattr(self, recv: Val, name: str, node: ast.AST) -> Val:
        if isinstance(recv, Ref):
            ref = Ref(f"{recv.dotted}.{name}", recv.undefined)
            local = self.local_def(ref)
            return local if local is not None else ref
        if isinstance(recv, Inst):
            if name in recv.attrs:
                return recv.attrs[name]
            f = recv.cls.attrs.get(name)
            if isinstance(f, Func):
                return Bound(recv, f)
            if f is not None:
                return f
        if isinstance(recv, Cls) and name in recv.attrs:
            return recv.attrs[name]
        if isinstance(recv, Map) and name in recv.items:
            return recv.items[name]
        for h in ATTRS:
            out = h(self, recv, name, node)  # type: ignore[arg-type]
            if out is not None:
                return out
        if isinstance(recv, Map) and not recv.complete:
            return Unknown(f"{recv.src} {name}".strip(), taint=recv.taint)
        return Unknown(f".{name}", taint=recv.taint)

    def subscript(self, box: Val, node: ast.Subscript, env: Env, d: int) -> Val:
        sl = node.slice
        if isinstance(sl, ast.Slice):
            lo, hi = self.ev(sl.lower, env, d), self.ev(sl.upper, env, d)
            lo_v = lo.value if isinstance(lo, Const) and isinstance(lo.value, int) else None
            hi_v = hi.value if isinstance(hi, Const) and isinstance(hi.value, int) else None
            if isinstance(box, Seq):
                known = (sl.lower is None or lo_v is not None) and (
                    sl.upper is None or hi_v is not None
                )
                items = box.items[lo_v:hi_v] if known else box.items[:1]
                return Seq(items, box.is_tuple, box.complete and known, taint=box.taint)
            if isinstance(box, Const) and isinstance(box.value, (str, tuple)):
                return Const(box.value[lo_v:hi_v]) if sl.step is None else Unknown("slice")
            if isinstance(box, Pix):
                rows = None
                if sl.lower is None and hi_v is not None and hi_v > 0:
                    rows = hi_v if box.rows is None else min(hi_v, box.rows)
                elif box.rows is not None and lo_v is not None:
                    rows = len(range(box.rows)[lo_v:hi_v])
                return Pix(
                    start=box.start,
                    order=box.order,
                    steps=box.steps,
                    through=box.through,
                    augs=box.augs,
                    head=box.head,
                    rows=rows,
                    taint=box.taint,
                )
            key: Val = (
                Const(slice(lo_v, hi_v))
                if lo_v is not None or hi_v is not None
                else Const(slice(None))
            )
        else:
            key = self.ev(sl, env, d)
        if isinstance(box, Map) and isinstance(key, Const) and hashable(key.value):
            if key.value in box.items:
                return box.items[key.value]
            return Unknown(f"{box.src or 'dict'}[{key.value!r}]", taint=box.taint)
        if isinstance(box, Seq) and isinstance(key, Const) and isinstance(key.value, int):
            if -len(box.items) <= key.value < len(box.items):
                return box.items[key.value]
            return Unknown("index", taint=box.taint)
        if isinstance(box, Const) and isinstance(key, Const):
            try:
                if isinstance(box.value, (str, tuple, list, dict)):
                    return Const(box.value[key.value])
            except (IndexError, KeyError, TypeError):
                return Unknown("index")
        for h in ATTRS:
            out = h(self, box, "__getitem__", node)  # type: ignore[arg-type]
            if out is not None:
                if isinstance(out, Func):  # the handler wants the key
                    return self.call_func(out, [key], {}, node)
                return out
        if isinstance(box, Pix):
            return box
        shown = (
            f"[{key.value!r}]"
            if isinstance(key, Const) and isinstance(key.value, (str, int))
            else "[...]"
        )
        why = f"{box.why}{shown}" if isinstance(box, Unknown) else "item"
        return Unknown(why, taint=box.taint | key.taint)

    def binop(self, a: Val, op: ast.operator, b: Val, node: ast.AST) -> Val:
        line = getattr(node, "lineno", 0)
        if isinstance(a, Const) and isinstance(b, Const):
            if isinstance(op, ast.Div) and a.src == "path" and isinstance(b.value, str):
                from medfit.diagnose.foreign.script.pylib import join_paths

                return Const(join_paths([str(a.value), b.value]), "path")
            out = fold(type(op), a.value, b.value)
            return Const(out, a.src or b.src) if out is not None else Unknown("arithmetic")
        if isinstance(a, Pix) or isinstance(b, Pix):
            return pix_op(a, op, b, line, self.src.segment(node, 60))
        if isinstance(a, Seq) and isinstance(b, Seq) and isinstance(op, ast.Add):
            return Seq(a.items + b.items, a.is_tuple, a.complete and b.complete)
        if isinstance(a, Seq) and isinstance(op, ast.Mult):
            return a
        stat = stat_of(a) or stat_of(b)
        if stat in ("max", "min") and isinstance(op, ast.Sub):
            return Unknown("stat:range", taint=taint_of(a, b))
        return Unknown("arithmetic", taint=taint_of(a, b))


def _dispatch(handlers: Any, call: Call) -> Val | None:
    for h in handlers:
        h_: Handler = h
        out = h_(call)
        if out is not None:
            return out
    return None


def _known_truth(v: Val) -> bool | None:
    if isinstance(v, Const) and isinstance(v.value, bool):
        return v.value
    return None
