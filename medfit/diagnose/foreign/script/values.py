"""The values the reader computes for a script's expressions (nothing is ever executed).

A value is a constant, a container of values, a library name (`Ref`), a function or class of the
script, or one of the things the rules care about: pixels on their way to the model (`Pix`, with
every scaling step), a data pipeline (`Data`), a backbone and its trainable state (`Backbone`),
a Keras/PyTorch model (`Model`), an optimizer, a callback. What cannot be resolved is `Unknown`,
which still carries its provenance (`taint`: the folders it was read from, oversampling before a
split), so that later questions ("was this split made after augmentation?") can be answered.
A script's functions and classes close over their scope (`Env`, kept here beside them).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(eq=False)
class Val:
    taint: frozenset[str] = field(default=frozenset(), kw_only=True)
    names: list[str] = field(default_factory=list, kw_only=True)


@dataclass(eq=False)
class Unknown(Val):
    why: str = ""


@dataclass(eq=False)
class Const(Val):
    value: Any
    src: str = ""  # where it came from when not a literal: "config.yaml train.lr", "argparse"


@dataclass(eq=False)
class Seq(Val):
    items: list[Val]
    is_tuple: bool = False
    complete: bool = True


@dataclass(eq=False)
class Map(Val):
    items: dict[Any, Val]
    complete: bool = True  # every key is known (a literal), so a missing key takes .get's default
    src: str = ""


@dataclass(eq=False)
class Ref(Val):
    """A name from a library (`tensorflow.keras.applications.ResNet50`), or used undefined."""

    dotted: str
    undefined: bool = False

    @property
    def last(self) -> str:
        return self.dotted.rsplit(".", 1)[-1]


@dataclass(eq=False)
class Func(Val):
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    env: Env
    called: bool = False


@dataclass(eq=False)
class Cls(Val):
    node: ast.ClassDef
    env: Env
    bases: list[str]
    attrs: dict[str, Val]

    def lookup(self, name: str) -> Val | None:
        return self.attrs.get(name)


@dataclass(eq=False)
class Inst(Val):
    cls: Cls
    attrs: dict[str, Val]
    line: int = 0


@dataclass(eq=False)
class Bound(Val):
    self_: Val
    func: Func


class Env:
    """One scope: a module, a function call, a class body or a comprehension."""

    __slots__ = ("globals_", "module", "parent", "vars")

    def __init__(self, parent: Env | None) -> None:
        self.vars: dict[str, Val] = {}
        self.parent = parent
        self.globals_: set[str] = set()
        self.module: Env = parent.module if parent is not None else self

    def lookup(self, name: str) -> Val | None:
        env: Env | None = self
        while env is not None:
            if name in env.vars:
                return env.vars[name]
            env = env.parent
        return None

    def bind(self, name: str, value: Val) -> None:
        (self.module if name in self.globals_ else self).vars[name] = value


@dataclass(frozen=True)
class Step:
    """One thing done to pixel values on their way to the model."""

    # decode | decode_bgr | rgb | bgr | gray | to_float | div | mul | add | sub | center |
    # scale_std | pre (preprocess_input, arg = mode) | normalize (arg = (mean, std)) |
    # normalize_255 | to_unit | convert_dtype | unknown
    op: str
    arg: Any
    line: int
    text: str


@dataclass(frozen=True)
class Aug:
    kind: (
        str  # hflip | vflip | rot | rot90 | transpose | color | zoom | shift | shear | crop | other
    )
    amount: float | None  # degrees for rot, probability for flips
    line: int
    text: str


@dataclass(eq=False)
class Pix(Val):
    """Pixel values (an array, a tensor, a data set's images) and how they were scaled."""

    start: str = "unknown"  # raw (decoded image files) | unknown (np.load) | input (keras.Input)
    order: str | None = None  # rgb | bgr | gray
    steps: tuple[Step, ...] = ()
    through: tuple[Use, ...] = ()  # backbones this tensor has passed (Keras graph)
    augs: tuple[Aug, ...] = ()
    head: tuple[Any, Any, int] | None = None  # (units, activation, line) of the last Dense
    rows: int | None = None  # samples, when a slice makes it literal

    def then(self, step: Step) -> Pix:
        return replace(self, steps=(*self.steps, step), names=[])


@dataclass(eq=False)
class Use:
    """A backbone wired into a Keras graph: what its input went through, and how it is called."""

    base: Backbone
    steps: tuple[Step, ...]
    training: bool | None  # the `training=` argument of the call (None: not given)
    line: int
    how: str  # call | flattened | sequential | input_tensor | direct
    augs: tuple[Aug, ...] = ()


@dataclass(eq=False)
class Backbone(Val):
    name: str
    lib: str  # keras | hub | torchvision | timm | hf | ultralytics | fastai | torch
    family: str
    mode: str
    timm: str | None
    pretrained: bool | None
    line: int
    size: int | None = None
    classes: int | None = None
    flag: bool = True  # Keras: the container's own `trainable`
    state: str = "all"  # all | frozen | partial | unknown (its layers/parameters)
    unfrozen_line: int = 0  # where it was (last) made trainable; 0 = by default
    unfrozen_how: str = ""
    stage: str = ""  # the layers a partial unfreeze selected ("layers[-50:]", "conv5_block")
    bn_frozen: bool = False
    bn_line: int = 0
    frozen_before: bool = False  # a frozen stage came first
    log: list[tuple[int, int, str, str]] = field(default_factory=list)  # seq, line, state, how


@dataclass(eq=False)
class Optimizer(Val):
    name: str  # lower-case: adam, sgd, ...
    lib: str  # keras | torch
    line: int
    lr: float | None = None
    lr_src: str = ""  # "given" | "framework default" | "config.yaml train.lr" | ...
    lr_line: int = 0
    momentum: float | None = None
    params: Val | None = None  # torch: what it optimizes
    groups: list[tuple[Val, float | None]] = field(default_factory=list)


@dataclass(eq=False)
class Compile:
    line: int
    seq: int
    optimizer: Optimizer | None
    loss: str | None
    metrics: list[str] | None  # None: not resolvable
    weighted_loss: bool = False


@dataclass(eq=False)
class Model(Val):
    kind: str  # functional | sequential | subclass | direct | torch
    line: int
    uses: list[Use] = field(default_factory=list)
    layers: list[Val] = field(default_factory=list)
    head: tuple[Any, Any, int] | None = None
    compiled: Compile | None = None
    snapshot: dict[int, tuple[str, bool, int, str, str]] | None = None  # at the train fn build
    augs: tuple[Aug, ...] = ()
    inst: Inst | None = None


@dataclass(eq=False)
class Callback(Val):
    kind: str
    line: int
    monitor: str | None = None
    path: str | None = None  # ModelCheckpoint's filepath


@dataclass(eq=False)
class Generator(Val):
    """A Keras ImageDataGenerator: its arguments, the scaling and the augmentation it applies."""

    line: int
    kwargs: dict[str, Any]  # resolved constants (None when not resolvable)
    kw_lines: dict[str, int]
    steps: tuple[Step, ...]
    augs: tuple[Aug, ...]


@dataclass(eq=False)
class Transform(Val):
    """A torchvision/albumentations/Keras-Sequential preprocessing+augmentation pipeline."""

    lib: str
    line: int
    steps: tuple[Step, ...] = ()
    augs: tuple[Aug, ...] = ()


@dataclass(eq=False)
class Data(Val):
    """A data pipeline: where its images come from, what it does to them, how it batches."""

    kind: str  # flow | tfds | loader | torchds | arrays | ultra | hf | fastai
    line: int
    pix: Pix | None = None
    augs: tuple[Aug, ...] = ()
    directory: str | None = None
    subset: str | None = None  # training | validation (Keras validation_split)
    val_split: float | None = None
    batch: int | None = None
    take: int | None = None  # images, when take(n) makes the size literal
    cached: bool = False
    decodes: bool = False  # decodes image files per step
    workers: int | None = None
    generator: Generator | None = None
    shuffle: bool | None = None
    sampler: str | None = None  # "weighted" when a balanced sampler draws it
    sources: tuple[Val, ...] = ()
    valid: Data | None = None  # fastai: the validation folder of a from_folder DataBunch

    def derive(self, **changes: Any) -> Data:
        return replace(self, names=list(self.names), **changes)


@dataclass(eq=False)
class ParamSet(Val):
    """`model.parameters()`, `model.layer4.parameters()`, `base.layers[-20:]`: a part of a model."""

    owner: Val
    scope: str  # all | body | head | part | bn
    line: int
    text: str = ""


@dataclass(eq=False)
class File(Val):
    path: str
    mode: str = "r"


@dataclass(eq=False)
class SplitRec:
    line: int
    seq: int
    inputs: list[Val]
    grouped: bool  # GroupShuffleSplit/GroupKFold or groups=
    how: str = "train_test_split"  # the call that made it (splitfolders.ratio, random_split)
    out_dir: str | None = None  # the folder it writes the split into (splitfolders)


@dataclass
class Event:
    kind: str  # oversample | augment_copy | evaluate | device | class_weight | count | sampler
    line: int
    seq: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class FitRec:
    """A training call (`fit`, `train`, `fine_tune`, a PyTorch epoch loop) as the script runs it."""

    line: int
    seq: int
    api: str  # keras | torch | lightning | hf | ultralytics | fastai
    model: Val | None
    x: Val | None
    val: Val | None
    val_node: ast.AST | None = None
    x_node: ast.AST | None = None
    val_split: float | None = None
    epochs: int | None = None
    initial_epoch: int | None = None
    batch: int | None = None
    class_weight: bool = False
    callbacks: list[Callback] = field(default_factory=list)
    optimizer: Optimizer | None = None
    compiled: Compile | None = None
    states: dict[int, tuple[str, bool, int, str, str]] = field(default_factory=dict)
    device: str | None = None
    val_steps: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    """Everything the script was seen to do, in the order it does it."""

    backbones: list[Backbone] = field(default_factory=list)
    models: list[Model] = field(default_factory=list)
    fits: list[FitRec] = field(default_factory=list)
    compiles: list[Compile] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    generators: list[Generator] = field(default_factory=list)
    data: list[Data] = field(default_factory=list)
    splits: list[SplitRec] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    losses: list[tuple[int, str, bool]] = field(default_factory=list)  # line, name, weighted
    device: list[tuple[int, str, str]] = field(default_factory=list)  # line, cpu|gpu, text
    denses: list[tuple[int, Any, Any]] = field(default_factory=list)  # line, units, activation
    sizes: list[tuple[int, int]] = field(default_factory=list)  # line, image size
    strings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counter: int = 0

    def seq(self) -> int:
        self.counter += 1
        return self.counter

    def note(self, text: str) -> None:
        if text not in self.notes and len(self.notes) < 40:
            self.notes.append(text)


def const(v: Val | None, kind: type | tuple[type, ...] = object) -> Any:
    """The Python value of a constant of `kind` (bool is not an int here), else None."""
    if not isinstance(v, Const):
        return None
    value = v.value
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        return None
    return value if isinstance(value, kind) else None


def number(v: Val | None) -> float | None:
    value = const(v, (int, float))
    return float(value) if value is not None else None


def pyval(v: Val | None, depth: int = 0) -> Any:
    """A plain Python value (constants, lists, tuples, dicts of them), else None."""
    if depth > 8 or v is None:
        return None
    if isinstance(v, Const):
        return v.value
    if isinstance(v, Seq):
        items = [pyval(i, depth + 1) for i in v.items[:64]]
        return tuple(items) if v.is_tuple else items
    if isinstance(v, Map):
        return {k: pyval(i, depth + 1) for k, i in list(v.items.items())[:64]}
    return None


def to_val(obj: Any, src: str = "", depth: int = 0, budget: list[int] | None = None) -> Val:
    """A parsed YAML/JSON document as values (bounded: YAML aliases can make a small file huge)."""
    budget = budget if budget is not None else [5000]
    budget[0] -= 1
    if depth > 20 or budget[0] < 0:
        return Unknown("too deep")
    if isinstance(obj, dict):
        return Map(
            {k: to_val(v, f"{src} {k}".strip(), depth + 1, budget) for k, v in obj.items()},
            src=src,
        )
    if isinstance(obj, (list, tuple)):
        return Seq([to_val(v, src, depth + 1, budget) for v in obj], isinstance(obj, tuple))
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return Const(obj, src)
    return Unknown(type(obj).__name__)


def taint_of(*vals: Val | None) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for v in vals:
        if v is not None and v.taint:
            out = out | v.taint
    return out


@dataclass(eq=False)
class Obj(Val):
    """Any other library object the rules look at (a trainer, a learner, an argument parser)."""

    kind: str
    line: int
    attrs: dict[str, Any] = field(default_factory=dict)
