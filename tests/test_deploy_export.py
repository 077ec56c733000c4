"""`medfit export --format onnx`: parity with PyTorch (max |dp| <= 1e-4) and shipped metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch

onnx = pytest.importorskip("onnx", reason='ONNX export needs: pip install "medfit[export]"')
ort = pytest.importorskip("onnxruntime", reason='needs: pip install "medfit[export]"')

from medfit.data.decode import decode_image  # noqa: E402
from medfit.deploy.export import DEFAULT_TOLERANCE, export_model  # noqa: E402
from medfit.inference import Predictor  # noqa: E402
from tests.deploy_helpers import copy_run, run_cli, val_images  # noqa: E402

TOLERANCE = 1e-4  # the stated parity bound on probabilities


def _session(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_export_is_verified_and_carries_its_preprocessing(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    assert run_cli(["export", str(run), "--out", str(out)]) == 0
    assert "verified on 8 val images from split.csv" in capsys.readouterr().out
    assert DEFAULT_TOLERANCE == TOLERANCE

    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    check = meta.pop("verification")
    assert check["max_abs_diff_probabilities"] <= TOLERANCE and check["batch_sizes"] == [1]
    assert meta["classes"] == ["left", "right"] and meta["img_size"] == 32
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["input"]["layout"] == "NCHW"
    assert meta["input"]["shape"] == [1, 3, 32, 32] and meta["medfit_version"]
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["medfit"]) == meta
    assert json.loads(props["classes"]) == ["left", "right"]

    # Without medfit: the shipped numpy/Pillow preprocessing + onnxruntime == medfit's predict.
    namespace: dict[str, object] = {}
    exec(meta["preprocess_python"], namespace)
    preprocess = namespace["preprocess_numpy"]
    session = _session(out)
    paths = val_images(run)
    expected = Predictor(run, device="cpu").predict_files(paths).probs
    for path, want in zip(paths, expected, strict=True):
        x = preprocess(decode_image(path).pixels, meta)  # type: ignore[operator]
        got = session.run(["probabilities"], {"input": x})[0][0]
        np.testing.assert_allclose(got, want, atol=TOLERANCE)


def test_dynamic_batch_onnx_serves_any_batch_size(run: Path, tmp_path: Path) -> None:
    report = export_model(run, "onnx", tmp_path / "dyn.onnx", dynamic_batch=True)
    assert report.verification.batch_sizes == (8, 1)
    session = _session(report.path)
    assert isinstance(session.get_inputs()[0].shape[0], str)
    predictor = Predictor(run, device="cpu")
    paths = val_images(run)
    x = predictor.model_input(np.stack([predictor.load_square(p) for p in paths]))
    want = predictor.probabilities(x)
    for batch in (1, 3, len(paths)):
        got = session.run(["probabilities"], {"input": x[:batch].numpy()})[0]
        np.testing.assert_allclose(got, want[:batch], atol=TOLERANCE)


def test_export_of_a_confident_model_falls_back_to_random_inputs(run: Path, tmp_path: Path) -> None:
    """Large logits (random weights, scaled head) make parity a real test, and when the val
    images are gone the check runs on seeded noise instead."""
    copy = copy_run(run, tmp_path / "run")
    best = copy / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    model = timm.create_model(state["model_name"], num_classes=2)
    head = model.get_submodule("classifier")
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.mul_(50)
    state["model"] = model.state_dict()
    torch.save(state, best)
    split = copy / "split.csv"
    split.write_text(split.read_text().replace(str(run.parent / "data"), str(tmp_path / "gone")))

    report = export_model(copy, "onnx")
    v = report.verification
    assert report.path == copy / "export" / "model.onnx"
    assert v.inputs.startswith("8 random normal inputs")
    assert v.max_abs_diff_probabilities <= TOLERANCE
    noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    probs = _session(report.path).run(["probabilities"], {"input": noise[:1].numpy()})[0]
    assert probs.max() > 0.99  # really confident: the probabilities are not all ~0.5
