"""A corpus of bad and odd inputs, each sent through the command line (`medfit train`, `check`).

The decoder's own behaviour per format is tested in test_decode.py; here the question is what a
user sees: a broken file stops `train --strict` with exit status 2 and one line that names the
file and the problem (without --strict it is skipped and listed), `check` lists it with the same
reason, and nothing ever prints a traceback. Odd but valid images (16-bit, palette, RGBA, CMYK,
EXIF-rotated, 1x1) and hostile class names must simply work.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfit import cli
from medfit.data.decode import DecodeError, decode_image
from medfit.data.sources import index_folder
from medfit.errors import DataError

# A tiny timm test network from scratch: these tests are about inputs, not accuracy.
TRAIN = ["--model", "test_efficientnet", "--weights", "none", "--img-size", "32"]
TRAIN += ["--batch-size", "8", "--head-epochs", "0", "--epochs", "1"]
CHECK = ["--features", "thumbnail", "--workers", "1"]


def _gray(path: Path, value: int = 100, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def _dataset(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 4) -> Path:
    for split, n in (("train", per_class), ("val", 2)):
        for k, name in enumerate(classes):
            for i in range(n):
                _gray(root / split / name / f"{i}.png", value=k * 50 + i)
    return root


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height 8-bit gray pixels: the header of a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buffer, "JPEG"
    )
    return buffer.getvalue()


def _corrupt_png(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32), np.uint8)).save(
        buffer, "PNG"
    )
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 8
    data[start : start + 16] = b"\xff" * 16  # garbage inside the compressed stream
    path.write_bytes(bytes(data))


def _corrupt_dicom(path: Path) -> None:
    pytest.importorskip("pydicom")
    from tests.test_decode import write_dicom

    write_dicom(path, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    path.write_bytes(path.read_bytes()[:-4000])  # the pixel data cut short


# name -> (write the file, words the one-line reason must contain)
BROKEN: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated.jpg": (lambda p: p.write_bytes(_jpeg_bytes()[:600]), "truncated"),
    "corrupt.png": (_corrupt_png, "corrupt"),
    "empty.png": (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "notes.png": (lambda p: p.write_text("patient list, not an image"), "not a readable"),
    "scan.dcm": (lambda p: p.write_bytes(b"\0" * 300), "not a DICOM file"),
    "cut.dcm": (_corrupt_dicom, "DICOM"),
    "bomb.png": (lambda p: _png_header_only(p, 20000, 20000), "decompression bomb"),
}


@pytest.fixture(autouse=True)
def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad-file errors must come before any training step (except where a test allows it)."""
    import medfit.training.fit as fit_module

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("reached training")

    monkeypatch.setattr(fit_module, "_train", forbidden)


def _messages(err: str) -> list[str]:
    """stderr without the progress bars (tqdm redraws them with carriage returns)."""
    parts = (part.strip() for line in err.splitlines() for part in line.split("\r"))
    return [part for part in parts if part and "it/s]" not in part and "%|" not in part]


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = _messages(err)
    assert len(lines) == 1 and lines[0].startswith("medfit: error: "), err
    return lines[0]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_is_one_line_in_train_strict_and_listed_by_check(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path / "data")
    bad = data / "train" / "a" / name
    write, reason = BROKEN[name]
    write(bad)
    train = ["train", str(data), *TRAIN, "--cache-dir", str(tmp_path / "c")]
    code, _, err = _run([*train, "--out", str(tmp_path / "r"), "--strict"], capsys)
    line = _one_line_error(code, err)
    assert "1 unreadable image(s) in train (--strict)" in line
    assert str(bad) in line and reason in line, line
    assert not (tmp_path / "r").exists()  # refused before the run directory was made

    code, out, err = _run(["check", str(data), *CHECK], capsys)
    assert code == 0, err
    listed = [row.strip() for row in out.splitlines() if str(bad) in row]
    assert listed and reason in listed[0], out
    assert "unreadable: 1" in out


