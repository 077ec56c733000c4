"""medfit report: every section from a real evaluated + checked run, the absent-section notes of a
bare run, escaping of hostile names, atomic writes, and a headless-Chromium screenshot."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from medfit.errors import MedfitError
from medfit.report import plots, write_report
from medfit.report.cli import REPORT_COMMANDS, add_report_commands
from medfit.report.gradcam import pick, target_layer
from medfit.report.html import commands
from medfit.report.plots import stage_boundaries
from medfit.rundir import PredictionRow
from tests.deploy_helpers import copy_run

SECTIONS = (
    "headline",
    "curves",
    "seeds",
    "confusion",
    "per_class",
    "calibration",
    "top_losses",
    "gradcam",
    "check",
    "diagnosis",
    "timing",
    "time_to_accuracy",
    "config",
)
HOSTILE_CLASS = "<script>alert(1)</script>"
HOSTILE_FILE = "<img src=x onerror=alert(1)>.png"
DIAGNOSIS = {
    "run": "x",
    "findings": [
        {
            "rule": "small_val",
            "severity": "medium",
            "title": "validation set too small to rank epochs",
            "evidence": "8 val images: one image moves accuracy by 12.5 points",
            "fix": "use at least 200 val images",
            "numbers": {"val_images": 8},
        },
        {
            "rule": "lr",
            "severity": "high",
            "title": "learning rate too high",
            "evidence": "val loss rose three epochs in a row",
            "fix": "--lr 1e-3",
            "numbers": {"lr": 0.003, "undefined": None},
        },
    ],
    "probes": {},
}


def _quiet(_: str) -> None:
    pass


def _section(html: str, name: str) -> str:
    """The HTML of one <section id=name>, to assert on that section alone."""
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, f"section {name} missing"
    return match.group(1)


# --- a real run: trained, evaluated, checked, diagnosed -------------------------------------


SEEDS = {
    "n": 2,
    "base_seed": 0,
    "seeds": [
        {"seed": 0, "dir": "run", "best_epoch": 2, "best_val_acc": 0.8125, "wall_s": 56.4},
        {"seed": 1, "dir": "seed1", "best_epoch": 1, "best_val_acc": 0.6875, "wall_s": 27.9},
    ],
    "mean": {"best_epoch": 1.5, "best_val_acc": 0.75, "wall_s": 42.15},
    "sd": {"best_epoch": 0.7071, "best_val_acc": 0.0884, "wall_s": 20.1},
    "note": "seed-to-seed sd 8.8 points: single runs cannot resolve a 1-point gain",
}


@pytest.fixture(scope="module")
def full_run(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny run with eval_val.json, check.json (one val image is a copy
    of a train image) and diagnosis.json."""
    from medfit.check.options import CheckOptions
    from medfit.check.run import run_check
    from medfit.config import DataConfig
    from medfit.data.dataset import load_index
    from medfit.evaluate.runner import run_eval

    base = tmp_path_factory.mktemp("report-full")
    out = copy_run(run, base / "run")
    run_eval(out, split="val", n_boot=20, device="cpu", log=_quiet)
    data = Path(yaml.safe_load((out / "config.yaml").read_text())["data"]["root"])
    checked = shutil.copytree(data, base / "data")
    leak = next((checked / "train" / "left").iterdir())
    shutil.copy(leak, checked / "val" / "left" / "copy_of_train.png")
    index = load_index(DataConfig(root=str(checked)), 0)
    run_check(index, CheckOptions(features="none", workers=1, progress=False)).write(
        out / "check.json"
    )
    (out / "diagnosis.json").write_text(json.dumps(DIAGNOSIS))
    (base / "seeds.json").write_text(json.dumps(SEEDS))  # as if from `medfit train --seeds 2`
    return out


