"""Keras input pipelines: ImageDataGenerator and its flows, tf.data, and the device a TF run
uses."""

from __future__ import annotations

import ast
from typing import Any

from medfit.diagnose.foreign.script.keras_lib import pre_mode, record_size
from medfit.diagnose.foreign.script.registry import Call, func, method
from medfit.diagnose.foreign.script.values import (
    Aug,
    Const,
    Data,
    Func,
    Generator,
    Obj,
    Pix,
    Ref,
    Seq,
    Step,
    Unknown,
    Val,
    const,
    number,
    pyval,
    taint_of,
)

# --- ImageDataGenerator ---------------------------------------------------------------------------
GEN_AUGS = {
    "rotation_range": "rot",
    "horizontal_flip": "hflip",
    "vertical_flip": "vflip",
    "zoom_range": "zoom",
    "width_shift_range": "shift",
    "height_shift_range": "shift",
    "shear_range": "shear",
    "brightness_range": "color",
    "channel_shift_range": "color",
}


def function_steps(
    it: Any, fn: Val | None, line: int, text: str
) -> tuple[tuple[Step, ...], tuple[Aug, ...]]:
    """What a preprocessing function does to raw pixels (run on a symbolic image)."""
    if fn is None or (isinstance(fn, Const) and fn.value is None):
        return (), ()
    if isinstance(fn, Ref):
        if fn.last == "preprocess_input":
            return (Step("pre", pre_mode(fn.dotted), line, text),), ()
        return (Step("unknown", None, line, text),), ()
    if isinstance(fn, Func):
        probe = Pix(start="raw")
        out = it.call_value(fn, [probe], {}, ast.Call(ast.Name("f"), [], [], lineno=line), False)
        if isinstance(out, Pix):
            return out.steps, out.augs
    return (Step("unknown", None, line, text),), ()


@func("ImageDataGenerator")
def _idg(c: Call) -> Val:
    kwargs = {k: pyval(v) if not isinstance(v, (Func, Ref)) else v for k, v in c.kwargs.items()}
    kw_lines = {k: c.kwline(k) for k in c.kwargs}
    pre, fn_augs = function_steps(
        c.it,
        c.kwargs.get("preprocessing_function"),
        c.kwline("preprocessing_function"),
        c.kwtext("preprocessing_function"),
    )
    steps = list(pre)
    rescale = kwargs.get("rescale")
    if isinstance(rescale, (int, float)) and not isinstance(rescale, bool) and rescale != 1:
        steps.append(Step("mul", float(rescale), kw_lines["rescale"], c.kwtext("rescale")))
    elif "rescale" in c.kwargs and rescale is None:
        steps.append(Step("unknown", None, kw_lines["rescale"], c.kwtext("rescale")))
    for k in ("samplewise_center", "featurewise_center"):
        if kwargs.get(k) is True:
            steps.append(Step("center", None, kw_lines[k], k))
    for k in ("samplewise_std_normalization", "featurewise_std_normalization"):
        if kwargs.get(k) is True:
            steps.append(Step("scale_std", None, kw_lines[k], k))
    augs = list(fn_augs)
    for k, kind in GEN_AUGS.items():
        v = kwargs.get(k)
        if v in (None, 0, 0.0, False) or (isinstance(v, (list, tuple)) and not v):
            continue
        amount = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        augs.append(Aug(kind, amount if kind == "rot" else None, kw_lines[k], c.kwtext(k)))
    gen = Generator(c.line, kwargs, kw_lines, tuple(steps), tuple(augs))
    if c.open_:
        gen.kwargs["__open__"] = True
    c.it.world.generators.append(gen)
    return gen


@method("flow_from_directory", "flow_from_dataframe", "flow")
def _flow(c: Call) -> Val | None:
    gen = c.recv if isinstance(c.recv, Generator) else None
    if gen is None and not isinstance(c.recv, (Unknown, Ref)):
        return None
    steps = gen.steps if gen else (Step("unknown", None, c.line, c.text),)
    augs = gen.augs if gen else ()
    subset = const(c.kwargs.get("subset"), str)
    batch = const(c.arg(2 if c.name == "flow" else -1, "batch_size"), int) or (
        32 if "batch_size" not in c.kwargs else None
    )
    shuffle = c.kwargs.get("shuffle")
    split = number(Const(gen.kwargs.get("validation_split"))) if gen else None
    record_size(c, c.kwargs.get("target_size"))
    if c.name == "flow":
        x = c.arg(0, "x")
        base = x if isinstance(x, Pix) else Pix(taint=x.taint if x else frozenset())
        pix = Pix(
            start=base.start,
            order=base.order,
            steps=(*base.steps, *steps),
            augs=(*base.augs, *augs),
            rows=base.rows,
            taint=base.taint,
        )
        data = Data(
            "flow",
            c.line,
            pix,
            pix.augs,
            batch=batch,
            subset=subset,
            val_split=split,
            generator=gen,
            sources=(x,) if x else (),
            taint=base.taint,
        )
    else:
        directory = (
            c.arg(0, "directory") if c.name == "flow_from_directory" else c.kwargs.get("directory")
        )
        df = c.arg(0, "dataframe") if c.name == "flow_from_dataframe" else None
        folder = const(directory, str)
        taint = taint_of(directory, df) | (frozenset({f"dir:{folder}"}) if folder else frozenset())
        decode = Step("decode", None, c.line, c.text)
        pix = Pix(start="raw", order="rgb", steps=(decode, *steps), augs=augs, taint=taint)
        data = Data(
            "flow",
            c.line,
            pix,
            augs,
            directory=folder,
            subset=subset,
            val_split=split,
            batch=batch,
            decodes=True,
            generator=gen,
            sources=(df,) if df else (),
            taint=taint,
        )
    data.shuffle = const(shuffle, bool) if shuffle is not None else True
    c.it.world.data.append(data)
    return data


