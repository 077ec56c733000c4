"""Hostile inputs through the real CLI, each in its own process with a time and memory limit.

Where nothing usable remains: exit 2 and one line. Where only part is bad: exit 0 and a warning
line naming the bad part. Never a traceback, never a hang, never unbounded memory. The limits are
guards (a hang or a runaway read fails here instead of stalling CI), not speed asserts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.deploy_helpers import copy_run

# Address-space cap for the torch-free verbs (diagnose): the old reader grew past 3 GB on
# /dev/zero. Torch's CUDA build maps gigabytes of address space on import, so the verbs that load
# a model are judged by their peak resident memory instead.
AS_LIMIT_MB = 1024
RSS_LIMIT_MB = 2500
TIME_LIMIT_S = 120


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    wall_s: float
    rss_mb: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("medfit: error:")]


# The child reports its own peak RSS (VmHWM of its own address space) at exit: the rusage of a
# process forked from this one would count the test process's memory as its own.
LAUNCH = (
    "import atexit, os, runpy, sys\n"
    "def hwm():\n"
    "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "    open(os.environ['MEDFIT_TEST_HWM'], 'w').write(kb)\n"
    "atexit.register(hwm)\n"
    "sys.argv[0] = 'medfit'\n"
    "runpy.run_module('medfit', run_name='__main__')\n"
)


def medfit(*argv: str, cap_address_space: bool = False) -> Outcome:
    """`medfit ARGV` in a new process under the limits; its exit code, output, wall time and
    peak RSS."""
    command = shlex.join([sys.executable, "-c", LAUNCH, *argv])
    if cap_address_space:
        command = f"ulimit -v {AS_LIMIT_MB * 1024}; exec {command}"
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDFIT_TEST_HWM": str(hwm)}
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        start = time.monotonic()
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(["bash", "-c", command], stdout=o, stderr=e, env=env)
            try:
                proc.wait(TIME_LIMIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"medfit {' '.join(argv)} did not finish in {TIME_LIMIT_S} s")
        wall = time.monotonic() - start
        rss = int(hwm.read_text()) / 1024 if hwm.is_file() else float("nan")
        stdout, stderr = (p.read_bytes().decode(errors="replace") for p in (out, err))
    return Outcome(proc.returncode, stdout, stderr, wall, rss)


def refused(result: Outcome, words: str, only_line: bool = True) -> None:
    """Exit 2, exactly one error line containing `words`, no traceback; with `only_line` the
    error is all stderr holds (else progress and per-file skip lines may precede it)."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == 2, (result.code, result.stderr)
    assert len(result.error_lines) == 1 and words in result.error_lines[0], result.stderr
    if only_line:
        assert result.stderr.strip().count("\n") == 0, result.stderr


