"""Follow a script the way a reader does, statement by statement, without running anything.

Assignments bind names in the scope they happen in (the latest one before a use wins), calls
into the script's own functions bind their parameters to the call's arguments and run their
bodies, a class is instantiated by running its `__init__`, an `if` whose test is a constant takes
its branch and one whose test is unknown runs both and keeps only what they agree on (inside a
loop over layers it is a selection: `if "conv5" in layer.name`). Library calls go to the
handlers registered by the *_lib modules (the package's __init__ imports them), which build the
values in `values.py` and record what the rules need in `World`. Everything is bounded:
expression depth, call depth (and no recursion into a function already on the stack), loop
unrolling, and a step budget for the whole read.
"""

from __future__ import annotations

import ast

from medfit.diagnose.foreign.script.arith import name_of
from medfit.diagnose.foreign.script.calls import Calls
from medfit.diagnose.foreign.script.reader import Frame, Loop
from medfit.diagnose.foreign.script.registry import (
    LIBRARIES,
    SETATTRS,
    Budget,
)
from medfit.diagnose.foreign.script.source import Source
from medfit.diagnose.foreign.script.values import (
    Backbone,
    Cls,
    Const,
    Data,
    Env,
    Func,
    Inst,
    Map,
    Obj,
    Pix,
    Ref,
    Seq,
    Unknown,
    Val,
    World,
)

MAX_STEPS = 60_000
MAX_BLOCK_DEPTH = 40
MAX_UNROLL = 4


