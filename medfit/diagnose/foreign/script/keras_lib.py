"""Keras / TensorFlow models: applications, TF-Hub layers, preprocess_input, layers and the
functional graph. Input pipelines are in keras_data.py."""

from __future__ import annotations

import ast
from dataclasses import replace
from typing import Any

from medfit.diagnose.foreign.script.models import apply_layer, backbone_named, layer, trace
from medfit.diagnose.foreign.script.registry import ATTRS, CALLABLE, Call, func, method
from medfit.diagnose.foreign.script.tables import APPLICATIONS, MODULE_MODES, family_of
from medfit.diagnose.foreign.script.values import (
    Aug,
    Backbone,
    Const,
    Data,
    Inst,
    Model,
    ParamSet,
    Pix,
    Ref,
    Seq,
    Step,
    Unknown,
    Use,
    Val,
    const,
    number,
    pyval,
)

AUG_LAYERS = {
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
    "RandomBrightness", "RandomCrop", "RandomHeight", "RandomWidth", "RandomShear",
    "RandomColorJitter", "RandAugment", "RandomHue", "RandomSaturation", "AugMix",
}  # fmt: skip
TORCHISH = ("torch", "timm", "fastai")


def _size(v: Val | None) -> int | None:
    shape = pyval(v)
    if isinstance(shape, int) and not isinstance(shape, bool):
        return shape
    if isinstance(shape, (list, tuple)):
        ints = [s for s in shape[:2] if isinstance(s, int) and not isinstance(s, bool)]
        return max(ints) if ints else None
    return None


def record_size(c: Call, v: Val | None) -> None:
    size = _size(v)
    if size and 8 <= size <= 4096:
        c.it.world.sizes.append((c.line, size))


# --- backbones ----------------------------------------------------------------------------------
@func(*APPLICATIONS)
def _application(c: Call) -> Val | None:
    if any(t in c.dotted for t in TORCHISH):
        return None
    app = APPLICATIONS[c.name]
    if "efficientnet.tfkeras" in c.dotted or "efficientnet.keras" in c.dotted:
        app = replace(app, mode="torch")  # qubvel's efficientnet: torch-mode preprocess_input
    weights = c.kwargs.get("weights", Const("imagenet"))
    pretrained = None if isinstance(weights, Unknown) else const(weights) is not None
    top = c.kwargs.get("include_top", Const(True))
    classes = const(c.kwargs.get("classes"), int)
    base = Backbone(
        c.name,
        "keras",
        app.family,
        app.mode,
        app.timm,
        pretrained,
        c.line,
        size=_size(c.kwargs.get("input_shape")) or app.size,
        classes=classes
        if classes is not None
        else (1000 if const(top) is True and pretrained else None),
    )
    record_size(c, c.kwargs.get("input_shape"))
    c.it.world.backbones.append(base)
    tensor = c.kwargs.get("input_tensor")
    if isinstance(tensor, Pix):
        c.it.cache[(id(base), "input_tensor")] = tensor
    return base


@func("KerasLayer")
def _hub(c: Call) -> Val:
    url = const(c.arg(0, "handle"), str) or ""
    trainable = const(c.kwargs.get("trainable"), bool) or False
    family = family_of(url)
    base = Backbone(
        url.rstrip("/").rsplit("/", 3)[-3] if "/" in url else url or "hub model",
        "hub",
        family,
        "hub",
        None,
        True,
        c.line,
    )
    base.flag = trainable
    base.state = "all" if trainable else "frozen"
    if trainable:
        base.unfrozen_line, base.unfrozen_how = c.line, f"line {c.line} (trainable=True)"
    c.it.world.backbones.append(base)
    record_size(c, c.kwargs.get("input_shape"))
    return base


def pre_mode(dotted: str, it: Any = None) -> str:
    """The preprocess_input mode from where it was imported (`...applications.resnet50.`)."""
    parts = dotted.split(".")
    for p in reversed(parts[:-1]):
        if p in MODULE_MODES:
            return MODULE_MODES[p]
        if p in APPLICATIONS:
            return APPLICATIONS[p].mode
    return "unknown"


@func("preprocess_input")
def _preprocess(c: Call) -> Val:
    x = c.arg(0, "x")
    mode = pre_mode(c.dotted)
    if c.dotted.endswith("imagenet_utils.preprocess_input"):
        mode = const(c.kwargs.get("mode"), str) or "caffe"
    pix = x if isinstance(x, Pix) else Pix(taint=x.taint if x else frozenset())
    return pix.then(Step("pre", mode, c.line, c.text))


