"""Arrays and images: numpy, OpenCV (BGR), PIL, keras image utils, tf.image, and what is done to
the data before training: train_test_split, oversampling (SMOTE, resample), augmented copies."""

from __future__ import annotations

import ast
from typing import Any

from medfit.diagnose.foreign.script.registry import SETATTRS, Call, func, method
from medfit.diagnose.foreign.script.values import (
    Aug,
    Const,
    Data,
    Event,
    Generator,
    Map,
    Obj,
    Pix,
    Ref,
    Seq,
    SplitRec,
    Step,
    Unknown,
    Val,
    const,
    pyval,
    taint_of,
)

DISPLAY = {"imshow", "show", "subplot", "subplots", "figure", "title", "axis", "plot", "hist"}
DISPLAY |= {"savefig", "imwrite", "waitKey", "destroyAllWindows", "xlabel", "ylabel", "legend"}


def _pix(v: Val | None) -> Pix | None:
    if isinstance(v, Pix):
        return v
    if isinstance(v, Seq):
        found = [i for i in v.items if isinstance(i, Pix)]
        if found:
            first = found[0]
            taint = taint_of(*v.items) | v.taint
            return Pix(
                start=first.start,
                order=first.order,
                steps=first.steps,
                augs=first.augs,
                taint=taint,
            )
    return None


def _path_taint(v: Val | None) -> frozenset[str]:
    path = const(v, str)
    if path is not None:
        folder = (
            path.replace("\\", "/").rsplit("/", 1)[0] if "/" in path.replace("\\", "/") else path
        )
        return frozenset({f"dir:{folder}"})
    return v.taint if v is not None else frozenset()


@func(*DISPLAY)
def _display(c: Call) -> Val | None:
    if (
        c.dotted.split(".")[0] in ("plt", "matplotlib", "cv2", "pyplot", "sns", "ax", "axs")
        or c.recv is not None
    ):
        return Const(None)
    return None


@method(*DISPLAY)
def _display_method(c: Call) -> Val | None:
    return Const(None) if c.name in ("imshow", "set_title", "axis", "plot", "show") else None


# --- decoding -------------------------------------------------------------------------------------
@func("imread")
def _imread(c: Call) -> Val:
    if c.dotted.split(".")[0] in ("plt", "matplotlib", "imageio", "io", "skimage"):
        return Pix(
            start="raw",
            order="rgb",
            steps=(Step("decode", None, c.line, c.text),),
            taint=_path_taint(c.arg(0)),
        )
    flag = c.arg(1, "flags")
    gray = (isinstance(flag, Ref) and "GRAYSCALE" in flag.last) or const(flag, int) == 0
    return Pix(
        start="raw",
        order="gray" if gray else "bgr",
        steps=(Step("decode_bgr", None, c.line, c.text),),
        taint=_path_taint(c.arg(0)),
    )


@func("cvtColor")
def _cvt(c: Call) -> Val | None:
    img, code = c.arg(0), c.arg(1)
    if not isinstance(img, Pix):
        return None
    name = code.last if isinstance(code, Ref) else ""
    target = name.rsplit("2", 1)[-1] if "2" in name else ""
    if target in ("RGB", "RGBA"):
        return img.then(Step("rgb", None, c.line, c.text))
    if target in ("BGR", "BGRA"):
        return img.then(Step("bgr", None, c.line, c.text))
    if target == "GRAY":
        return img.then(Step("gray", None, c.line, c.text))
    return img


@func("open")
def _pil_open(c: Call) -> Val | None:
    if not c.dotted.endswith("Image.open") and c.dotted != "PIL.Image.open":
        return None
    return Pix(
        start="raw",
        order="rgb",
        steps=(Step("decode", None, c.line, c.text),),
        taint=_path_taint(c.arg(0)),
    )


@method("convert")
def _pil_convert(c: Call) -> Val | None:
    img = c.recv
    mode = const(c.arg(0), str)
    if not isinstance(img, Pix) or mode is None:
        return None
    if mode == "L":
        return img.then(Step("gray", None, c.line, c.text))
    return img.then(Step("rgb", None, c.line, c.text)) if mode.startswith("RGB") else img


@func("load_img")
def _load_img(c: Call) -> Val:
    size = pyval(c.kwargs.get("target_size"))
    if isinstance(size, (list, tuple)) and size and isinstance(size[0], int):
        c.it.world.sizes.append((c.line, int(size[0])))
    return Pix(
        start="raw",
        order="rgb",
        steps=(Step("decode", None, c.line, c.text),),
        taint=_path_taint(c.arg(0)),
    )


@func("decode_jpeg", "decode_png", "decode_image", "decode_bmp")
def _tf_decode(c: Call) -> Val:
    return Pix(
        start="raw",
        order="rgb",
        steps=(Step("decode", None, c.line, c.text),),
        taint=taint_of(c.arg(0)),
    )