@pytest.fixture(scope="module")
def full_report(full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    lines: list[str] = []
    other = synthetic_run(tmp_path_factory.mktemp("other"))
    return write_report(full_run, log=lines.append, compare=[other]), lines


def test_full_run_renders_every_section(
    full_run: Path, full_report: tuple[Path, list[str]]
) -> None:
    path, lines = full_report
    html = path.read_text()
    assert path == full_run / "report.html"
    assert "Not in this report" not in html, [x for x in lines if "absent" in x]
    for name in SECTIONS:
        _section(html, name)
    result = json.loads((full_run / "eval_val.json").read_text())
    metrics = result["metrics"]
    headline = _section(html, "headline")
    assert f"{metrics['balanced_accuracy']:.3f}" in headline
    lo, hi = metrics["ci95"]["accuracy"]
    assert f"95% CI {lo:.3f}–{hi:.3f}" in headline
    # Plots: curves, confusion, reliability, timing; Grad-CAM: 1..8 overlays.
    for name in ("curves", "confusion", "calibration", "timing", "time_to_accuracy"):
        assert _section(html, name).count("data:image/png;base64,") == 1, name
    assert 1 <= _section(html, "gradcam").count("data:image/png;base64,") <= 8
    # The duplicated image shows as a thumbnail pair with both paths.
    check = _section(html, "check")
    assert "copy_of_train.png" in check and "identical images in two splits" in check
    assert check.count("data:image/png;base64,") >= 2
    # Findings ranked by severity: the high one first although the file lists it second.
    diagnosis = _section(html, "diagnosis")
    assert diagnosis.index("learning rate too high") < diagnosis.index("too small to rank")
    assert "undefined = n/a" in diagnosis
    # Seeds: this run's row in bold, the other seed, mean and sd, and the noise note.
    seeds = _section(html, "seeds")
    assert '<tr style="font-weight: bold"><td>0</td><td>2</td>' in seeds
    assert "<td>1</td><td>1</td>" in seeds and "0.688" in seeds
    assert "<th>mean</th><th>1.5</th>" in seeds and "<th>0.088</th>" in seeds
    assert "single runs cannot resolve" in seeds


def test_bare_run_names_the_command_for_each_absent_section(run: Path, tmp_path: Path) -> None:
    bare = copy_run(run, tmp_path / "run")
    lines: list[str] = []
    html = write_report(bare, log=lines.append).read_text()
    assert f"run <code>medfit eval {bare}</code>" in _section(html, "confusion")
    assert f"run <code>medfit eval {bare}</code>" in _section(html, "gradcam")
    assert f"--out {bare}</code>" in _section(html, "check")
    assert f"run <code>medfit diagnose {bare}</code>" in _section(html, "diagnosis")
    assert "Not in this report" not in _section(html, "curves")  # training history is there
    assert "Not in this report" not in _section(html, "timing")
    # seeds, confusion ... diagnosis, time to accuracy: logged
    assert sum("absent" in line for line in lines) == 9
    assert "--compare OTHER_RUN" in _section(html, "time_to_accuracy")
    assert "--seeds 3" in _section(html, "seeds")
    # No eval: the headline falls back to the val numbers of training and says so.
    assert "no CIs" in _section(html, "headline")


def test_missing_eval_split_names_the_splits_that_exist(full_run: Path, tmp_path: Path) -> None:
    run = copy_run(full_run, tmp_path / "run")
    html = write_report(run, log=_quiet, split="test", gradcam=False).read_text()
    assert f"evaluated splits: val): run <code>medfit eval {run} --split test</code>" in html


def test_missing_run_dir_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MedfitError, match="run directory not found") as err:
        write_report(tmp_path / "nope", log=_quiet)
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedfitError, match=r"no config\.yaml"):
        write_report(tmp_path / "empty", log=_quiet)


# --- a synthetic run: hostile names, ordering, atomic writes, the CLI --------------------------


def _reliability(conf: float, acc: float, count: int) -> list[dict[str, Any]]:
    return [{"lo": 0.0, "hi": 1.0, "confidence": conf, "accuracy": acc, "count": count}]


