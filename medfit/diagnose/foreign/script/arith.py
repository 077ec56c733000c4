"""Constant folding that stays bounded (no `10 ** 10 ** 9`, no `"x" * 10 ** 9`, no
`"%099999999d"`), and arithmetic on pixels as scaling steps (`x / 255.`, `(x - mean) / std`)."""

from __future__ import annotations

import ast
import operator
import re
from typing import Any

from medfit.diagnose.foreign.script.values import Const, Pix, Seq, Step, Unknown, Val

BUILTINS = {
    "float", "int", "str", "bool", "len", "range", "list", "tuple", "dict", "set", "sorted",
    "reversed", "enumerate", "zip", "min", "max", "sum", "abs", "round", "print", "open",
    "isinstance", "getattr", "hasattr", "type", "super", "map", "filter", "iter", "next", "any",
    "all", "object", "Exception", "ValueError", "vars", "globals", "locals", "id", "hash",
    "display", "exit", "quit", "input", "frozenset", "format", "repr", "divmod", "pow", "slice",
    "property", "staticmethod", "classmethod", "setattr", "callable", "issubclass",
    "NotImplementedError",
    "KeyError", "RuntimeError", "TypeError", "OSError", "FileNotFoundError", "StopIteration",
    "True", "False", "None", "__file__", "get_ipython", "bytes", "complex", "chr", "ord", "hex",
}  # fmt: skip
MAX_TEXT = 10_000
HUGE_FORMAT = re.compile(r"%[-+ #0]*\d{4,}|\{[^}]*:[^}]*\d{4,}|\*\s*\d{5,}")
OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def name_of(node: ast.AST) -> str:
    """`ResNet50` for ResNet50(...), keras.applications.ResNet50(...), a.b.ResNet50."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def fold(op: type, a: Any, b: Any) -> Any:
    """a op b for constants, or None when it would be unbounded or fails."""
    if isinstance(a, bool) or isinstance(b, bool):
        a, b = (int(a) if isinstance(a, bool) else a), (int(b) if isinstance(b, bool) else b)
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num):
        if op is ast.Pow and (abs(b) > 64 or abs(a) > 1e6):
            return None
        big = isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > 4096
        if op is ast.Mult and big:
            return None
    elif isinstance(a, str) and op is ast.Mod:
        if HUGE_FORMAT.search(a) or len(a) > MAX_TEXT:
            return None
    elif op is ast.Mult and isinstance(a, (str, tuple, list)) and isinstance(b, int):
        if len(a) * b > MAX_TEXT:
            return None
    elif not (op is ast.Add and type(a) is type(b) and isinstance(a, (str, tuple))):
        return None
    fn = OPS.get(op)
    if fn is None:
        return None
    try:
        out = fn(a, b)
    except (ArithmeticError, ValueError, TypeError, KeyError, IndexError):
        return None
    if isinstance(out, str) and len(out) > MAX_TEXT:
        return None
    return out


def stat_of(v: Val) -> str | None:
    return v.why[5:] if isinstance(v, Unknown) and v.why.startswith("stat:") else None


def pix_op(a: Val, op: ast.operator, b: Val, line: int, text: str) -> Val:
    """Arithmetic on pixels: the scaling step it is (x / 255., x - mean, (x - m) / s)."""
    pix, other, left = (a, b, True) if isinstance(a, Pix) else (b, a, False)
    assert isinstance(pix, Pix)
    if isinstance(other, Pix):
        return (
            pix
            if isinstance(op, (ast.Add, ast.Sub))
            else pix.then(Step("unknown", None, line, text))
        )
    num = (
        other.value if isinstance(other, Const) and isinstance(other.value, (int, float)) else None
    )
    vec = (
        other.value if isinstance(other, Const) and isinstance(other.value, (list, tuple)) else None
    )
    stat = stat_of(other)
    kind = {ast.Div: "div", ast.Mult: "mul", ast.Add: "add", ast.Sub: "sub"}.get(type(op))
    if kind is None or (not left and kind in ("div", "sub")):
        return pix.then(Step("unknown", None, line, text))
    if num is not None and not isinstance(num, bool):
        return pix.then(Step(kind, float(num), line, text))
    if stat == "mean" and kind == "sub":
        return pix.then(Step("center", None, line, text))
    if stat == "min" and kind == "sub":
        return pix.then(Step("center", "min", line, text))
    if stat == "std" and kind == "div":
        return pix.then(Step("scale_std", None, line, text))
    if stat in ("max", "range") and kind == "div":
        return pix.then(Step("div", "max", line, text))
    if vec is not None and kind in ("sub", "div"):
        return pix.then(Step("center" if kind == "sub" else "scale_std", vec, line, text))
    if isinstance(other, Seq) and kind in ("sub", "div"):
        return pix.then(Step("center" if kind == "sub" else "scale_std", None, line, text))
    return pix.then(Step("unknown", None, line, text))


def hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True
