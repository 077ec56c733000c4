"""Read a Keras fine-tuning script statically and say what in it holds the run back.

    medfit diagnose fit_log.txt --script train.py

The script is parsed with `ast` and never imported or executed: names it uses without defining
(elided imports, `class_weights` shown as "#...") are tolerated, and lines that do not parse are
blanked one by one (and reported) so the rest is still read. Each finding carries the file:line,
the evidence, why it hurts, the fix in Keras and the medfit option that does it right;
`medfit_command` turns what the script says (backbone, input size, data folders) into the one
medfit command that trains the same data.
"""

from __future__ import annotations

import ast
import builtins
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfit.diagnose.findings import Finding
from medfit.errors import MedfitError


@dataclass(frozen=True)
class App:
    """A keras.applications backbone: the input its ImageNet weights expect and timm's twin."""

    mode: str  # caffe | tf | torch | builtin (see MODES)
    timm: str
    size: int = 224


# What each `preprocess_input` mode does (keras.applications docs, imagenet_utils): caffe flips
# RGB to BGR and subtracts the ImageNet channel means on 0-255 pixels; tf scales to -1..1; torch
# scales to 0..1 and normalises with the ImageNet mean/std; EfficientNet, EfficientNetV2,
# ConvNeXt, MobileNetV3, RegNet and ResNetRS rescale inside the model and take raw 0-255 pixels
# (their preprocess_input is a placeholder that returns its input).
MODES = {
    "caffe": "0-255 pixels as BGR minus the ImageNet channel means (about -124..152)",
    "tf": "pixels scaled to -1..1",
    "torch": "0..1 pixels normalised with the ImageNet mean/std (about -2.1..2.6)",
    "builtin": "raw 0-255 pixels (the model rescales them itself)",
}
APPLICATIONS: dict[str, App] = {
    "ResNet50": App("caffe", "resnet50"),
    "ResNet101": App("caffe", "resnet101"),
    "ResNet152": App("caffe", "resnet152"),
    "VGG16": App("caffe", "vgg16"),
    "VGG19": App("caffe", "vgg19"),
    "MobileNet": App("tf", "mobilenetv1_100"),
    "MobileNetV2": App("tf", "mobilenetv2_100"),
    "InceptionV3": App("tf", "inception_v3", 299),
    "InceptionResNetV2": App("tf", "inception_resnet_v2", 299),
    "Xception": App("tf", "legacy_xception", 299),
    "ResNet50V2": App("tf", "resnetv2_50"),
    "ResNet101V2": App("tf", "resnetv2_101"),
    "NASNetLarge": App("tf", "nasnetalarge", 331),
    "DenseNet121": App("torch", "densenet121"),
    "DenseNet169": App("torch", "densenet169"),
    "DenseNet201": App("torch", "densenet201"),
    "MobileNetV3Small": App("builtin", "mobilenetv3_small_100"),
    "MobileNetV3Large": App("builtin", "mobilenetv3_large_100"),
    "ConvNeXtTiny": App("builtin", "convnext_tiny"),
    "ConvNeXtSmall": App("builtin", "convnext_small"),
    "ConvNeXtBase": App("builtin", "convnext_base"),
    "ConvNeXtLarge": App("builtin", "convnext_large"),
    "EfficientNetV2B0": App("builtin", "tf_efficientnetv2_b0"),
    "EfficientNetV2S": App("builtin", "tf_efficientnetv2_s", 384),
    "EfficientNetV2M": App("builtin", "tf_efficientnetv2_m", 480),
    **{
        f"EfficientNetB{i}": App("builtin", f"tf_efficientnet_b{i}", s)
        for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))
    },
}
# keras.applications module -> preprocess_input mode (`from ...resnet50 import preprocess_input`).
MODULE_MODES = {
    "resnet": "caffe",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "resnet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "efficientnet": "builtin",
    "efficientnet_v2": "builtin",
    "convnext": "builtin",
    "mobilenet_v3": "builtin",
    "regnet": "builtin",
    "resnet_rs": "builtin",
}

# --- thresholds -----------------------------------------------------------------------------
# Fine-tuning LRs that move pretrained weights faster than the features survive: SGD with
# momentum 0.9 at 1e-3 takes steps ~10x the usual fine-tuning step (1e-4); Adam normalises the
# step per weight, so each weight moves ~lr per step and 1e-4 is already the aggressive end
# (Keras' own fine-tuning guide uses Adam 1e-5 after a head-only stage).
SGD_MAX_LR = 1e-3
ADAM_MAX_LR = 1e-4
ADAPTIVE = ("adam", "adamw", "nadam", "rmsprop", "adamax", "adagrad", "lion")
DEFAULT_LRS = {"sgd": 0.01, "rmsprop": 1e-3}  # Keras defaults; every adaptive one else 1e-3
# Rotations beyond 30° or vertical flips turn an oriented scan into an image no scanner produces.
ORIENTED_MAX_DEGREES = 30.0
AUGMENT_KWARGS = (
    "rotation_range",
    "width_shift_range",
    "height_shift_range",
    "shear_range",
    "zoom_range",
    "horizontal_flip",
    "vertical_flip",
    "brightness_range",
    "channel_shift_range",
)
ACCURACY_METRICS = {"accuracy", "acc", "categorical_accuracy", "sparse_categorical_accuracy"}
ACCURACY_METRICS |= {"binary_accuracy", "Accuracy", "CategoricalAccuracy"}
# A step slower than this on a batch of images is waiting for data on any recent GPU: a ResNet50
# forward/backward on 32 images at 224 px takes ~0.1 s even on a T4.
SLOW_STEP_S = 0.15
MAX_SYNTAX_REPAIRS = 20


