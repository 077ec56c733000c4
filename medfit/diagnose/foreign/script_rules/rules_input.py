"""Rules on what the model sees: input_scaling, aug_label_destroying, val_augmented."""

from __future__ import annotations

from collections.abc import Callable

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script.fit_lib import val_of
from medfit.diagnose.foreign.script.models import model_augs
from medfit.diagnose.foreign.script.pixels import fold
from medfit.diagnose.foreign.script.tables import MODES, ORIENTED_MAX_DEGREES
from medfit.diagnose.foreign.script.values import Aug, Data, FitRec, Pix, Use
from medfit.diagnose.foreign.script_rules.context import (
    Ctx,
    is_chest,
    lines_text,
    modality,
    train_pix,
    xray_only,
)
from medfit.diagnose.foreign.script_rules.pixels import judge

SKIP_APIS = ("hf", "ultralytics", "fastai")
MEDFIT_NORMALIZE = (
    "`--normalize weights` (the default: the weights' own mean/std from timm's config)"
)
KERAS_PRE_MODULE = {"caffe": "resnet50", "tf": "mobilenet_v2", "torch": "densenet"}


def _why(mode: str, name: str, what: str) -> str:
    if mode == "builtin":
        return (
            f"{name} rescales inside the model, so 0..1 inputs reach it as 0..0.004: a black "
            "image; the pretrained features respond to nothing"
        )
    if mode == "caffe":
        return (
            "the first layers were trained on BGR pixels about 100x larger and centred per "
            "channel; fed otherwise every image looks like a shifted, flat patch to them, so "
            "the pretrained features are wasted and the body must re-learn its input"
        )
    if mode == "hub":
        return (
            "TF-Hub image models were trained on 0..1 pixels; other ranges shift every activation"
        )
    return (
        f"the weights were trained on {MODES.get(mode, mode)}; shifted inputs change every "
        "activation's operating point, so fine-tuning first spends its steps undoing that"
    )


def _keras_fix(mode: str, name: str) -> str:
    if mode == "builtin":
        return (
            "drop rescale=1./255 / Rescaling(1./255) and feed raw 0-255 pixels "
            f"({name} rescales inside)"
        )
    if mode == "hub":
        return "scale to 0..1 (rescale=1./255 or Rescaling(1./255)) and nothing else"
    module = KERAS_PRE_MODULE.get(mode, "")
    module = {
        "ResNet50": "resnet50",
        "VGG16": "vgg16",
        "VGG19": "vgg19",
        "Xception": "xception",
        "InceptionV3": "inception_v3",
        "DenseNet121": "densenet",
        "MobileNet": "mobilenet",
    }.get(name, module)
    return (
        f"ImageDataGenerator(preprocessing_function=keras.applications.{module}.preprocess_input) "
        "without rescale, for train and val (or keras.applications."
        f"{module}.preprocess_input(x) in the model)"
    )


TORCH_FIX = (
    "transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]) after "
    "ToTensor() in the train and val transforms (timm: timm.data.resolve_data_config)"
)