def synthetic_run(root: Path) -> Path:
    """A run directory written by hand: two classes, one of them named like a script tag, and a
    mistaken image whose file name is an HTML tag. No checkpoint (Grad-CAM off)."""
    run = root / "run"
    images = root / "images"
    images.mkdir(parents=True)
    run.mkdir()
    classes = ["normal", HOSTILE_CLASS]
    hostile = images / HOSTILE_FILE
    Image.fromarray(np.full((24, 24), 200, np.uint8)).save(hostile, format="PNG")
    Image.fromarray(np.full((24, 24), 50, np.uint8)).save(images / "mild.png")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(images)}}))
    (run / "classes.json").write_text(json.dumps(classes))
    (run / "summary.json").write_text(json.dumps({"best_epoch": 2, "classes": classes}))
    rows = [
        {"epoch": e, "stage": s, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_acc": 0.5 + e / 10}
        for e, s in ((1, "head"), (2, "full"))
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_class = {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for c in classes}
    metrics = {
        "accuracy": 0.5,
        "ci95": {"accuracy": [0.1, 0.9]},
        "per_class": per_class,
        "confusion_matrix": [[1, 1], [1, 1]],
        "reliability": _reliability(0.8, 0.5, 4),
    }
    evaluation = {
        "classes": classes,
        "n_images": 4,
        "metrics": metrics,
        "uncalibrated": {"reliability": _reliability(0.9, 0.5, 4)},
        "calibration": {"temperature": 1.5, "n_images": 4},
    }
    (run / "eval_test.json").write_text(json.dumps(evaluation))
    with (run / "predictions_test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "predicted", "p_normal", f"p_{HOSTILE_CLASS}"])
        writer.writerow([images / "mild.png", "normal", HOSTILE_CLASS, 0.4, 0.6])
        writer.writerow([hostile, "normal", HOSTILE_CLASS, 0.05, 0.95])
        writer.writerow([images / "mild.png", HOSTILE_CLASS, HOSTILE_CLASS, 0.2, 0.8])
    diagnosis = {"findings": [{**DIAGNOSIS["findings"][0], "title": HOSTILE_CLASS}]}
    (run / "diagnosis.json").write_text(json.dumps(diagnosis))
    return run


def test_hostile_class_and_file_names_render_as_text(tmp_path: Path) -> None:
    html = write_report(synthetic_run(tmp_path), log=_quiet, gradcam=False).read_text()
    assert "<script" not in html  # the report has no scripts of its own, and none injected
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html
    # Self-contained: every src/href is inline data or an in-page anchor; no stylesheets fetched.
    assert re.findall(r'(?:src|href)="(?!data:|#)', html) == []
    assert "<link" not in html and "@import" not in html and "url(" not in html
    # Top losses: the most confident mistake (p_true 0.05) first, with its thumbnail.
    losses = _section(html, "top_losses")
    assert losses.index("onerror=alert(1)&gt;.png") < losses.index("mild.png")
    assert "2 of 3 test images are misclassified" in losses
    assert losses.count("data:image/png;base64,") == 2
    assert "head -&gt; full after epoch 1" in _section(html, "curves")


def test_newest_evaluation_is_shown_by_default(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path)
    older = json.loads((run / "eval_test.json").read_text())
    older["metrics"]["accuracy"] = 0.111
    (run / "eval_val.json").write_text(json.dumps(older))
    os.utime(run / "eval_val.json", (1, 1))  # evaluated long before test
    html = write_report(run, log=_quiet, gradcam=False).read_text()
    assert "evaluated split: <b>test</b>" in html and "0.111" not in _section(html, "headline")
    html = write_report(run, log=_quiet, split="val", gradcam=False).read_text()
    assert "0.111" in _section(html, "headline") and "optimistic" in html


def test_report_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = synthetic_run(tmp_path)
    report = run / "report.html"
    report.write_text("old report")
    seen: dict[str, Any] = {}

    def failing_fsync(fd: int) -> None:
        """Runs after the new report is written to its temp file, before the rename."""
        temps = [p for p in run.iterdir() if p.name.endswith(".tmp")]
        seen["temp_has_new"] = len(temps) == 1 and "<!DOCTYPE html>" in temps[0].read_text()
        seen["report_is_old"] = report.read_text() == "old report"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(MedfitError, match=r"No space left on device.*previous report is intact"):
        write_report(run, log=_quiet, gradcam=False)
    assert seen == {"temp_has_new": True, "report_is_old": True}
    assert report.read_text() == "old report"
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    write_report(run, log=_quiet, gradcam=False)
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


def _history_run(root: Path, epochs: list[tuple[float, float]]) -> Path:
    """A run directory holding only config.yaml and metrics.jsonl: (epoch_s, val_acc) per epoch."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("data: {}\n")
    rows = [
        {"epoch": i, "stage": "full", "epoch_s": secs, "val_acc": acc}
        for i, (secs, acc) in enumerate(epochs, start=1)
    ]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_compared_runs_are_timed_to_the_accuracy_all_of_them_reach(tmp_path: Path) -> None:
    slow = _history_run(tmp_path / "a" / "run", [(10, 0.6), (10, 0.8), (10, 0.85)])
    fast = _history_run(tmp_path / "b" / "run", [(5, 0.7), (5, 0.75)])
    early = _history_run(tmp_path / "early", [(3, 0.9), (3, 0.74)])
    html = write_report(slow, log=_quiet, gradcam=False, compare=[fast, early]).read_text()
    section = _section(html, "time_to_accuracy")
    assert section.count("data:image/png;base64,") == 1
    assert "s to 0.750" in section  # the lowest best (fast's 0.75)
    cells = re.findall(r"<tr[^>]*><td class=\"l\">(.*?)</td>(.*?)</tr>", section)
    rows = {name: re.findall(r"<td>(.*?)</td>", rest) for name, rest in cells}
    # name clash: the second "run" is named by its parent; epochs, seconds, best, epoch, s
    assert rows["run"] == ["3", "30.00", "0.850", "2", "20.00"]
    assert rows["b/run"] == ["2", "10.00", "0.750", "2", "10.00"]
    assert rows["early"] == ["2", "6.00", "0.900", "1", "3.00"]


def test_a_compared_folder_that_is_not_a_run_is_a_one_line_error(tmp_path: Path) -> None:
    run = _history_run(tmp_path / "run", [(1, 0.5)])
    with pytest.raises(MedfitError, match="not a medfit run directory") as err:
        write_report(run, log=_quiet, compare=[tmp_path])
    assert "\n" not in str(err.value)


def test_cli_parses_and_writes(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path)
    parser = argparse.ArgumentParser(prog="medfit")
    add_report_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(run), "--split", "test", "--no-gradcam"])
    assert args.gradcam is False
    REPORT_COMMANDS[args.command](args)
    assert "skipped (--no-gradcam)" in (run / "report.html").read_text()
    bad = parser.parse_args(["report", str(run), "--split", "holdout"])
    with pytest.raises(MedfitError, match="--split must be train, val or test"):
        REPORT_COMMANDS["report"](bad)


# --- pieces ------------------------------------------------------------------------------------


def test_cli_module_stays_light() -> None:
    """`medfit --help` imports every command module; the report's must not pull in torch."""
    code = (
        "import sys, medfit.report.cli; print(sorted({'torch', 'matplotlib'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gradcam_picks_confident_mistakes_then_a_spread_of_correct() -> None:
    preds = [
        PredictionRow(f"w{i}", "a", "b", {"a": 0.5 - i / 20, "b": 0.5 + i / 20}) for i in range(6)
    ]
    preds += [PredictionRow(f"r{i}", "a", "a", {"a": 0.5 + i / 40}) for i in range(20)]
    chosen = [p.path for p in pick(preds)]
    assert chosen[:4] == ["w5", "w4", "w3", "w2"]  # most confident mistakes first
    assert len(chosen) == 8 and set(chosen[4:]) <= {f"r{i}" for i in range(20)}
    assert "r19" in chosen and "r0" in chosen  # both ends of the confidence range
    assert [p.path for p in pick(preds[6:8])] == ["r1", "r0"]  # no mistakes: correct ones only


def test_gradcam_layer_is_the_deepest_stage_with_a_usable_map() -> None:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=2)
    assert target_layer(model, 224) == ("blocks.6", 7)
    assert target_layer(model, 64) == ("blocks.4", 4)  # blocks.6 would be 2x2


def test_commands_become_code_and_stay_escaped() -> None:
    shown = commands("no check.json: run `medfit check <x>&y --out r`")
    assert shown == "no check.json: run <code>medfit check &lt;x&gt;&amp;y --out r</code>"


def test_class_names_with_dollar_signs_are_drawn_not_parsed_as_math() -> None:
    # Unescaped, matplotlib's mathtext raises ValueError on "\\bad" and the section is lost.
    assert plots.confusion_matrix([[1, 0], [0, 1]], [r"a$\bad$", "b"]).startswith("iVBOR")


def test_stage_boundary_sits_between_head_and_full_epochs() -> None:
    history = [{"epoch": 1, "stage": "head"}, {"epoch": 2, "stage": "full"}, {"epoch": 3}]
    assert stage_boundaries(history[:2]) == [1.5]
    assert stage_boundaries([{"epoch": 1, "stage": "full"}, {"epoch": 2, "stage": "full"}]) == []


# --- what a reader sees -------------------------------------------------------------------------


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BAND = 500  # px; each band holds at least part of one section
CONTENT_PX = 4000  # the full report (about 4,700 px at 1200 px wide) is taller than this


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_screenshot_shows_content_all_the_way_down(
    full_report: tuple[Path, list[str]], tmp_path: Path
) -> None:
    path, _ = full_report
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,6000",
            path.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (6000, 1200)
    bands = [pixels[y : y + BAND].std() for y in range(0, CONTENT_PX, BAND)]
    blank = [i * BAND for i, std in enumerate(bands) if std < 5]
    assert blank == [], f"blank bands at y = {blank} px; see {shot}"