@dataclass(frozen=True)
class ScriptFinding:
    rule: str
    severity: str
    line: int
    title: str
    evidence: str
    why: str
    keras_fix: str
    medfit: str
    strength: float = 1.0
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_finding(self, path: Path) -> Finding:
        where = f"{path.name}:{self.line}"
        return Finding(
            rule=self.rule,
            severity=self.severity,
            title=self.title,
            evidence=f"{where}: {self.evidence}",
            fix=f"in Keras: {self.keras_fix}",
            numbers={
                **self.numbers,
                "source": "script",
                "file": str(path),
                "line": self.line,
                "why": self.why,
                "keras_fix": self.keras_fix,
                "medfit": self.medfit,
            },
            strength=self.strength,
        )


# --- parsing --------------------------------------------------------------------------------


def parse_script(text: str) -> tuple[ast.Module, list[tuple[int, str]]]:
    """The module, and (line, error) for each line blanked to make the rest parse."""
    lines = text.splitlines()
    skipped: list[tuple[int, str]] = []
    for _ in range(MAX_SYNTAX_REPAIRS):
        try:
            return ast.parse("\n".join(lines)), skipped
        except SyntaxError as exc:
            n = exc.lineno or 0
            if not 1 <= n <= len(lines) or not lines[n - 1].strip():
                break
            skipped.append((n, exc.msg))
            indent = lines[n - 1][: len(lines[n - 1]) - len(lines[n - 1].lstrip())]
            lines[n - 1] = f"{indent}pass"  # keeps a block that held only this line valid
    raise MedfitError(
        f"the script does not parse as Python even after blanking {len(skipped)} line(s) "
        f"(first at line {skipped[0][0] if skipped else '?'}); paste the script as a .py file"
    )


def _name(node: ast.AST) -> str | None:
    """`ResNet50` for ResNet50(...), keras.applications.ResNet50(...), a.b.ResNet50."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _receiver(call: ast.Call) -> str | None:
    """`train_datagen` for train_datagen.flow_from_directory(...)."""
    f = call.func
    return f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


class Script:
    """What a script does, as far as a static read can tell (names resolved through plain
    assignments; arithmetic on constants folded; nothing evaluated)."""

    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        self.tree, self.skipped = parse_script(text)
        self.assigned: dict[str, ast.expr] = {}
        self.calls: list[ast.Call] = []
        self.imports: dict[str, str] = {}  # local name -> module it came from
        self.defined: set[str] = set()
        self.used: dict[str, int] = {}
        for node in ast.walk(self.tree):
            self._visit(node)
        self.calls.sort(key=lambda c: (c.lineno, c.col_offset))

    def _visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    self.assigned[t.id] = node.value
        elif isinstance(node, ast.Call):
            self.calls.append(node)
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                self.imports[a.asname or a.name] = node.module or ""
                self.defined.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            self.defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.defined.add(node.name)
            if not isinstance(node, ast.ClassDef):
                self.defined.update(a.arg for a in node.args.args + node.args.kwonlyargs)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                self.defined.add(node.id)
            else:
                self.used.setdefault(node.id, node.lineno)
        elif isinstance(node, ast.arg):
            self.defined.add(node.arg)

    def resolve(self, node: ast.expr | None, depth: int = 0) -> ast.expr | None:
        """Follow `x` to the expression last assigned to it (a few hops at most)."""
        while isinstance(node, ast.Name) and node.id in self.assigned and depth < 5:
            node, depth = self.assigned[node.id], depth + 1
        return node

    def value(self, node: ast.expr | None) -> Any:
        """A constant, or arithmetic/tuples/lists of constants (1./255, (224, 224)); else None."""
        node = self.resolve(node)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = self.value(node.operand)
            return -v if isinstance(v, (int, float)) else None
        if isinstance(node, ast.BinOp):
            a, b = self.value(node.left), self.value(node.right)
            if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
                return None
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            if isinstance(node.op, ast.Div) and b:
                return a / b
            if isinstance(node.op, ast.FloorDiv) and b:
                return a // b
            return ops.get(type(node.op))
        return None

    def calls_named(self, *names: str) -> list[ast.Call]:
        return [c for c in self.calls if _name(c) in names]

    def target_of(self, call: ast.Call) -> str | None:
        """The name a call's result was assigned to."""
        return next((n for n, v in self.assigned.items() if v is call), None)


