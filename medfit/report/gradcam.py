"""Grad-CAM overlays (captum `LayerGradCam`) for a few test images, on the CPU.

Which layer: the deepest feature stage of the timm backbone (`model.feature_info`) whose map is
at least MIN_GRID cells wide at the run's input size; at 224 px that is the last stage (7x7), at
64 px the one before it, because a 2x2 map only says which quadrant mattered. The class explained
is the predicted one: the overlay shows what the model looked at to say what it said.

Multi-label runs have no single predicted class: there the target is the logit of one label (the
report's choice, or `medfit report --label NAME`), on images that truly have that finding, from
the most confident hit to the most confident miss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps

from medfit.report.images import find_image, fit_size, png_base64
from medfit.report.rundata import positive_labels
from medfit.rundir import PredictionRow

MAX_IMAGES = 8  # each one is a forward+backward pass on the CPU; 8 keeps it to a few seconds
MIN_GRID = 4  # cells per side below which a heatmap cannot point at anything in particular
OVERLAY_PX = 160
HEAT_ALPHA = 0.45  # enough colour to read the map, enough image to see the anatomy under it


@dataclass
class CamImage:
    prediction: PredictionRow
    png: str
    score: float | None = None  # multi-label: the explained label's probability
    called: bool | None = None  # multi-label: whether the label was called at its threshold


@dataclass
class CamResult:
    images: list[CamImage] = field(default_factory=list)
    layer: str = ""
    grid: int = 0
    note: str | None = None
    label: str | None = None  # multi-label: the label whose logit is explained


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
    run_dir: Path, predictions: list[PredictionRow], bases: list[Path], label: str | None = None
) -> CamResult:
    """Grad-CAM of the predicted class for `pick(predictions)`; with `label` (a multi-label run),
    of that label's logit for `pick_positives(predictions, label)`. Unreadable files are left
    out."""
    from captum.attr import LayerAttribution, LayerGradCam

    from medfit.inference import Predictor

    predictor = Predictor(run_dir, device="cpu")
    model, classes = predictor.model, predictor.classes
    layer_name, grid = target_layer(model, predictor.preprocess.img_size)
    if label is None:
        candidates = [p for p in pick(predictions) if p.predicted in classes]
    else:
        candidates = pick_positives(predictions, label) if label in classes else []
    chosen, squares = [], []
    for p in candidates:
        found = find_image(p.path, bases)
        if found is not None:
            chosen.append(p)
            squares.append(predictor.load_square(found))
    result = CamResult(layer=layer_name, grid=grid, label=label)
    if not chosen:
        result.note = "none of the selected images could be found on disk"
        return result
    x = predictor.model_input(np.stack(squares))
    if label is None:
        target = torch.tensor([classes.index(p.predicted) for p in chosen])
    else:
        target = torch.full((len(chosen),), classes.index(label), dtype=torch.long)
    with torch.enable_grad():
        cam = LayerGradCam(model, model.get_submodule(layer_name)).attribute(
            x, target=target, relu_attributions=True
        )
    if cam.dim() != 4:
        result.note = f"layer {layer_name} has no spatial map: Grad-CAM needs a convolutional stage"
        return result
    heat = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]), "bilinear")[:, 0]
    shown = _unnormalise(x, predictor.preprocess.mean, predictor.preprocess.std)
    for p, image, h in zip(chosen, shown, heat.numpy(), strict=True):
        png = png_base64(fit_size(_blend(image, h), OVERLAY_PX))
        if label is None:
            result.images.append(CamImage(p, png))
        else:
            called = label in positive_labels(p.predicted)
            result.images.append(CamImage(p, png, p.probs.get(label), called))
    return result


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