# --- array operations that keep the pixels ------------------------------------------------------
SAME = {"astype", "reshape", "resize", "expand_dims", "squeeze", "transpose", "moveaxis", "float"}
SAME |= {"img_to_array", "asarray", "array", "stack", "vstack", "concatenate", "hstack", "copy"}
SAME |= {"convert_to_tensor", "tensor", "from_numpy", "Tensor", "FloatTensor", "permute", "numpy"}
SAME |= {"unsqueeze", "double", "clip", "flip", "equalizeHist", "GaussianBlur", "medianBlur"}
SAME |= {"resize_with_pad", "to_tensor", "array_to_img", "fromarray", "crop_to_bounding_box"}
SAME |= {"grayscale_to_rgb", "repeat", "tile"}  # channel copies: the values stay as they were
SAME |= {"center_crop", "crop", "pad", "resized_crop"}  # torchvision.transforms.functional


@func(*SAME)
@method(*SAME)
def _same(c: Call) -> Val | None:
    src = c.recv if isinstance(c.recv, Pix) else c.arg(0)
    if c.name in ("to_tensor",) and isinstance(src, Pix):
        return src.then(Step("to_unit", None, c.line, c.text))
    pix = _pix(src)
    if pix is None:
        arrays = c.name in ("array", "asarray", "stack", "concatenate", "vstack")
        if arrays and c.recv is None and c.dotted.split(".")[0] in ("np", "numpy", "tf", "torch"):
            return Unknown("array", taint=taint_of(*c.args))
        return None
    if c.name in ("concatenate", "vstack", "stack", "hstack") and isinstance(src, Seq):
        pix.taint = taint_of(*src.items) | pix.taint
    if c.name in ("resize",) and c.dotted.startswith("tf.image"):
        return pix.then(Step("to_float", None, c.line, c.text))
    return pix


@func("cast")
def _cast(c: Call) -> Val | None:
    x = c.arg(0)
    return x.then(Step("to_float", None, c.line, c.text)) if isinstance(x, Pix) else None


@func("convert_image_dtype")
def _convert_dtype(c: Call) -> Val | None:
    x = c.arg(0, "image")
    return x.then(Step("convert_dtype", None, c.line, c.text)) if isinstance(x, Pix) else None


@func("per_image_standardization")
def _standardize(c: Call) -> Val | None:
    x = c.arg(0)
    if not isinstance(x, Pix):
        return None
    return x.then(Step("center", None, c.line, c.text)).then(
        Step("scale_std", None, c.line, c.text)
    )


@func("load", "zeros", "ones", "empty", "read_pickle")
def _np_load(c: Call) -> Val | None:
    if c.dotted.split(".")[0] not in ("np", "numpy") or c.name == "read_pickle":
        return None
    if c.name == "load":
        return Pix(start="unknown", taint=_path_taint(c.arg(0)))
    shape = pyval(c.arg(0, "shape"))
    rows = (
        shape[0]
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], int)
        else None
    )
    return Pix(start="unknown", rows=rows)


@func("mean", "std", "max", "min", "amax", "amin")
@method("mean", "std", "max", "min")
def _stat(c: Call) -> Val | None:
    x = c.recv if c.recv is not None else c.arg(0)
    if not isinstance(x, Pix):
        return None
    kind = {"amax": "max", "amin": "min"}.get(c.name, c.name)
    return Unknown(f"stat:{kind}")


def _setitem_pix(it: Any, recv: Val, name: str, value: Val, node: ast.AST) -> bool:
    """`X[i] = img` fills a preallocated array: it now holds such images."""
    if name != "__setitem__" or not isinstance(recv, Pix) or not isinstance(value, Seq):
        return False
    img = value.items[1] if len(value.items) == 2 else None
    if isinstance(img, Pix):
        recv.start, recv.order, recv.steps, recv.augs = img.start, img.order, img.steps, img.augs
        recv.taint = recv.taint | img.taint
    return True


SETATTRS.append(_setitem_pix)


# --- tf.image augmentation ----------------------------------------------------------------------
TF_AUG = {
    "random_flip_left_right": "hflip", "random_flip_up_down": "vflip", "flip_left_right": "hflip",
    "flip_up_down": "vflip", "rot90": "rot90", "random_brightness": "color",
    "random_contrast": "color", "random_saturation": "color", "random_hue": "color",
    "random_crop": "crop", "stateless_random_flip_left_right": "hflip",
    "stateless_random_flip_up_down": "vflip", "transpose": "transpose",
}  # fmt: skip


