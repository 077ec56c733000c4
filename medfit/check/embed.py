"""Frozen-backbone embeddings, batch by batch as the scan streams thumbnails in.

The embeddings serve two checks: near-duplicates that a hash cannot see (augmented copies rotated
by any angle, re-cropped, re-coloured) and the out-of-fold label-issue model. They are the
backbone's pooled pre-logits features (1280 numbers for EfficientNet-Lite0), L2-normalised and
kept as float16 (200,000 images: 0.5 GB).

`augmented_copy` makes the synthetic "same source, augmented" copies that calibrate the
embedding threshold on the user's own data (see `medfit.check.duplicates`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# Embedding input side when --embed-size is not given: 128 px on a GPU; 64 px on a CPU, where
# EfficientNet-Lite0 runs at ~70 images/s on 2 cores (vs ~20 at 128 px).
GPU_EMBED_SIZE = 128
CPU_EMBED_SIZE = 64


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def default_embed_size(device: str) -> int:
    return GPU_EMBED_SIZE if resolve_device(device).startswith("cuda") else CPU_EMBED_SIZE


@dataclass
class Embedder:
    """A frozen timm backbone that maps uint8 (B, S, S, C) thumbnails to unit vectors."""

    model: Any
    to_input: Callable[[Any], Any]  # the backbone's own `Preprocess.input_fn`
    note: str

    @classmethod
    def create(cls, name: str, weights: str, size: int, device: str) -> Embedder:
        import torch

        from medfit.model.backbones import create_model

        dev = torch.device(resolve_device(device))
        model, pre, note = create_model(name, 2, weights=weights, img_size=size)
        model.eval().to(dev)
        return cls(model, pre.input_fn(dev), f"{name} at {size} px: {note}")

    def __call__(self, thumbs: np.ndarray) -> np.ndarray:
        """(B, S, S, C) uint8 -> (B, D) float16, unit length."""
        import torch

        with torch.inference_mode():
            x = self.to_input(torch.from_numpy(np.ascontiguousarray(thumbs)))
            features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            features = torch.nn.functional.normalize(features.float(), dim=1)
        return features.cpu().numpy().astype(np.float16)


def as_rgb(thumb: np.ndarray) -> np.ndarray:
    """(S, S, 1|3) -> (S, S, 3): batches of mixed gray and colour images need one layout."""
    return np.repeat(thumb, 3, axis=2) if thumb.shape[2] == 1 else thumb


def augmented_copy(thumb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy as augmentation pipelines make them: any-angle rotation, flip, shift, brightness.

    The rotation fills the uncovered corners with the image's median border value (not black),
    the way such sets fill them; the shift is up to 8% of the side; brightness changes by <=10%.
    """
    rgb = as_rgb(thumb)
    side = rgb.shape[0]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    fill = tuple(int(v) for v in np.median(border, axis=0))
    image = Image.fromarray(rgb)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    shift = rng.uniform(-0.08, 0.08, size=2) * side
    image = image.rotate(
        float(rng.uniform(15.0, 345.0)),
        resample=Image.Resampling.BILINEAR,
        translate=(round(shift[0]), round(shift[1])),
        fillcolor=fill,
    )
    out = np.asarray(image, dtype=np.float32) * float(rng.uniform(0.9, 1.1))
    return np.clip(out, 0, 255).astype(np.uint8)
