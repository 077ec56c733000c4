"""Calls into the script's own code: functions with their parameters bound to the call's
arguments (no recursion into a function already running, a bounded depth), classes instantiated
by running `__init__`, and methods a framework calls by itself (`configure_optimizers`,
`__getitem__`), run once."""

from __future__ import annotations

import ast
from typing import Any

from medfit.diagnose.foreign.script.arith import name_of
from medfit.diagnose.foreign.script.exprs import Exprs
from medfit.diagnose.foreign.script.reader import Frame
from medfit.diagnose.foreign.script.registry import MAX_CALL_DEPTH
from medfit.diagnose.foreign.script.values import (
    Cls,
    Const,
    Env,
    Func,
    Inst,
    Map,
    Seq,
    Unknown,
    Val,
    taint_of,
)


class Calls(Exprs):
    frames: list[Frame]
    cond: int
    selective: int
    module: Env
    cache: dict[tuple[int, str], Any]

    def run(self, stmts: list[ast.stmt], env: Env) -> bool:
        raise NotImplementedError

    def call_func(
        self,
        f: Func,
        args: list[Val],
        kwargs: dict[str, Val],
        node: ast.AST,
        open_: bool = False,
    ) -> Val:
        if len(self.frames) >= MAX_CALL_DEPTH or any(fr.node is f.node for fr in self.frames):
            return Unknown("recursive or too deep call", taint=taint_of(*args))
        f.called = True
        env = Env(f.env)
        a = f.node.args
        params = [*a.posonlyargs, *a.args]
        defaults = [None] * (len(params) - len(a.defaults)) + list(a.defaults)
        kwargs = dict(kwargs)
        for i, (p, d) in enumerate(zip(params, defaults, strict=True)):
            if i < len(args):
                v = args[i]
            elif p.arg in kwargs:
                v = kwargs.pop(p.arg)
            elif d is not None:
                v = self.ev(d, f.env)
            else:
                v = Unknown(f"parameter {p.arg}")
            env.vars[p.arg] = v
        if a.vararg is not None:
            env.vars[a.vararg.arg] = Seq(args[len(params) :], True, complete=not open_)
        for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
            if p.arg in kwargs:
                env.vars[p.arg] = kwargs.pop(p.arg)
            else:
                env.vars[p.arg] = self.ev(d, f.env) if d is not None else Unknown(p.arg)
        if a.kwarg is not None:
            env.vars[a.kwarg.arg] = Map(kwargs, complete=not open_)
        if isinstance(f.node, ast.Lambda):
            self.frames.append(Frame(f.node, getattr(node, "lineno", 0), "lambda", self.cond))
            try:
                return self.ev(f.node.body, env)
            finally:
                self.frames.pop()
        frame = Frame(f.node, getattr(node, "lineno", 0), f.node.name, self.cond, env=env)
        self.frames.append(frame)
        saved_sel, self.selective = self.selective, 0
        try:
            self.run(f.node.body, env)
        finally:
            self.frames.pop()
            self.selective = saved_sel
        rets = frame.returns
        if not rets:
            return Const(None)
        if all(r is rets[0] for r in rets):
            return rets[0]
        known = [r for r in rets if not (isinstance(r, Const) and r.value is None)]
        if len(known) == 1:
            return known[0]
        return Unknown("the function returns different values", taint=taint_of(*rets))

    def instantiate(self, cls: Cls, args: list[Val], kwargs: dict[str, Val], node: ast.Call) -> Val:
        inst = Inst(cls, {}, node.lineno)
        init = cls.attrs.get("__init__")
        if isinstance(init, Func):
            self.call_func(init, [inst, *args], kwargs, node)
        elif any(name_of(d) == "dataclass" for d in cls.node.decorator_list):
            fields = [k for k, v in cls.attrs.items() if not isinstance(v, Func)]
            for i, k in enumerate(fields):
                inst.attrs[k] = args[i] if i < len(args) else kwargs.get(k, cls.attrs[k])
        return inst

    def src_module_lookup(self, name: str) -> Val | None:
        return self.module.vars.get(name)

    def method_of(self, inst: Inst, name: str) -> Func | None:
        f = inst.cls.attrs.get(name)
        return f if isinstance(f, Func) else None

    def call_method_of(self, inst: Inst, name: str, node: ast.AST) -> Val | None:
        """Run a method the framework calls (configure_optimizers, __getitem__), once."""
        key = (id(inst), name)
        if key in self.cache:
            return self.cache[key]
        f = self.method_of(inst, name)
        if f is None:
            return None
        self.cache[key] = Unknown("running")
        argc = len(f.node.args.args) - 1
        out = self.call_func(f, [inst, *[Unknown("argument")] * max(0, argc)], {}, node)
        self.cache[key] = out
        return out
