"""Augmentation and preprocessing pipelines: torchvision and albumentations transforms, fastai
`aug_transforms` and data loaders, HF datasets with `set_transform`."""

from __future__ import annotations

from medfit.diagnose.foreign.script.registry import CALLABLE, Call, func, method
from medfit.diagnose.foreign.script.values import (
    Aug,
    Const,
    Data,
    Inst,
    Map,
    Obj,
    Pix,
    Ref,
    Seq,
    Step,
    Transform,
    Unknown,
    Val,
    const,
    number,
    pyval,
)

# --- transforms ---------------------------------------------------------------------------------
TV_AUG = {
    "RandomHorizontalFlip": "hflip", "RandomVerticalFlip": "vflip", "RandomRotation": "rot",
    "RandomAffine": "rot", "ColorJitter": "color", "RandomResizedCrop": "crop",
    "RandomCrop": "crop", "RandAugment": "other", "TrivialAugmentWide": "other",
    "AutoAugment": "other", "GaussianBlur": "other", "RandomErasing": "other",
    "RandomPerspective": "other", "RandomAdjustSharpness": "other", "RandomEqualize": "color",
}  # fmt: skip
ALB_AUG = {
    "HorizontalFlip": "hflip", "VerticalFlip": "vflip", "RandomRotate90": "rot90",
    "Transpose": "transpose", "Rotate": "rot", "ShiftScaleRotate": "rot", "SafeRotate": "rot",
    "Affine": "rot", "RandomBrightnessContrast": "color", "HueSaturationValue": "color",
    "CLAHE": "other", "RandomResizedCrop": "crop", "CoarseDropout": "other", "GaussNoise": "other",
    "ElasticTransform": "other", "GridDistortion": "other", "OpticalDistortion": "other",
    "RGBShift": "color", "ChannelShuffle": "color", "RandomGamma": "color",
}  # fmt: skip


def _degrees(v: Val | None) -> float | None:
    x = pyval(v)
    if isinstance(x, (list, tuple)):
        nums = [abs(n) for n in x if isinstance(n, (int, float)) and not isinstance(n, bool)]
        return float(max(nums)) if nums else None
    return float(abs(x)) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _prob(c: Call, default: float = 0.5) -> float | None:
    p = c.kwargs.get(
        "p", c.arg(0) if c.name.startswith("Random") and c.name.endswith("Flip") else None
    )
    return number(p) if p is not None else default


