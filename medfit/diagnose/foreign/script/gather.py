"""How the facts (facts.py) are read off a finished read: `build(it)` walks what the interpreter
recorded in `World` for the backbone, input size, classes, data folders, device, validation set
and every training call, and `framework(it)` names the script's framework. The helpers that
say which split a value is (`role_of`, `split_side`, `words_of`) and what the script logged or
compiled (`events`, `compiled_for`) are shared with the rules (script_rules/)."""

from __future__ import annotations

import ast
import re
from collections import Counter
from typing import TYPE_CHECKING

from medfit.diagnose.foreign.script.facts import FitCall, ScriptFacts, SplitFact
from medfit.diagnose.foreign.script.fit_lib import val_of
from medfit.diagnose.foreign.script.models import head_of, uses_of
from medfit.diagnose.foreign.script.values import (
    Backbone,
    Compile,
    Const,
    Data,
    Event,
    FitRec,
    Pix,
    SplitRec,
    Use,
    Val,
)

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.interp import Interp

TEST_WORDS = re.compile(r"(^|[^a-z])(test|testing)([^a-z]|$)|x_test|y_test|test_", re.I)
VAL_WORDS = re.compile(r"(^|[^a-z])(val|valid|validation|dev)([^a-z]|$)|x_val|y_val|val_", re.I)
TRAIN_WORDS = re.compile(r"(^|[^a-z])(train|training)([^a-z]|$)|x_train|train_", re.I)


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
        known = known_small_val(v.directory) if v.directory else None
        if known is not None:
            return known[1]
        if rec.val_steps is not None and v.batch:
            return rec.val_steps * v.batch
    if isinstance(v, Pix) and v.rows is not None:
        return v.rows
    return None


def known_small_val(directory: str) -> tuple[str, int] | None:
    """(the data set, its val folder's images) when `directory` is the published val folder of
    a public set known to ship a tiny one (datasets.py: Kaggle chest-xray-pneumonia's 16)."""
    from medfit.diagnose.foreign.datasets import official_split_of, recognise

    match = recognise([directory])
    if match is None or official_split_of(match.known, directory) != "val":
        return None
    n = match.known.small_val()
    return (match.known.name, n) if n is not None else None


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
    facts.names = names_of(it)
    facts.metrics = metrics_of(it)
    facts.balancing = balancing_of(it)
    facts.splits = splits_of(it, with_val)
    facts.grouped_split = bool(events(it, "grouped_split")) or any(r.grouped for r in w.splits)
    facts.held_out = held_out_of(it)
    return facts


MAX_NAMES = 3000


def names_of(it: Interp) -> list[tuple[int, str]]:
    """Every short string constant of the script with its line: folders, file names, Kaggle
    slugs, class names (what recognises a public data set)."""
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for node in ast.walk(ast.Module(body=it.src.body, type_ignores=[])):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if len(text) > 300 or text in seen or not text.strip():
                continue
            seen.add(text)
            out.append((getattr(node, "lineno", 0), text))
            if len(out) >= MAX_NAMES:
                break
    return sorted(out)


def compiled_for(it: Interp, rec: FitRec) -> Compile | None:
    """The compile() of the fitted model, or (the model unresolved) the last compile before it."""
    if rec.compiled is not None:
        return rec.compiled
    before = [c for c in it.world.compiles if c.seq < rec.seq]
    return before[-1] if before else None


def metrics_of(it: Interp) -> list[str] | None:
    """The metrics the training calls compute per epoch, as named; None when none is readable."""
    names: list[str] = []
    known = False
    for rec in it.world.fits:
        if rec.api == "ultralytics":
            names += ["top1_acc", "top5_acc"]  # Ultralytics classification: top-1/top-5 only
            known = True
        elif rec.api == "fastai":
            names += list(rec.kwargs.get("metrics") or [])
            known = True
        elif rec.api == "keras":
            comp = compiled_for(it, rec)
            if comp is not None and comp.metrics is not None:
                names += comp.metrics
                known = True
    return list(dict.fromkeys(names)) if known else None


def balancing_of(it: Interp) -> list[str]:
    """What in the script counters class imbalance: class weights, a weighted loss, a balanced
    sampler, oversampling."""
    w = it.world
    out = [f"class_weight in the fit at line {r.line}" for r in w.fits if r.class_weight]
    out += [f"a weighted {name} (line {line})" for line, name, weighted in w.losses if weighted]
    out += [f"a weighted loss compiled at line {c.line}" for c in w.compiles if c.weighted_loss]
    for kind, what in (
        ("class_weight", "class weights computed"),
        ("sampler", "a balanced sampler"),
        ("oversample", "oversampling"),
    ):
        out += [f"{what} at line {e.line}" for e in events(it, kind)]
    out += [f"a weighted sampler (line {d.line})" for d in w.data if d.sampler == "weighted"]
    return list(dict.fromkeys(out))


