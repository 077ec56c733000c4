"""PyTorch: torchvision/timm/HF/Ultralytics/fastai backbones, heads, devices, data sets and
loaders, and BatchNorm kept in eval mode."""

from __future__ import annotations

import ast
import re
from typing import Any

from medfit.diagnose.foreign.script.registry import ATTRS, SETATTRS, Call, func, method
from medfit.diagnose.foreign.script.tables import (
    TORCH_BODY_ATTRS,
    TORCH_HEAD_ATTRS,
    TORCHVISION,
    family_of,
    timm_twin,
)
from medfit.diagnose.foreign.script.transforms_lib import apply_transform
from medfit.diagnose.foreign.script.values import (
    Backbone,
    Const,
    Data,
    Inst,
    Map,
    Obj,
    ParamSet,
    Pix,
    Ref,
    Seq,
    Step,
    Transform,
    Unknown,
    Val,
    const,
    taint_of,
)


def _add(c: Call, base: Backbone) -> Backbone:
    c.it.world.backbones.append(base)
    return base


# --- backbones ----------------------------------------------------------------------------------
@func(*TORCHVISION)
def _torchvision(c: Call) -> Val | None:
    if not ("torchvision" in c.dotted or c.dotted.startswith("models.")):
        return None
    family, twin = TORCHVISION[c.name]
    weights = c.kwargs.get("weights")
    pre = c.kwargs.get("pretrained")
    if pre is not None:
        pretrained = const(pre, bool)
    elif weights is not None:
        pretrained = (
            None
            if isinstance(weights, Unknown)
            else not (isinstance(weights, Const) and weights.value is None)
        )
    else:
        pretrained = False if not c.args else const(c.args[0], bool)
    return _add(c, Backbone(c.name, "torchvision", family, "imagenet", twin, pretrained, c.line))


@func("create_model")
def _timm(c: Call) -> Val | None:
    if "timm" not in c.dotted and c.dotted != "create_model":
        return None
    name = const(c.arg(0, "model_name"), str) or "timm model"
    pretrained = const(c.kwargs.get("pretrained", Const(False)), bool)
    base = Backbone(
        name, "timm", family_of(name), "imagenet", name.split(".")[0], pretrained, c.line
    )
    base.classes = const(c.kwargs.get("num_classes"), int)
    return _add(c, base)


# torchvision's model-zoo files are named <arch>-<first 8 hex digits of their sha256>.pth
ZOO_FILE = re.compile(r"^([a-z0-9_]+)-[0-9a-f]{8}\.pth$")


@func("load")
def _torch_load(c: Call) -> Val | None:
    """`torch.load(path)`: a checkpoint file, kept by name for load_state_dict."""
    path = const(c.arg(0, "f"), str)
    if c.dotted != "torch.load" or not path:
        return None
    return Obj("checkpoint", c.line, {"path": path})


@method("load_state_dict")
def _load_state_dict(c: Call) -> Val | None:
    """A torchvision model loading torchvision's own ImageNet checkpoint file (downloaded by
    hand, `resnet50-0676ba61.pth`) is pretrained whatever its constructor said."""
    base, ckpt = c.recv, c.arg(0, "state_dict")
    if not isinstance(base, Backbone) or base.lib != "torchvision":
        return None
    if not isinstance(ckpt, Obj) or ckpt.kind != "checkpoint":
        return None
    name = str(ckpt.attrs.get("path", "")).replace("\\", "/").rsplit("/", 1)[-1]
    m = ZOO_FILE.match(name)
    if m and m.group(1) == base.name.lower():
        base.pretrained = True
        c.it.world.note(
            f"line {c.line}: {base.name} loads torchvision's ImageNet checkpoint {name}: pretrained"
        )
    return Const(None)


@func("load")
def _hub_load(c: Call) -> Val | None:
    if not c.dotted.startswith("torch.hub"):
        return None
    name = const(c.arg(1, "model"), str) or ""
    family, twin = TORCHVISION.get(name, (family_of(name), None))
    pretrained = const(c.kwargs.get("pretrained"), bool)
    return _add(c, Backbone(name, "torchvision", family, "imagenet", twin, pretrained, c.line))


@func("from_pretrained", "from_name")
def _from_pretrained(c: Call) -> Val | None:
    name = const(c.arg(0, "pretrained_model_name_or_path") or c.arg(0, "model_name"), str) or ""
    if "EfficientNet" in c.dotted:
        twin = name.replace("-", "_") if name.startswith("efficientnet") else None
        return _add(
            c,
            Backbone(
                name, "torch", "efficientnet", "imagenet", twin, c.name == "from_pretrained", c.line
            ),
        )
    if "ForImageClassification" not in c.dotted and "AutoModel" not in c.dotted:
        return None
    base = Backbone(name or "HF model", "hf", family_of(name), "hf", timm_twin(name), True, c.line)
    base.classes = const(c.kwargs.get("num_labels"), int)
    return _add(c, base)


