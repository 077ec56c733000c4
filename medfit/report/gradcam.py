"""Grad-CAM overlays (captum `LayerGradCam`) for a few test images, on the CPU.

Which layer: the deepest feature stage of the timm backbone (`model.feature_info`) whose map is
at least MIN_GRID cells wide at the run's input size; at 224 px that is the last stage (7x7), at
64 px the one before it, because a 2x2 map only says which quadrant mattered. The class explained
is the predicted one: the overlay shows what the model looked at to say what it said.

Multi-label runs have no single predicted class: there the target is the logit of one label (the
report's choice, or `medfit report --label NAME`), on images that truly have that finding, from
the most confident hit to the most confident miss.

A k-fold run (RUN/folds.json) is explained as the ensemble it is: each member's map of the
ensemble's predicted class (or of the label's logit), at that member's layer, each scaled to its
own peak, then averaged, so every member counts alike. `medfit report RUN --member K` draws fold
K's map alone on the same images and class, to set beside the ensemble's. Members that failed or
lack their checkpoint are skipped and named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib import colormaps

from medfit.errors import MedfitError
from medfit.report.images import find_image, fit_size, png_base64
from medfit.report.rundata import positive_labels
from medfit.rundir import PredictionRow, RunDir
from medfit.rundir.jobs import folds_section

if TYPE_CHECKING:
    from medfit.inference import Predictor

MAX_IMAGES = 8  # each one is a forward+backward pass per model on the CPU; 8 keeps it to seconds
MIN_GRID = 4  # cells per side below which a heatmap cannot point at anything in particular
OVERLAY_PX = 160
HEAT_ALPHA = 0.45  # enough colour to read the map, enough image to see the anatomy under it


@dataclass
class CamImage:
    prediction: PredictionRow
    png: str
    score: float | None = None  # multi-label: the explained label's probability
    called: bool | None = None  # multi-label: whether the label was called at its threshold
    heat: np.ndarray | None = None  # (H, W) the map drawn, at the model's input size, peak <= 1


@dataclass
class CamResult:
    images: list[CamImage] = field(default_factory=list)
    layer: str = ""
    grid: int = 0
    note: str | None = None
    label: str | None = None  # multi-label: the label whose logit is explained
    source: str | None = None  # k-fold runs: whose maps are drawn ("mean of 5 members' maps ...")
    skipped: list[str] = field(default_factory=list)  # k-fold runs: "fold2 (why it is left out)"


@dataclass
class CamModels:
    """The models whose maps are drawn: the run itself, or (some of) a k-fold run's members."""

    models: list[tuple[str, Predictor]]  # (name, model on the CPU)
    skipped: list[str] = field(default_factory=list)
    source: str | None = None  # None for a run that is one model