def test_without_strict_broken_files_are_skipped_listed_and_training_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # this one trains (one epoch of a tiny network)
    data = _dataset(tmp_path / "data")
    for name, (write, _) in BROKEN.items():
        write(data / "train" / ("a" if len(name) % 2 else "b") / name)
    run = tmp_path / "run"
    argv = ["train", str(data), *TRAIN, "--cache-dir", str(tmp_path / "c"), "--out", str(run)]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert f"skipped {len(BROKEN)} unreadable image(s) in train" in out
    rows = list(csv.DictReader((run / "split.csv").read_text().splitlines()))
    skipped = {Path(r["path"]).name: r["status"] for r in rows if r["status"] != "ok"}
    assert set(skipped) == set(BROKEN)
    for name, (_, reason) in BROKEN.items():
        assert reason in skipped[name], (name, skipped[name])
    assert sum(r["status"] == "ok" for r in rows) == 12  # every good image was used


def test_decompression_bomb_is_refused_from_its_header_without_allocating(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 20000, 20000)  # 400 M pixels claimed, 100 bytes on disk
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=r"bomb\.png: .*decompression bomb"):
            decode_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20, f"{peak / 1e6:.0f} MB allocated to refuse a bomb"
    # Below Pillow's own bound, medfit's guard (max_pixels) refuses with its own message.
    _png_header_only(bomb, 2000, 2000)
    with pytest.raises(DecodeError, match=r"2000x2000 = 4000000 pixels.*decompression-bomb guard"):
        decode_image(bomb, max_pixels=1000)


ODD_BUT_VALID: dict[str, Callable[[Path], object]] = {
    "16bit.png": lambda p: Image.fromarray(
        (np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).astype(np.uint16)
    ).save(p),
    "palette.png": lambda p: (
        Image.fromarray(np.random.default_rng(3).integers(0, 255, (16, 16, 3), np.uint8))
        .convert("P")
        .save(p)
    ),
    "rgba.png": lambda p: Image.fromarray(np.full((16, 16, 4), 90, np.uint8), "RGBA").save(p),
    "cmyk.jpg": lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p),
    "rotated.jpg": lambda p: _exif_rotated(p),
    "one_pixel.png": lambda p: Image.fromarray(np.full((1, 1), 200, np.uint8)).save(p),
}


def _exif_rotated(path: Path) -> None:
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (8, 24), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())


# Folder names a browser or a shell would trip over; all legal on Linux and macOS.
HOSTILE = ("<img src=x onerror=alert(1)>", 'it\'s "quoted"', "with  spaces ", "ünïcødé 肺")