@func("YOLO", "RTDETR")
def _yolo(c: Call) -> Val:
    path = const(c.arg(0, "model"), str) or "yolo"
    name = path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return _add(
        c, Backbone(name, "ultralytics", "yolo", "builtin", None, path.endswith(".pt"), c.line)
    )


@func("vision_learner", "cnn_learner", "unet_learner")
def _learner(c: Call) -> Val:
    arch = c.arg(1, "arch")
    name = arch.last if isinstance(arch, Ref) else const(arch, str) or "arch"
    twin = TORCHVISION.get(name, (None, name))[1] if isinstance(arch, Ref) else name
    pretrained = const(c.kwargs.get("pretrained", Const(True)), bool)
    base = Backbone(name, "fastai", family_of(name), "fastai", twin, pretrained, c.line)
    if pretrained:
        base.state, base.flag = "frozen", True
    _add(c, base)
    metrics = c.kwargs.get("metrics")
    names = [
        m.last if isinstance(m, Ref) else str(const(m, str))
        for m in (metrics.items if isinstance(metrics, Seq) else [metrics] if metrics else [])
        if isinstance(m, Ref) or const(m, str)
    ]
    return Obj("learner", c.line, {"base": base, "dls": c.arg(0, "dls"), "metrics": names})


# --- modules, heads, devices --------------------------------------------------------------------
@func("Linear", "LazyLinear")
def _linear(c: Call) -> Val:
    out = const(c.arg(1 if c.name == "Linear" else 0, "out_features"), int)
    return Obj("layer", c.line, {"cls": "Linear", "units": out})


@func("Conv2d")
def _conv(c: Call) -> Val:
    from medfit.diagnose.foreign.script.values import Event

    c.it.world.events.append(Event("conv", c.line, c.it.seq(), {"text": c.text}))
    return Obj("layer", c.line, {"cls": "Conv2d"})


@func("Sequential", "ModuleList")
def _nn_sequential(c: Call) -> Val | None:
    if not ("torch" in c.dotted or c.dotted.startswith("nn.")):
        return None
    units = None
    for a in c.args:
        if isinstance(a, Obj) and a.attrs.get("cls") == "Linear":
            units = a.attrs.get("units")
    return Obj("layer", c.line, {"cls": "Sequential", "units": units, "items": list(c.args)})


def _head_units(v: Val) -> int | None:
    if isinstance(v, Obj) and v.kind == "layer":
        units = v.attrs.get("units")
        return units if isinstance(units, int) else None
    return None


def _torch_attr(it: Any, recv: Val, name: str, node: ast.AST) -> Val | None:
    line = getattr(node, "lineno", 0)
    if isinstance(recv, Backbone) and recv.lib in ("torchvision", "timm", "torch", "hf"):
        if name in TORCH_HEAD_ATTRS:
            return ParamSet(recv, "head", line, name)
        if name in TORCH_BODY_ATTRS:
            return ParamSet(recv, "body", line, name)
        if name in ("in_features", "num_features", "config"):
            return None
        if not name.startswith("_") and name not in (
            "parameters",
            "named_parameters",
            "children",
            "modules",
        ):
            return ParamSet(recv, "part", line, name)
    if isinstance(recv, ParamSet) and isinstance(recv.owner, Backbone) and name not in (
        "parameters", "named_parameters", "children", "modules", "eval", "train", "requires_grad_",
        "weight", "bias", "in_features", "trainable", "requires_grad", "name", "output", "input",
        "__getitem__",
    ):  # fmt: skip
        scope = "head" if recv.scope == "head" or name in TORCH_HEAD_ATTRS else "part"
        return ParamSet(recv.owner, scope, line, f"{recv.text}.{name}")
    return None


def _torch_setattr(it: Any, recv: Val, name: str, value: Val, node: ast.AST) -> bool:
    units = _head_units(value)
    if isinstance(recv, Backbone) and name in TORCH_HEAD_ATTRS and units is not None:
        recv.classes = units
        return True
    if isinstance(recv, ParamSet) and recv.scope == "head" and name == "__setitem__":
        if isinstance(value, Seq) and len(value.items) == 2:
            u = _head_units(value.items[1])
            if u is not None and isinstance(recv.owner, Backbone):
                recv.owner.classes = u
        return True
    if (
        isinstance(recv, ParamSet)
        and recv.scope == "head"
        and units is not None
        and isinstance(recv.owner, Backbone)
    ):
        recv.owner.classes = units
        return True
    return False


ATTRS.append(_torch_attr)
SETATTRS.append(_torch_setattr)


@func("device")
def _torch_device(c: Call) -> Val | None:
    if "torch" not in c.dotted:
        return None
    name = const(c.arg(0), str)
    kind = (
        None
        if name is None
        else "cpu"
        if name.startswith("cpu")
        else "gpu"
        if name.startswith("cuda")
        else None
    )
    return Obj("torchdevice", c.line, {"kind": kind})