class Interp(Calls):
    def __init__(self, src: Source, world: World) -> None:
        self.src = src
        self.world = world
        self.files = dict(src.files)
        self.module = Env(None)
        self.steps = 0
        self.frames: list[Frame] = []
        self.loops: list[Loop] = []
        self.cond = 0
        self.selective = 0
        self.bn_select: bool | None = None  # inside `if isinstance(layer, BatchNormalization)`
        self.sel_text: list[str] = []  # the tests of the selections we are inside
        self.file_vals: dict[str, Val] = {}  # config objects written by yaml.dump / json.dump
        self.blocks = 0
        self.funcs: list[Func] = []
        self.classes: list[Cls] = []
        self.undefined: dict[str, int] = {}
        self.device_ctx: list[str] = []
        self.cache: dict[tuple[int, str], Val] = {}
        self.defs = {
            n.name
            for n in ast.walk(ast.Module(body=src.body, type_ignores=[]))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }

    # --- bookkeeping --------------------------------------------------------------------------
    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Budget

    def seq(self) -> int:
        return self.world.seq()

    def where(self, line: int) -> str:
        """`line 19 (in unfreeze_top(), called at line 28)` for a line inside a helper."""
        if not self.frames:
            return f"line {line}"
        f = self.frames[-1]
        return f"line {line} (in {f.name}(), called at line {f.line})"

    def run_module(self) -> None:
        try:
            self.run(self.src.body, self.module)
            if not self.world.fits:
                self.walk_uncalled()
        except Budget:
            self.world.note(f"the read stopped after {MAX_STEPS} steps; later lines not followed")
        except RecursionError:
            self.world.note("the script nests too deeply to follow; later lines not followed")

    def walk_uncalled(self) -> None:
        """Functions nobody calls in the file (`app.run(main)`, a notebook that never calls
        `train()`): run each with its defaults, roots first, so their training code is read."""
        loaded = {
            n.id
            for f in self.funcs
            for n in ast.walk(f.node)
            if isinstance(n, ast.Name) and not isinstance(f.node, ast.Lambda)
        }
        tops = [
            f for f in self.funcs if f.env is self.module and not isinstance(f.node, ast.Lambda)
        ]
        for f in sorted(tops, key=lambda f: getattr(f.node, "name", "") in loaded):
            if not f.called:
                self.call_func(f, [], {}, f.node, open_=True)

    # --- statements ---------------------------------------------------------------------------
    def run(self, stmts: list[ast.stmt], env: Env) -> bool:
        """Run a block; True when it ended in a return/raise that certainly happens."""
        self.blocks += 1
        try:
            if self.blocks > MAX_BLOCK_DEPTH:
                return False
            return any(self.stmt(s, env) for s in stmts)
        finally:
            self.blocks -= 1

    def stmt(self, s: ast.stmt, env: Env) -> bool:
        self.tick()
        if isinstance(s, ast.Expr):
            self.ev(s.value, env)
        elif isinstance(s, ast.Assign):
            value = self.ev(s.value, env)
            for t in s.targets:
                self.assign(t, value, env)
        elif isinstance(s, ast.AugAssign):
            load = _as_load(s.target)
            value = self.binop(self.ev(load, env), s.op, self.ev(s.value, env), s)
            self.assign(s.target, value, env)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self.assign(s.target, self.ev(s.value, env), env)
        elif isinstance(s, ast.If):
            return self.run_if(s, env)
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            self.run_for(s, env)
        elif isinstance(s, ast.While):
            self.ev(s.test, env)
            self.loops.append(Loop(s.lineno, None, True, None))
            try:
                self.run(s.body, env)
            finally:
                self.finish_loop(self.loops.pop())
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            pushed = 0
            for item in s.items:
                ctx = self.ev(item.context_expr, env)
                if isinstance(ctx, Obj) and ctx.kind == "device":
                    self.device_ctx.append(str(ctx.attrs.get("device")))
                    pushed += 1
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, ctx, env)
            try:
                return self.run(s.body, env)
            finally:
                del self.device_ctx[len(self.device_ctx) - pushed :]
        elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
            self.run(s.body, env)  # type: ignore[attr-defined]
            for h in s.handlers:  # type: ignore[attr-defined]
                # the handler is the failure path: where it rebinds a name (a fallback model
                # built without weights), the reader keeps what the body made
                self.fork(env, [[], h.body], prefer_first=True)
            self.run(s.orelse, env)  # type: ignore[attr-defined]
            self.run(s.finalbody, env)  # type: ignore[attr-defined]
        elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            f = Func(s, env)
            self.funcs.append(f)
            env.bind(s.name, f)
        elif isinstance(s, ast.ClassDef):
            self.define_class(s, env)
        elif isinstance(s, ast.Return):
            value = self.ev(s.value, env) if s.value is not None else Const(None)
            if self.frames:
                self.frames[-1].returns.append(value)
                return self.cond == self.frames[-1].cond and not self.selective
        elif isinstance(s, ast.Raise):
            return bool(self.frames) and self.cond == self.frames[-1].cond and not self.selective
        elif isinstance(s, (ast.Import, ast.ImportFrom)):
            self.run_import(s, env)
        elif isinstance(s, ast.Global):
            env.globals_.update(s.names)
        return False

    def run_if(self, s: ast.If, env: Env) -> bool:
        test = self.ev(s.test, env)
        truth = _truth(test)
        if truth is True:
            return self.run(s.body, env)
        if truth is False:
            return self.run(s.orelse, env)
        if self.loops:  # a selection among the elements of a loop
            bn = _mentions_bn(s.test)
            saved = self.bn_select
            before = dict(env.vars)
            self.selective += 1
            try:
                self.bn_select = (not _negated(s.test)) if bn else saved
                self.sel_text.append(self.src.segment(s.test, 60))
                self.run(s.body, env)
                self.bn_select = _negated(s.test) if bn else saved
                self.run(s.orelse, env)
            finally:
                self.selective -= 1
                self.bn_select = saved
                del self.sel_text[-1:]
            for name, v in list(env.vars.items()):
                if before.get(name) is not v and isinstance(v, Const):
                    env.vars[name] = Unknown(f"set for some elements (line {s.lineno})")
            return False
        exists = _exists_test(s.test)
        if exists is not None:
            # `if os.path.exists(path): read it else: a placeholder`: the data flows through
            # the branch where the file is there
            normal, fallback = (s.body, s.orelse) if exists else (s.orelse, s.body)
            self.fork(env, [normal, fallback], s.lineno, prefer_first=True)
            return False
        self.fork(env, [s.body, s.orelse], s.lineno)
        return False

    def fork(
        self, env: Env, branches: list[list[ast.stmt]], line: int = 0, prefer_first: bool = False
    ) -> None:
        """Run each branch from the same bindings and backbone states; keep a name only where
        the branches agree, and a body state that all branches share (any mix of trainable
        outcomes is "partial"; trainable in one and frozen in another is "unknown"). With
        `prefer_first` the first branch is the one that normally runs: its bindings and states
        win, the others only add names it lacks."""
        before = dict(env.vars)
        bases = list(self.world.backbones)
        saved = [_base_state(b) for b in bases]
        results = []
        outcomes: list[dict[int, tuple]] = []
        self.cond += 1
        try:
            for body in branches:
                env.vars = dict(before)
                for b, st in zip(bases, saved, strict=True):
                    _set_base_state(b, st)
                self.run(body, env)
                results.append(env.vars)
                outcomes.append({id(b): _base_state(b) for b in self.world.backbones})
        finally:
            self.cond -= 1
        for b in self.world.backbones:
            ends = [o.get(id(b)) for o in outcomes if id(b) in o]
            if prefer_first and id(b) in outcomes[0]:
                ends = [outcomes[0][id(b)]]
            _set_base_state(b, _merge_states(ends))
        merged: dict[str, Val] = {}
        for name in set().union(*results):
            vals = [r.get(name) for r in results]
            present = [v for v in vals if v is not None]
            first = vals[0]
            if first is not None and (prefer_first or all(v is first for v in vals)):
                merged[name] = first
            elif (len(present) == len(vals) and _same_consts(present)) or (
                name not in before and len(present) == 1
            ):
                merged[name] = present[0]
            else:
                merged[name] = Unknown(f"set differently in the branches of line {line}")
        env.vars = merged

    def run_for(self, s: ast.For | ast.AsyncFor, env: Env) -> None:
        it = self.ev(s.iter, env)
        elements, data = self.elements(it)
        epochs = None
        if isinstance(it, Obj) and it.kind == "range":
            epochs = it.attrs.get("n")
        loop = Loop(s.lineno, epochs, isinstance(it, Obj) and it.kind == "range", data)
        self.loops.append(loop)
        try:
            for e in elements:
                self.assign(s.target, e, env)
                self.run(s.body, env)
        finally:
            self.finish_loop(self.loops.pop())
        self.run(s.orelse, env)

    def finish_loop(self, loop: Loop) -> None:
        if loop.fit is not None and loop.fit.val is None:
            others = [d for d in loop.loaders if d is not loop.fit.x]
            named = [d for d in others if any(_val_word(n) for n in d.names)]
            if named or others:
                loop.fit.val = (named or others)[0]
        if loop.data is not None:
            outer = next((lp for lp in reversed(self.loops) if lp.is_epoch), None)
            if outer is not None:
                outer.loaders.append(loop.data)

    def elements(self, v: Val) -> tuple[list[Val], Data | None]:
        if isinstance(v, Seq):
            if v.complete and 0 < len(v.items) <= MAX_UNROLL:
                return list(v.items), None
            return [v.items[0] if v.items else Unknown("element")], None
        if isinstance(v, Map):
            return [Const(k) for k in list(v.items)[:MAX_UNROLL]] or [Unknown("key")], None
        if isinstance(v, Obj) and v.kind in ("enumerate", "zip"):
            inner = [self.elements(x) for x in v.attrs["of"]]
            data = next((d for _, d in inner if d is not None), None)
            parts = [e[0] if e else Unknown("element") for e, _ in inner]
            if v.kind == "enumerate":
                parts = [Unknown("index"), *parts]
            return [Seq(parts, True)], data
        if isinstance(v, Data):
            pix = v.pix if v.pix is not None else Pix(taint=v.taint)
            if v.augs:  # batches drawn from an augmenting pipeline are augmented copies
                pix = Pix(
                    start=pix.start,
                    order=pix.order,
                    steps=pix.steps,
                    augs=pix.augs,
                    taint=pix.taint | {f"augmented@{v.line}"},
                )
            return [Seq([pix, Unknown("label", taint=v.taint)], True)], v
        if isinstance(v, Obj) and v.kind == "range":
            return [Unknown("loop counter")], None
        return [
            v if not isinstance(v, (Unknown, Const)) else Unknown("element", taint=v.taint)
        ], None

    def define_class(self, s: ast.ClassDef, env: Env) -> None:
        bases = [self.ev(b, env) for b in s.bases]
        names: list[str] = []
        for b in bases:
            if isinstance(b, Ref):
                names.append(b.dotted)
            elif isinstance(b, Cls):
                names.extend(b.bases)
        cls = Cls(s, env, names, {})
        body = Env(env)
        for item in s.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                f = Func(item, env)
                self.funcs.append(f)
                body.vars[item.name] = f
            else:
                self.stmt(item, body)
        cls.attrs = body.vars
        for b in bases:
            if isinstance(b, Cls):
                for k, v in b.attrs.items():
                    cls.attrs.setdefault(k, v)
                cls.bases.extend(b.bases)
        self.classes.append(cls)
        env.bind(s.name, cls)

    def run_import(self, s: ast.Import | ast.ImportFrom, env: Env) -> None:
        if isinstance(s, ast.Import):
            for a in s.names:
                if a.asname:
                    env.bind(a.asname, Ref(a.name))
                else:
                    root = a.name.split(".")[0]
                    env.bind(root, Ref(root))
            return
        module = s.module or ""
        local_module = module.split(".")[0] not in LIBRARIES
        for a in s.names:
            if a.name == "*":
                continue
            name = a.asname or a.name
            known = env.lookup(a.name)
            if local_module and isinstance(known, (Func, Cls)):
                env.bind(name, known)
            else:
                env.bind(name, Ref(f"{module}.{a.name}" if module else a.name))

    # --- assignment ---------------------------------------------------------------------------
    def assign(self, t: ast.expr, value: Val, env: Env) -> None:
        if isinstance(t, ast.Name):
            env.bind(t.id, value)
            if not isinstance(value, (Const, Unknown, Ref, Func)) and len(value.names) < 8:
                value.names.append(t.id)
        elif isinstance(t, (ast.Tuple, ast.List)):
            star = next((i for i, e in enumerate(t.elts) if isinstance(e, ast.Starred)), None)
            items = value.items if isinstance(value, Seq) else None
            if items is not None and star is None and len(items) == len(t.elts):
                for e, v in zip(t.elts, items, strict=True):
                    self.assign(e, v, env)
                return
            for e in t.elts:
                target = e.value if isinstance(e, ast.Starred) else e
                self.assign(target, Unknown("unpacked", taint=value.taint), env)
        elif isinstance(t, ast.Attribute):
            self.setattr(self.ev(t.value, env), t.attr, value, t)
        elif isinstance(t, ast.Subscript):
            box = self.ev(t.value, env)
            key = self.ev(t.slice, env) if not isinstance(t.slice, ast.Slice) else None
            if isinstance(box, Map) and isinstance(key, Const):
                box.items[key.value] = value
            elif isinstance(box, Seq) and isinstance(key, Const) and isinstance(key.value, int):
                if -len(box.items) <= key.value < len(box.items):
                    box.items[key.value] = value
            else:
                for h in SETATTRS:
                    if h(self, box, "__setitem__", Seq([key or Unknown(), value]), t):
                        break
        elif isinstance(t, ast.Starred):
            self.assign(t.value, value, env)

    def setattr(self, recv: Val, name: str, value: Val, node: ast.AST) -> None:
        for h in SETATTRS:
            if h(self, recv, name, value, node):
                return
        if isinstance(recv, (Inst, Cls)):
            recv.attrs[name] = value
        elif isinstance(recv, Map):
            recv.items[name] = value
        elif isinstance(recv, Obj):
            recv.attrs[name] = value