# --- tf.data --------------------------------------------------------------------------------------
@func("image_dataset_from_directory", "text_dataset_from_directory")
def _ds_from_dir(c: Call) -> Val:
    folder = const(c.arg(0, "directory"), str)
    subset = const(c.kwargs.get("subset"), str)
    batch = const(c.kwargs.get("batch_size"), int) if "batch_size" in c.kwargs else 32
    record_size(c, c.kwargs.get("image_size"))
    taint = frozenset({f"dir:{folder}"}) if folder else taint_of(c.arg(0, "directory"))
    split = number(c.kwargs.get("validation_split"))

    def make(sub: str | None) -> Data:
        pix = Pix(
            start="raw", order="rgb", steps=(Step("decode", None, c.line, c.text),), taint=taint
        )
        d = Data(
            "tfds",
            c.line,
            pix,
            (),
            directory=folder,
            subset=sub,
            val_split=split,
            batch=batch,
            decodes=True,
            taint=taint,
        )
        c.it.world.data.append(d)
        return d

    if subset == "both":
        return Seq([make("training"), make("validation")], True)
    return make(subset)


@func("from_tensor_slices", "from_tensors", "from_generator")
def _from_tensors(c: Call) -> Val:
    src = c.arg(0)
    first = src.items[0] if isinstance(src, Seq) and src.items else src
    pix = first if isinstance(first, Pix) else None
    data = Data(
        "tfds",
        c.line,
        pix,
        pix.augs if pix else (),
        sources=(src,) if src else (),
        taint=taint_of(src),
    )
    c.it.world.data.append(data)
    return data


def _map_fn(c: Call, data: Data, fn: Val | None) -> Data:
    elem: Val = data.pix if data.pix is not None else Unknown("path", taint=data.taint)
    args: list[Val] = [elem, Unknown("label", taint=data.taint)]
    if isinstance(fn, Func) and not isinstance(fn.node, ast.Lambda) and len(fn.node.args.args) == 1:
        args = [Seq(args, True)] if data.pix is None else [elem]
    elif isinstance(fn, Func) and len(fn.node.args.args) == 1:
        args = [elem]
    out = c.it.call_value(fn, args, {}, c.node, False) if fn is not None else None
    found = _first_pix(out)
    if found is None:
        return data.derive(
            pix=data.pix.then(Step("unknown", None, c.line, c.text)) if data.pix else None
        )
    decodes = data.decodes or any(
        s.op in ("decode", "decode_bgr")
        for s in found.steps[len(data.pix.steps) if data.pix else 0 :]
    )
    return data.derive(
        pix=found, augs=found.augs, decodes=decodes, line=c.line, taint=data.taint | found.taint
    )


def _first_pix(v: Val | None) -> Pix | None:
    if isinstance(v, Pix):
        return v
    if isinstance(v, Seq):
        return next((i for i in v.items if isinstance(i, Pix)), None)
    return None


@method(
    "map",
    "batch",
    "take",
    "cache",
    "prefetch",
    "shuffle",
    "repeat",
    "unbatch",
    "skip",
    "filter",
    "padded_batch",
    "with_options",
    "apply",
    "concatenate",
    "as_numpy_iterator",
)
def _ds_method(c: Call) -> Val | None:
    data = c.recv
    if not isinstance(data, Data):
        return None
    if c.name == "map":
        out = _map_fn(c, data, c.arg(0, "map_func"))
    elif c.name in ("batch", "padded_batch"):
        out = data.derive(batch=const(c.arg(0, "batch_size"), int))
    elif c.name == "unbatch":
        out = data.derive(batch=None)
    elif c.name == "take":
        n = const(c.arg(0, "count"), int)
        images = (
            None
            if n is None
            else n * data.batch
            if data.batch
            else (
                n if data.kind == "tfds" and data.batch is None and data.directory is None else None
            )
        )
        out = data.derive(take=images)
    elif c.name == "cache":
        out = data.derive(cached=True)
    elif c.name == "shuffle":
        out = data.derive(shuffle=True)
    else:
        out = data.derive()
    c.it.world.data.append(out)
    return out


# --- devices --------------------------------------------------------------------------------------
@func("set_visible_devices")
def _visible(c: Call) -> Val | None:
    devices, kind = c.arg(0, "devices"), const(c.arg(1, "device_type"), str)
    if isinstance(devices, Seq) and not devices.items and (kind or "").upper() == "GPU":
        c.it.world.device.append((c.line, "cpu", c.text))
    return Const(None)


@func("device")
def _tf_device(c: Call) -> Val | None:
    name = const(c.arg(0), str)
    if name is None or "torch" in c.dotted:
        return None
    kind = "cpu" if "cpu" in name.lower() else "gpu" if "gpu" in name.lower() else None
    return Obj("device", c.line, {"device": kind}) if kind else None