# --- the script's pieces --------------------------------------------------------------------


@dataclass
class Backbone:
    cls: str
    app: App
    line: int
    var: str | None
    pretrained: bool


def backbone(s: Script) -> Backbone | None:
    for call in s.calls_named(*APPLICATIONS):
        name = _name(call) or ""
        weights = s.value(_kw(call, "weights")) if _kw(call, "weights") else "imagenet"
        return Backbone(
            name, APPLICATIONS[name], call.lineno, s.target_of(call), weights is not None
        )
    return None


@dataclass
class Pipeline:
    """One ImageDataGenerator (or dataset) and the flows made from it."""

    line: int
    var: str | None
    kwargs: dict[str, Any]
    preprocessing: ast.expr | None
    flows: list[ast.Call] = field(default_factory=list)
    kw_lines: dict[str, int] = field(default_factory=dict)


def pipelines(s: Script) -> list[Pipeline]:
    out = []
    for call in s.calls_named("ImageDataGenerator"):
        kwargs = {k.arg: s.value(k.value) for k in call.keywords if k.arg}
        p = Pipeline(call.lineno, s.target_of(call), kwargs, _kw(call, "preprocessing_function"))
        p.kw_lines = {k.arg: k.value.lineno for k in call.keywords if k.arg}
        p.flows = [
            c
            for c in s.calls_named("flow_from_directory", "flow", "flow_from_dataframe")
            if p.var is not None and _receiver(c) == p.var
        ]
        out.append(p)
    return out


def fit_calls(s: Script) -> list[ast.Call]:
    return [c for c in s.calls_named("fit", "fit_generator") if _receiver(c) or c.args]


def _fit_arg(call: ast.Call, pos: int, name: str) -> ast.expr | None:
    return call.args[pos] if len(call.args) > pos else _kw(call, name)


def _role(s: Script, p: Pipeline) -> str:
    """train or val: which fit argument the pipeline's flows feed (else its name says)."""
    flow_vars = {s.target_of(f) for f in p.flows} - {None}
    for fit in fit_calls(s):
        x, val = _fit_arg(fit, 0, "x"), _kw(fit, "validation_data")
        if isinstance(val, ast.Name) and val.id in flow_vars:
            return "val"
        if isinstance(x, ast.Name) and x.id in flow_vars:
            return "train"
    names = " ".join(filter(None, [p.var, *flow_vars])).lower()
    return "val" if any(w in names for w in ("val", "test", "valid")) else "train"


def _is_255(v: Any) -> bool:
    return isinstance(v, (int, float)) and v > 0 and abs(v * 255 - 1) < 0.01


def _preprocess_mode(s: Script, node: ast.expr | None) -> str | None:
    """The mode of a preprocess_input reference; "unknown" when its module is not shown."""
    if node is None:
        return None
    dotted = _dotted(node)
    parts = dotted.split(".")
    if len(parts) > 1 and parts[-2] in MODULE_MODES:
        return MODULE_MODES[parts[-2]]
    module = s.imports.get(parts[0], "")
    last = module.rsplit(".", 1)[-1]
    if parts[-1] == "preprocess_input" or last in MODULE_MODES:
        return MODULE_MODES.get(last, "unknown")
    return "unknown"  # a function of the user's own: cannot tell what it does


@dataclass
class Scaling:
    """How pixels reach the model: 1/255 and/or a preprocess_input, with the lines that do it."""

    div255: list[int]
    preprocess: list[tuple[int, str]]  # (line, mode)
    generator: bool  # an ImageDataGenerator / image_dataset_from_directory feeds raw 0-255


def scaling(s: Script, pipes: list[Pipeline]) -> Scaling:
    div: list[int] = []
    pre: list[tuple[int, str]] = []
    for p in pipes:
        if _is_255(p.kwargs.get("rescale")):
            div.append(p.kw_lines["rescale"])
        mode = _preprocess_mode(s, p.preprocessing)
        if mode:
            pre.append((p.line, mode))
    for call in s.calls_named("Rescaling"):
        scale = s.value(call.args[0] if call.args else _kw(call, "scale"))
        offset = s.value(_kw(call, "offset") or (call.args[1] if len(call.args) > 1 else None))
        if _is_255(scale):
            div.append(call.lineno)
        elif isinstance(scale, float) and abs(scale * 127.5 - 1) < 0.01 and offset == -1:
            pre.append((call.lineno, "tf"))
    for call in s.calls_named("preprocess_input"):
        pre.append((call.lineno, _preprocess_mode(s, call.func) or "unknown"))
    for node in ast.walk(s.tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and s.value(node.right) in (255, 255.0)
            and s.value(node.left) is None
        ):
            div.append(node.lineno)  # x / 255 on an array (1./255 alone is a constant)
    datasets = s.calls_named("image_dataset_from_directory")
    return Scaling(sorted(set(div)), sorted(set(pre)), bool(pipes or datasets))