def input_scaling(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    seen: set[int] = set()
    for rec in ctx.fits:
        v1 = rec.api == "fastai" and isinstance(rec.x, Data) and rec.x.kind == "fastai1"
        if rec.api in SKIP_APIS and not v1:
            continue
        for use in ctx.uses(rec):
            base = use.base
            if id(base) in seen or not base.pretrained or (base.lib in SKIP_APIS and not v1):
                continue
            pix = train_pix(rec.x)
            if pix is None or pix.start == "input":
                if not use.steps:
                    continue
                start, order, steps = "unknown", None, use.steps
            else:
                start, order, steps = pix.start, pix.order, (*pix.steps, *use.steps)
            r = fold(start, order, steps)
            verdict = judge("imagenet" if v1 else base.mode, r)
            if verdict.ok is None:
                continue
            seen.add(id(base))
            if verdict.ok:
                continue
            out.append(
                _scaling_finding(ctx, rec, use, r.lines, verdict.what, verdict.severity, pix)
            )
    return out


def _scaling_finding(ctx: Ctx, rec: FitRec, use: Use, lines: list[tuple[int, str]], what: str,
                     severity: str, pix: Pix | None) -> Finding:  # fmt: skip
    base = use.base
    data_line = rec.x.line if isinstance(rec.x, Data) else rec.line
    line = lines[0][0] if lines else data_line
    steps = (
        lines_text(lines)
        if lines
        else f"line {data_line}: no scaling or preprocess_input on the way"
    )
    inside = " (inside the model)" if use.steps and not lines[: len(lines) - len(use.steps)] else ""
    torchish = base.lib in ("torchvision", "timm", "torch")
    fix = TORCH_FIX if torchish else _keras_fix(base.mode, base.name)
    mode = base.mode
    if base.lib == "fastai":
        mode = "imagenet"
        fix = (
            "ImageDataBunch.from_folder(...).normalize(imagenet_stats): fastai v1 does not "
            "normalise for the pretrained body (v2's vision_learner does)"
        )
    return ctx.finding(
        "input_scaling",
        severity,
        line,
        f"input scaling does not match {base.name}'s ImageNet weights",
        f"{base.name} (line {base.line}) gets {what}{inside} ({steps}); its weights expect "
        f"{MODES.get(mode, mode)}",
        _why(mode, base.name, what),
        fix,
        MEDFIT_NORMALIZE,
        3.5 if severity == "high" else 2.0,
        expected_mode=mode,
        scaling_lines=[n for n, _ in lines],
        fit_line=rec.line,
    )


# --- augmentation -------------------------------------------------------------------------------
def train_augs(ctx: Ctx, rec: FitRec) -> list[tuple[Aug, str]]:
    """Random augmentation the training call applies, with where it comes from."""
    out: list[tuple[Aug, str]] = []
    x = rec.x
    if isinstance(x, Data):
        out += [(a, "the training pipeline") for a in x.augs]
    elif isinstance(x, Pix):
        out += [(a, "the training arrays") for a in x.augs]
    for use in ctx.uses(rec):
        out += [(a, "augmentation layers in the model") for a in use.augs]
    out += [(a, "augmentation layers in the model") for a in model_augs(ctx.it, rec.model)]
    if rec.api == "ultralytics":
        lines = rec.kwargs.get("__lines__", {})
        for key, kind, default in (
            ("fliplr", "hflip", 0.5),
            ("flipud", "vflip", 0.0),
            ("degrees", "rot", 0.0),
        ):
            v = rec.kwargs.get(key, default)
            if isinstance(v, (int, float)) and v > 0:
                src = f"{key}={v:g}" if key in rec.kwargs else f"{key}={v:g} (Ultralytics' default)"
                out.append((Aug(kind, float(v), lines.get(key, rec.line), src), "train()"))
    seen: set[tuple[str, int]] = set()
    unique = []
    for a, where in out:
        if (a.kind, a.line) not in seen:
            seen.add((a.kind, a.line))
            unique.append((a, where))
    return unique


def _destroys(a: Aug) -> bool:
    """For any oriented scan: vertical flips, quarter turns, rotations past 30 degrees."""
    if a.kind in ("vflip", "rot90", "transpose"):
        return a.amount is None or a.amount > 0
    return a.kind == "rot" and a.amount is not None and a.amount > ORIENTED_MAX_DEGREES


def _modality_text(words: set[str]) -> str:
    if is_chest(words):
        if words & {"xray", "xrays", "cxr", "pneumonia", "radiograph", "radiography"}:
            return "chest X-rays"
        return "chest CT slices" if "ct" in words else "chest images"
    if words & {"fundus", "retina", "retinal", "glaucoma"}:
        return "fundus photographs"
    if "oct" in words:
        return "OCT scans"
    if words & {"mri", "brain", "tumor", "tumour", "glioma", "meningioma", "pituitary"}:
        return "MRI slices"
    return "oriented scans"


def aug_label_destroying(ctx: Ctx) -> list[Finding]:
    augs: list[tuple[Aug, str]] = []
    for rec in ctx.fits:
        augs += [x for x in train_augs(ctx, rec) if x not in augs]
    if not augs:
        return []
    kind, words = modality(ctx)
    if kind == "unoriented":
        return []
    severe = [(a, w) for a, w in augs if _destroys(a)]
    hflips = [(a, w) for a, w in augs if a.kind == "hflip"]
    chest = is_chest(words)
    bad = severe + (hflips if chest and kind == "oriented" else [])
    shown = sorted(words)[:6]
    if kind in ("oriented", "oriented_gray") and bad:
        a0 = bad[0][0]
        what = "; ".join(f"line {a.line}: {a.text} ({w})" for a, w in bad[:4])
        modality_text = _modality_text(words) if kind == "oriented" else "oriented scans"
        return [
            ctx.finding(
                "aug_label_destroying",
                "medium",
                a0.line,
                f"augmentation makes {modality_text} no scanner produces",
                f"{what}; "
                + (
                    f"the script's words say {modality_text} ({', '.join(shown)})"
                    if kind == "oriented"
                    else "the training images are grayscale scans"
                ),
                "X-rays, CT/MRI slices, fundus and OCT images have an up and a down"
                + (" and a side (the heart on the left)" if chest and hflips else "")
                + "; flipped or strongly rotated copies teach the model a partly wrong task",
                "for oriented scans: rotation up to about 10-15 degrees, no vertical flips"
                + (", no horizontal flips for chest X-rays" if chest else ""),
                "`--modality xray` (or ct, mri, oct, fundus: medfit picks the augmentation)",
                1.5,
                augmentation=[a.text for a, _ in bad],
            )
        ]
    if (kind in ("ambiguous", None, "oriented_gray") and severe) or (
        hflips and (kind == "oriented_gray" or xray_only(words))
    ):
        asked = severe or hflips
        a0 = asked[0][0]
        what = "; ".join(f"line {a.line}: {a.text}" for a, _ in asked[:4])
        return [
            ctx.question(
                "aug_label_destroying",
                a0.line,
                "are these images oriented (X-ray, CT/MRI slices, fundus, OCT)? "
                + ("are they chest X-rays? " if not severe else "")
                + "then this augmentation makes images no scanner produces",
                f"{what}; the script does not say what the images are"
                + (f" (words: {', '.join(shown)})" if shown else ""),
                "look at a few training images: for oriented scans keep rotations under ~15 "
                "degrees "
                "and drop vertical flips (and horizontal flips for chest X-rays); for microscopy "
                "or dermoscopy keep them",
            )
        ]
    return []


def val_augmented(ctx: Ctx) -> list[Finding]:
    for rec in ctx.fits:
        if rec.api in SKIP_APIS:
            continue
        v = val_of(rec.val)
        augs = v.augs if isinstance(v, (Data, Pix)) else ()
        if not augs:
            continue
        a0 = augs[0]
        shared = ""
        if (
            isinstance(v, Data)
            and v.generator is not None
            and isinstance(rec.x, Data)
            and rec.x.generator is v.generator
        ):
            shared = (
                f"; the same ImageDataGenerator (line {v.generator.line}) makes the train and "
                "the validation flow"
            )
        where = f"validation data (line {v.line})" if isinstance(v, Data) else "validation arrays"
        return [
            ctx.finding(
                "val_augmented",
                "high",
                a0.line,
                "the validation data is randomly augmented",
                f"{where} passes through {', '.join(a.text for a in augs[:4])}{shared}",
                "val accuracy then measures random variants, not the images: it swings from epoch "
                "to epoch and early stopping/checkpoints choose on noise",
                "validation gets only the preprocessing (a separate ImageDataGenerator without "
                "augmentation arguments; augmentation as layers inside the model is inactive at "
                "inference)",
                "nothing to set: medfit never augments val, test or predict",
                2.0,
                augmentation=[a.text for a in augs],
            )
        ]
    return []


RULES: tuple[Callable[[Ctx], list[Finding]], ...] = (
    input_scaling,
    aug_label_destroying,
    val_augmented,
)
