"""k-fold training: grouped folds, out-of-fold predictions, the members as one model, resume,
and a member that fails without losing the others."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medfit.data.folds import assign_folds
from medfit.data.sources import Sample
from medfit.diagnose import diagnose_run
from medfit.errors import ConfigError, DataError, MedfitError
from medfit.evaluate.runner import run_eval
from medfit.inference import Predictor
from medfit.model.ensemble import FoldEnsemble
from medfit.report.html import write_report
from medfit.training import folds as folds_module
from medfit.training.folds import resume_folds, train_folds
from tests.test_seeds import make_config
from tests.test_train import make_dataset


def _samples(n_groups: int, per_group: int) -> list[Sample]:
    """Groups of images sharing a label (a patient has one diagnosis), labels alternating."""
    return [
        Sample(f"g{g}_{i}.png", g % 2, "train", f"patient{g}")
        for g in range(n_groups)
        for i in range(per_group)
    ]


def test_folds_keep_groups_together_and_the_classes_mixed() -> None:
    samples = _samples(n_groups=20, per_group=3)
    folds = assign_folds(samples, n_classes=2, k=4, seed=0)

    by_group: dict[str, set[int]] = {}
    for s, f in zip(samples, folds, strict=True):
        by_group.setdefault(str(s.group), set()).add(int(f))
    assert all(len(f) == 1 for f in by_group.values())  # no patient in two folds
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3]
    labels = np.array([s.label for s in samples])
    for f in range(4):
        assert set(labels[folds == f].tolist()) == {0, 1}  # stratified: both classes per fold
    assert (assign_folds(samples, 2, 4, seed=0) == folds).all()  # reproducible
    assert not (assign_folds(samples, 2, 4, seed=1) == folds).all()


def test_images_without_a_group_are_their_own_group() -> None:
    samples = [Sample(f"{i}.png", i % 2, "train") for i in range(10)]
    folds = assign_folds(samples, 2, k=5, seed=0)
    assert np.bincount(folds).tolist() == [2, 2, 2, 2, 2]


def test_too_few_groups_for_k_folds_is_one_line() -> None:
    with pytest.raises(DataError, match="--folds 5 needs at least 5 groups"):
        assign_folds(_samples(n_groups=3, per_group=4), 2, k=5, seed=0)


def test_the_ensemble_outputs_the_log_of_the_mean_probability() -> None:
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(5, 4)
    mean_p = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    out = FoldEnsemble(members)(x)
    torch.testing.assert_close(torch.softmax(out, 1), mean_p)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5))


def _data_with_test(tmp_path: Path) -> Path:
    data = make_dataset(tmp_path / "data", per_class=9)
    shutil.copytree(data / "val", data / "test")
    return data


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_folds_train_members_write_oof_and_act_as_one_model(tmp_path: Path) -> None:
    _data_with_test(tmp_path)
    cfg = make_config(tmp_path, epochs=1)
    result = train_folds(cfg, 3, log=lambda _: None)
    out = tmp_path / "out"

    folds = _csv_rows(out / "folds.csv")
    assert len(folds) == 18 + 8  # the pool: train + val, test untouched
    assert not any("/test/" in r["path"] for r in folds)
    for fold in range(3):
        held_out = {r["path"] for r in folds if r["fold"] == str(fold)}
        split = _csv_rows(out / f"fold{fold}" / "split.csv")
        assert {r["path"] for r in split if r["split"] == "val"} == held_out
        assert not held_out & {r["path"] for r in split if r["split"] == "train"}
    assert [m["status"] for m in result.members] == ["trained"] * 3

    with np.load(
        out / "oof_logits.npz"
    ) as oof:  # every pool image, from the member that held it out
        assert sorted(str(p) for p in oof["paths"]) == sorted(r["path"] for r in folds)
        assert np.isfinite(oof["logits"]).all()

    ensemble = Predictor(out, device="cpu")
    assert [p.name for p in ensemble.members] == ["fold0", "fold1", "fold2"]
    images = [np.full((40, 40), 30 + 40 * i, np.uint8) for i in range(4)]
    members = [Predictor(out / f"fold{f}", device="cpu") for f in range(3)]
    expected = np.mean([m.predict_pixels(images) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict_pixels(images), expected, atol=1e-5)

    oof_eval = run_eval(out, split="oof", n_boot=50, log=lambda _: None)
    assert oof_eval["n_images"] == 26
    assert "ci95" in json.dumps(oof_eval["metrics"])
    assert oof_eval["calibration"]["fitted_on"] == "oof"
    test_eval = run_eval(out, split="test", n_boot=0, log=lambda _: None)
    assert test_eval["n_images"] == 8
    assert test_eval["calibration"]["fitted_on"] == "oof"
    assert [r["dir"] for r in test_eval["members"]] == ["fold0", "fold1", "fold2"]

    html = write_report(out, log=lambda _: None, gradcam=False).read_text()
    section = html[html.index('id="folds"') :]
    section = section[: section.index("</section>")]
    assert all(f"<td>fold{f}</td>" in section for f in range(3))
    assert "ensemble (OOF: all folds)" in section
    with pytest.raises(MedfitError, match="k-fold ensemble, which trains no epochs itself"):
        diagnose_run(out, probes=False, log=lambda _: None)


class Interrupt(BaseException):
    """Stands in for Ctrl-C or a kill mid-fold: not an error of the member, so not caught."""


def test_an_interrupted_fold_job_continues(tmp_path: Path) -> None:
    _data_with_test(tmp_path)
    lines: list[str] = []

    def stop_in_fold_1_epoch_2(line: str) -> None:
        lines.append(line)
        if any(x.startswith("medfit folds: fold 2/2") for x in lines) and line.startswith(
            "epoch  2/2"
        ):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_folds(make_config(tmp_path), 2, log=stop_in_fold_1_epoch_2)
    out = tmp_path / "out"
    assert (out / "fold0" / "summary.json").is_file()
    assert (out / "fold1" / "checkpoints" / "last.pt").is_file()

    result = resume_folds(out, 2, log=lambda _: None)
    assert [m["status"] for m in result.members] == ["reused", "resumed"]
    assert json.loads((out / "folds.json").read_text())["oof"]["n_images"] == 26

    with pytest.raises(ConfigError, match="different config"):
        train_folds(make_config(tmp_path, epochs=3), 2, log=lambda _: None)
    with pytest.raises(DataError, match="--folds K or --seed differ"):
        resume_folds(out, 3, log=lambda _: None)


def test_a_failed_member_does_not_lose_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _data_with_test(tmp_path)
    real = folds_module.finish_member

    def fail_fold_0(cfg: Any, path: Path, log: Any, prepare: Any = None) -> str:
        if path.name == "fold0":
            raise RuntimeError("out of memory")
        return real(cfg, path, log, prepare)

    monkeypatch.setattr(folds_module, "finish_member", fail_fold_0)
    with pytest.raises(MedfitError, match=r"1 of 2 folds failed: fold0 \(RuntimeError: out of"):
        train_folds(make_config(tmp_path, epochs=1), 2, log=lambda _: None)
    saved = json.loads((tmp_path / "out" / "folds.json").read_text())
    assert [m["status"] for m in saved["members"]] == ["failed", "trained"]
    assert Predictor(tmp_path / "out", device="cpu").members == [tmp_path / "out" / "fold1"]

    monkeypatch.setattr(folds_module, "finish_member", real)
    result = resume_folds(tmp_path / "out", 2, log=lambda _: None)
    assert [m["status"] for m in result.members] == ["trained", "reused"]


def test_folds_options_are_checked_in_one_line(tmp_path: Path) -> None:
    _data_with_test(tmp_path)
    with pytest.raises(ConfigError, match="--folds must be >= 2"):
        train_folds(make_config(tmp_path), 1)
    with pytest.raises(MedfitError, match="--split oof reads the out-of-fold"):
        seeds_cfg = make_config(tmp_path, epochs=1)
        from medfit.training.fit import fit

        run = fit(seeds_cfg, log=lambda _: None)
        run_eval(run.dir, split="oof", log=lambda _: None)


def test_seeds_and_folds_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medfit import cli

    data = _data_with_test(tmp_path)
    assert cli.main(["train", str(data), "--seeds", "2", "--folds", "2"]) != 0
    assert "--seeds and --folds are two kinds of multi-run job" in capsys.readouterr().err
    assert cli.main(["train", str(data), "--folds", "2", "--mlflow", "sqlite:///m.db"]) != 0
    assert "with --folds drop --mlflow" in capsys.readouterr().err