def warned(result: Outcome, *words: str) -> None:
    """Exit 0, a warning line for each of `words`, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == 0, (result.code, result.stderr)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    for word in words:
        assert any(word in line for line in warnings), (word, result.stderr)


# --- diagnose: every reader bounded ---------------------------------------------------------------


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe.log"
    os.mkfifo(path)
    return path


def _loop(tmp: Path) -> Path:
    a, b = tmp / "a.log", tmp / "b.log"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _long_line(tmp: Path) -> Path:
    path = tmp / "long.log"
    with path.open("w") as f:
        f.write("Epoch 1/2 " + "x" * 50_000_000 + "\n")
    return path


def _write(name: str, data: bytes):  # type: ignore[no-untyped-def]
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return make


KERAS = "".join(
    f"Epoch {i}/3\n10/10 [====] - 1s 10ms/step - loss: {1 - 0.1 * i:.2f} - accuracy: "
    f"{0.5 + 0.1 * i:.2f} - val_loss: {1 - 0.05 * i:.2f} - val_accuracy: {0.5 + 0.05 * i:.2f}\n"
    for i in (1, 2, 3)
)

REFUSED = {
    "dev_zero": (lambda tmp: Path("/dev/zero"), "a device"),
    "fifo_without_writer": (_fifo, "a named pipe"),
    "symlink_loop": (_loop, "symbolic link loop"),
    "directory_without_logs": (lambda tmp: tmp, "not a medfit run directory"),
    "missing": (lambda tmp: tmp / "nope.csv", "no such training log"),
    "one_50MB_line": (_long_line, "line-length limit"),
    "empty_csv": (_write("empty.csv", b""), "empty"),
    "header_only_csv": (_write("h.csv", b"epoch,loss,accuracy\n"), "no rows"),
    "deep_json": (_write("deep.json", b"[" * 100_000), "nested deeper"),
    "binary": (_write("b.log", bytes(range(256)) * 64), "binary data"),
    "not_a_log": (_write("notes.txt", b"the run went badly\n"), "not a training log"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_diagnose_refuses_in_one_line(case: str, tmp_path: Path) -> None:
    make, words = REFUSED[case]
    result = medfit("diagnose", str(make(tmp_path)), cap_address_space=True)
    refused(result, words)


def test_diagnose_names_impossible_accuracies_and_reads_the_rest(tmp_path: Path) -> None:
    rows = ["0.5", "nan", "inf", "-1", "1e400", "abc", "0.7", "0.72"]
    lines = [f"{i},{a},{1 - 0.05 * i:.2f},0.6,0.9" for i, a in enumerate(rows)]
    path = tmp_path / "log.csv"
    path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n" + "\n".join(lines))
    result = medfit("diagnose", str(path), cap_address_space=True)
    warned(result, "impossible value", "'abc'")
    assert "epoch 1: nan" in result.stderr and "epoch 3: -1" in result.stderr


@pytest.mark.parametrize(
    ("encoding", "newline"), [("utf-16", "\r\n"), ("latin-1", "\n"), ("utf-8", "\r\n")]
)
def test_diagnose_reads_utf16_latin1_and_crlf_logs(
    encoding: str, newline: str, tmp_path: Path
) -> None:
    path = tmp_path / "log.txt"
    text = "Entraînement é\n" + KERAS
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    result = medfit("diagnose", str(path), cap_address_space=True)
    assert result.code == 0 and "Traceback" not in result.stderr, result.stderr
    assert "3 epoch(s)" in result.stdout


def test_diagnose_of_a_script_that_is_a_device_or_pipe(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text(KERAS)
    refused(
        medfit("diagnose", str(log), "--script", "/dev/zero", cap_address_space=True), "a device"
    )
    refused(medfit("diagnose", str(log), "--script", str(_fifo(tmp_path))), "a named pipe")


# --- the verbs that load a model ------------------------------------------------------------------


def _hostile_images(folder: Path) -> list[str]:
    """One good image and the kinds of broken file a real image folder holds."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / "good.png")
    good = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1), dtype=np.uint8)).save(folder / "one_pixel.png")
    Image.fromarray(np.zeros((1, 100_000), dtype=np.uint8)).save(folder / "line_100k.png")
    (folder / "truncated.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    return ["truncated.png", "empty.png", "truncated.dcm", "loop.png"]


def test_predict_skips_each_hostile_image_with_a_line_and_keeps_the_good_ones(
    run: Path, tmp_path: Path
) -> None:
    bad = _hostile_images(tmp_path / "images")
    result = medfit("predict", str(run), str(tmp_path / "images"), "--out", str(tmp_path / "p.csv"))
    assert result.code == 0 and "Traceback" not in result.stderr, result.stderr
    predicted = (tmp_path / "p.csv").read_text()
    assert "good.png" in predicted and "one_pixel.png" in predicted
    for name in bad:
        assert name in result.stdout + result.stderr, name
    assert result.rss_mb < RSS_LIMIT_MB


def test_predict_with_nothing_readable_is_one_line(run: Path, tmp_path: Path) -> None:
    _hostile_images(tmp_path / "images")
    (tmp_path / "images" / "good.png").unlink()
    (tmp_path / "images" / "one_pixel.png").unlink()
    (tmp_path / "images" / "line_100k.png").unlink()
    result = medfit("predict", str(run), str(tmp_path / "images"))
    refused(result, "could be read", only_line=False)
    assert "empty.png" in result.stderr and "loop.png" in result.stderr  # each named, with why


def test_a_truncated_checkpoint_is_one_line_in_eval_predict_and_export(
    run: Path, tmp_path: Path
) -> None:
    copy = copy_run(run, tmp_path / "run")
    best = copy / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    image = next((run.parent / "data" / "val").rglob("*.png"))
    for argv in (
        ["eval", str(copy), "--split", "val"],
        ["predict", str(copy), str(image)],
        ["export", str(copy)],
    ):
        refused(medfit(*argv), "best.pt")


@pytest.mark.parametrize(
    ("make", "words"),
    [(lambda tmp: Path("/dev/zero"), "a device"), (_fifo, "a named pipe")],
    ids=["dev_zero", "fifo"],
)
def test_train_config_and_manifest_that_are_not_files(make, words: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = str(make(tmp_path))
    refused(medfit("train", "--config", path), words)
    refused(medfit("check", path), words)
