"""The hostile inputs of the hardening issue through the real CLI: exit code, first line, wall time
and peak RSS of each (the same inputs tests/test_red_team.py asserts on, shown as a table).

    .venv/bin/python bench/red_team.py [--src DIR]     # DIR: a checkout to measure (default: this)

Each command runs in its own process (a 120 s limit); its peak RSS is its own VmHWM, written by
the process itself at exit (a parent's rusage would count the memory the child inherited).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAUNCH = (
    "import atexit, os, runpy, sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
    "sys.path.insert(0, os.environ['MEDFIT_SRC'])\n"
    "def hwm():\n"
    "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "    open(os.environ['MEDFIT_HWM'], 'w').write(kb)\n"
    "atexit.register(hwm)\n"
    "sys.argv[0] = 'medfit'\n"
    "runpy.run_module('medfit', run_name='__main__')\n"
)


def inputs(tmp: Path) -> dict[str, list[str]]:
    fifo = tmp / "pipe.log"
    os.mkfifo(fifo)
    (tmp / "long.log").write_text("Epoch 1/2 " + "x" * 50_000_000 + "\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "deep.json").write_text("[" * 100_000)
    rows = ["0.5", "nan", "inf", "-1", "1e400", "abc", "0.7", "0.72"]
    lines = [f"{i},{a},{1 - 0.05 * i:.2f},0.6,0.9" for i, a in enumerate(rows)]
    (tmp / "bad.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n" + "\n".join(lines))
    data = tmp / "data" / "train" / "a"
    data.mkdir(parents=True)
    return {
        "diagnose /dev/zero": ["diagnose", "/dev/zero"],
        "diagnose, one 50 MB line": ["diagnose", str(tmp / "long.log")],
        "diagnose, empty .csv": ["diagnose", str(tmp / "empty.csv")],
        "diagnose, .json of 100k nested [": ["diagnose", str(tmp / "deep.json")],
        "diagnose, named pipe with no writer": ["diagnose", str(fifo)],
        "diagnose, CSVLogger with nan/inf/-1/1e400/abc": ["diagnose", str(tmp / "bad.csv")],
        "train --epochs -3": ["train", str(tmp / "data"), "--epochs", "-3"],
        "train --img-size 0": ["train", str(tmp / "data"), "--img-size", "0"],
        "train --lr nan": ["train", str(tmp / "data"), "--lr", "nan"],
        "train --out /etc/passwd": ["train", str(tmp / "data"), "--out", "/etc/passwd"],
    }


def run(argv: list[str], src: Path) -> tuple[int, str, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        env = {**os.environ, "MEDFIT_SRC": str(src), "MEDFIT_HWM": str(hwm)}
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", LAUNCH, *argv],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return -1, "(killed after 120 s: a hang)", 120.0, float("nan")
        wall = time.monotonic() - start
        rss = int(hwm.read_text()) / 1024 if hwm.is_file() else float("nan")
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    trace = "Traceback" in proc.stderr
    first = ("TRACEBACK: " + lines[-1]) if trace else (lines[0] if lines else "")
    return proc.returncode, first, wall, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--src", default=str(REPO))
    args = ap.parse_args()
    print("| input | exit | first line | wall s | peak RSS MB |\n|---|--:|---|--:|--:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in inputs(Path(tmp)).items():
            code, first, wall, rss = run(argv, Path(args.src).resolve())
            first = first.replace(tmp, "TMP").replace("|", "/")[:150]
            print(f"| {name} | {code} | {first} | {wall:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
