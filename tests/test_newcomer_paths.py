"""Issue 19 items 2, 4-8: runs usable from any folder, offline weights said fast, Keras files
named, an honest end-of-training line, unused folders said, and the real run path printed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

from medfit.cli import main
from medfit.errors import WeightsError
from medfit.model import backbones
from medfit.model.backbones import create_model
from medfit.rundir import EpochRow
from medfit.training.selection import BestTracker
from tests.test_train import make_dataset

TRAIN = [
    "--model", "test_efficientnet", "--weights", "none", "--img-size", "32",
    "--batch-size", "8", "--head-epochs", "1", "--epochs", "2", "--smooth", "3",
    "--workers", "0", "--cache-dir", "cache", "--patience", "0",
]  # fmt: skip


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _train(argv: list[str]) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", *argv]) == 0
    return out.getvalue().splitlines()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs trained with relative paths into the same --out, plus a folder that is no split."""
    root = tmp_path_factory.mktemp("newcomer")
    make_dataset(root / "data", per_class=8)
    make_dataset(root / "spare", per_class=8)
    (root / "spare" / "train").rename(root / "data" / "original")
    with _cwd(root):
        first = _train(["data", "--out", "runs/blood", *TRAIN])
        second = _train(["data", "--out", "runs/blood", *TRAIN])
    return {"root": root, "first": first, "second": second}


def test_item2_a_run_works_from_another_folder_and_moved_data_is_named(
    work: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    root: Path = work["root"]
    run = root / "runs" / "blood"
    config = (run / "config.yaml").read_text()
    assert f"root: {root / 'data'}" in config
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(run), "--split", "val"]) == 0
    (root / "data").rename(root / "data-moved")
    try:
        capsys.readouterr()
        assert main(["eval", str(run), "--split", "val"]) == 2
        err = capsys.readouterr().err.strip()
        assert "--data" in err and "split.csv" in err and len(err.splitlines()) == 1
        assert main(["eval", str(run), "--split", "test"]) == 2
        err = capsys.readouterr().err
        assert "which is not there" in err and "--data" in err
        from medfit.deploy.export import verification_inputs
        from medfit.inference import Predictor

        _, source = verification_inputs(Predictor(run, device="cpu"))
        assert "NOT real images" in source
    finally:
        (root / "data-moved").rename(root / "data")


def test_item4_offline_hub_fails_fast_and_names_weights_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_create = timm.create_model

    def no_download(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
        assert not pretrained, "the hub was called although it cannot be reached"
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(backbones, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(backbones, "cached_weights", lambda name: None)
    monkeypatch.setattr(backbones, "_cached_timm_models", lambda: ["resnet18.tv_in1k"])
    monkeypatch.setattr(timm, "create_model", no_download)
    started = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        create_model("resnet50", 2, weights="hub")
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "cannot be reached" in message and "resnet18.tv_in1k" in message
    assert "\n" not in message


def test_item4_models_marks_the_backbones_with_weights_here(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(backbones, "weights_here", lambda: ["resnet18"])
    assert main(["models", "resnet1*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "resnet18  * weights on this machine" in lines
    assert "resnet101" in lines


def test_item5_keras_files_are_named_and_positional_matches_said(tmp_path: Path) -> None:
    h5 = tmp_path / "my_model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64 + b"efficientnetb0" + b"\0" * 64)
    with pytest.raises(WeightsError, match=r"Keras.*--model tf_efficientnet_b0"):
        create_model("test_efficientnet", 2, weights=str(h5))
    keras3 = tmp_path / "model.keras"
    with zipfile.ZipFile(keras3, "w") as archive:
        for name in ("config.json", "metadata.json", "model.weights.h5"):
            archive.writestr(name, "{}")
    with pytest.raises(WeightsError, match="Keras"):
        create_model("test_efficientnet", 2, weights=str(keras3))
    source = timm.create_model("test_efficientnet", num_classes=2).state_dict()
    renamed = {f"features.{i}": v for i, v in enumerate(source.values())}
    path = tmp_path / "torchvision_style.pth"
    torch.save(renamed, path)
    _, _, note = create_model("test_efficientnet", 2, weights=str(path))
    assert "matched by position" in note and f"{len(source) - 2} tensors" in note


def _row(epoch: int, stage: str, acc: float) -> EpochRow:
    return EpochRow(
        epoch=epoch, stage=stage, train_loss=1.0, train_acc=acc, val_loss=1.0, val_acc=acc,
        val_balanced_accuracy=acc, val_macro_f1=acc, lr=1e-3,
    )  # fmt: skip


def test_item6_smoothing_stays_in_its_stage_and_the_lr_is_the_trained_one(
    work: dict[str, Any],
) -> None:
    tracker = BestTracker("accuracy", smooth=3)
    history = [_row(1, "head", 0.3), _row(2, "full", 0.7)]
    tracker.update(history[:1])
    tracker.update(history)
    assert history[1].selection_score == pytest.approx(0.7)
    run = work["root"] / "runs" / "blood"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    head = next(r for r in rows if r["stage"] == "head")
    assert head["lr"] == pytest.approx(3e-3)
    done = next(line for line in work["first"] if line.startswith("done:"))
    assert "val acc" in done and "there" in done


def test_item7_top_level_folders_that_are_no_split_are_said(work: dict[str, Any]) -> None:
    header = "\n".join(work["first"])
    assert "original/" in header and "manifest" in header


def test_item8_a_renamed_out_is_said_first_and_the_real_path_printed_last(
    work: dict[str, Any],
) -> None:
    root: Path = work["root"]
    second = work["second"]
    assert second[0] == f"runs/blood exists; writing {Path('runs/blood-2')}"
    assert second[-1] == f"run: {root / 'runs' / 'blood-2'}"
    assert work["first"][-1] == f"run: {root / 'runs' / 'blood'}"
    summary = json.loads((root / "runs" / "blood-2" / "summary.json").read_text())
    assert summary["run_dir"] == str(root / "runs" / "blood-2")