@func(
    *TV_AUG,
    *ALB_AUG,
    "ToTensor",
    "Normalize",
    "Resize",
    "CenterCrop",
    "Grayscale",
    "ConvertImageDtype",
    "ToTensorV2",
    "PILToTensor",
    "Flip",
    "ToDtype",
    "RandomApply",
    "OneOf",
)
def _transform_item(c: Call) -> Val | None:
    alb = "albumentations" in c.dotted or c.dotted.startswith("A.")
    tv = "torchvision" in c.dotted or "transforms" in c.dotted
    if not (alb or tv):
        return None
    t = Transform("albumentations" if alb else "torchvision", c.line)
    n, text, line = c.name, c.text, c.line
    if n in ("RandomApply", "OneOf"):
        inner = c.arg(0, "transforms")
        for i in inner.items if isinstance(inner, Seq) else []:
            if isinstance(i, Transform):
                t.steps += i.steps
                t.augs += i.augs
        return t
    if n == "ToTensor":
        t.steps = (Step("to_unit", None, line, text),)
    elif n in ("ConvertImageDtype", "ToDtype") and c.kwargs.get("scale", Const(True)) is not None:
        t.steps = (Step("convert_dtype", None, line, text),)
    elif n == "Normalize":
        mean, std = pyval(c.arg(0, "mean")), pyval(c.arg(1, "std"))
        if alb:
            mean = mean if mean is not None else (0.485, 0.456, 0.406)
            std = std if std is not None else (0.229, 0.224, 0.225)
            t.steps = (
                Step(
                    "normalize_255",
                    (mean, std, number(c.kwargs.get("max_pixel_value")) or 255.0),
                    line,
                    text,
                ),
            )
        else:
            t.steps = (Step("normalize", (mean, std), line, text),)
    elif n == "Grayscale":
        t.steps = (Step("gray", None, line, text),)
    elif n in ("Resize", "CenterCrop"):
        size = pyval(c.arg(0, "size") if tv else c.arg(0, "height"))
        if isinstance(size, int) and not isinstance(size, bool):
            c.it.world.sizes.append((line, size))
        elif isinstance(size, (list, tuple)) and size and isinstance(size[0], int):
            c.it.world.sizes.append((line, int(size[0])))
    elif n == "Flip":
        t.augs = (Aug("hflip", 0.5, line, text), Aug("vflip", 0.5, line, text))
    elif n in TV_AUG or n in ALB_AUG:
        kind = (ALB_AUG if alb else TV_AUG).get(n, TV_AUG.get(n, "other"))
        amount: float | None = None
        if kind == "rot":
            if alb:
                key = (
                    "rotate_limit"
                    if n == "ShiftScaleRotate"
                    else "rotate"
                    if n == "Affine"
                    else "limit"
                )
                default = {"ShiftScaleRotate": 45.0, "Rotate": 90.0, "SafeRotate": 90.0}.get(n)
                v = c.kwargs.get(key, c.arg(0) if n != "Affine" else None)
                amount = _degrees(v) if v is not None else default
            else:
                amount = _degrees(c.arg(0, "degrees"))
        elif kind in ("hflip", "vflip"):
            amount = _prob(c)
        if kind in ("hflip", "vflip") and amount == 0:
            return t
        t.augs = (Aug(kind, amount, line, text),)
        if n in ("RandomResizedCrop",):
            size = pyval(c.arg(0, "size"))
            if isinstance(size, int):
                c.it.world.sizes.append((line, size))
    return t


@func("Compose", "aug_transforms")
def _compose(c: Call) -> Val | None:
    if c.name == "aug_transforms":
        t = Transform("fastai", c.line)
        flip = const(c.kwargs.get("do_flip", Const(True)), bool)
        vert = const(c.kwargs.get("flip_vert", Const(False)), bool)
        rot = number(c.kwargs.get("max_rotate", Const(10.0)))
        augs = []
        if flip:
            augs.append(Aug("hflip", 0.5, c.line, c.text))
        if flip and vert:
            augs += [Aug("vflip", 0.5, c.line, c.text), Aug("rot90", None, c.line, c.text)]
        if rot:
            augs.append(Aug("rot", rot, c.line, c.text))
        t.augs = tuple(augs)
        return t
    items = c.arg(0, "transforms")
    lib = (
        "albumentations"
        if "albumentations" in c.dotted or c.dotted.startswith("A.")
        else "torchvision"
    )
    t = Transform(lib, c.line)
    for i in items.items if isinstance(items, Seq) else []:
        if isinstance(i, Transform):
            t.steps += i.steps
            t.augs += i.augs
        elif isinstance(i, (Unknown, Inst)):
            t.steps += (Step("unknown", None, c.line, "a transform not recognised"),)
    return t


def apply_transform(t: Transform, x: Val) -> Pix:
    pix = (
        x
        if isinstance(x, Pix)
        else Pix(start="raw" if not isinstance(x, Pix) else x.start, taint=x.taint)
    )
    for s in t.steps:
        pix = pix.then(s)
    if t.augs:
        pix = Pix(
            start=pix.start,
            order=pix.order,
            steps=pix.steps,
            through=pix.through,
            augs=(*pix.augs, *t.augs),
            taint=pix.taint,
        )
    return pix


def _call_transform(c: Call) -> Val | None:
    t = c.recv
    if not isinstance(t, Transform):
        return None
    x = c.kwargs.get("image", c.arg(0, "img"))
    out = apply_transform(t, x if x is not None else Unknown("image"))
    return Map({"image": out}, complete=False) if "image" in c.kwargs else out


CALLABLE.append(_call_transform)