@method("to", "cuda", "cpu")
def _to(c: Call) -> Val | None:
    recv = c.recv
    if c.name == "to":
        dev = c.arg(0, "device")
        kind = dev.attrs.get("kind") if isinstance(dev, Obj) and dev.kind == "torchdevice" else None
        text = const(dev, str)
        if text is not None:
            kind = "cpu" if text.startswith("cpu") else "gpu" if text.startswith("cuda") else None
    else:
        kind = "gpu" if c.name == "cuda" else "cpu"
    if kind and isinstance(recv, (Backbone, Inst)):
        c.it.world.device.append((c.line, kind, c.text))
    return recv if recv is not None and not isinstance(recv, Unknown) else None


@method("eval", "train")
def _eval(c: Call) -> Val | None:
    recv = c.recv
    if c.name == "eval" and isinstance(recv, ParamSet) and c.it.bn_select is True:
        owners = (
            [recv.owner]
            if isinstance(recv.owner, Backbone)
            else [u.base for u in _uses(c, recv.owner)]
        )
        for b in owners:
            b.bn_frozen, b.bn_line = True, c.line
        return Const(None)
    return None


def _uses(c: Call, v: Val) -> list:
    from medfit.diagnose.foreign.script.models import uses_of

    return uses_of(c.it, v)


# --- data sets and loaders ----------------------------------------------------------------------
@func("ImageFolder", "DatasetFolder")
def _image_folder(c: Call) -> Val:
    root = const(c.arg(0, "root"), str)
    tf = c.arg(1, "transform")
    taint = frozenset({f"dir:{root}"}) if root else taint_of(c.arg(0, "root"))
    pix = Pix(start="raw", order="rgb", steps=(Step("decode", None, c.line, c.text),), taint=taint)
    if isinstance(tf, Transform):
        pix = apply_transform(tf, pix)
    elif tf is not None and not (isinstance(tf, Const) and tf.value is None):
        pix = pix.then(Step("unknown", None, c.line, "transform"))
    data = Data("torchds", c.line, pix, pix.augs, directory=root, decodes=True, taint=taint)
    c.it.world.data.append(data)
    return data


def _dataset_of(c: Call, v: Val | None) -> Data | None:
    if isinstance(v, Data):
        return v
    if isinstance(v, Inst):
        out = c.it.call_method_of(v, "__getitem__", c.node)
        pix = (
            out
            if isinstance(out, Pix)
            else next((i for i in out.items if isinstance(i, Pix)), None)
            if isinstance(out, Seq)
            else None
        )
        if isinstance(out, Map):
            pix = next((i for i in out.items.values() if isinstance(i, Pix)), None)
        if pix is None:
            tf = next((a for a in v.attrs.values() if isinstance(a, Transform)), None)
            pix = apply_transform(tf, Pix(start="unknown")) if tf else None
        taint = taint_of(*v.attrs.values()) | (pix.taint if pix else frozenset())
        data = Data("torchds", v.line, pix, pix.augs if pix else (), taint=taint)
        data.decodes = bool(pix and any(s.op in ("decode", "decode_bgr") for s in pix.steps))
        data.names = list(v.names)
        return data
    return None


@func("Subset")
def _subset(c: Call) -> Val | None:
    """`Subset(ds, indices)`: some of the data set's images, read the same way; the indices'
    split (train_test_split of indices) marks which side it is."""
    ds = _dataset_of(c, c.arg(0, "dataset"))
    if ds is None:
        return None
    idx = c.arg(1, "indices")
    return ds.derive(taint=ds.taint | (idx.taint if idx is not None else frozenset()))


@func("DataLoader")
def _loader(c: Call) -> Val | None:
    ds = _dataset_of(c, c.arg(0, "dataset"))
    batch = c.arg(1, "batch_size")
    sampler = c.kwargs.get("sampler")
    data = Data(
        "loader",
        c.line,
        ds.pix if ds else None,
        ds.augs if ds else (),
        directory=ds.directory if ds else None,
        batch=const(batch, int) if batch is not None else 1,
        decodes=bool(ds and ds.decodes),
        workers=const(c.kwargs.get("num_workers", Const(0)), int),
        shuffle=const(c.kwargs.get("shuffle", Const(False)), bool),
        sampler="weighted"
        if isinstance(sampler, Obj) and sampler.kind == "weighted_sampler"
        else None,
        sources=(ds,) if ds else (),
        taint=ds.taint if ds else frozenset(),
    )
    if ds is not None:
        data.names = list(ds.names)
    c.it.world.data.append(data)
    return data


@func("WeightedRandomSampler", "ImbalancedDatasetSampler")
def _weighted(c: Call) -> Val:
    from medfit.diagnose.foreign.script.values import Event

    c.it.world.events.append(Event("sampler", c.line, c.it.seq(), {"text": c.text}))
    return Obj("weighted_sampler", c.line)


@func("random_split")
def _random_split(c: Call) -> Val | None:
    ds = c.arg(0, "dataset")
    if not isinstance(ds, Data):
        return None
    from medfit.diagnose.foreign.script.values import SplitRec

    rec = SplitRec(c.line, c.it.seq(), [ds], False, "random_split")
    c.it.world.splits.append(rec)
    parts = [ds.derive(taint=ds.taint | {f"split:{rec.seq}:{side}"}) for side in ("train", "test")]
    return Seq(list(parts), True)