# --- layers and the graph -----------------------------------------------------------------------
@func("Input", "InputLayer")
def _input(c: Call) -> Val:
    record_size(c, c.arg(0, "shape") or c.kwargs.get("input_shape"))
    return Pix(start="input")


@func("Rescaling")
def _rescaling(c: Call) -> Val:
    scale = number(c.arg(0, "scale"))
    offset = number(c.arg(1, "offset")) or 0.0
    steps = [
        Step("mul", scale, c.line, c.text)
        if scale is not None
        else Step("unknown", None, c.line, c.text)
    ]
    if offset:
        steps.append(Step("add", offset, c.line, c.text))
    return layer("Rescaling", c.line, steps=tuple(steps))


@func("Normalization")
def _normalization(c: Call) -> Val:
    return layer(
        "Normalization",
        c.line,
        steps=(Step("center", None, c.line, c.text), Step("scale_std", None, c.line, c.text)),
    )


@func("Lambda")
def _lambda(c: Call) -> Val:
    fn = c.arg(0, "function")
    return layer("Lambda", c.line, fn=fn if fn is not None else Unknown("function"))


def rotation_degrees(v: Val | None, factor: bool) -> float | None:
    x = pyval(v)
    if isinstance(x, (list, tuple)):
        nums = [abs(n) for n in x if isinstance(n, (int, float))]
        x = max(nums) if nums else None
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return None
    return float(x) * 360.0 if factor else float(x)


def aug_layer(c: Call) -> tuple[Aug, ...]:
    name, line, text = c.name, c.line, c.text
    if name == "RandomFlip":
        mode = const(c.arg(0, "mode"), str) or "horizontal_and_vertical"
        out = []
        if "horizontal" in mode:
            out.append(Aug("hflip", 0.5, line, text))
        if "vertical" in mode:
            out.append(Aug("vflip", 0.5, line, text))
        return tuple(out)
    if name == "RandomRotation":
        return (Aug("rot", rotation_degrees(c.arg(0, "factor"), True), line, text),)
    kinds = {"RandomZoom": "zoom", "RandomTranslation": "shift", "RandomCrop": "crop"}
    return (
        Aug(
            kinds.get(
                name,
                "color"
                if "Color" in name
                or name in ("RandomContrast", "RandomBrightness", "RandomHue", "RandomSaturation")
                else "other",
            ),
            None,
            line,
            text,
        ),
    )


@func(*AUG_LAYERS)
def _aug_layer(c: Call) -> Val | None:
    if any(t in c.dotted for t in TORCHISH):
        return None
    return layer(c.name, c.line, augs=aug_layer(c))


@func("Dense")
def _dense(c: Call) -> Val:
    units = const(c.arg(0, "units"), int)
    act = c.arg(1, "activation")
    activation = const(act, str) or (act.last if isinstance(act, Ref) else None)
    c.it.world.denses.append((c.line, units, activation))
    return layer("Dense", c.line, units=units, activation=activation)


@func(
    "Conv2D",
    "SeparableConv2D",
    "DepthwiseConv2D",
    "GlobalAveragePooling2D",
    "Flatten",
    "Dropout",
    "BatchNormalization",
    "MaxPooling2D",
    "MaxPool2D",
    "AveragePooling2D",
    "GlobalMaxPooling2D",
    "Activation",
    "Reshape",
    "Resizing",
    "CenterCrop",
    "Concatenate",
    "LayerNormalization",
    "ReLU",
    "SpatialDropout2D",
    "GaussianNoise",
)
def _layer(c: Call) -> Val | None:
    if any(t in c.dotted for t in TORCHISH):
        return None
    if c.name in ("Conv2D", "SeparableConv2D"):
        c.it.world.events.append(_event(c, "conv"))
    if c.name == "GaussianNoise":
        return layer(c.name, c.line, augs=(Aug("other", None, c.line, c.text),))
    return layer(c.name, c.line)


def _event(c: Call, kind: str) -> Any:
    from medfit.diagnose.foreign.script.values import Event

    return Event(kind, c.line, c.it.seq(), {"text": c.text})


@func("Sequential")
def _sequential(c: Call) -> Val | None:
    if "torch" in c.dotted or c.dotted.startswith("nn."):
        return None
    layers = c.arg(0, "layers")
    model = Model(
        "sequential", c.line, layers=list(layers.items) if isinstance(layers, Seq) else []
    )
    c.it.world.models.append(model)
    return model