@func(*TF_AUG)
def _tf_aug(c: Call) -> Val | None:
    x = c.arg(0, "image")
    if not isinstance(x, Pix) or ("image" not in c.dotted and c.name != "rot90"):
        return None
    kind = TF_AUG[c.name]
    return Pix(
        start=x.start,
        order=x.order,
        steps=x.steps,
        through=x.through,
        augs=(*x.augs, Aug(kind, 0.5 if "flip" in kind else None, c.line, c.text)),
        taint=x.taint,
    )


@method("random_transform", "apply_transform")
def _random_transform(c: Call) -> Val | None:
    gen = c.recv
    x = c.arg(0)
    if not isinstance(gen, Generator):
        return None
    pix = x if isinstance(x, Pix) else Pix(taint=x.taint if x else frozenset())
    return Pix(
        start=pix.start,
        order=pix.order,
        steps=pix.steps,
        augs=(*pix.augs, *gen.augs),
        taint=pix.taint | {f"augmented@{c.line}"},
    )


# --- splits and resampling ------------------------------------------------------------------------
@func("train_test_split")
def _split(c: Call) -> Val:
    it = c.it
    grouped = "groups" in c.kwargs
    rec = SplitRec(c.line, it.seq(), list(c.args), grouped)
    it.world.splits.append(rec)
    parts: list[Val] = []
    for a in c.args:
        for side in ("train", "test"):
            tag = frozenset({f"split:{rec.seq}:{side}"})
            if isinstance(a, Pix):
                parts.append(
                    Pix(
                        start=a.start,
                        order=a.order,
                        steps=a.steps,
                        augs=a.augs,
                        taint=a.taint | tag,
                    )
                )
            elif isinstance(a, Data):
                parts.append(a.derive(taint=a.taint | tag))
            else:
                parts.append(Unknown(f"split {side}", taint=a.taint | tag))
    return Seq(parts, False)


@func("ratio", "fixed")
def _split_folders(c: Call) -> Val | None:
    """`splitfolders.ratio(input, output=..., ratio=(.8, .1, .1))`: copies the images of each
    class folder, shuffled, into output/train, output/val (and output/test)."""
    if c.dotted.split(".")[0] not in ("splitfolders", "split_folders"):
        return None
    src = c.arg(0, "input")
    out = const(c.arg(1, "output"), str) or "output"
    rec = SplitRec(c.line, c.it.seq(), [src] if src else [], False, f"splitfolders.{c.name}", out)
    c.it.world.splits.append(rec)
    return Const(None)


@func("GroupShuffleSplit", "GroupKFold", "StratifiedGroupKFold", "LeaveOneGroupOut")
def _grouped(c: Call) -> Val:
    c.it.world.events.append(Event("grouped_split", c.line, c.it.seq(), {"text": c.text}))
    return Obj("splitter", c.line)


@func("SMOTE", "RandomOverSampler", "ADASYN", "BorderlineSMOTE", "SMOTETomek", "SVMSMOTE")
def _oversampler(c: Call) -> Val:
    return Obj("oversampler", c.line, {"name": c.name})


@method("fit_resample", "fit_sample")
def _fit_resample(c: Call) -> Val | None:
    if not isinstance(c.recv, Obj) or c.recv.kind != "oversampler":
        return None
    tag = frozenset({f"oversampled@{c.line}"})
    c.it.world.events.append(Event("oversample", c.line, c.it.seq(), {"text": c.text}))
    out: list[Val] = []
    for a in c.args[:2]:
        out.append(
            Pix(start=a.start, order=a.order, steps=a.steps, taint=a.taint | tag)
            if isinstance(a, Pix)
            else Unknown("resampled", taint=a.taint | tag)
        )
    return Seq(out, True)


@func("resample")
def _resample(c: Call) -> Val | None:
    if "sklearn" not in c.dotted and c.dotted != "resample":
        return None
    if const(c.kwargs.get("replace"), bool) is not True:
        return None
    tag = frozenset({f"oversampled@{c.line}"})
    c.it.world.events.append(Event("oversample", c.line, c.it.seq(), {"text": c.text}))
    first = c.arg(0)
    if isinstance(first, Pix):
        return Pix(start=first.start, order=first.order, steps=first.steps, taint=first.taint | tag)
    return Unknown("resampled", taint=taint_of(*c.args) | tag)


# --- pandas ---------------------------------------------------------------------------------------
@func("read_csv", "DataFrame", "concat", "read_excel")
def _pandas(c: Call) -> Val | None:
    if c.dotted.split(".")[0] not in ("pd", "pandas") and c.dotted not in ("DataFrame", "concat"):
        return None
    taint = taint_of(*c.args, *c.kwargs.values())
    if c.name in ("read_csv", "read_excel"):
        taint |= _path_taint(c.arg(0))
    for v in c.args:
        if isinstance(v, Map):
            taint |= taint_of(*v.items.values())
        if isinstance(v, Seq):
            taint |= taint_of(*v.items)
    return Unknown("data frame", taint=taint)


__all__ = ["Data", "Map"]