def _same_consts(vals: list[Val]) -> bool:
    return all(isinstance(v, Const) for v in vals) and len({repr(v.value) for v in vals}) == 1  # type: ignore[attr-defined]


def _base_state(b: Backbone) -> tuple:
    return (b.state, b.flag, b.unfrozen_line, b.unfrozen_how, b.stage, b.bn_frozen, b.bn_line)


def _set_base_state(b: Backbone, st: tuple) -> None:
    b.state, b.flag, b.unfrozen_line, b.unfrozen_how, b.stage, b.bn_frozen, b.bn_line = st


def _merge_states(ends: list) -> tuple:
    if all(e == ends[0] for e in ends):
        return ends[0]
    trainable = [e for e in ends if e[0] in ("all", "partial")]
    if len(trainable) == len(ends):
        best = max(trainable, key=lambda e: e[2])  # the one that says where it was unfrozen
        return ("partial", *best[1:5], all(e[5] for e in ends), best[6])
    first = ends[0]
    unfrozen = max(ends, key=lambda e: e[2])
    return (
        "unknown",
        first[1],
        unfrozen[2],
        unfrozen[3],
        unfrozen[4],
        all(e[5] for e in ends),
        first[6],
    )


def _as_load(t: ast.expr) -> ast.expr:
    if isinstance(t, ast.Name):
        return ast.Name(t.id, ast.Load(), lineno=t.lineno, col_offset=t.col_offset)
    return t


