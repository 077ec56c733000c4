"""No medfit verb forks a process that runs threads, directly or through a library.

A fork copies only the calling thread: a lock another thread held (torch's intra-op pool, BLAS,
a logging handler) stays locked forever in the child, which then blocks on a futex while its
parent waits for it. cleanlab's `find_label_issues` did exactly that under `medfit check` (it
forks a `multiprocessing.Pool` with its default n_jobs). The hook below is called by every
`os.fork()` of this process (multiprocessing's fork start method, a library's own fork); a fork
followed by exec (`subprocess`, the forkserver's start) does not call it, and the forkserver's
own children are forked in the server, not here.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest

from medfit.cli import main
from tests.test_check import picture, save
from tests.test_train import FAST, make_dataset

_FORKS: list[str] = []
_WATCHING = [False]


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _before_fork() -> None:
    if _WATCHING[0] and (n := _threads()) > 1:
        stack = "".join(traceback.format_stack(limit=12))
        _FORKS.append(f"fork with {n} threads running, from:\n{stack}")


if hasattr(os, "register_at_fork") and Path("/proc/self/task").is_dir():
    os.register_at_fork(before=_before_fork)
else:  # pragma: no cover - Linux CI always has both
    pytest.skip("needs os.register_at_fork and /proc/self/task", allow_module_level=True)


def watched(argv: list[str]) -> int:
    """`medfit ARGV` in this process; fails the test if it forked while threads ran."""
    _FORKS.clear()
    _WATCHING[0] = True
    try:
        code = main(argv)
    finally:
        _WATCHING[0] = False
    assert not _FORKS, f"medfit {argv[0]} forked a threaded process:\n" + "\n".join(_FORKS)
    return code


def test_the_hook_sees_a_fork_of_a_threaded_process() -> None:
    """The guard itself: a plain multiprocessing fork while a thread runs is caught."""
    import multiprocessing
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    _FORKS.clear()
    _WATCHING[0] = True
    try:
        proc = multiprocessing.get_context("fork").Process(target=int)
        proc.start()
        proc.join(30)
    finally:
        _WATCHING[0] = False
        stop.set()
        thread.join()
    assert _FORKS and "threads running" in _FORKS[0]


def _check_data(root: Path) -> Path:
    """Two classes with a clear signal and enough images per class for the label-issue probe."""
    import numpy as np

    rng = np.random.default_rng(5)
    for split, n in (("train", 14), ("val", 6)):
        for label, cls in enumerate(("left", "right")):
            for i in range(n):
                save(root / split / cls / f"{cls}_{split}_{i}.png", picture(rng, label))
    return root


@pytest.mark.slow
def test_check_train_eval_diagnose_never_fork_a_threaded_process(tmp_path: Path) -> None:
    # torch's threads are running from here on, as in any medfit process that trained.
    import torch

    torch.set_num_threads(2)
    torch.ones(256, 256) @ torch.ones(256, 256)

    data = _check_data(tmp_path / "check")
    assert watched(["check", str(data), "--features", "thumbnail", "--workers", "2"]) == 0

    train = make_dataset(tmp_path / "data", per_class=8)
    run = tmp_path / "run"
    options = {**FAST, "head_epochs": 0, "epochs": 1, "workers": 2}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    argv = ["train", str(train), "--out", str(run), "--cache-dir", str(tmp_path / "cache")]
    assert watched([*argv, *flags]) == 0
    assert watched(["eval", str(run), "--split", "val", "--bootstrap", "50"]) == 0
    assert watched(["diagnose", str(run)]) == 0
    log = tmp_path / "log.csv"
    log.write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n0,1.0,0.5,1.1,0.5\n1,0.8,0.6,1.0,0.55\n"
    )
    assert watched(["diagnose", str(log)]) == 0


def test_a_hanging_test_fails_with_every_threads_stack(tmp_path: Path) -> None:
    """pyproject's pytest-timeout: a test stuck forever (as on the futex above) fails with the
    stacks that show where, instead of holding CI until its budget runs out."""
    import subprocess
    import sys

    import tomllib

    root = Path(__file__).resolve().parents[1]
    ini = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < ini["timeout"] <= 600  # every test has a hang guard of minutes, not hours
    (tmp_path / "test_stuck.py").write_text(
        "import time\n\ndef test_stuck():\n    time.sleep(600)\n"
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    argv += ["-c", str(root / "pyproject.toml"), "--rootdir", str(tmp_path), "-o", "timeout=2"]
    proc = subprocess.run(
        [*argv, str(tmp_path / "test_stuck.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Timeout" in proc.stdout and "time.sleep(600)" in proc.stdout