@method("add")
def _add(c: Call) -> Val | None:
    if isinstance(c.recv, Model) and c.recv.kind == "sequential" and c.args:
        c.recv.layers.append(c.args[0])
        return Const(None)
    return None


@func("Model", "Functional")
def _model(c: Call) -> Val | None:
    if "torch" in c.dotted:
        return None
    inputs, outputs = c.arg(0, "inputs"), c.arg(1, "outputs")
    if isinstance(outputs, Seq) and outputs.items:
        outputs = outputs.items[0]
    model = Model("functional", c.line)
    if isinstance(outputs, Pix):
        model.uses, model.head = list(outputs.through), outputs.head
        model.augs = outputs.augs
    elif inputs is None and outputs is None:
        return None
    c.it.world.models.append(model)
    return model


def _call_layer(c: Call) -> Val | None:
    lay = c.recv
    if isinstance(lay, Inst) and not any(
        k in b for b in lay.cls.bases for k in ("Model", "Layer", "keras")
    ):
        return None
    x = c.arg(0, "inputs")
    if x is None or lay is None:
        return None
    training = const(c.kwargs.get("training"), bool)
    return apply_layer(c.it, lay, x, training, c.line)


CALLABLE.append(_call_layer)


def _graph_attr(it: Any, recv: Val, name: str, node: ast.AST) -> Val | None:
    line = getattr(node, "lineno", 0)
    if isinstance(recv, Backbone) and recv.lib in ("keras", "hub"):
        if name in ("input", "inputs"):
            tensor = it.cache.get((id(recv), "input_tensor"))
            return tensor if isinstance(tensor, Pix) else Pix(start="input")
        if name in ("output", "outputs"):
            tensor = it.cache.get((id(recv), "input_tensor"))
            steps = tensor.steps if isinstance(tensor, Pix) else ()
            augs = tensor.augs if isinstance(tensor, Pix) else ()
            how = "input_tensor" if isinstance(tensor, Pix) else "flattened"
            return Pix(start="input", through=(Use(recv, steps, None, line, how, augs),), augs=augs)
        if name == "layers":
            return ParamSet(recv, "all", line, it.src.segment(node, 60))
    if (
        isinstance(recv, ParamSet)
        and name in ("output", "input")
        and isinstance(recv.owner, Backbone)
    ):
        if name == "input":
            return Pix(start="input")
        return Pix(start="input", through=(Use(recv.owner, (), None, line, "flattened"),))
    if isinstance(recv, ParamSet) and name == "__getitem__":
        scope = "part"
        index = getattr(node, "slice", None)
        if isinstance(recv.owner, Model) and not isinstance(index, ast.Slice):
            # one layer of a functional model, position unknown: 0 is the input, -k the head
            i = index.value if isinstance(index, ast.Constant) else None
            scope = "ignore" if isinstance(i, int) and i <= 0 else "unknown"
        return ParamSet(recv.owner, scope, line, it.src.segment(node, 60))
    if isinstance(recv, Model) and name == "layers":
        if recv.kind == "sequential":
            return Seq(list(recv.layers), complete=True)
        flat = [u for u in recv.uses if u.how in ("flattened", "input_tensor")]
        if flat:
            return ParamSet(flat[0].base, "all", line, it.src.segment(node, 60))
        nested = [u.base for u in recv.uses]
        if nested and all(not u.steps for u in recv.uses):
            return Seq([Unknown("input layer"), *nested, Unknown("head layer")], complete=False)
        return ParamSet(recv, "all", line, it.src.segment(node, 60))
    if isinstance(recv, Inst) and name == "layers":
        model = trace(it, recv)
        return Seq([u.base for u in model.uses], complete=False) if model and model.uses else None
    if isinstance(recv, Data) and name in ("samples", "n"):
        return Unknown("image count")
    return None


ATTRS.append(_graph_attr)


@method("get_layer")
def _get_layer(c: Call) -> Val | None:
    owner = c.recv
    name = const(c.arg(0, "name"), str)
    if isinstance(owner, (Model, Inst)) and name:
        base = backbone_named(c.it, name)
        if base is not None:
            return base
    if isinstance(owner, (Backbone, Model)):
        return ParamSet(owner, "part", c.line, name or c.text)
    return None