def _truth(v: Val) -> bool | None:
    if isinstance(v, Const):
        try:
            return bool(v.value)
        except Exception:
            return None
    if isinstance(v, (Seq, Map)) and v.complete:
        return bool(v.items)
    if isinstance(v, (Func, Cls, Inst, Ref)) and not (isinstance(v, Ref) and v.undefined):
        return None if isinstance(v, Ref) else True
    return None


EXISTS = ("exists", "isfile", "isdir", "is_file", "is_dir")


def _exists_test(test: ast.expr) -> bool | None:
    """True for `os.path.exists(p)` / `Path(p).exists()` (and isfile/isdir), False for its
    negation, None for any other test."""
    negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    node = test.operand if isinstance(test, ast.UnaryOp) and negated else test
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in EXISTS
    ):
        return not negated
    return None


def _mentions_bn(test: ast.expr) -> bool:
    for n in ast.walk(test):
        if isinstance(n, (ast.Name, ast.Attribute)) and "batchnorm" in name_of(n).lower():
            return True
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            low = n.value.lower()
            if low in ("bn", "_bn", "batch_norm", "batch_normalization", "batchnorm", "norm"):
                return True
    return False


def _negated(test: ast.expr) -> bool:
    return (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)) or (
        isinstance(test, ast.Compare) and any(isinstance(o, ast.NotIn) for o in test.ops)
    )


def _val_word(name: str) -> bool:
    low = name.lower()
    return any(w in low for w in ("val", "valid", "test", "eval", "dev"))
