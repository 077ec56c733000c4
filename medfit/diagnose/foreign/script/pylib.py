"""Python itself and its standard library, as far as a script's configuration goes: builtins on
constants, str/dict/list methods, paths (POSIX and Windows), directory listings (which folders the
data comes from). Config files, argparse and os.environ are in configs.py.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
from typing import Any

from medfit.diagnose.foreign.script.arith import HUGE_FORMAT, MAX_TEXT
from medfit.diagnose.foreign.script.registry import ATTRS, Call, func, method
from medfit.diagnose.foreign.script.values import (
    Const,
    Data,
    File,
    Map,
    Obj,
    ParamSet,
    Pix,
    Ref,
    Seq,
    Unknown,
    Val,
    const,
    pyval,
    taint_of,
)

WINDOWS = re.compile(r"^[A-Za-z]:|\\")


def windows(path: str) -> bool:
    return bool(WINDOWS.search(path))


def join_paths(parts: list[str]) -> str:
    mod = ntpath if any(windows(p) for p in parts) else posixpath
    return mod.join(*parts) if parts else ""


# --- builtins -------------------------------------------------------------------------------------
@func("range", "trange")
def _range(c: Call) -> Val:
    nums = [const(a, int) for a in c.args[:2]]
    n = None
    if len(c.args) == 1 and nums[0] is not None:
        n = nums[0]
    elif len(c.args) >= 2 and None not in nums:
        n = nums[1] - nums[0]
    return Obj("range", c.line, {"n": n})


@func("enumerate", "zip")
def _enumerate(c: Call) -> Val:
    return Obj(c.name, c.line, {"of": list(c.args)})


@func("tqdm", "tqdm_notebook", "sorted", "reversed", "iter", "filter", "deepcopy", "copy")
def _same(c: Call) -> Val | None:
    if c.name == "filter":
        return c.args[1] if len(c.args) > 1 else None
    if c.name == "copy" and not c.dotted.startswith("copy"):
        return None
    return c.args[0] if c.args else None


@func("next")
def _next(c: Call) -> Val | None:
    if not c.args:
        return None
    elems, _ = c.it.elements(c.args[0])
    return elems[0] if elems else None


@func("len")
def _len(c: Call) -> Val | None:
    v = c.arg(0)
    if isinstance(v, (Seq, Map)) and v.complete:
        return Const(len(v.items))
    if isinstance(v, Const) and isinstance(v.value, (str, tuple, list)):
        return Const(len(v.value))
    return Unknown("len", taint=v.taint if v else frozenset())


@func("float", "int", "str", "bool", "round", "abs")
def _convert(c: Call) -> Val | None:
    v = c.arg(0)
    if c.dotted != c.name:
        return None
    if isinstance(v, Unknown):
        return v
    if not isinstance(v, Const):
        return None
    conv: Any = {"float": float, "int": int, "str": str, "bool": bool, "round": round, "abs": abs}
    try:
        if c.name == "str" and not isinstance(v.value, (str, int, float, bool, type(None))):
            return None
        if c.name == "round" and len(c.args) > 1:
            return Const(round(v.value, const(c.args[1], int) or 0), v.src)
        return Const(conv[c.name](v.value), v.src)
    except (ValueError, TypeError, OverflowError):
        return None


@func("min", "max", "sum")
def _minmax(c: Call) -> Val | None:
    values = [pyval(a) for a in c.args]
    if len(values) == 1 and isinstance(values[0], (list, tuple)):
        values = list(values[0])
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        fn: Any = {"min": min, "max": max, "sum": sum}[c.name]
        return Const(fn(values))
    if c.name in ("max", "min") and c.args and isinstance(c.args[0], Pix):
        return Unknown(f"stat:{c.name}")
    return None


@func("list", "tuple", "set")
def _list(c: Call) -> Val | None:
    v = c.arg(0)
    if v is None:
        return Seq([], c.name == "tuple")
    if isinstance(v, Seq):
        return Seq(list(v.items), c.name == "tuple", v.complete, taint=v.taint)
    if isinstance(v, Map):
        return Seq([Const(k) for k in v.items], complete=v.complete)
    return v if isinstance(v, (Pix, Data, ParamSet)) else None


@func("dict", "SimpleNamespace", "EasyDict", "edict", "ConfigDict", "Munch", "AttrDict", "Box")
def _dict(c: Call) -> Val:
    out = Map({}, complete=not c.open_)
    first = c.arg(0)
    if isinstance(first, Map):
        out.items.update(first.items)
        out.complete &= first.complete
        out.src = first.src
    elif first is not None:
        out.complete = False
    out.items.update(c.kwargs)
    return out


BUILTIN_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
    "tuple": tuple, "type(None)": type(None),
}  # fmt: skip


@func("isinstance")
def _isinstance(c: Call) -> Val | None:
    """`isinstance(x, str)` of a constant: known (argparse defaults are checked this way)."""
    x, t = c.arg(0), c.arg(1)
    names = [t] if not isinstance(t, Seq) else t.items
    types = [BUILTIN_TYPES.get(n.dotted) for n in names if isinstance(n, Ref)]
    if c.dotted != "isinstance" or not isinstance(x, Const) or not types or None in types:
        return None
    if isinstance(x.value, bool) and bool not in types and int in types:
        return Const(True)
    return Const(any(isinstance(x.value, tp) for tp in types if tp is not None))


@func("print", "display", "isinstance", "super", "hasattr", "callable")
def _nothing(c: Call) -> Val:
    return Unknown(c.name)


@func("getattr")
def _getattr(c: Call) -> Val | None:
    name = const(c.arg(1), str)
    if name is None or not c.args:
        return None
    out = c.it.getattr(c.args[0], name, c.node)
    if isinstance(out, Unknown) and len(c.args) > 2:
        return c.args[2]
    return out


@func("open")
def _open(c: Call) -> Val | None:
    if c.dotted != "open":
        return None
    path = const(c.arg(0, "file"), str)
    mode = const(c.arg(1, "mode"), str) or "r"
    return File(path, mode) if path is not None else None


# --- str / dict / list methods ------------------------------------------------------------------
STR_METHODS = {"lower", "upper", "strip", "rstrip", "lstrip", "title", "capitalize", "replace"}
STR_METHODS |= {"split", "startswith", "endswith", "join", "format", "rsplit"}


@method(*STR_METHODS)
def _str_method(c: Call) -> Val | None:
    recv = c.recv
    if not (isinstance(recv, Const) and isinstance(recv.value, str)):
        return None
    if c.name == "join":
        items = pyval(c.arg(0))
        if isinstance(items, (list, tuple)) and all(isinstance(i, str) for i in items):
            out = recv.value.join(items)
            return Const(out) if len(out) <= MAX_TEXT else None
        return Unknown("join", taint=taint_of(*c.args))
    args = [pyval(a) for a in c.args]
    kwargs = {k: pyval(v) for k, v in c.kwargs.items()}
    if any(a is None for a in args) or any(v is None for v in kwargs.values()):
        return Unknown(f".{c.name}()", taint=taint_of(*c.args))
    if c.name == "format" and HUGE_FORMAT.search(recv.value):
        return None
    try:
        out = getattr(recv.value, c.name)(*args, **kwargs)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        return None
    if isinstance(out, str) and len(out) > MAX_TEXT:
        return None
    if isinstance(out, list):
        return Seq([Const(x) for x in out[:64]], complete=len(out) <= 64)
    return Const(out, recv.src)


@method("get", "setdefault", "pop")
def _dict_get(c: Call) -> Val | None:
    recv = c.recv
    key = c.arg(0)
    if not isinstance(recv, Map) or not isinstance(key, Const):
        return None
    if key.value in recv.items:
        return recv.items[key.value]
    default = c.arg(1)
    if recv.complete:
        out = default if default is not None else Const(None)
        if c.name == "setdefault":
            recv.items[key.value] = out
        return out
    return Unknown(f"{recv.src or 'config'} {key.value}".strip())


@method("update")
def _dict_update(c: Call) -> Val | None:
    recv = c.recv
    if not isinstance(recv, Map):
        return None
    other = c.arg(0)
    if isinstance(other, Map):
        recv.items.update(other.items)
        recv.complete &= other.complete
    elif other is not None:
        recv.complete = False
    recv.items.update(c.kwargs)
    return Const(None)


@method("keys", "values", "items", "copy")
def _dict_view(c: Call) -> Val | None:
    recv = c.recv
    if isinstance(recv, Map):
        if c.name == "copy":
            return Map(dict(recv.items), recv.complete, recv.src)
        if c.name == "keys":
            return Seq([Const(k) for k in recv.items], complete=recv.complete)
        if c.name == "values":
            return Seq(list(recv.items.values()), complete=recv.complete)
        return Seq(
            [Seq([Const(k), v], True) for k, v in recv.items.items()], complete=recv.complete
        )
    if isinstance(recv, Seq) and c.name == "copy":
        return Seq(list(recv.items), recv.is_tuple, recv.complete)
    return None


@method("append", "extend", "insert")
def _list_add(c: Call) -> Val | None:
    recv = c.recv
    if not isinstance(recv, Seq) or not c.args:
        return None
    new = c.args[-1]
    if c.name == "extend":
        if isinstance(new, Seq):
            recv.items.extend(new.items[: max(0, 16 - len(recv.items))])
        recv.complete = False
        recv.taint |= new.taint
        return Const(None)
    if len(recv.items) < 16:
        recv.items.append(new)
    recv.complete = False  # appended in a loop: the count is not the literal's
    recv.taint |= new.taint
    return Const(None)


# --- paths --------------------------------------------------------------------------------------
@func("join", "dirname", "basename", "abspath", "normpath", "expanduser", "realpath")
def _ospath(c: Call) -> Val | None:
    if not c.dotted.startswith(("os.path", "path", "osp")) and c.dotted not in (
        "join",
        "dirname",
        "basename",
    ):
        return None
    parts = [const(a, str) for a in c.args]
    if None in parts or not parts:
        dirs = {f"dir:{p}" for p in parts if p}
        return Unknown("path", taint=taint_of(*c.args) | frozenset(dirs))
    p = [str(x) for x in parts]
    mod: Any = ntpath if any(windows(x) for x in p) else posixpath
    if c.name == "join":
        return Const(mod.join(*p), "path")
    if c.name in ("abspath", "realpath", "expanduser"):
        return Const(p[0], "path")
    return Const(getattr(mod, c.name)(p[0]), "path")


@func("Path", "PurePath", "PureWindowsPath", "WindowsPath", "PosixPath", "PurePosixPath")
def _path(c: Call) -> Val | None:
    parts = [const(a, str) for a in c.args]
    if not parts:
        return Const(".", "path")
    if None in parts:
        return Unknown("path", taint=taint_of(*c.args))
    return Const(join_paths([str(p) for p in parts]), "path")


@method("joinpath")
def _joinpath(c: Call) -> Val | None:
    parts = [const(a, str) for a in [c.recv, *c.args]]
    if None in parts:
        return None
    return Const(join_paths([str(p) for p in parts]), "path")


def _path_attr(it: Any, recv: Val, name: str, node: Any) -> Val | None:
    if not (isinstance(recv, Const) and recv.src == "path" and isinstance(recv.value, str)):
        return None
    mod: Any = ntpath if windows(recv.value) else posixpath
    if name == "parent":
        return Const(mod.dirname(recv.value.rstrip("/\\")), "path")
    if name == "name":
        return Const(mod.basename(recv.value.rstrip("/\\")))
    if name == "stem":
        return Const(mod.splitext(mod.basename(recv.value))[0])
    return None


ATTRS.append(_path_attr)


@func("listdir", "glob", "walk", "scandir", "iglob")
@method("glob", "rglob", "iterdir")
def _listing(c: Call) -> Val | None:
    target = c.recv if c.recv is not None and c.name in ("glob", "rglob", "iterdir") else c.arg(0)
    if c.recv is None and c.name == "glob" and not c.dotted.startswith("glob"):
        return None
    path = const(target, str)
    if path is None:
        return Unknown("listing", taint=target.taint if target is not None else frozenset())
    folder = path.split("*")[0].rstrip("/\\") or path
    return Unknown("listing", taint=frozenset({f"dir:{folder}"}))
