"""Multi-label data (several findings per image): manifest parsing ("A|B" cells, "No Finding",
0/1 columns), the task rules, the BCE loss and its positive weights, thresholds under a
temperature, and a tiny run through train -> eval -> predict -> export with sigmoid outputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medfit
from medfit.config import DataConfig
from medfit.data.dataset import load_index
from medfit.data.manifest import LabelFormat, index_manifest
from medfit.data.sources import NO_LABELS, label_text, label_vector
from medfit.data.task import resolve_task
from medfit.deploy.export import export_model
from medfit.errors import ConfigError, DataError
from medfit.evaluate.runner import run_eval
from medfit.inference.scores import macro_auc, scaled_thresholds, sigmoid
from medfit.training.losses import MultiLabelBCE, positive_weights

LABELS = ("Effusion", "Edema", "Mass")


def _image(path: Path, value: int, size: int = 16) -> None:
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def _manifest(root: Path, rows: list[tuple[str, str, str, str]], header: str) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = [header]
    for i, (name, labels, split, group) in enumerate(rows):
        _image(root / "img" / name, 10 * i % 250)
        lines.append(f"img/{name},{labels},{split},{group}")
    path = root / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


ROWS = [
    ("a.png", "Effusion|Edema", "train", "p1"),
    ("b.png", "No Finding", "train", "p1"),
    ("c.png", "Mass", "train", "p2"),
    ("d.png", "Edema", "train", "p3"),
    ("e.png", "Effusion", "val", "p4"),
    ("f.png", "no finding", "val", "p5"),
    ("g.png", "Mass|Effusion", "test", "p6"),
]


# --- reading the labels --------------------------------------------------------------------------


def test_a_bar_joined_label_column_is_multilabel(tmp_path: Path) -> None:
    index = index_manifest(_manifest(tmp_path, ROWS, "path,labels,split,patient_id"))
    assert index.multilabel
    assert index.classes == sorted(LABELS)  # "No Finding" is the all-zero target, not a label
    targets = {Path(s.path).name: s.targets for s in index.samples}
    assert targets["a.png"] == (1, 1, 0)  # Edema, Effusion, Mass
    assert targets["b.png"] == (0, 0, 0)
    assert targets["f.png"] == (0, 0, 0)  # matched in any case
    assert targets["g.png"] == (0, 1, 1)
    assert {s.group for s in index.samples} == {"p1", "p2", "p3", "p4", "p5", "p6"}
    assert index.counts("train") == {"Edema": 2, "Effusion": 1, "Mass": 1}
    # The stratification key is the rarest positive label (train counts), or "none".
    keys = {Path(s.path).name: s.label for s in index.samples}
    assert keys["a.png"] == index.classes.index("Effusion")  # 1 train positive vs Edema's 2
    assert keys["b.png"] == len(index.classes)


def test_zero_one_columns_are_multilabel_and_other_columns_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    lines = ["path,Effusion,Edema,view,split"]
    for i, (eff, ede, split) in enumerate([(1, 0, "train"), (0, 1, "train"), (1, 1, "val")]):
        _image(tmp_path / "img" / f"{i}.png", 40 * i)
        lines.append(f"img/{i}.png,{eff},{ede},PA,{split}")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    index = index_manifest(path)
    assert index.multilabel and index.classes == ["Edema", "Effusion"]
    assert [s.targets for s in index.samples] == [(0, 1), (1, 0), (1, 1)]


def test_an_uncertain_minus_one_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    lines = ["path,Effusion,Edema"]
    for i, (eff, ede) in enumerate([(1, 0), (0, -1), (1, 1)]):
        _image(tmp_path / "img" / f"{i}.png", 40 * i)
        lines.append(f"img/{i}.png,{eff},{ede}")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'Edema' holds -1.*U-Zeros"):
        index_manifest(path)


def test_extra_columns_beside_a_label_column_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    lines = ["path,label,laterality,portable,split"]
    rows = [("a", -1, 0, "train"), ("b", 1, 1, "train"), ("a", 1, 0, "val")]
    for i, (label, side, port, split) in enumerate(rows):
        _image(tmp_path / "img" / f"{i}.png", 40 * i)
        lines.append(f"img/{i}.png,{label},{side},{port},{split}")
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    index = index_manifest(path)  # a -1 column is not a label column here: no error
    assert not index.multilabel and index.classes == ["a", "b"]


def test_single_labels_stay_multiclass_unless_multilabel_is_asked(tmp_path: Path) -> None:
    rows = [(n, lab.split("|")[0], s, g) for n, lab, s, g in ROWS if lab.lower() != "no finding"]
    path = _manifest(tmp_path, rows, "path,label,split,group")
    assert not index_manifest(path).multilabel
    forced = index_manifest(path, labels=LabelFormat(task="multilabel"))
    assert forced.multilabel and all(sum(s.targets or ()) == 1 for s in forced.samples)


def test_the_separator_and_the_none_label_are_options(tmp_path: Path) -> None:
    rows = [
        (n, "normal" if lab.lower() == "no finding" else lab.replace("|", ";"), s, g)
        for n, lab, s, g in ROWS
    ]
    path = _manifest(tmp_path, rows, "path,labels,split,group")
    cfg = DataConfig(root=str(path), label_sep=";", none_label="normal")
    index = load_index(cfg, 0)
    assert index.multilabel and index.classes == sorted(LABELS)


def test_a_label_missing_from_train_is_refused(tmp_path: Path) -> None:
    rows = [*ROWS, ("h.png", "Hernia", "val", "p7")]
    with pytest.raises(DataError, match="Hernia in val but on no train row"):
        index_manifest(_manifest(tmp_path, rows, "path,labels,split,group"))


def test_a_val_split_is_made_by_group_when_the_manifest_has_none(tmp_path: Path) -> None:
    rows = [(f"{i}.png", LABELS[i % 3], "train", f"p{i // 2}") for i in range(24)]
    index = index_manifest(_manifest(tmp_path, rows, "path,labels,split,group"), 0.25, seed=0)
    train = {s.group for s in index.split("train")}
    val = {s.group for s in index.split("val")}
    assert val and train and not train & val


def test_the_task_rules() -> None:
    assert resolve_task("auto", list(LABELS), multilabel=True) == "multilabel"
    assert resolve_task("multilabel", list(LABELS), multilabel=True) == "multilabel"
    with pytest.raises(ConfigError, match="use --task multilabel"):
        resolve_task("multiclass", list(LABELS), multilabel=True)
    with pytest.raises(ConfigError, match="class folders hold one label"):
        resolve_task("multilabel", list(LABELS), multilabel=False)


def test_label_text_round_trips() -> None:
    classes = list(LABELS)
    assert label_text(np.array([1, 0, 1]), classes) == "Effusion|Mass"
    assert label_text(np.array([0, 0, 0]), classes) == NO_LABELS
    assert label_text(np.int64(1), classes) == "Edema"
    assert label_vector("Effusion|Mass", classes) == [1, 0, 1]
    assert label_vector(NO_LABELS, classes) == [0, 0, 0]
    assert label_vector("Hernia", classes) is None


# --- loss, scores, thresholds --------------------------------------------------------------------


def test_bce_smooths_towards_one_half_and_weighs_positives() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    targets = torch.tensor([[1, 0], [0, 1]])
    soft = targets.float() * 0.9 + 0.05
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, soft)
    assert torch.isclose(MultiLabelBCE(0.1)(logits, targets), expected)
    w = torch.tensor([3.0, 1.0])
    weighted = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets.float(), pos_weight=w
    )
    assert torch.isclose(MultiLabelBCE(0.0, w)(logits, targets), weighted)


def test_positive_weights_are_capped_and_sqrt_damped() -> None:
    targets = np.zeros((100, 3), dtype=int)
    targets[:50, 0] = 1  # 50/50 -> 1
    targets[:4, 1] = 1  # 96/4 = 24 -> sqrt 4.9, whole capped at 10
    w_sqrt = positive_weights(targets, 0.5).numpy()
    w_full = positive_weights(targets, 1.0).numpy()
    assert w_sqrt[0] == pytest.approx(1.0)
    assert w_sqrt[1] == pytest.approx(math.sqrt(24))
    assert w_full[1] == pytest.approx(10.0)
    assert w_sqrt[2] == 1.0  # no positives: nothing to up-weight


def test_macro_auc_skips_labels_without_both_classes() -> None:
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.5], [0.4, 0.2]])
    assert macro_auc(labels, probs) == 1.0  # label 2 has no positive: not averaged
    assert math.isnan(macro_auc(np.zeros((4, 2), int), probs))


def test_thresholds_call_the_same_images_under_a_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    thresholds, temps = [0.3, 0.5, 0.8], (2.0, 1.0, 0.5)
    raw = sigmoid(logits) >= np.array(thresholds)
    scaled = sigmoid(logits / np.array(temps)) >= np.array(scaled_thresholds(thresholds, temps))
    assert (raw == scaled).all()


# --- end to end ----------------------------------------------------------------------------------

OPTIONS = {
    "model": "test_efficientnet",
    "weights": "none",
    "img_size": 32,
    "batch_size": 8,
    "head_epochs": 1,
    "epochs": 2,
    "workers": 0,
    "device": "cpu",
}


def _quiet(_: str) -> None:
    pass


def write_patch_manifest(root: Path, rows: list[tuple[str, int, int, int]]) -> Path:
    """One 32 px image per (split, left, right, mass) row: a bright left patch is Effusion, a
    right one Edema, Mass has no pattern; patients of two consecutive images. ROOT/labels.csv."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    lines = ["path,labels,split,patient_id"]
    for i, (split, left, right, mass) in enumerate(rows):
        img = rng.integers(0, 40, (32, 32))
        img[8:24, 2:14] += 180 * left
        img[8:24, 18:30] += 180 * right
        Image.fromarray(img.astype(np.uint8)).save(root / "img" / f"{i}.png")
        names = [n for n, on in (("Effusion", left), ("Edema", right), ("Mass", mass)) if on]
        lines.append(f"img/{i}.png,{'|'.join(names) or 'No Finding'},{split},p{i // 2}")
    manifest = root / "labels.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A left-half bright patch is Effusion, a right-half one Edema, both can be on; Mass is a
    random, rare label (too rare to measure on 12 test images)."""
    root = tmp_path_factory.mktemp("multilabel")
    rows = [
        ("train" if i < 48 else "val" if i < 60 else "test", i % 2, (i // 2) % 2, int(i % 11 == 0))
        for i in range(72)
    ]
    manifest = write_patch_manifest(root, rows)
    run = medfit.train(
        manifest, out=str(root / "run"), cache_dir=str(root / "cache"), log=_quiet, **OPTIONS
    )
    return run.dir, manifest


def test_a_multilabel_run_selects_on_macro_auc(multilabel_run: tuple[Path, Path]) -> None:
    run, _ = multilabel_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected_metric"] == "macro_auc"
    assert 0.0 <= summary["final"]["val_macro_auc"] <= 1.0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_macro_auc"] is not None for r in rows)
    config = (run / "config.yaml").read_text()
    assert "task: multilabel" in config and "loss: bce" in config
    assert "label_smoothing: 0.0" in config and "balance: sqrt" in config  # multi-label defaults
    split_rows = list(csv.DictReader((run / "split.csv").open()))
    assert {r["label"] for r in split_rows} >= {"Edema|Effusion", NO_LABELS}  # class order


def test_eval_reports_per_label_auc_with_cis_and_writes_thresholds(
    multilabel_run: tuple[Path, Path],
) -> None:
    run, _ = multilabel_run
    lines: list[str] = []
    result = run_eval(run, n_boot=50, log=lines.append)
    metrics = result["metrics"]
    assert result["task"] == "multilabel" and metrics["task"] == "multilabel"
    # 12 test images: every label is under 10 positives, so none is measured, all are named.
    assert set(metrics["too_rare"]) == {"Edema", "Effusion", "Mass"}
    per = metrics["per_label"]["Effusion"]
    assert per["positives"] == 6 and per["auc"] is not None and "ci95" in per
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert thresholds["labels"] == ["Edema", "Effusion", "Mass"]
    assert len(thresholds["thresholds"]) == 3
    assert any("not measured" in line for line in lines)
    saved = json.loads((run / "eval_test.json").read_text())
    assert saved["thresholds"] == thresholds["thresholds"]


def test_predict_and_export_give_a_probability_per_label(
    multilabel_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, manifest = multilabel_run
    predictor = medfit.load(run)
    assert predictor.multilabel
    files = [manifest.parent / "img" / f"{i}.png" for i in (60, 61, 62, 63)]
    table = predictor.predict_files(files)
    assert table.probs.shape == (4, 3)
    assert not np.allclose(table.probs.sum(1), 1.0)  # independent sigmoids, not a softmax
    thresholds = predictor.thresholds
    assert thresholds is not None
    for called, p in zip(table.labels, table.probs, strict=True):
        expected = [c for c, q, t in zip(predictor.classes, p, thresholds, strict=True) if q >= t]
        assert called == ("|".join(expected) or NO_LABELS)
    report = export_model(run, out=tmp_path / "model.onnx")
    assert report.verification.max_abs_diff_probabilities <= 1e-4
    meta = json.loads(report.metadata_path.read_text())
    assert meta["task"] == "multilabel" and len(meta["thresholds"]) == 3
    import onnxruntime

    session = onnxruntime.InferenceSession(str(report.path))
    x = predictor.model_input(np.stack([predictor.load_square(files[0])]))
    _, probs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.allclose(probs[0], table.probs[0], atol=1e-4)


def test_multilabel_refuses_single_label_options(multilabel_run: tuple[Path, Path]) -> None:
    _, manifest = multilabel_run
    with pytest.raises(ConfigError, match=r"--mixup/--cutmix.*multi-label"):
        medfit.train(manifest, log=_quiet, mixup=0.2, **OPTIONS)


def test_torchrun_trains_a_multilabel_run_like_one_process(
    multilabel_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """2 Gloo ranks x 8 images vs one process with 16 (frozen BN: per-image losses, so the
    averaged gradients agree): the same BCE losses and val macro AUC epoch by epoch."""
    from medfit.cli import main
    from tests.test_distributed import _assert_same_metrics, _rows, _torchrun

    _, manifest = multilabel_run
    common = ["--bn", "frozen", "--lr", "3e-3", "--warmup-epochs", "0", "--drop-rate", "0"]
    common += ["--model", "test_efficientnet", "--weights", "none", "--img-size", "32"]
    common += ["--head-epochs", "1", "--epochs", "1", "--workers", "0", "--device", "cpu"]
    common += ["--aug", "none", "--seed", "1"]
    _torchrun(str(manifest), *common, "--out", str(tmp_path / "ddp"), "--batch-size", "8",
              "--cache-dir", str(tmp_path / "c1"))  # fmt: skip
    single = tmp_path / "single"
    main(
        ["train", str(manifest), *common, "--out", str(single), "--batch-size", "16",
         "--cache-dir", str(tmp_path / "c2")]
    )  # fmt: skip
    got, want = _rows(tmp_path / "ddp"), _rows(single)
    _assert_same_metrics(got, want)
    for g, w in zip(got, want, strict=True):
        assert g["val_macro_auc"] == pytest.approx(w["val_macro_auc"], abs=1e-4)


def test_serve_answers_with_a_probability_per_label_and_the_labels_called(
    multilabel_run: tuple[Path, Path],
) -> None:
    from fastapi.testclient import TestClient

    from medfit.deploy.serve import create_app

    run, manifest = multilabel_run
    predictor = medfit.load(run)
    path = manifest.parent / "img" / "61.png"
    with TestClient(create_app(predictor)) as client:
        model = client.get("/model").json()
        response = client.post(
            "/predict", files={"file": ("x.png", path.read_bytes(), "image/png")}
        )
    assert model["task"] == "multilabel" and len(model["thresholds"]) == 3
    body = response.json()
    assert response.status_code == 200
    probs = predictor.predict_files([path]).probs[0]
    assert [body["probabilities"][c] for c in predictor.classes] == pytest.approx(probs, abs=1e-5)
    called = [
        c for c, p, t in zip(predictor.classes, probs, model["thresholds"], strict=True) if p >= t
    ]
    assert body["labels"] == called
    assert body["label"] == ("|".join(called) or NO_LABELS)


def test_a_multilabel_run_resumes_from_its_last_checkpoint(
    multilabel_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    from medfit.cli import main

    run, _ = multilabel_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    main(["train", "--resume", str(copy), "--epochs", "3"])
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # the head epoch, 2 done, 1 more
    assert all(r["val_macro_auc"] is not None for r in rows)
