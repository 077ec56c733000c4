"""The demo's data: PneumoniaMNIST inside the package (wheel and editable install), unpacked with
numpy and Pillow into the folder layout, with no network at all."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfit.cli import main
from medfit.demo import (
    CLASSES,
    FOLDER,
    SPLIT_SIZES,
    bundled_npz,
    load_splits,
    next_steps,
    read_bundled,
    unpack_demo_data,
)
from medfit.errors import MedfitError

REPO = Path(__file__).resolve().parents[1]
# Class counts of the official MedMNIST v2 28 px split (normal, pneumonia).
COUNTS = {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}


def test_the_installed_package_holds_the_official_split() -> None:
    splits = load_splits(read_bundled())
    assert {s: len(labels) for s, (_, labels) in splits.items()} == SPLIT_SIZES
    for split, (images, labels) in splits.items():
        assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == COUNTS[split]
    assert Path(str(bundled_npz())).stat().st_size < 5_000_000  # 4.2 MB, the one data file


def test_a_damaged_npz_is_one_line_not_a_traceback() -> None:
    with pytest.raises(MedfitError, match="damaged") as err:
        load_splits(b"PK\x03\x04 not a zip")
    assert "\n" not in str(err.value)


def test_unpack_writes_the_folder_layout_once(tmp_path: Path) -> None:
    logs: list[str] = []
    root = unpack_demo_data(tmp_path, logs.append)
    assert root == tmp_path / FOLDER
    for split, counts in COUNTS.items():
        found = [len(list((root / split / name).glob("*.png"))) for name in CLASSES]
        assert found == counts, split
    assert len(logs) == 1 and "5856 images" in logs[0]
    # The pixels are the npz's, unchanged.
    images, labels = load_splits(read_bundled())["test"]
    first = Image.open(root / "test" / CLASSES[labels[0]] / "test00000.png")
    assert np.array_equal(np.asarray(first), images[0])
    # A second call reuses the folder; a stamp from another npz (or none) unpacks again.
    assert unpack_demo_data(tmp_path, logs.append) == root and len(logs) == 1
    (root / ".complete").write_text("another npz\n")
    (root / "train" / "normal" / "stale.png").write_bytes(b"")
    assert unpack_demo_data(tmp_path, logs.append) == root and len(logs) == 2
    assert not (root / "train" / "normal" / "stale.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name != FOLDER]  # no staging folder left


def test_the_wheel_carries_the_npz_and_the_data_licence(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="builds the wheel with this environment's setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "NOTICE"):
        shutil.copy2(REPO / name, src / name)
    for name in ("medfit", "LICENSES"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("medfit-*.whl")
    npz = REPO / "medfit" / "demo_data" / "pneumoniamnist.npz"
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("medfit/demo_data/pneumoniamnist.npz")
        assert info.file_size == npz.stat().st_size
        assert hashlib.sha256(zf.read(info)).digest() == hashlib.sha256(npz.read_bytes()).digest()
        names = zf.namelist()
        notice = next(n for n in names if n.endswith(".dist-info/licenses/NOTICE"))
        licence = next(n for n in names if n.endswith("licenses/LICENSES/CC-BY-4.0.txt"))
        assert "MedMNIST v2" in zf.read(notice).decode()
        assert "Attribution 4.0 International" in zf.read(licence).decode()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-File: NOTICE" in metadata


_OFFLINE = r"""
import json, socket, sys
attempts = []

def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network disabled by medfit's offline test")

def local_only(real):
    def connect(self, address):
        return real(self, address) if self.family == socket.AF_UNIX else refuse(self, address)
    return connect

socket.socket.connect = local_only(socket.socket.connect)
socket.socket.connect_ex = local_only(socket.socket.connect_ex)
socket.create_connection = refuse
socket.getaddrinfo = refuse
from pathlib import Path
from medfit.data.sources import index_folder
from medfit.demo import unpack_demo_data
root = unpack_demo_data(Path(sys.argv[1]))
index = index_folder(root)
counts = {split: sum(index.counts(split).values()) for split in ("train", "val", "test")}
print("RESULT " + json.dumps({"counts": counts, "classes": index.classes, "attempts": attempts}))
"""


def _network_namespace() -> list[str]:
    """`unshare -n` when it works here (a namespace with no network), else nothing."""
    if not shutil.which("unshare"):
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def test_the_demo_data_path_needs_no_network(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_network_namespace(), sys.executable, "-c", _OFFLINE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    outcome = json.loads(lines[-1][len("RESULT ") :])
    assert outcome["attempts"] == [], "the demo's data path tried to reach the network"
    assert outcome["counts"] == SPLIT_SIZES and outcome["classes"] == list(CLASSES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--epochs", "0"], "--epochs must be >= 1"), (["--data", "no/such/dir"], "no such folder")],
)
def test_demo_refuses_bad_options_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_demo_ends_with_check_train_diagnose(tmp_path: Path) -> None:
    lines = next_steps(tmp_path / FOLDER)
    assert [line.split()[1] for line in lines[-3:]] == ["check", "train", "diagnose"]
    assert str(tmp_path / FOLDER) in lines[0]
