"""`medfit predict` and `Predictor`: same numbers as medfit.load, inputs, TTA, calibration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medfit
from medfit.data.decode import decode_image
from medfit.deploy.predict import collect_inputs
from medfit.errors import DataError, MedfitError
from medfit.inference import Predictor, allowed_flips
from tests.deploy_helpers import copy_run, run_cli, set_aug, val_images


def test_predictor_gives_the_same_probabilities_as_medfit_load(
    run: Path, predictor: Predictor
) -> None:
    paths = val_images(run)
    expected = medfit.load(run, device="cpu").predict(paths)
    table = predictor.predict_files(paths, batch_size=5)
    np.testing.assert_allclose(table.probs, expected.probs, atol=1e-6)
    assert table.labels == expected.labels and table.errors == [None] * len(paths)
    arrays = [decode_image(p).pixels[:, :, 0] for p in paths[:3]]  # 2-D uint8 works too
    np.testing.assert_allclose(predictor.predict_pixels(arrays), expected.probs[:3], atol=1e-6)


def _png(path: Path, value: int = 100, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


def test_collect_inputs_from_files_folders_and_manifests(tmp_path: Path) -> None:
    a = _png(tmp_path / "imgs" / "a.png")
    b = _png(tmp_path / "imgs" / "sub" / "b.PNG")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / ".DS_Store").write_bytes(b"junk")
    single = _png(tmp_path / "single.png")
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"label,PATH\nx,imgs/a.png\n,\ny,{single}\nz,gone.png\n")
    tsv = tmp_path / "list.tsv"
    tsv.write_text("label\tpath\nx\timgs/sub/b.PNG\n")

    found = collect_inputs([tmp_path / "imgs", single, manifest, tsv])
    assert found == [a, b, single, a, single, tmp_path / "gone.png", b]
    with pytest.raises(DataError, match="input not found"):
        collect_inputs([tmp_path / "nope"])
    (tmp_path / "bad.csv").write_text("file\nimgs/a.png\n")
    with pytest.raises(DataError, match="no 'path' column"):
        collect_inputs([tmp_path / "bad.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        collect_inputs([tmp_path / "empty"])


def test_cli_predict_writes_csv_and_lists_unreadable_files(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = val_images(run)[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    manifest = tmp_path / "in.csv"
    manifest.write_text("path\n" + "\n".join(map(str, [*good, broken, "missing.png"])) + "\n")
    out = tmp_path / "preds.csv"

    assert run_cli(["predict", str(run), str(manifest), str(empty), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows[:3]] == list(map(str, good))
    assert list(rows[0]) == ["path", "predicted", "p_left", "p_right", "error"]
    for row in rows[:3]:
        assert row["predicted"] in ("left", "right") and row["error"] == ""
        assert float(row["p_left"]) + float(row["p_right"]) == pytest.approx(1, abs=1e-5)
    errors = {Path(r["path"]).name: r["error"] for r in rows[3:]}
    assert "not a readable PNG" in errors["broken.png"]
    assert "file not found" in errors["missing.png"]
    assert "empty" in errors["empty.jpg"]
    assert all(r["predicted"] == "" and r["p_left"] == "" for r in rows[3:])
    printed = capsys.readouterr()
    assert f"wrote 3 prediction(s) to {out}" in printed.out
    assert "skipped 3 unreadable file(s):" in printed.out
    assert f"{broken}: not a readable PNG" in printed.out

    # Nothing readable at all: the CSV still lists why, and the command fails.
    assert run_cli(["predict", str(run), str(broken), "--out", str(out)]) == 2
    assert "none of the 1 input file(s) could be read" in capsys.readouterr().err
    assert "broken.png" in out.read_text()


def test_cli_predict_prints_csv_without_out(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["predict", str(run), str(val_images(run)[0]), "--batch-size", "1"]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0] == "path,predicted,p_left,p_right,error"
    assert "wrote 1 prediction(s)" in printed.err


def test_tta_uses_only_the_flips_the_augmentation_preset_allowed(
    run: Path, predictor: Predictor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert allowed_flips("xray") == () and allowed_flips("none") == ()
    assert allowed_flips("light") == ("hflip",) and allowed_flips("microscopy") == (
        "hflip",
        "vflip",
    )
    paths = val_images(run)[:4]
    pixels = [decode_image(p).pixels for p in paths]
    # The tiny run's preset is xray (laterality): TTA adds nothing and says so.
    assert predictor.views(tta=True) == ("identity",)
    np.testing.assert_array_equal(
        predictor.predict_pixels(pixels, tta=True), predictor.predict_pixels(pixels)
    )
    assert run_cli(["predict", str(run), str(paths[0]), "--tta"]) == 0
    assert "used no flips" in capsys.readouterr().err

    for preset, flips in (("light", [np.fliplr]), ("microscopy", [np.fliplr, np.flipud])):
        copy = copy_run(run, tmp_path / preset)
        set_aug(copy, preset)
        tta = Predictor(copy, device="cpu")
        views = [pixels, *[[flip(p) for p in pixels] for flip in flips]]
        expected = np.mean([tta.predict_pixels(v) for v in views], axis=0)
        np.testing.assert_allclose(tta.predict_pixels(pixels, tta=True), expected, atol=1e-5)
        table = tta.predict_files(paths, tta=True)
        np.testing.assert_allclose(table.probs, expected, atol=1e-5)
        assert table.views == ("identity", *allowed_flips(preset))


def test_temperature_scaling_uses_calibration_json_or_says_it_is_missing(
    run: Path, predictor: Predictor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = val_images(run)[:4]
    with pytest.raises(MedfitError, match=r"not available .* no calibration\.json"):
        predictor.predict_files(paths, temperature_scaled=True)
    assert run_cli(["predict", str(run), str(paths[0]), "--temperature-scaled"]) == 2
    assert "temperature scaling is not available" in capsys.readouterr().err

    calibrated = copy_run(run, tmp_path / "calibrated")
    (calibrated / "calibration.json").write_text(json.dumps({"temperature": 0.25}))
    plain = predictor.predict_files(paths).probs
    scaled = Predictor(calibrated, device="cpu").predict_files(paths, temperature_scaled=True)
    # softmax(z / T) == normalised p ** (1 / T), from the uncalibrated probabilities
    expected = plain**4 / (plain**4).sum(1, keepdims=True)
    np.testing.assert_allclose(scaled.probs, expected, rtol=1e-4, atol=1e-6)
    assert scaled.temperature == 0.25
    out = tmp_path / "p.csv"
    argv = ["predict", str(calibrated), str(paths[0]), "--temperature-scaled", "--out", str(out)]
    assert run_cli(argv) == 0
    assert "temperature 0.25" in capsys.readouterr().out

    (calibrated / "calibration.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(MedfitError, match="positive number"):
        Predictor(calibrated, device="cpu")