def pick(predictions: list[PredictionRow], n: int = MAX_IMAGES) -> list[PredictionRow]:
    """Half the most confident mistakes, the rest correct ones spread over the confidence range."""
    wrong = sorted((p for p in predictions if not p.correct), key=lambda p: -p.p_predicted)
    right = sorted((p for p in predictions if p.correct), key=lambda p: -p.p_predicted)
    chosen = wrong[: n // 2]
    want = n - len(chosen)
    if right and want:
        steps = np.linspace(0, len(right) - 1, min(want, len(right)))
        chosen += [right[i] for i in sorted({round(float(s)) for s in steps})]
    return chosen


def pick_positives(
    predictions: list[PredictionRow], label: str, n: int = MAX_IMAGES
) -> list[PredictionRow]:
    """Images positive for `label`, by that label's probability from the highest down, spread
    evenly over the range: confident hits first, the positives the model missed last."""
    rows = sorted(
        (p for p in predictions if label in positive_labels(p.label)),
        key=lambda p: -p.probs.get(label, 0.0),
    )
    if len(rows) <= n:
        return rows
    steps = np.linspace(0, len(rows) - 1, n)
    return [rows[i] for i in sorted({round(float(s)) for s in steps})]


def target_layer(model: torch.nn.Module, img_size: int) -> tuple[str, int]:
    """(module name, map cells per side) of the stage Grad-CAM reads (see the module docstring)."""
    info: list[dict[str, Any]] = list(getattr(model, "feature_info", []) or [])
    if not info:
        raise ValueError(f"{type(model).__name__} has no timm feature_info to pick a stage from")
    stages = [(str(s["module"]), img_size // int(s["reduction"])) for s in info]
    return next((s for s in reversed(stages) if s[1] >= MIN_GRID), stages[-1])


def overlays(
    run_dir: Path,
    predictions: list[PredictionRow],
    bases: list[Path],
    label: str | None = None,
    member: int | None = None,
) -> CamResult:
    """Grad-CAM of the predicted class for `pick(predictions)`; with `label` (a multi-label run),
    of that label's logit for `pick_positives(predictions, label)`. A k-fold run draws the mean of
    its members' maps, or fold `member`'s alone. Unreadable files are left out."""
    found = cam_models(run_dir, member)
    result = CamResult(source=found.source, skipped=found.skipped, label=label)
    if not found.models:
        which = "no member can" if member is None else f"fold {member} cannot"
        result.note = f"{which} be drawn: {'; '.join(found.skipped) or 'folds.json lists none'}"
        return result
    first = found.models[0][1]  # members agree on classes and preprocessing (`cam_models`)
    classes = first.classes
    result.layer, result.grid = target_layer(first.model, first.preprocess.img_size)
    if label is None:
        candidates = [p for p in pick(predictions) if p.predicted in classes]
    else:
        candidates = pick_positives(predictions, label) if label in classes else []
    chosen, squares = [], []
    for p in candidates:
        path = find_image(p.path, bases)
        if path is not None:
            chosen.append(p)
            squares.append(first.load_square(path))
    if not chosen:
        result.note = "none of the selected images could be found on disk"
        return result
    x = first.model_input(np.stack(squares))
    if label is None:
        target = torch.tensor([classes.index(p.predicted) for p in chosen])
    else:
        target = torch.full((len(chosen),), classes.index(label), dtype=torch.long)
    heat = mean_map([predictor for _, predictor in found.models], x, target)
    if heat is None:
        result.note = (
            f"layer {result.layer} has no spatial map: Grad-CAM needs a convolutional stage"
        )
        return result
    shown = _unnormalise(x, first.preprocess.mean, first.preprocess.std)
    for p, image, h in zip(chosen, shown, heat, strict=True):
        png = png_base64(fit_size(_blend(image, h), OVERLAY_PX))
        if label is None:
            result.images.append(CamImage(p, png, heat=h))
        else:
            called = label in positive_labels(p.predicted)
            result.images.append(CamImage(p, png, p.probs.get(label), called, heat=h))
    return result


def cam_models(run_dir: Path, member: int | None = None) -> CamModels:
    """The run itself, or the members of a k-fold run (fold `member` alone when given), loaded by
    `medfit.inference.load` on the CPU. A member that failed, lacks its checkpoint, will not load,
    or differs from the first in classes or preprocessing (its map would be of other pixels) is
    skipped and named: the others still explain the ensemble."""
    from medfit.inference import load

    folds = folds_section(run_dir)
    if folds is None or folds.this_member is not None:  # one model (a member alone is one too)
        return CamModels([(Path(run_dir).name, load(run_dir, device="cpu"))])
    found = CamModels([])
    for row in folds.members:
        if member is None or row.get("fold") == member:
            name = str(row["dir"])
            loaded, why = _load_member(row, folds.run / name, found.models)
            if loaded is not None:
                found.models.append((name, loaded))
            else:
                found.skipped.append(f"{name} ({why})")
    found.source = _source([name for name, _ in found.models], member)
    return found


def _source(names: list[str], member: int | None) -> str:
    """Whose map a k-fold run's overlays show, as the section says it."""
    if member is not None:
        return (
            f"member {', '.join(names) or member} alone (--member {member}), on the ensemble's "
            "images and predicted classes"
        )
    if len(names) == 1:
        return f"the map of {names[0]}, the only member that could be drawn"
    return f"mean of {len(names)} members' maps ({', '.join(names)})"


def _load_member(
    row: dict[str, Any], path: Path, loaded: list[tuple[str, Predictor]]
) -> tuple[Predictor | None, str]:
    """(the member's model, "") or (None, why it is skipped)."""
    from medfit.inference import load

    if row.get("status") == "failed":
        return None, f"failed: {row.get('error', 'no error recorded')}"
    if not RunDir(path).best.is_file():
        return None, f"no {RunDir(path).best.relative_to(path)}"
    try:
        predictor = load(path, device="cpu")
    except MedfitError as exc:
        return None, str(exc)
    if loaded:
        name, first = loaded[0]
        if (predictor.classes, predictor.preprocess) != (first.classes, first.preprocess):
            return None, f"its classes or preprocessing differ from {name}'s"
    return predictor, ""


def normalised_map(
    model: torch.nn.Module, img_size: int, x: torch.Tensor, target: torch.Tensor
) -> np.ndarray | None:
    """(B, H, W) Grad-CAM of `target` at the model's `target_layer`, ReLU'd, upsampled bilinearly
    to x's size and divided by each image's own peak (an all-zero map stays zero); None when that
    layer has no spatial map. One scale per map, so a mean of members' maps weighs each alike
    instead of letting the member with the largest gradients speak for all."""
    from captum.attr import LayerAttribution, LayerGradCam

    layer_name, _ = target_layer(model, img_size)
    with torch.enable_grad():
        cam = LayerGradCam(model, model.get_submodule(layer_name)).attribute(
            x, target=target, relu_attributions=True
        )
    if cam.dim() != 4:
        return None
    heat = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]), "bilinear")[:, 0]
    peak = heat.flatten(1).amax(1).view(-1, 1, 1)
    scaled = torch.where(peak > 0, heat / peak.clamp_min(torch.finfo(heat.dtype).tiny), 0.0)
    return scaled.numpy()


def mean_map(
    predictors: list[Predictor], x: torch.Tensor, target: torch.Tensor
) -> np.ndarray | None:
    """(B, H, W) mean of the predictors' `normalised_map`s (one predictor: its own map); None
    when a model's layer has no spatial map."""
    maps = []
    for predictor in predictors:
        heat = normalised_map(predictor.model, predictor.preprocess.img_size, x, target)
        if heat is None:
            return None
        maps.append(heat)
    return np.mean(maps, axis=0)


def _unnormalise(x: torch.Tensor, mean: Any, std: Any) -> np.ndarray:
    """The model's input back in [0, 1] (B, H, W, 3): exactly the pixels the model saw."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x.detach().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _blend(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """uint8 overlay of a [0, 1] image and a heatmap scaled to its own maximum."""
    peak = float(heat.max())
    scaled = heat / peak if peak > 0 else np.zeros_like(heat)
    colour = colormaps["jet"](scaled)[..., :3]
    mixed = (1 - HEAT_ALPHA) * image + HEAT_ALPHA * colour
    return (mixed * 255).round().astype(np.uint8)
