"""Grad-CAM of a k-fold run in `medfit report`: the mean of the members' maps by default, one
member's map with `--member K` (validated against folds.json), members without weights skipped
and named, and `--label` on a multi-label fold run explained the same way.

The runs are written by hand (no training): the hand-written single-label and multi-label runs of
tests/test_report.py and tests/test_report_multilabel.py, plus folds.json and three members, each
a randomly initialised tiny timm model with its own seed, so their maps differ."""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medfit.errors import ConfigError, MedfitError
from medfit.inference import load
from medfit.report import write_report
from medfit.report.cli import REPORT_COMMANDS, add_report_commands
from medfit.report.gradcam import CamResult, mean_map, normalised_map, overlays
from medfit.report.rundata import read_report_data
from medfit.report.sections import image_bases
from medfit.rundir import RunDir
from tests.test_report import _section, synthetic_run
from tests.test_report_multilabel import multilabel_run

K = 3
IMG_SIZE = 32  # test_efficientnet reads blocks.2 (4x4 cells) at 32 px
PREPROCESS = {
    "img_size": IMG_SIZE,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}


def _quiet(_: str) -> None:
    pass


def add_members(run: Path, task: str = "multiclass") -> Path:
    """Make `run` a k-fold run: folds.json and RUN/fold0..fold{K-1}, each a run directory with a
    tiny timm model (seed = fold) saved as checkpoints/best.pt, as `medfit train --folds` leaves
    them."""
    import timm

    classes = json.loads((run / "classes.json").read_text())
    for fold in range(K):
        member = run / f"fold{fold}"
        (member / "checkpoints").mkdir(parents=True)
        (member / "config.yaml").write_text(yaml.safe_dump({"data": {"task": task}}))
        torch.manual_seed(fold)
        model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(classes))
        state = {
            "model": model.state_dict(),
            "model_name": "test_efficientnet",
            "classes": classes,
            "preprocess": PREPROCESS,
            "config": {"data": {"task": task}},
            "epoch": 1,
        }
        torch.save(state, member / "checkpoints" / "best.pt")
    members = [
        {"fold": f, "dir": f"fold{f}", "status": "trained", "val_images": 4} for f in range(K)
    ]
    rd = RunDir(run)
    rd.write_json(rd.folds_json, {"k": K, "members": members, "oof": {"n_images": 12}})
    return run


@pytest.fixture
def fold_run(tmp_path: Path) -> Path:
    """A single-label k-fold run with an evaluated test split (3 predictions of 2 images, made
    noise here: a flat image gives a flat map, which any mean would equal)."""
    run = add_members(synthetic_run(tmp_path))
    rng = np.random.default_rng(0)
    for path in (tmp_path / "images").iterdir():
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(path, format="PNG")
    return run


def _gradcam(run: Path, label: str | None = None, member: int | None = None) -> CamResult:
    data = read_report_data(run, member=member)
    return overlays(data.path, data.predictions, image_bases(data), label, data.member)


def _member_maps(run: Path, result: CamResult, label: str | None = None) -> list[np.ndarray]:
    """Each member's normalised map of the images and targets `result` drew, computed apart
    from `overlays`: the member loaded alone, its own input."""
    maps = []
    for fold in range(K):
        predictor = load(run / f"fold{fold}", device="cpu")
        rows = [image.prediction for image in result.images]
        squares = [predictor.load_square(row.path) for row in rows]
        x = predictor.model_input(np.stack(squares))
        names = [label or row.predicted for row in rows]
        target = torch.tensor([predictor.classes.index(name) for name in names])
        heat = normalised_map(predictor.model, IMG_SIZE, x, target)
        assert heat is not None
        maps.append(heat)
    return maps


def _heat(result: CamResult) -> np.ndarray:
    return np.stack([image.heat for image in result.images])  # type: ignore[misc]


def test_a_fold_run_draws_the_mean_of_its_members_maps(fold_run: Path) -> None:
    section = html.unescape(_section(write_report(fold_run, log=_quiet).read_text(), "gradcam"))
    assert "Not in this report" not in section
    assert "mean of 3 members' maps (fold0, fold1, fold2)" in section
    assert section.count("data:image/png;base64,") == 3  # every prediction row drawn

    result = _gradcam(fold_run)
    maps = _member_maps(fold_run, result)
    assert not np.allclose(maps[0], maps[1])  # the members differ: the mean is not one of them
    for heat in maps:  # each member's map on one scale: peak 1 per image
        np.testing.assert_allclose(heat.reshape(len(heat), -1).max(1), 1.0, rtol=1e-6)
    assert np.allclose(_heat(result), np.mean(maps, axis=0), atol=1e-6)

    # mean_map on one image, against the members' own maps of it.
    predictors = [load(fold_run / f"fold{f}", device="cpu") for f in range(K)]
    x = predictors[0].model_input(
        np.stack([predictors[0].load_square(result.images[0].prediction.path)])
    )
    target = torch.tensor([1])
    one = [normalised_map(p.model, IMG_SIZE, x, target) for p in predictors]
    assert np.allclose(mean_map(predictors, x, target), np.mean(one, axis=0))  # type: ignore[arg-type]


