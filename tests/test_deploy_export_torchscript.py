"""`medfit export --format torchscript`, a failed verification, and the numpy preprocessing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from medfit.deploy import export
from medfit.deploy.export import (
    ExportError,
    Runner,
    export_metadata,
    export_model,
    preprocess_numpy,
)
from medfit.inference import Predictor
from tests.deploy_helpers import val_images

TOLERANCE = 1e-4


def test_torchscript_export_matches_and_embeds_metadata(run: Path, tmp_path: Path) -> None:
    report = export_model(run, "torchscript", tmp_path / "m.torchscript.pt")
    assert report.verification.max_abs_diff_probabilities <= TOLERANCE
    extra = {"medfit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
        module = torch.jit.load(str(report.path), _extra_files=extra)
    meta = json.loads(extra["medfit.json"])
    sidecar = json.loads(report.metadata_path.read_text())
    assert sidecar.pop("verification")["tolerance"] == TOLERANCE
    assert meta == sidecar and meta["format"] == "torchscript"

    predictor = Predictor(run, device="cpu")
    paths = val_images(run)[:4]
    x = predictor.model_input(np.stack([predictor.load_square(p) for p in paths]))
    with torch.no_grad():
        logits, probs = module(x[:1])
    np.testing.assert_allclose(probs.numpy(), predictor.probabilities(x[:1]), atol=TOLERANCE)
    np.testing.assert_allclose(probs.sum().item(), 1.0, atol=1e-6)
    assert logits.shape == (1, 2)


def test_failed_verification_leaves_no_file(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exported runtime that drifts by 1e-3 is rejected, and its file removed."""

    def drifting_export(module: torch.nn.Module, path: Path, meta: dict[str, Any]) -> Runner:
        path.write_bytes(b"half-baked export")

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                logits, probs = module(torch.from_numpy(x))
            return logits.numpy(), probs.numpy() + 1e-3

        return run

    monkeypatch.setattr(export, "_write_torchscript", drifting_export)
    out = tmp_path / "out" / "m.pt"
    with pytest.raises(ExportError, match=r"1\.00e-03 > tolerance 1e-04 .* nothing was written"):
        export_model(run, "torchscript", out)
    assert list(out.parent.iterdir()) == []


def test_unknown_format_is_a_user_error(run: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(run, "tflite")


def test_shipped_numpy_preprocessing_matches_medfit(run: Path) -> None:
    """Gray, RGB and non-square inputs of several sizes: the recipe in FILE.json is exact."""
    predictor = Predictor(run, device="cpu")
    meta = export_metadata(predictor, "onnx", dynamic_batch=False)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (50, 70), dtype=np.uint8),
        rng.integers(0, 256, (23, 19, 1), dtype=np.uint8),
        rng.integers(0, 256, (300, 200, 3), dtype=np.uint8),
        np.asarray(Image.open(val_images(run)[0])),
    ]
    for pixels in images:
        want = predictor.model_input(predictor.square(pixels)[None]).numpy()
        np.testing.assert_allclose(preprocess_numpy(pixels, meta), want, atol=1e-4)