def _assigned(it: Interp) -> dict[int, list[str]]:
    """line of an assigned call -> the names it is assigned to (`X_tr, X_val = split(...)`)."""
    out: dict[int, list[str]] = {}
    for node in ast.walk(ast.Module(body=it.src.body, type_ignores=[])):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            names = [
                n.id
                for t in node.targets
                for n in ast.walk(t)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            ]
            out.setdefault(node.value.lineno, []).extend(names)
    return out


def _norm_dir(d: str) -> str:
    return d.replace("\\", "/").strip().strip("./").rstrip("/").lower()


def splits_of(it: Interp, with_val: FitRec | None) -> list[SplitFact]:
    """The image-level splits the script makes itself, and which of them makes the validation
    set."""
    out: list[SplitFact] = []
    linked: set[int] = set()
    if with_val is not None:
        rec = with_val
        v = val_of(rec.val)
        if rec.val is None and rec.val_split:
            src = rec.x.directory if isinstance(rec.x, Data) else None
            if rec.api == "fastai":
                out.append(SplitFact(rec.line, f"valid_pct={rec.val_split:g}", "shuffled",
                                     False, "val", src))  # fmt: skip
            else:
                out.append(SplitFact(rec.line, f"fit(validation_split={rec.val_split:g})",
                                     "array_tail", False, "val", src))  # fmt: skip
        elif isinstance(v, Data) and v.subset == "validation":
            frac = f"validation_split={v.val_split:g}" if v.val_split else "validation_split"
            if v.kind == "flow":
                table = bool(v.sources)
                how = (
                    f"ImageDataGenerator({frac}) + "
                    f"flow_from_{'dataframe' if table else 'directory'}(subset='validation')"
                )
                out.append(SplitFact(v.line, how, "table_order" if table else "sorted_names",
                                     False, "val", v.directory))  # fmt: skip
            else:
                how = f"image_dataset_from_directory({frac}, subset='validation')"
                out.append(SplitFact(v.line, how, "shuffled", False, "val", v.directory))
        elif v is not None:
            seqs = {int(t.split(":")[1]) for t in v.taint if t.startswith("split:")
                    and t.split(":")[1].isdigit()}  # fmt: skip
            for split in it.world.splits:
                if split.seq in seqs:
                    linked.add(split.seq)
                    out.append(SplitFact(split.line, split.how, "shuffled", split.grouped, "val",
                                         _split_dir(split)))  # fmt: skip
    assigned = _assigned(it)
    read = [_norm_dir(d.directory) for d in it.world.data if d.directory]
    for split in it.world.splits:
        if split.seq in linked:
            continue
        role = "other"
        if split.out_dir is not None:
            out_dir = _norm_dir(split.out_dir)
            if any(r == out_dir or r.startswith(out_dir + "/") for r in read):
                role = "folders"
        else:
            targets = " ".join(assigned.get(split.line, []))
            if TRAIN_WORDS.search(targets) and (
                VAL_WORDS.search(targets) or TEST_WORDS.search(targets)
            ):
                role = "named"
        out.append(SplitFact(split.line, split.how, "shuffled", split.grouped, role,
                             _split_dir(split)))  # fmt: skip
    return out


def _split_dir(split: SplitRec) -> str | None:
    dirs = sorted({t[4:] for v in split.inputs for t in v.taint if t.startswith("dir:")})
    if dirs:
        return dirs[0]
    first = split.inputs[0] if split.inputs else None
    return str(first.value) if isinstance(first, Const) and isinstance(first.value, str) else None


def held_out_of(it: Interp) -> list[str]:
    """The sets the script evaluates after training, as written (`evaluate(test_ds)`)."""
    out = []
    for e in events(it, "evaluate"):
        node = e.data.get("node")
        out.append(it.src.segment(node, 60) if node is not None else str(e.data.get("text", "")))
    return out


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


IMPORT_FRAMEWORKS = (
    ("ultralytics", "ultralytics"),
    ("lightning", "lightning"),
    ("transformers", "hf"),
    ("fastai", "fastai"),
    ("keras", "keras"),
    ("tensorflow", "keras"),
    ("timm", "timm"),
    ("torch", "pytorch"),
)


def framework(it: Interp) -> str:
    apis = [r.api for r in it.world.fits]
    if apis:
        api = apis[0]
        if api == "torch":
            libs = {b.lib for b in it.world.backbones}
            return "timm" if "timm" in libs and "torchvision" not in libs else "pytorch"
        return {"keras": "keras"}.get(api, api)
    libs = {b.lib for b in it.world.backbones}
    for lib, name in (("ultralytics", "ultralytics"), ("hf", "hf"), ("fastai", "fastai"),
                      ("keras", "keras"), ("hub", "keras"), ("timm", "timm"),
                      ("torchvision", "pytorch")):  # fmt: skip
        if lib in libs:
            return name
    text = " ".join(it.src.lines[:400])
    for word, name in IMPORT_FRAMEWORKS:
        if f"import {word}" in text or f"from {word}" in text:
            return name
    return "unknown"