def test_member_option_draws_that_members_map_on_the_ensembles_images(fold_run: Path) -> None:
    ensemble = _gradcam(fold_run)
    alone = _gradcam(fold_run, member=1)
    same_rows = [(i.prediction.path, i.prediction.predicted) for i in alone.images]
    assert same_rows == [(i.prediction.path, i.prediction.predicted) for i in ensemble.images]
    maps = _member_maps(fold_run, ensemble)
    assert np.allclose(_heat(alone), maps[1], atol=1e-6)
    assert not np.allclose(_heat(alone), maps[0], atol=1e-3)
    assert not np.allclose(_heat(alone), _heat(ensemble), atol=1e-3)

    section = _section(write_report(fold_run, log=_quiet, member=1).read_text(), "gradcam")
    assert "member fold1 alone (--member 1)" in html.unescape(section)


def test_a_bad_member_is_a_one_line_error_naming_the_valid_ones(fold_run: Path) -> None:
    parser = argparse.ArgumentParser(prog="medfit")
    add_report_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(fold_run), "--member", "7", "--no-gradcam"])
    with pytest.raises(MedfitError) as err:
        REPORT_COMMANDS[args.command](args)
    assert f"--member 7 is not a fold of {fold_run}; valid members: 0, 1, 2" == str(err.value)
    assert not (fold_run / "report.html").exists()  # refused before anything was written
    with pytest.raises(SystemExit):  # not a number: argparse's usage error
        parser.parse_args(["report", str(fold_run), "--member", "fold1"])


def test_members_without_weights_are_skipped_and_named(fold_run: Path) -> None:
    (fold_run / "fold1" / "checkpoints" / "best.pt").unlink()
    section = html.unescape(_section(write_report(fold_run, log=_quiet).read_text(), "gradcam"))
    assert "mean of 2 members' maps (fold0, fold2)" in section
    assert "Left out: fold1 (no checkpoints/best.pt)" in section
    assert section.count("data:image/png;base64,") == 3

    section = _section(write_report(fold_run, log=_quiet, member=1).read_text(), "gradcam")
    assert "fold 1 cannot be drawn: fold1 (no checkpoints/best.pt)" in section

    folds = json.loads((fold_run / "folds.json").read_text())
    for m in folds["members"]:
        m.update(status="failed", error="RuntimeError: out of memory")
    (fold_run / "folds.json").write_text(json.dumps(folds))
    section = _section(write_report(fold_run, log=_quiet).read_text(), "gradcam")
    assert "no member can be drawn: fold0 (failed: RuntimeError: out of memory); fold1" in section
    assert "data:image/png" not in section


def test_member_option_on_a_run_that_is_not_a_fold_ensemble_is_an_error(tmp_path: Path) -> None:
    single = synthetic_run(tmp_path / "single")
    with pytest.raises(ConfigError, match=r"has no folds\.json: drop --member") as err:
        write_report(single, log=_quiet, gradcam=False, member=0)
    assert "\n" not in str(err.value)
    folded = add_members(synthetic_run(tmp_path / "folded"))
    with pytest.raises(ConfigError, match=re.escape(f"member fold0 of the k-fold run {folded}:")):
        write_report(folded / "fold0", log=_quiet, gradcam=False, member=0)


def test_a_multilabel_fold_run_explains_one_labels_logit_per_member(tmp_path: Path) -> None:
    run = add_members(multilabel_run(tmp_path), task="multilabel")
    section = _section(write_report(run, log=_quiet, label="Hernia").read_text(), "gradcam")
    assert "Label explained: <b>Hernia</b>" in section
    assert "mean of 3 members' maps" in html.unescape(section)

    ensemble = _gradcam(run, label="Hernia")
    assert len(ensemble.images) == 2  # Hernia's two positives
    maps = _member_maps(run, ensemble, label="Hernia")
    assert np.allclose(_heat(ensemble), np.mean(maps, axis=0), atol=1e-6)
    assert np.allclose(_heat(_gradcam(run, label="Hernia", member=2)), maps[2], atol=1e-6)
