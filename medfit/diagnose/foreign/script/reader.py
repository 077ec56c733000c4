"""The interpreter as the library handlers, models and facts see it, and the records of its state.

`Reader` is what a handler may use of `interp.Interp` (which satisfies it): the source, the
`World` it records into, its caches and the loops and call frames it is inside, and the few calls
back into it. It lives below the interpreter so that the registry and the libraries, which
interp.py reaches, never import interp.py back.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Protocol

from medfit.diagnose.foreign.script.source import Source
from medfit.diagnose.foreign.script.values import Data, Env, FitRec, Func, Inst, Val, World


@dataclass
class Frame:
    node: ast.AST
    line: int  # the call site
    name: str
    cond: int
    returns: list[Val] = field(default_factory=list)
    env: Env | None = None


@dataclass
class Loop:
    line: int
    epochs: int | None
    is_epoch: bool
    data: Data | None
    fit: FitRec | None = None
    loaders: list[Data] = field(default_factory=list)


class Reader(Protocol):
    src: Source
    world: World
    files: dict[str, str]
    file_vals: dict[str, Val]
    cache: dict[tuple[int, str], Any]
    frames: list[Frame]
    loops: list[Loop]
    selective: int
    bn_select: bool | None
    sel_text: list[str]
    device_ctx: list[str]

    def seq(self) -> int: ...

    def where(self, line: int) -> str: ...

    def getattr(self, recv: Val, name: str, node: ast.AST) -> Val: ...

    def elements(self, v: Val) -> tuple[list[Val], Any]: ...

    def call_func(
        self,
        f: Func,
        args: list[Val],
        kwargs: dict[str, Val],
        node: ast.AST,
        open_: bool = False,
    ) -> Val: ...

    def call_value(
        self, fv: Val, args: list[Val], kwargs: dict[str, Val], node: ast.Call, open_: bool
    ) -> Val: ...

    def method_of(self, inst: Inst, name: str) -> Func | None: ...

    def call_method_of(self, inst: Inst, name: str, node: ast.AST) -> Val | None: ...
