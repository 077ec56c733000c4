"""What the script says about the run, as plain facts (ScriptFacts) the lead's rules and the
medfit command use: backbone, input size, classes, data folders, device, validation set, and
every training call with its learning rate and the trainable state of the body."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medfit.diagnose.foreign.script.fit_lib import val_of
from medfit.diagnose.foreign.script.models import head_of, uses_of
from medfit.diagnose.foreign.script.tables import KAGGLE_PNEUMONIA_VAL
from medfit.diagnose.foreign.script.values import (
    Backbone,
    Data,
    Event,
    FitRec,
    Pix,
    Use,
    Val,
)

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.interp import Interp

TEST_WORDS = re.compile(r"(^|[^a-z])(test|testing)([^a-z]|$)|x_test|y_test|test_", re.I)
VAL_WORDS = re.compile(r"(^|[^a-z])(val|valid|validation|dev)([^a-z]|$)|x_val|y_val|val_", re.I)
TRAIN_WORDS = re.compile(r"(^|[^a-z])(train|training)([^a-z]|$)|x_train|train_", re.I)


@dataclass
class FitCall:
    line: int
    epochs: int | None
    initial_epoch: int | None
    lr: float | None
    optimizer: str | None
    body: str  # frozen | partial | all | unknown
    bn_inference: bool | None


@dataclass
class ScriptFacts:
    backbone: str | None = None
    family: str | None = None
    timm_name: str | None = None
    pretrained: bool | None = None
    img_size: int | None = None
    classes: int | None = None
    data_dirs: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    val_size: int | None = None
    val_source: str | None = None
    fits: list[FitCall] = field(default_factory=list)
    monitors: list[str] = field(default_factory=list)
    early_stopping: bool = False
    # beyond the interface: how the training images reach the model, for the lead's input_bound
    # (per_step_decode | cached | in_memory | None)
    pipeline: str | None = None


def words_of(v: Val | None, node_text: str = "") -> str:
    """Names and folders that say which split a value is: variable names, its directory."""
    parts = [node_text]
    if v is not None:
        parts += v.names
        if isinstance(v, Data):
            parts.append(v.directory or "")
            for s in v.sources:
                if s is not None:
                    parts += s.names
    return " ".join(p for p in parts if p)


def role_of(v: Val | None, node_text: str = "") -> str | None:
    """train | val | test from the subset, the split side, the names and the folder."""
    if isinstance(v, Data) and v.subset in ("training", "validation"):
        return "train" if v.subset == "training" else "val"
    side = split_side(v)
    if side is not None:
        return "train" if side == "train" else None
    text = words_of(v, node_text)
    if isinstance(v, Data) and v.directory:
        leaf = v.directory.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        for role, rx in (("test", TEST_WORDS), ("val", VAL_WORDS), ("train", TRAIN_WORDS)):
            if rx.search(leaf):
                return role
    for role, rx in (("test", TEST_WORDS), ("val", VAL_WORDS), ("train", TRAIN_WORDS)):
        if rx.search(text):
            return role
    return None


def split_side(v: Val | None) -> str | None:
    if v is None:
        return None
    tags = [t.split(":") for t in v.taint if t.startswith("split:")]
    tags = [t for t in tags if len(t) == 3 and t[1].isdigit()]
    if not tags:
        return None
    return max(tags, key=lambda t: int(t[1]))[2]  # the last split made decides


def main_backbone(it: Interp) -> Backbone | None:
    for rec in it.world.fits:
        for u in uses_of(it, rec.model):
            return u.base
    if len(it.world.backbones) >= 1:
        return it.world.backbones[0]
    return None


def use_in(it: Interp, rec: FitRec, base: Backbone | None) -> Use | None:
    return next((u for u in uses_of(it, rec.model) if u.base is base), None)


def fit_call(it: Interp, rec: FitRec, base: Backbone | None) -> FitCall:
    state = rec.states.get(id(base)) if base is not None else None
    scratch = base is None and any(e.kind == "conv" for e in it.world.events)
    body = state[0] if state else "all" if scratch else "unknown"
    if base is not None and base.pretrained is False:
        body = state[0] if state else "all"
    use = use_in(it, rec, base)
    bn: bool | None = None
    if state is not None:
        if (use is not None and use.training is False) or state[1]:
            bn = True
        elif body == "frozen" and base is not None and base.lib in ("keras", "hub"):
            bn = True  # Keras runs a non-trainable BatchNormalization in inference mode
        elif use is not None and base is not None and base.lib in ("keras", "hub"):
            bn = False
    opt = rec.optimizer
    return FitCall(
        rec.line,
        rec.epochs if isinstance(rec.epochs, int) else None,
        rec.initial_epoch,
        opt.lr if opt else None,
        opt.name if opt else None,
        body if body in ("frozen", "partial", "all") else "unknown",
        bn,
    )


def val_size(it: Interp, rec: FitRec) -> int | None:
    v = val_of(rec.val)
    if isinstance(v, Data):
        if v.take is not None:
            return v.take
        if v.directory and known_small_val(v.directory):
            return KAGGLE_PNEUMONIA_VAL
        if rec.val_steps is not None and v.batch:
            return rec.val_steps * v.batch
    if isinstance(v, Pix) and v.rows is not None:
        return v.rows
    return None


def known_small_val(directory: str) -> bool:
    low = directory.replace("\\", "/").lower().rstrip("/")
    return "chest_xray" in low and low.rsplit("/", 1)[-1] == "val"


def val_source(it: Interp, rec: FitRec) -> str | None:
    if rec.val is None:
        return "train_split" if rec.val_split else None
    v = val_of(rec.val)
    text = it.src.segment(rec.val_node) if rec.val_node is not None else ""
    if isinstance(v, Data) and v.subset == "validation":
        return "train_split"
    if split_side(v) == "test":
        return "test" if TEST_WORDS.search(words_of(v, text)) else "train_split"
    role = role_of(v, text)
    return role if role in ("val", "test") else None


def pipeline_kind(rec: FitRec) -> str | None:
    x = rec.x
    if isinstance(x, Pix) or (isinstance(x, Data) and x.kind == "flow" and not x.decodes):
        return "in_memory"
    if isinstance(x, Data):
        if x.cached:
            return "cached"
        if x.decodes:
            return "per_step_decode"
    return None


def build(it: Interp) -> ScriptFacts:
    w = it.world
    facts = ScriptFacts()
    base = main_backbone(it)
    if base is not None:
        facts.backbone, facts.family, facts.timm_name = base.name, base.family, base.timm
        facts.pretrained = base.pretrained
    elif any(e.kind == "conv" for e in w.events):
        facts.pretrained = False
    sizes = Counter(s for _, s in w.sizes)
    if sizes:
        facts.img_size = sizes.most_common(1)[0][0]
    elif base is not None and base.size:
        facts.img_size = base.size
    facts.classes = classes(it, base)
    facts.data_dirs = data_dirs(it)
    facts.device = device(it)
    facts.fits = [fit_call(it, r, base) for r in w.fits]
    with_val = next((r for r in w.fits if r.val is not None or r.val_split), None)
    if with_val is not None:
        facts.val_size = val_size(it, with_val)
        facts.val_source = val_source(it, with_val)
    used = [cb for r in w.fits for cb in r.callbacks] or w.callbacks
    facts.monitors = list(dict.fromkeys(cb.monitor for cb in used if cb.monitor))
    facts.early_stopping = any(cb.kind == "EarlyStopping" for cb in used)
    if w.fits:
        facts.pipeline = pipeline_kind(w.fits[0])
    return facts


def classes(it: Interp, base: Backbone | None) -> int | None:
    for rec in it.world.fits:
        head = head_of(it, rec.model)
        if head is not None:
            units, act = head[0], head[1]
            if isinstance(units, int):
                return 2 if units == 1 and act == "sigmoid" else units
    if base is not None and base.classes and base.classes != 1000:
        return base.classes
    dense = [d for d in it.world.denses if isinstance(d[1], int)]
    if dense:
        units = dense[-1][1]
        return 2 if units == 1 else units
    return None


def data_dirs(it: Interp) -> dict[str, str]:
    out: dict[str, str] = {}
    for rec in it.world.fits:
        for role, v in (("train", rec.x), ("val", val_of(rec.val))):
            if isinstance(v, Data) and v.directory:
                r = (
                    "val"
                    if role == "val" and role_of(v) != "test"
                    else "test"
                    if role == "val"
                    else role
                )
                out.setdefault(r, v.directory)
    for e in it.world.events:
        if e.kind == "evaluate" and isinstance(e.data.get("x"), Data) and e.data["x"].directory:
            out.setdefault("test", e.data["x"].directory)
    for d in it.world.data:
        if d.directory:
            found = role_of(d) or ("train" if "train" not in out else None)
            if found:
                out.setdefault(found, d.directory)
    return out


def device(it: Interp) -> str | None:
    kinds = {k for _, k, _ in it.world.device}
    kinds |= {r.device for r in it.world.fits if r.device in ("cpu", "gpu")}
    if kinds == {"cpu"}:
        return "cpu"
    if kinds == {"gpu"}:
        return "gpu"
    return None


def events(it: Interp, kind: str) -> list[Event]:
    return [e for e in it.world.events if e.kind == kind]
