"""Configuration as a script reads it: YAML/JSON files (written by a `%%writefile` cell or by
`yaml.dump` earlier in the script), argparse defaults, os.environ (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import json
from typing import Any

from medfit.diagnose.foreign.script.registry import SETATTRS, Call, func, method
from medfit.diagnose.foreign.script.values import (
    Const,
    File,
    Map,
    Obj,
    Ref,
    Seq,
    Unknown,
    Val,
    const,
    to_val,
)

MAX_CONFIG_BYTES = 256 * 1024


# --- config files ---------------------------------------------------------------------------------
def find_file(files: dict[str, Any], path: str) -> str | None:
    norm = path.replace("\\", "/").lstrip("./")
    for name in files:
        n = name.replace("\\", "/").lstrip("./")
        if n == norm or n.endswith("/" + norm) or norm.endswith("/" + n):
            return name
    base = [n for n in files if n.replace("\\", "/").rsplit("/", 1)[-1] == norm.rsplit("/", 1)[-1]]
    return base[0] if len(base) == 1 else None


def parse_config(text: str, name: str) -> Val:
    from medfit.files import json_depth_ok

    if len(text) > MAX_CONFIG_BYTES or not json_depth_ok(text, 50):
        return Unknown(f"{name} is too large or nested to read")
    indent = max((len(s) - len(s.lstrip()) for s in text.splitlines()), default=0)
    if indent > 200:
        return Unknown(f"{name} nests too deeply")
    try:
        if name.endswith(".json"):
            return to_val(json.loads(text), name)
        import yaml

        return to_val(yaml.safe_load(text), name)
    except Exception:  # any parse error of the user's file: the value is unknown, not a crash
        return Unknown(f"{name} does not parse")


def _config_from(c: Call, target: Val | None) -> Val:
    it = c.it
    if isinstance(target, Const) and isinstance(target.value, str) and target.src == "file text":
        return parse_config(target.value, "the text")
    path = target.path if isinstance(target, File) else const(target, str)
    if path is None:
        return Unknown("config", taint=target.taint if target is not None else frozenset())
    dumped = find_file(it.file_vals, path)
    if dumped is not None:
        return it.file_vals[dumped]
    name = find_file(it.files, path)
    if name is None:
        it.world.note(
            f"line {c.line}: {path} is read but not in the script; its values are unknown"
        )
        return Map({}, complete=False, src=path)
    return parse_config(it.files[name], name)


@func("safe_load", "load", "full_load", "unsafe_load", "loads", "create")
def _load_config(c: Call) -> Val | None:
    if c.dotted.split(".")[0] not in ("yaml", "json", "OmegaConf", "omegaconf", "toml"):
        return None
    return _config_from(c, c.arg(0))


@func("dump", "safe_dump")
def _dump_config(c: Call) -> Val | None:
    if c.dotted.split(".")[0] not in ("yaml", "json"):
        return None
    f = c.arg(1)
    if isinstance(f, File) and c.args:
        c.it.file_vals[f.path] = c.args[0]
    return Const(None)


@method("read", "read_text", "readlines")
def _read(c: Call) -> Val | None:
    recv = c.recv
    path = recv.path if isinstance(recv, File) else None
    if isinstance(recv, Const) and recv.src == "path":
        path = str(recv.value)
    if path is None:
        return None
    name = find_file(c.it.files, path)
    return Const(c.it.files[name], "file text") if name else Unknown(f"{path} text")


@method("write", "write_text")
def _write(c: Call) -> Val | None:
    recv = c.recv
    text = const(c.arg(0), str)
    path = recv.path if isinstance(recv, File) else None
    if isinstance(recv, Const) and recv.src == "path":
        path = str(recv.value)
    if path is None or text is None:
        return None
    c.it.files[path] = text
    return Const(None)


@func("get_ipython")
def _ipython(c: Call) -> Val:
    return Obj("ipython", c.line)


@method("run_cell_magic", "run_line_magic", "system")
def _magic(c: Call) -> Val | None:
    if not (isinstance(c.recv, Obj) and c.recv.kind == "ipython"):
        return None
    if c.name == "run_cell_magic" and const(c.arg(0), str) == "writefile":
        path, text = const(c.arg(1), str), const(c.arg(2), str)
        if path and text is not None:
            path = path.split()[-1]
            c.it.files[path] = text
    return Const(None)


# --- argparse -------------------------------------------------------------------------------------
@func("ArgumentParser")
def _parser(c: Call) -> Val:
    return Obj("argparser", c.line, {"args": {}})


@method("add_argument", "set_defaults", "parse_args", "parse_known_args", "add_argument_group")
def _argparse(c: Call) -> Val | None:
    p = c.recv
    if not (isinstance(p, Obj) and p.kind == "argparser"):
        return None
    args: dict[str, Val] = p.attrs["args"]
    if c.name == "add_argument_group":
        return p
    if c.name == "set_defaults":
        args.update({k: _src(v, "argparse default") for k, v in c.kwargs.items()})
        return Const(None)
    if c.name == "add_argument":
        flags = [str(const(a, str)) for a in c.args if const(a, str)]
        long = next((f for f in flags if f.startswith("--")), flags[0] if flags else "")
        dest = const(c.kwargs.get("dest"), str) or long.lstrip("-").replace("-", "_")
        action = const(c.kwargs.get("action"), str)
        default = c.kwargs.get("default")
        if default is None:
            default = (
                Const(action == "store_true")
                if action in ("store_true", "store_false")
                else Const(None)
            )
        args[dest] = _src(default, f"argparse default of {long}")
        return Const(None)
    ns = Map(dict(args), complete=True, src="argparse")
    return Seq([ns, Unknown("extra args")], True) if c.name == "parse_known_args" else ns


def _src(v: Val, src: str) -> Val:
    return Const(v.value, src) if isinstance(v, Const) else v


# --- os.environ -----------------------------------------------------------------------------------
def _environ(it: Any, key: str, value: Val, line: int) -> None:
    v = const(value, str)
    if key == "CUDA_VISIBLE_DEVICES" and v is not None:
        kind = "cpu" if v.strip() in ("", "-1") else "gpu"
        it.world.device.append((line, kind, f"CUDA_VISIBLE_DEVICES={v!r}"))


def _environ_set(it: Any, recv: Val, name: str, value: Val, node: Any) -> bool:
    if name == "__setitem__" and isinstance(recv, (Ref, Obj)):
        dotted = (
            recv.dotted
            if isinstance(recv, Ref)
            else ("os.environ" if recv.kind == "environ" else "")
        )
        if dotted == "os.environ" and isinstance(value, Seq) and len(value.items) == 2:
            key = const(value.items[0], str)
            if key is not None:
                _environ(it, key, value.items[1], getattr(node, "lineno", 0))
            return True
    return False


@func("setdefault", "putenv", "update")
def _environ_call(c: Call) -> Val | None:
    """os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1"), os.putenv(...), os.environ.update."""
    if c.dotted not in ("os.environ.setdefault", "os.putenv", "os.environ.update"):
        return None
    if c.name == "update":
        other = c.arg(0)
        items = {**(other.items if isinstance(other, Map) else {}), **c.kwargs}
        for k, v in items.items():
            _environ(c.it, str(k), v, c.line)
    elif len(c.args) >= 2:
        key = const(c.args[0], str)
        if key is not None:
            _environ(c.it, key, c.args[1], c.line)
    return Const(None)


SETATTRS.append(_environ_set)
