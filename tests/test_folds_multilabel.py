"""k-fold training on multi-label data: folds stratified on the rarest positive label with every
label in every fold's training part, members that read the run's labels back exactly, (N, L)
out-of-fold logits, the members' mean sigmoid probability as one model, eval fitted on OOF, and
one ONNX graph."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medfit.config import RunConfig, flat_to_dotted
from medfit.data.folds import assign_folds
from medfit.data.sources import NO_LABELS, Sample, label_vector
from medfit.deploy.export import export_model
from medfit.errors import DataError
from medfit.evaluate.runner import run_eval
from medfit.inference import Predictor
from medfit.model.ensemble import FoldEnsemble
from medfit.training.folds import train_folds
from tests.test_multilabel import write_patch_manifest

LABELS = ["Edema", "Effusion", "Mass"]  # sorted, as the manifest reader orders them
OPTIONS = {
    "model": "test_efficientnet",
    "weights": "none",
    "img_size": 32,
    "batch_size": 16,
    "head_epochs": 1,
    "epochs": 1,
    "workers": 0,
    "device": "cpu",
}


def _quiet(_: str) -> None:
    pass


# --- fold assignment and the ensemble, without training ---------------------------------------


def _multilabel_samples(mass_groups: int) -> list[Sample]:
    """24 patients of 2 images; Effusion/Edema alternate, Mass on the first `mass_groups`."""
    samples = []
    for g in range(24):
        targets = ((g // 2) % 2, g % 2, int(g < mass_groups))  # Edema, Effusion, Mass
        on = [j for j, t in enumerate(targets) if t]
        key = 2 if targets[2] else (on[0] if on else 3)  # rarest positive, else "none"
        for i in range(2):
            samples.append(Sample(f"g{g}_{i}.png", key, "train", f"p{g}", targets))
    return samples


def test_multilabel_folds_keep_groups_and_every_label_in_every_training_part() -> None:
    samples = _multilabel_samples(mass_groups=4)
    folds = assign_folds(samples, 3, k=3, seed=0, classes=LABELS)
    by_group: dict[str, set[int]] = {}
    for s, f in zip(samples, folds, strict=True):
        by_group.setdefault(str(s.group), set()).add(int(f))
    assert all(len(f) == 1 for f in by_group.values())
    targets = np.array([s.targets for s in samples])
    for f in range(3):
        assert (targets[folds != f].sum(0) > 0).all()  # each member sees every label


def test_a_label_that_cannot_reach_every_training_part_is_named() -> None:
    samples = _multilabel_samples(mass_groups=1)  # Mass: one patient, so one fold holds it all
    with pytest.raises(DataError, match=r"Mass \(positive on 2 image\(s\) in 1 group\(s\)\)"):
        assign_folds(samples, 3, k=3, seed=0, classes=LABELS)


def test_the_multilabel_ensemble_outputs_the_logit_of_the_mean_probability() -> None:
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(5, 4) * 20  # large logits: still finite
    mean_p = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
    out = FoldEnsemble(members, multilabel=True)(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(torch.sigmoid(out), mean_p)
    single = FoldEnsemble(members)(x)  # the single-label ensemble is unchanged
    expected = torch.stack([torch.log_softmax(m(x), 1) for m in members]).exp().mean(0).log()
    torch.testing.assert_close(single, expected)


# --- a tiny k-fold multi-label job ------------------------------------------------------------


def _manifest(root: Path) -> Path:
    """48 pool images (train 36, val 12; patients of 2 images) and 24 test images: a bright left
    patch is Effusion, a right one Edema (both can be on); Mass is rarer and random."""
    rows = [
        (
            "train" if i < 36 else "val" if i < 48 else "test",
            (i // 2) % 2,
            (i // 4) % 2,
            int((i // 2) % 5 == 0),
        )
        for i in range(72)
    ]
    return write_patch_manifest(root, rows)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("folds_multilabel")
    manifest = _manifest(root)
    cfg = RunConfig()
    cfg.override(flat_to_dotted(OPTIONS))
    cfg.data.root = str(manifest)
    cfg.data.cache_dir = str(root / "cache")
    cfg.out = str(root / "run")
    result = train_folds(cfg, 3, log=_quiet)
    assert [m["status"] for m in result.members] == ["trained"] * 3
    assert result.multilabel and "macro_auc" in result.oof
    return root / "run", manifest


def test_members_hold_their_groups_and_the_runs_labels(fold_run: tuple[Path, Path]) -> None:
    out, _ = fold_run
    folds = _rows(out / "folds.csv")
    test_files = tuple(f"/{i}.png" for i in range(48, 72))
    assert len(folds) == 48 and not any(r["path"].endswith(test_files) for r in folds)
    assert {r["label"] for r in folds} >= {"Edema|Effusion", NO_LABELS}
    by_group: dict[str, set[str]] = {}
    for r in folds:
        by_group.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in by_group.values())  # a patient never spans folds
    for fold in range(3):
        member = out / f"fold{fold}"
        config = (member / "config.yaml").read_text()
        assert "task: multilabel" in config and "loss: bce" in config
        assert json.loads((member / "classes.json").read_text()) == LABELS
        held_out = {r["path"] for r in folds if r["fold"] == str(fold)}
        split = _rows(member / "split.csv")
        assert {r["path"] for r in split if r["split"] == "val"} == held_out
        train = [label_vector(r["label"], LABELS) for r in split if r["split"] == "train"]
        assert (np.array(train).sum(0) > 0).all()  # every label positive in its training part
    assert "task: multilabel" in (out / "config.yaml").read_text()


def test_oof_covers_the_pool_with_a_logit_per_label(fold_run: tuple[Path, Path]) -> None:
    out, _ = fold_run
    with np.load(out / "oof_logits.npz") as oof:
        assert sorted(map(str, oof["paths"])) == sorted(r["path"] for r in _rows(out / "folds.csv"))
        assert oof["logits"].shape == oof["labels"].shape == (48, 3)
        assert np.isfinite(oof["logits"]).all()
        assert set(np.unique(oof["labels"]).tolist()) == {0, 1}
        assert [str(c) for c in oof["classes"]] == LABELS
    saved = json.loads((out / "folds.json").read_text())
    assert saved["oof"]["n_images"] == 48 and "val_macro_auc" in saved["members"][0]


def test_the_run_predicts_the_members_mean_sigmoid(fold_run: tuple[Path, Path]) -> None:
    out, _ = fold_run
    ensemble = Predictor(out, device="cpu")
    assert ensemble.multilabel and ensemble.classes == LABELS
    assert [p.name for p in ensemble.members] == ["fold0", "fold1", "fold2"]
    images = [np.full((40, 40), 30 + 40 * i, np.uint8) for i in range(4)]
    members = [Predictor(out / f"fold{f}", device="cpu") for f in range(3)]
    expected = np.mean([m.predict_pixels(images) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict_pixels(images), expected, atol=1e-5)


def test_eval_fits_on_oof_lists_the_members_and_exports(
    fold_run: tuple[Path, Path], tmp_path: Path
) -> None:
    out, manifest = fold_run
    oof_eval = run_eval(out, split="oof", n_boot=50, device="cpu", log=_quiet)
    assert oof_eval["n_images"] == 48 and oof_eval["views"] == ["identity"]
    assert oof_eval["calibration"]["fitted_on"] == "oof"
    assert "ci95" in oof_eval["metrics"]["per_label"]["Effusion"]
    assert oof_eval["metrics"]["ci95"]["macro_auc"]  # Edema, Effusion measured on 48 images
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert thresholds["fitted_on"] == "oof" and "on oof (48 images)" in thresholds["rule"]
    assert thresholds["labels"] == LABELS and "members" not in oof_eval

    lines: list[str] = []
    test_eval = run_eval(out, split="test", n_boot=0, device="cpu", log=lines.append)
    assert test_eval["n_images"] == 24
    assert test_eval["calibration"]["fitted_on"] == "oof"
    members = test_eval["members"]
    assert [r["dir"] for r in members] == ["fold0", "fold1", "fold2"]
    assert all(0.0 <= r["macro_auc"] <= 1.0 for r in members)  # Edema and Effusion: 12 each
    assert any(line.startswith("  fold members alone: macro ROC-AUC") for line in lines)
    assert json.loads((out / "eval_test.json").read_text())["members"] == members

    report = export_model(out, out=tmp_path / "model.onnx")
    assert report.verification.max_abs_diff_probabilities <= 1e-4
    import onnxruntime

    ensemble = Predictor(out, device="cpu")
    files = [manifest.parent / "img" / f"{i}.png" for i in (48, 49, 50, 51)]
    x = ensemble.model_input(np.stack([ensemble.load_square(f) for f in files]))
    session = onnxruntime.InferenceSession(str(report.path))
    feed = {session.get_inputs()[0].name: x[:1].numpy()}
    _, probs = session.run(None, feed)
    members = [Predictor(out / f"fold{f}", device="cpu") for f in range(3)]
    mean = np.mean([m.predict_files(files[:1]).probs for m in members], axis=0)
    np.testing.assert_allclose(probs, mean, atol=1e-4)


def test_the_report_shows_members_and_ensemble_by_macro_auc(
    fold_run: tuple[Path, Path],
) -> None:
    from medfit.report import write_report

    out, _ = fold_run
    run_eval(out, split="test", n_boot=0, device="cpu", log=_quiet)
    html = write_report(out).read_text()
    section = html[html.index("Fold members and ensemble") :]
    assert "held-out macro AUC" in section and "test mAP" in section
    assert "held-out acc" not in section