@dataclass
class Trainable:
    """The backbone's trainable state as the script sets it, in line order."""

    events: list[tuple[int, str, int | None]]  # (line, "freeze"/"unfreeze", from index)
    index_lines: list[tuple[int, str]]  # (line, slice text) of freezing by layer index
    bn_kept_frozen: bool  # BatchNormalization layers explicitly set non-trainable

    def state_at(self, line: int) -> str:
        """all | partial | frozen: trainable state of the body at `line` (Keras default all)."""
        state = "all"
        for at, what, index in self.events:
            if at > line:
                break
            if what == "freeze" and index is None:
                state = "frozen"
            elif what == "unfreeze" and index is None:
                state = "all"
            elif what == "unfreeze" or (what == "freeze" and state == "all"):
                state = "partial"
        return state


def trainable(s: Script, base: Backbone | None) -> Trainable:
    events: list[tuple[int, str, int | None]] = []
    index_lines: list[tuple[int, str]] = []
    bn_frozen = False
    for node in ast.walk(s.tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Attribute) and t.attr == "trainable":
                flag = s.value(node.value)
                owner = _dotted(t.value)
                if base and owner == base.var and isinstance(flag, bool):
                    events.append((node.lineno, "unfreeze" if flag else "freeze", None))
        if isinstance(node, ast.For):
            flags = [
                s.value(a.value)
                for a in ast.walk(node)
                if isinstance(a, ast.Assign)
                and any(isinstance(t, ast.Attribute) and t.attr == "trainable" for t in a.targets)
            ]
            if not flags:
                continue
            if any(_name(n) == "BatchNormalization" for n in ast.walk(node)) and False in flags:
                bn_frozen = True
                continue
            it = node.iter
            if isinstance(it, ast.Subscript) and isinstance(it.slice, ast.Slice):
                lower, upper = s.value(it.slice.lower), s.value(it.slice.upper)
                index_lines.append((node.lineno, ast.unparse(it)))
                what = "unfreeze" if flags[0] is True else "freeze"
                cut = lower if lower is not None else upper
                events.append((node.lineno, what, int(cut) if isinstance(cut, int) else 0))
            elif isinstance(flags[0], bool):
                events.append((node.lineno, "unfreeze" if flags[0] else "freeze", None))
    return Trainable(sorted(events), sorted(index_lines), bn_frozen)


def _called_training_false(s: Script, base: Backbone) -> int | None:
    for call in s.calls:
        own = isinstance(call.func, ast.Name) and call.func.id == base.var
        if own and s.value(_kw(call, "training")) is False:
            return call.lineno
    return None


@dataclass
class Optimizer:
    name: str
    lr: float
    momentum: float
    line: int
    given_lr: bool


def optimizer_of(s: Script, compile_call: ast.Call) -> Optimizer | None:
    first = compile_call.args[0] if compile_call.args else None
    node = s.resolve(_kw(compile_call, "optimizer") or first)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        name = node.value.lower()
        return Optimizer(name, DEFAULT_LRS.get(name, 1e-3), 0.0, compile_call.lineno, False)
    if not isinstance(node, ast.Call):
        return None
    name = (_name(node) or "").lower()
    lr_node = _kw(node, "learning_rate") or _kw(node, "lr") or (node.args[0] if node.args else None)
    lr = s.value(lr_node)
    momentum = s.value(_kw(node, "momentum"))
    return Optimizer(
        name,
        float(lr) if isinstance(lr, (int, float)) else DEFAULT_LRS.get(name, 1e-3),
        float(momentum) if isinstance(momentum, (int, float)) else 0.0,
        node.lineno,
        isinstance(lr, (int, float)),
    )


def _lr_too_high(opt: Optimizer) -> bool:
    if opt.name == "sgd":
        return opt.lr >= SGD_MAX_LR and (opt.momentum > 0 or opt.lr >= 10 * SGD_MAX_LR)
    return opt.name in ADAPTIVE and opt.lr >= ADAM_MAX_LR


# --- findings -------------------------------------------------------------------------------


@dataclass
class ScriptReport:
    path: Path
    findings: list[ScriptFinding]
    backbone: Backbone | None
    img_size: int | None
    classes: int | None
    data_dirs: dict[str, str]  # role -> flow_from_directory path
    skipped_lines: list[tuple[int, str]]
    undefined: list[str]