@func("load_dataset")
def _load_dataset(c: Call) -> Val | None:
    if "datasets" not in c.dotted and c.dotted != "load_dataset":
        return None
    folder = const(c.kwargs.get("data_dir"), str)
    data = Data("hf", c.line, Pix(start="raw", order="rgb"), directory=folder)
    c.it.world.data.append(data)
    return data


@method("set_transform", "with_transform")
def _hf_transform(c: Call) -> Val | None:
    ds = c.recv
    fn = c.arg(0, "transform")
    if not isinstance(ds, Data) or fn is None:
        return None
    batch = Map({"image": Seq([Pix(start="raw", order="rgb")], complete=False)}, complete=False)
    out = c.it.call_value(fn, [batch], {}, c.node, False)
    pix = None
    if isinstance(out, Map):
        for v in out.items.values():
            cand = v.items[0] if isinstance(v, Seq) and v.items else v
            if isinstance(cand, Pix):
                pix = cand
    if pix is not None:
        new = ds.derive(pix=pix, augs=pix.augs)
        if c.name == "set_transform":
            ds.pix, ds.augs = pix, pix.augs
            return Const(None)
        return new
    return None


@func("from_folder", "from_df", "from_name_func", "from_path_func", "dataloaders")
@method("dataloaders")
def _fastai_dls(c: Call) -> Val | None:
    if c.recv is None and not any(
        k in c.dotted for k in ("ImageDataLoaders", "ImageDataBunch", "fastai")
    ):  # fastai v2 ImageDataLoaders, v1 ImageDataBunch
        return None
    tfms = c.kwargs.get("batch_tfms")
    augs: tuple = ()
    for t in tfms.items if isinstance(tfms, Seq) else [tfms]:
        if isinstance(t, Transform):
            augs += t.augs
    folder = const(c.arg(0, "path"), str)
    data = Data(
        "fastai",
        c.line,
        Pix(start="raw", order="rgb", augs=augs),
        augs,
        directory=folder,
        batch=const(c.kwargs.get("bs", Const(64)), int),
        val_split=number(c.kwargs.get("valid_pct")),
    )
    if "ImageDataBunch" in c.dotted and data.pix is not None:
        # fastai v1: open_image gives 0..1 tensors and nothing normalises them for the
        # pretrained body unless .normalize(imagenet_stats) is called (v2's learner adds it)
        data.kind = "fastai1"
        data.pix.steps = (
            Step("decode", None, c.line, c.text),
            Step("to_unit", None, c.line, "fastai v1 open_image (0..1)"),
        )
    train, valid = const(c.kwargs.get("train"), str), const(c.kwargs.get("valid"), str)
    if c.name == "from_folder" and folder and data.val_split is None:
        # from_folder(path, train="train", valid="valid"): the validation images are the folder
        # path/valid (fastai's default names), not a split of train
        sep = "\\" if "\\" in folder and "/" not in folder else "/"
        root = folder.rstrip("/\\")
        data.directory = f"{root}{sep}{train or 'train'}"
        data.valid = Data(
            "fastai",
            c.line,
            Pix(start="raw", order="rgb"),
            (),
            directory=f"{root}{sep}{valid or 'valid'}",
            batch=data.batch,
            names=["valid"],
        )
        c.it.world.data.append(data.valid)
    c.it.world.data.append(data)
    return data


@method("normalize")
def _fastai1_normalize(c: Call) -> Val | None:
    """fastai v1 `data.normalize(imagenet_stats)` (in place, returns the DataBunch)."""
    data = c.recv
    if not isinstance(data, Data) or data.kind != "fastai1" or data.pix is None:
        return None
    stats = c.arg(0, "stats")
    if isinstance(stats, Ref) and stats.last == "imagenet_stats":
        step = Step("normalize", ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), c.line, c.text)
    else:
        step = Step("unknown", None, c.line, c.text)  # the batch's own statistics
    data.pix = data.pix.then(step)
    return data


@func("DataBlock")
def _datablock(c: Call) -> Val:
    return Obj("datablock", c.line, {"batch_tfms": c.kwargs.get("batch_tfms")})