def test_odd_images_and_hostile_class_names_train_predict_and_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # this one trains
    data = _dataset(tmp_path / "data", classes=HOSTILE, per_class=3)
    odd = []
    for i, (name, write) in enumerate(ODD_BUT_VALID.items()):
        path = data / "train" / HOSTILE[i % len(HOSTILE)] / name
        write(path)
        odd.append(path)
    run = tmp_path / "run"
    train = ["train", str(data), *TRAIN, "--cache-dir", str(tmp_path / "c"), "--out", str(run)]
    code, out, err = _run([*train, "--strict"], capsys)  # strict: none of them may be skipped
    assert code == 0, err
    assert json.loads((run / "classes.json").read_text()) == sorted(HOSTILE)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_images"] == 0 and summary["train_images"] == 4 * 3 + len(odd)

    preds = tmp_path / "preds.csv"
    code, _, err = _run(["predict", str(run), *map(str, odd), "--out", str(preds)], capsys)
    assert code == 0, err
    reader = csv.DictReader(preds.read_text(encoding="utf-8").splitlines())
    rows = list(reader)
    assert [Path(r["path"]).name for r in rows] == list(ODD_BUT_VALID)
    assert all(r["error"] == "" for r in rows), rows
    # The names survive CSV quoting intact, as values and inside the p_<class> column names.
    assert {r["predicted"] for r in rows} <= set(HOSTILE)
    assert [c[2:] for c in reader.fieldnames or [] if c.startswith("p_")] == sorted(HOSTILE)

    code, out, err = _run(["check", str(data), *CHECK], capsys)
    assert code == 0, err
    assert "unreadable" not in out


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ("file,label\n{a},x\n{b},y\n", "no 'path' column (found: 'file', 'label')"),
        ("path,label\n{a},x\n{b},y\n{a},x\n", "already listed in row 2"),
        ("path,label,split\n{a},x,train,extra\n{b},y,train\n", "row 2: 4 values"),
    ],
    ids=["missing-column", "duplicate-row", "extra-value"],
)
@pytest.mark.parametrize("command", ["train", "check"])
def test_bad_manifest_is_one_line_in_train_and_check(
    manifest: str, words: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _gray(tmp_path / "img" / "a.png"), _gray(tmp_path / "img" / "b.png", 7)
    path = tmp_path / "list.csv"
    path.write_text(manifest.format(a=a, b=b))
    extra = [*TRAIN, "--out", str(tmp_path / "r")] if command == "train" else CHECK
    code, _, err = _run([command, str(path), *extra], capsys)
    line = _one_line_error(code, err)
    assert str(path) in line and words in line, line


def test_manifest_with_extra_columns_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["path,label,notes,split"]
    for label in ("x", "y"):
        for i in range(3):
            img = _gray(tmp_path / "img" / f"{label}{i}.png", i + (label == "y") * 9)
            rows.append(f'{img},{label},"free text, with a comma",{"val" if i == 0 else "train"}')
    path = tmp_path / "list.csv"
    path.write_text("\n".join(rows) + "\n")
    code, out, err = _run(["check", str(path), *CHECK], capsys)
    assert code == 0, err
    assert "unreadable" not in out


def test_class_folder_that_links_to_itself_adds_no_class_and_links_into_the_split_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path / "data")
    train = data / "train"
    (train / "loop").symlink_to(train / "loop")  # a link to itself: unreadable as a folder
    index = index_folder(data)
    assert index.classes == ["a", "b"]
    assert str(train / "loop") in set(index.ignored_files)
    assert len(index.samples) == 12
    code, _, err = _run(["check", str(data), *CHECK], capsys)
    assert code == 0, err

    # Links back into the data set would count images twice under another label (a leak).
    (train / "everything").symlink_to(train, target_is_directory=True)
    with pytest.raises(DataError, match="is a symlink to"):
        index_folder(data)
    (train / "everything").unlink()
    (train / "a_again").symlink_to(train / "a", target_is_directory=True)
    with pytest.raises(DataError, match="is a symlink to"):
        index_folder(data)


def test_booby_trapped_checkpoints_are_refused_by_every_command(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """eval, export, predict --checkpoint last and train --resume never unpickle code."""
    import torch

    from tests.deploy_helpers import copy_run
    from tests.test_deploy_security import _Payload

    evil = copy_run(run, tmp_path / "evil")
    marker = tmp_path / "pwned"
    for name in ("best.pt", "last.pt"):
        path = evil / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        state["extra"] = _Payload(marker)
        torch.save(state, path)
    image = str(_gray(tmp_path / "x.png"))
    commands = [
        ["eval", str(evil), "--split", "val", "--bootstrap", "10"],
        ["export", str(evil), "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
        ["predict", str(evil), image, "--checkpoint", "last"],
        ["train", "--resume", str(evil)],
    ]
    for argv in commands:
        code, _, err = _run(argv, capsys)
        line = _one_line_error(code, err)
        assert "refusing to load" in line, (argv, line)
        assert not marker.exists(), f"{argv[0]} ran the checkpoint's code"
    assert not (tmp_path / "m.onnx").exists()


def test_serve_answers_the_broken_corpus_with_400_and_no_paths(
    predictor: object, tmp_path: Path
) -> None:
    """The same broken files uploaded to `medfit serve`: 400, the reason, no server path."""
    pytest.importorskip("fastapi", reason='serving needs: pip install "medfit[serve]"')
    from fastapi.testclient import TestClient

    from medfit.deploy.serve import create_app

    with TestClient(create_app(predictor)) as client:  # type: ignore[arg-type]
        for name, (write, reason) in BROKEN.items():
            path = tmp_path / name
            write(path)
            kind = "application/dicom" if name.endswith(".dcm") else "image/png"
            response = client.post("/predict", files={"file": (name, path.read_bytes(), kind)})
            assert response.status_code == 400, (name, response.text)
            detail = response.json()["detail"]
            assert detail.startswith("not a readable image: ") and "\n" not in detail
            assert str(tmp_path) not in detail and "medfit-serve-" not in detail, detail
            assert "Traceback" not in response.text
            if name != "cut.dcm":  # pydicom's wording for a cut file varies with the version
                assert reason.split()[0].lower() in detail.lower(), (name, detail)