def read_script(
    path: str | Path, step_s: dict[int, float] | None = None, grayscale: bool | None = None
) -> ScriptReport:
    """Findings for a Keras training script (never executed). `step_s` (epoch -> seconds per
    step, from the log) and `grayscale` (from the data) sharpen two of them."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(errors="replace")
    except OSError as exc:
        raise MedfitError(f"cannot read the script {p}: {exc.strerror or exc}") from None
    s = Script(text, p)
    base = backbone(s)
    pipes = pipelines(s)
    roles = {id(pp): _role(s, pp) for pp in pipes}
    found = [
        _scaling_finding(s, base, scaling(s, pipes)),
        *_bn_findings(s, base),
        _lr_finding(s, base),
        _aug_finding(s, pipes, roles, grayscale),
        _class_weight_finding(s),
        *_val_pipeline_findings(s, pipes, roles),
        *_steps_findings(s),
        _input_bound_finding(s, pipes, step_s or {}),
        _elided_finding(s),
    ]
    return ScriptReport(
        p,
        [f for f in found if f is not None],
        base,
        _img_size(s, pipes, base),
        _classes(s),
        _data_dirs(s, pipes, roles),
        s.skipped,
        _undefined(s),
    )


def _scaling_finding(s: Script, base: Backbone | None, sc: Scaling) -> ScriptFinding | None:
    if base is None or not base.pretrained:
        return None
    want = base.app.mode
    bad_pre = [(line, m) for line, m in sc.preprocess if m not in (want, "unknown")]
    matched = any(m in (want, "unknown") for _, m in sc.preprocess)
    raw = want != "builtin" and not matched and sc.generator
    problem = bool(sc.div255 or bad_pre or raw)
    if not problem:
        return None
    line = (sc.div255 or [ln for ln, _ in bad_pre] or [base.line])[0]
    if sc.div255:
        used = "pixels divided by 255 (0..1)"
        if sc.preprocess:
            used += " on top of preprocess_input"
    elif bad_pre:
        used = f"{bad_pre[0][1]}-mode preprocess_input ({MODES[bad_pre[0][1]]})"
    else:
        used = "no preprocessing: raw 0-255 pixels"
    if want == "builtin" and sc.div255:
        why = (
            f"{base.cls} divides by 255 itself, so it sees 0..0.004: a black image; the "
            "pretrained features respond to nothing"
        )
        severity, strength = "high", 3.5
    elif want == "caffe":
        why = (
            "the first layers were trained on inputs about 100x larger, centred per channel "
            "and in BGR order; at 0..1 every image looks like a flat grey (mean-coloured) "
            "patch to them, so the pretrained features are wasted and BatchNorm must re-learn"
        )
        severity, strength = "high", 3.5
    else:
        why = (
            f"the weights were trained on {MODES[want]}; shifted inputs change every "
            "activation's operating point, so fine-tuning first spends its steps undoing that"
        )
        severity, strength = "high", 3.0
    pre_module = {"caffe": "resnet50", "tf": "mobilenet_v2", "torch": "densenet"}.get(want)
    keras_fix = (
        f"drop rescale=1./255 and feed raw 0-255 pixels ({base.cls} rescales inside)"
        if want == "builtin"
        else f"ImageDataGenerator(preprocessing_function=keras.applications.{pre_module}"
        ".preprocess_input) without rescale, for train and val"
        if pre_module and base.cls in ("ResNet50", "MobileNetV2", "DenseNet121")
        else f"the preprocess_input of {base.cls}'s own keras.applications module, "
        "without rescale, for train and val"
    )
    return ScriptFinding(
        "input_scaling",
        severity,
        line,
        f"input scaling does not match {base.cls}'s ImageNet weights",
        f"{used}; {base.cls} (line {base.line}) expects {MODES[want]} ({want} mode)",
        why,
        keras_fix,
        "`--normalize weights` (the default: the weights' own mean/std from timm's config)",
        strength,
        {"expected_mode": want, "div255_lines": sc.div255, "preprocess": sc.preprocess},
    )


def _bn_findings(s: Script, base: Backbone | None) -> list[ScriptFinding | None]:
    if base is None or not base.pretrained or base.var is None:
        return [None]
    tr = trainable(s, base)
    fits = fit_calls(s)
    states = [tr.state_at(f.lineno) for f in fits] or [tr.state_at(10**9)]
    out: list[ScriptFinding | None] = []
    unfrozen = [st for st in states if st != "frozen"]
    inference = _called_training_false(s, base)
    if unfrozen and inference is None and not tr.bn_kept_frozen:
        how = (
            f"layers {tr.index_lines[-1][1]} set trainable (line {tr.index_lines[-1][0]})"
            if tr.index_lines and unfrozen[-1] == "partial"
            else "the whole base trainable (Keras' default)"
        )
        added = next(
            (
                c.lineno
                for c in s.calls_named("add")
                if c.args and isinstance(c.args[0], ast.Name) and c.args[0].id == base.var
            ),
            None,
        )
        used = (
            f"added with Sequential.add (line {added})"
            if added
            else "used without `training=False`"
        )
        out.append(
            ScriptFinding(
                "bn_training_mode",
                "high",
                tr.index_lines[-1][0] if tr.index_lines else base.line,
                "BatchNorm layers of the pretrained base run in training mode",
                f"{how}; {base.var} is {used}, never called as {base.var}(x, training=False)",
                "each trainable BatchNormalization normalises with the current batch's "
                "statistics and overwrites the ImageNet running means, so train and val see "
                "different networks (the val swings) and small noisy batches move the features",
                f"inputs = keras.Input((H, W, 3)); x = {base.var}(inputs, training=False); "
                "then the head on x (BN stays in inference mode even when unfrozen)",
                "`--bn auto` (the default: BN statistics frozen below batch 16, recalibrated "
                "on your images first)",
                3.0,
                {"trainable_at_fit": states, "training_false_line": inference},
            )
        )
    if tr.index_lines:
        line, text = tr.index_lines[0]
        out.append(
            ScriptFinding(
                "freeze_by_index",
                "medium",
                line,
                "layers frozen by index, counting BatchNorm/activation/padding layers",
                f"`{text}`: in {base.cls}, `layers` lists every Input, ZeroPadding, Conv, "
                "BatchNormalization, Activation and Add layer, so an index cut lands inside a "
                "block, not on a stage boundary",
                "half of a residual block frozen and half trainable, with its BN layers split "
                "across the cut, is a configuration nobody tuned; the count also changes with "
                "Keras versions",
                "freeze by stage name (layer.name.startswith('conv5_')) and keep every "
                "BatchNormalization at trainable=False",
                "a head-only stage, then the whole network (`--head-epochs 1`, the default)",
                1.5,
                {"slice": text},
            )
        )
    return out


def _lr_finding(s: Script, base: Backbone | None) -> ScriptFinding | None:
    if base is None or not base.pretrained:
        return None
    tr = trainable(s, base) if base.var else Trainable([], [], False)
    fits = fit_calls(s)
    compiles = s.calls_named("compile")
    head_stage = any(tr.state_at(f.lineno) == "frozen" for f in fits)
    for comp in compiles:
        opt = optimizer_of(s, comp)
        after = [f for f in fits if f.lineno > comp.lineno]
        state = tr.state_at(after[0].lineno if after else comp.lineno)
        if opt is None or state == "frozen" or not _lr_too_high(opt):
            continue
        mom = f", momentum {opt.momentum:g}" if opt.momentum else ""
        lr_src = "" if opt.given_lr else " (Keras' default)"
        stage = (
            "after a head-only stage"
            if head_stage
            else f"with the random {_head(s)} head trained jointly from step 1, no head-only stage"
        )
        return ScriptFinding(
            "finetune_lr",
            "high" if not head_stage else "medium",
            opt.line,
            f"{opt.name.upper() if opt.name == 'sgd' else opt.name.capitalize()} at "
            f"{opt.lr:g} wrecks the pretrained features",
            f"{opt.name} learning rate {opt.lr:g}{lr_src}{mom} on a "
            f"{'partly' if state == 'partial' else 'fully'} trainable body "
            f"{stage}",
            "large updates driven by a random head's gradients rewrite the pretrained filters "
            "in the first epochs (the features the transfer was for); the decayed LR later "
            "only fine-tunes the damage",
            "train the head with base.trainable = False first (Adam 1e-3, a few epochs), then "
            "unfreeze and recompile with Adam(learning_rate=1e-5)",
            "the default recipe: `--head-epochs 1` then AdamW with warmup and cosine decay "
            "(`--lr auto` runs a range test)",
            2.5 if not head_stage else 1.5,
            {
                "optimizer": opt.name,
                "lr": opt.lr,
                "momentum": opt.momentum,
                "head_stage": head_stage,
            },
        )
    return None


def _head(s: Script) -> str:
    dense = s.calls_named("Dense")
    return f"Dense({ast.unparse(dense[-1].args[0])})" if dense and dense[-1].args else "new"


def _aug_finding(
    s: Script, pipes: list[Pipeline], roles: dict[int, str], grayscale: bool | None
) -> ScriptFinding | None:
    if grayscale is False:
        return None  # colour images (microscopy, dermoscopy) have no up and down
    for p in pipes:
        if roles[id(p)] != "train":
            continue
        rot = p.kwargs.get("rotation_range")
        what = [f"rotation_range={rot:g}"] if isinstance(rot, (int, float)) and rot >= 30 else []
        what += ["vertical_flip=True"] if p.kwargs.get("vertical_flip") is True else []
        if not what:
            continue
        title = (
            f"{' and '.join(what)} turns oriented scans upside down"
            if grayscale
            else f"are these images oriented? {' and '.join(what)} would destroy that"
        )
        key = "rotation_range" if what[0].startswith("rotation") else "vertical_flip"
        return ScriptFinding(
            "aug_orientation",
            "medium",
            p.kw_lines.get(key, p.line),
            title,
            f"the training ImageDataGenerator applies {' and '.join(what)}"
            + ("; the images are grayscale (X-ray/OCT/MRI-like)" if grayscale else ""),
            "chest X-rays, OCT, fundus and MRI slices have an up and a down (and a left "
            "heart); rotated or flipped copies are images no scanner makes, so the model "
            "learns on a harder, partly wrong task (fine for microscopy and dermoscopy)",
            "for oriented scans: rotation_range=10, no vertical_flip; keep both for microscopy",
            "`--modality xray` (or oct, mri, fundus...: medfit picks the augmentation; "
            "`--modality auto` decides from the pixels)",
            1.5,
            {"augmentation": what},
        )
    return None


def _class_weight_finding(s: Script) -> ScriptFinding | None:
    for fit in fit_calls(s):
        if _kw(fit, "class_weight") is None:
            continue
        metrics: list[str] = []
        for comp in s.calls_named("compile"):
            m = s.resolve(_kw(comp, "metrics"))
            if isinstance(m, (ast.List, ast.Tuple)):
                metrics += [
                    str(s.value(e)) if isinstance(s.value(e), str) else (_name(e) or "?")
                    for e in m.elts
                ]
        if metrics and not all(m in ACCURACY_METRICS for m in metrics):
            return None
        return ScriptFinding(
            "class_weight_accuracy",
            "medium",
            fit.lineno,
            "class weights with accuracy as the only metric",
            f"fit(class_weight=...) while compile(metrics={metrics or 'none'}) reports "
            "accuracy only (and checkpoints/early stopping can only watch it or the loss)",
            "class weights trade accuracy on the frequent classes for recall on the rare "
            "ones, so the one number shown punishes the thing they are for; the best "
            "checkpoint is chosen on the wrong target",
            "add keras.metrics.AUC(name='auc') and per-class Recall(class_id=k), monitor "
            "'val_auc' in ModelCheckpoint/EarlyStopping; report balanced accuracy",
            "`--select-metric balanced_accuracy` (auto does it when classes are imbalanced; "
            "`--balance sqrt` weights the loss)",
            1.2,
            {"metrics": metrics},
        )
    return None


def _val_pipeline_findings(
    s: Script, pipes: list[Pipeline], roles: dict[int, str]
) -> list[ScriptFinding | None]:
    out: list[ScriptFinding | None] = []
    for p in pipes:
        if roles[id(p)] != "val":
            continue
        aug = [k for k in AUGMENT_KWARGS if p.kwargs.get(k) not in (None, 0, 0.0, False)]
        if aug:
            out.append(
                ScriptFinding(
                    "val_augmented",
                    "high",
                    p.line,
                    "the validation generator augments",
                    f"validation ImageDataGenerator with {', '.join(aug)}",
                    "val accuracy then measures random variants, not the images: it swings "
                    "from epoch to epoch and the checkpoint is chosen on noise",
                    "the validation ImageDataGenerator takes only the preprocessing",
                    "nothing to set: medfit never augments val, test or predict",
                    2.0,
                    {"augmentation": aug},
                )
            )
        for flow in p.flows:
            shuffle = _kw(flow, "shuffle")
            if shuffle is None or s.value(shuffle) is True:
                out.append(
                    ScriptFinding(
                        "val_shuffled",
                        "low",
                        flow.lineno,
                        "the validation flow shuffles",
                        "flow_from_directory(..., shuffle=True) (the default) on the val folder",
                        "metrics are unaffected, but model.predict(val) no longer lines up "
                        "with val.classes: a confusion matrix built that way is random",
                        "shuffle=False on every val/test flow",
                        "nothing to set: medfit's eval keeps the file order",
                        0.5,
                    )
                )
    return out


def _steps_findings(s: Script) -> list[ScriptFinding | None]:
    out: list[ScriptFinding | None] = []
    for fit in fit_calls(s):
        for kw in ("steps_per_epoch", "validation_steps"):
            node = _kw(fit, kw)
            if node is None:
                continue
            value = s.value(node)
            floor = any(
                isinstance(n, ast.BinOp) and isinstance(n.op, ast.FloorDiv) for n in ast.walk(node)
            )
            if isinstance(value, int):
                why = f"a fixed {value} steps covers that many batches whatever the folder holds"
                severity = "medium"
            elif floor:
                why = "floor division drops the last partial batch (up to batch-1 images)"
                severity = "low"
            else:
                continue
            part = "training" if kw == "steps_per_epoch" else "validation"
            out.append(
                ScriptFinding(
                    "steps_skip_data",
                    severity,
                    fit.lineno,
                    f"{kw} can skip {part} images",
                    f"{kw}={ast.unparse(node)}",
                    why + ("; val accuracy is then measured on a subset" if part else ""),
                    f"leave {kw} out (Keras uses len(generator)) or use math.ceil",
                    "nothing to set: medfit uses every image each epoch",
                    1.0 if severity == "medium" else 0.5,
                )
            )
    return out


def _input_bound_finding(
    s: Script, pipes: list[Pipeline], step_s: dict[int, float]
) -> ScriptFinding | None:
    if not pipes:
        return None
    times = sorted(step_s.values())
    slow = bool(times) and times[len(times) // 2] >= SLOW_STEP_S
    log = (
        f"; the log shows {times[0] * 1000:.0f}-{times[-1] * 1000:.0f} ms per step "
        f"(median {times[len(times) // 2] * 1000:.0f} ms)"
        if times
        else ""
    )
    return ScriptFinding(
        "input_bound",
        "medium" if slow else "low",
        pipes[0].line,
        "ImageDataGenerator is the input pipeline" + (": training waits for data" if slow else ""),
        "ImageDataGenerator decodes, resizes and augments every image in Python on the CPU, "
        f"one batch at a time{log}",
        "the GPU idles while the CPU prepares each batch; epochs take hours instead of "
        "minutes, so fewer experiments fit in a day",
        "keras.utils.image_dataset_from_directory(...).cache().prefetch(tf.data.AUTOTUNE), "
        "augmentation as layers (RandomFlip, RandomRotation) inside the model",
        "decoded images are cached once and augmented on the GPU; `--workers 8` for more "
        "prefetch threads",
        1.0 + (1.0 if slow else 0.0),
        {"step_s": times},
    )


def _undefined(s: Script) -> list[str]:
    """Lower-case names used but never defined: variables the post elided (class_weights)."""
    known = set(dir(builtins)) | KNOWN_MODULES
    names = [n for n in s.used if n not in s.defined and n not in known and n[:1].islower()]
    return sorted(names, key=lambda n: s.used[n])


KNOWN_MODULES = {"keras", "tf", "np", "os", "plt", "sklearn", "math", "layers", "models"}


def _elided_finding(s: Script) -> ScriptFinding | None:
    undefined = _undefined(s)
    if not undefined and not s.skipped:
        return None
    parts = []
    if undefined:
        parts.append(f"names used but not defined here: {', '.join(undefined)}")
    if s.skipped:
        parts.append(
            "lines that do not parse were skipped: "
            + ", ".join(f"{n} ({msg})" for n, msg in s.skipped)
        )
    return ScriptFinding(
        "script_elided",
        "info",
        s.used.get(undefined[0], 1) if undefined else s.skipped[0][0],
        "parts of the script are not shown; the read covers the rest",
        "; ".join(parts),
        "whatever those parts do (a checkpoint monitor, class weights) cannot be checked",
        "post or pass the whole script",
        "medfit writes its whole configuration to RUN/config.yaml",
        0.0,
        {"undefined": undefined, "skipped_lines": s.skipped},
    )


# --- what to run instead --------------------------------------------------------------------


def _img_size(s: Script, pipes: list[Pipeline], base: Backbone | None) -> int | None:
    for p in pipes:
        for flow in p.flows:
            size = s.value(_kw(flow, "target_size"))
            if isinstance(size, tuple) and size and isinstance(size[0], int):
                return int(max(size))
    for call in s.calls_named("image_dataset_from_directory"):
        size = s.value(_kw(call, "image_size"))
        if isinstance(size, tuple) and size and isinstance(size[0], int):
            return int(max(size))
    if base is not None:
        call = next(c for c in s.calls_named(base.cls) if c.lineno == base.line)
        shape = s.value(_kw(call, "input_shape"))
        if isinstance(shape, tuple) and shape and isinstance(shape[0], int):
            return int(max(v for v in shape[:2] if isinstance(v, int)))
    return None


def _classes(s: Script) -> int | None:
    dense = s.calls_named("Dense")
    value = s.value(dense[-1].args[0]) if dense and dense[-1].args else None
    return value if isinstance(value, int) else None


def _data_dirs(s: Script, pipes: list[Pipeline], roles: dict[int, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pipes:
        for flow in p.flows:
            d = s.value(_fit_arg(flow, 0, "directory"))
            if isinstance(d, str):
                out.setdefault(roles[id(p)], d)
    for call in s.calls_named("image_dataset_from_directory"):
        d = s.value(_fit_arg(call, 0, "directory"))
        subset = s.value(_kw(call, "subset"))
        if isinstance(d, str):
            out.setdefault("val" if subset == "validation" else "train", d)
    return out


def data_root(dirs: dict[str, str], script_dir: Path) -> tuple[str, bool]:
    """The folder medfit should get: the common parent of the train/val folders once their split
    folder names (train/train, Validation/Validation) are stripped; and whether it exists (tried
    as given and relative to the script)."""
    from medfit.data.sources import split_name

    def strip(path: str) -> Path:
        p = Path(path)
        while p.name and split_name(p.name) is not None:
            p = p.parent
        return p

    roots = {strip(d) for d in dirs.values()}
    if not roots:
        return "DATA", False
    root = roots.pop() if len(roots) == 1 else Path(dirs.get("train", "DATA"))
    for candidate in (root, script_dir / root):
        if candidate.is_dir():
            return str(candidate), True
    return str(root), False


def medfit_command(report: ScriptReport, data: str | None = None) -> tuple[str, str]:
    """The medfit train command for the script's data, and a note on what was resolved."""
    root, exists = (data, True) if data else data_root(report.data_dirs, report.path.parent)
    parts = ["medfit", "train", root]
    notes = []
    if report.backbone is not None:
        parts += ["--model", report.backbone.app.timm]
        notes.append(f"{report.backbone.cls} -> timm {report.backbone.app.timm}")
    if report.img_size:
        parts += ["--img-size", str(report.img_size)]
    parts += ["--out", "runs/" + (report.backbone.app.timm if report.backbone else "run")]
    if not data:
        where = ", ".join(f"{k} {v}" for k, v in report.data_dirs.items()) or "none found"
        notes.append(
            f"data folder from flow_from_directory ({where})"
            + ("" if exists else ": not found from here, use your path")
        )
    return " ".join(shlex.quote(p) for p in parts), "; ".join(notes)
