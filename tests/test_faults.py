"""Fault injection: kill -9 at chosen points, a full disk, NaN losses, two runs in one directory.

The kills are exact, not timed: each training subprocess runs `medfit` under `_HOOK`, which wraps
one medfit function so that the process SIGKILLs itself at the chosen point (or, for the
checkpoint write, stalls half-way so that the test kills it from outside). A SIGKILL runs no
cleanup, no `finally` and no atexit, so this is what a crash, an OOM kill or a pulled plug
leaves behind. The settings that make a resumed run equal an uninterrupted one: CPU, one thread,
the same seed; medfit reseeds every epoch from (seed, epoch).
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import medfit
from medfit import cli
from medfit.errors import MedfitError
from medfit.files import stale_temp_files
from medfit.model.checkpoint import load_checkpoint, save_checkpoint
from medfit.rundir import RunDir, existing_run_dir, fresh_run_dir
from medfit.training import engine
from tests.test_train import make_dataset

# A tiny timm test network from scratch: the faults are the subject, not the accuracy, and each
# subprocess then spends its time starting Python rather than training.
OPTIONS = {
    "model": "test_efficientnet",
    "weights": "none",
    "img_size": 32,
    "batch_size": 16,
    "head_epochs": 1,
    "epochs": 4,
    "seed": 3,
}
EPOCHS = 5  # 1 head + 4 full
STEPS_PER_EPOCH = 4  # 2 classes x 32 train images / batch 16
# The resumed run must equal the uninterrupted one: same kernels, same data order, same seeds.
# Measured difference: 0.0 on CPU with one thread; the tolerance only absorbs float printing.
TOLERANCE = 1e-6

# Runs `python -m medfit ARGS` with one fault armed by MEDFIT_FAULT=<point>:<n> (the n-th time the
# point is reached). TensorFlow is hidden: torch.utils.tensorboard would import it (seconds per
# process) although it writes the same event files without it.
_HOOK = r"""
import io, os, runpy, signal, sys, time
sys.modules["tensorflow"] = None
point, _, nth = os.environ.get("MEDFIT_FAULT", "").partition(":")
nth, seen = int(nth or 1), [0]

def due():
    seen[0] += 1
    return seen[0] == nth

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "cache-build":  # after n rows of the first cache entry are written
    from medfit.data import cache
    append = cache._RowWriter.append
    def hooked_append(self, rows):
        append(self, rows)
        if due():
            die()
    cache._RowWriter.append = hooked_append
elif point == "mid-batch":  # inside the n-th training step: after optimizer.step, before LR/EMA
    from medfit.training import fit
    on_step = fit.StageState.on_step
    def hooked_on_step(self, model):
        if due():
            die()
        on_step(self, model)
    fit.StageState.on_step = hooked_on_step
elif point == "checkpoint-write":  # half of the n-th last.pt written, then stall until killed
    from medfit.model import checkpoint
    atomic = checkpoint.atomic_write_bytes
    def hooked_atomic(path, write):
        if path.name != "last.pt" or not due():
            return atomic(path, write)
        def half(f):
            buffer = io.BytesIO()
            write(buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            open(os.environ["MEDFIT_FAULT_READY"], "w").close()
            time.sleep(300)
        return atomic(path, half)
    checkpoint.atomic_write_bytes = hooked_atomic
elif point == "eval":  # first validation batch of the n-th evaluation
    from medfit.training import fit
    evaluate = fit.evaluate
    def hooked_evaluate(model, batches, to_input, *args, **kwargs):
        if due():
            def dying_input(pixels):
                to_input(pixels)
                die()
            return evaluate(model, batches, dying_input, *args, **kwargs)
        return evaluate(model, batches, to_input, *args, **kwargs)
    fit.evaluate = hooked_evaluate
elif point == "between-epochs":  # right after the n-th last.pt is complete
    from medfit.training import fit
    save = fit.save_checkpoint
    def hooked_save(state, path):
        save(state, path)
        if path.name == "last.pt" and due():
            die()
    fit.save_checkpoint = hooked_save
elif point == "hold-setup":  # after the run dir name is picked: wait for a release file
    from medfit.training import setup
    cache_splits = setup.cache_splits
    def held_cache_splits(*args, **kwargs):
        if due():
            open(os.environ["MEDFIT_FAULT_READY"], "w").close()
            while not os.path.exists(os.environ["MEDFIT_FAULT_RELEASE"]):
                time.sleep(0.05)
        return cache_splits(*args, **kwargs)
    setup.cache_splits = held_cache_splits
elif point:
    raise SystemExit(f"unknown MEDFIT_FAULT point {point!r}")
sys.argv = ["medfit", *sys.argv[1:]]
runpy.run_module("medfit", run_name="__main__", alter_sys=True)
"""


def _env(fault: str = "", **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "MEDFIT_FAULT": fault,
        **extra,
    }


def _train_args(data: Path, out: Path, cache: Path) -> list[str]:
    args = ["train", str(data), "--out", str(out), "--cache-dir", str(cache)]
    for key, value in OPTIONS.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _medfit(args: list[str], fault: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """Run medfit under `_HOOK`; output goes through files, which orphans cannot hold open."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            [sys.executable, "-c", _HOOK, *args], env=_env(fault, **env), stdout=out, stderr=err,
            timeout=240,
        )  # fmt: skip
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def _survivors(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions `marker` (orphaned workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _no_orphans(marker: str) -> None:
    """Every process of a killed run must be gone soon (decode workers die with their parent)."""
    deadline = time.time() + 10
    while _survivors(marker) and time.time() < deadline:
        time.sleep(0.1)
    left = _survivors(marker)
    for pid in left:  # do not leak them into the rest of the session
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the killed run: {left}"


def _killed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])


def _history(run: Path) -> list[dict[str, Any]]:
    keys = ("epoch", "stage", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: row[k] for k in keys} for row in rows]


def _checkpoints_whole(run: Path) -> dict[str, int]:
    """Load every checkpoint file present; {name: epoch}. Fails on any half-written one."""
    found = {}
    for path in sorted((run / "checkpoints").glob("*.pt")):
        found[path.name] = int(load_checkpoint(path)["epoch"])
    return found


def _complete_entries(cache: Path) -> dict[str, Path]:
    if not cache.is_dir():
        return {}
    return {p.name: p for p in cache.iterdir() if (p / "index.json").is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data, uninterrupted run, its cache), trained in this process on one thread."""
    root = tmp_path_factory.mktemp("faults")
    data = make_dataset(root / "data", per_class=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = medfit.train(
            data,
            out=str(root / "reference"),
            cache_dir=str(root / "ref-cache"),
            log=lambda _: None,
            **OPTIONS,
        )
    finally:
        torch.set_num_threads(threads)
    return data, run.dir, root / "ref-cache"


def test_kill_9_at_five_points_then_resume_matches_uninterrupted(
    reference: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, ref_run, ref_cache = reference
    run, cache = tmp_path / "run", tmp_path / "cache"
    train = _train_args(data, run, cache)
    resume = ["train", "--resume", str(run)]

    # 1. During the cache build: no entry may look complete, and no run directory exists yet.
    _killed(_medfit(train, "cache-build:5"))
    if Path("/proc/self/cmdline").exists():
        _no_orphans(str(run))
    assert _complete_entries(cache) == {}
    assert any(p.name.startswith(".") for p in cache.iterdir()), "the partial build is gone?"
    assert not run.exists()

    # 2. Mid-batch in epoch 2 (the rerun rebuilds the cache: same pixels as a clean build).
    _killed(_medfit(train, f"mid-batch:{STEPS_PER_EPOCH + 3}"))
    entries, ref_entries = _complete_entries(cache), _complete_entries(ref_cache)
    assert sorted(entries) == sorted(ref_entries) and len(entries) == 2
    for name, entry in entries.items():
        got = np.load(entry / "pixels.npy")
        assert np.array_equal(got, np.load(ref_entries[name] / "pixels.npy")), name
    assert _checkpoints_whole(run) == {"best.pt": 1, "last.pt": 1}

    # 3. Inside the write of last.pt after epoch 2, killed from outside once half is on disk.
    ready = tmp_path / "half-written"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOOK, *resume],
        env=_env("checkpoint-write:1", MEDFIT_FAULT_READY=str(ready)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 240
        while not ready.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        half = stale_temp_files(run / "checkpoints" / "last.pt")
        assert len(half) == 1 and half[0].stat().st_size > 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert _checkpoints_whole(run)["last.pt"] == 1  # the old last.pt, intact

    # 4. During the evaluation of epoch 3 (the resume re-runs epoch 2 first).
    _killed(_medfit(resume, "eval:2"))
    assert _checkpoints_whole(run)["last.pt"] == 2

    # 5. Between epochs 3 and 4: last.pt complete, nothing of epoch 4 started.
    _killed(_medfit(resume, "between-epochs:1"))
    assert _checkpoints_whole(run)["last.pt"] == 3
    assert RunDir(run).lock.is_file(), "a killed run cannot remove its lock"

    # 6. The last resume runs in this process (one thread, as the reference): epochs 4 and 5.
    logs: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        medfit.resume(run, log=logs.append)
    finally:
        torch.set_num_threads(threads)
    assert any("resuming after epoch 3" in line for line in logs), logs
    assert _checkpoints_whole(run) == _checkpoints_whole(ref_run)
    assert _checkpoints_whole(run)["last.pt"] == EPOCHS
    assert stale_temp_files(run / "checkpoints" / "last.pt") == []  # the half file was removed
    assert not RunDir(run).lock.exists()
    got, want = _history(run), _history(ref_run)
    assert [r["epoch"] for r in got] == list(range(1, EPOCHS + 1))
    for g, w in zip(got, want, strict=True):
        for key in g:
            assert g[key] == pytest.approx(w[key], abs=TOLERANCE), (key, g, w)
    final = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    expected = torch.load(ref_run / "checkpoints" / "best.pt", weights_only=True)["model"]
    for name, tensor in expected.items():
        assert torch.allclose(final[name].float(), tensor.float(), atol=TOLERANCE), name


def test_resume_of_a_run_killed_in_its_first_epoch_starts_it_over(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(run, killed, ignore=shutil.ignore_patterns("checkpoints", "summary.json"))
    assert cli.main(["train", "--resume", str(killed)]) == 0, capsys.readouterr().err
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["epoch"] >= 1


# --- a full disk ------------------------------------------------------------------------------


def _fail_writes_after(monkeypatch: pytest.MonkeyPatch, good: int) -> list[int]:
    """Let `good` torch.save calls through; later ones write a few bytes, then hit ENOSPC."""
    calls = [0]
    real_save = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] <= good:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[:4096])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)
    return calls


def test_disk_full_is_one_line_and_keeps_the_last_good_checkpoint(
    reference: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, _, ref_cache = reference
    run = tmp_path / "run"
    # Epoch 1 writes best.pt and last.pt; the disk fills up during epoch 2's first checkpoint.
    calls = _fail_writes_after(monkeypatch, good=2)
    argv = _train_args(data, run, ref_cache)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert calls[0] == 3 and code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("medfit: error: could not write checkpoint")
    assert "No space left on device" in lines[0] and "--resume" in lines[0]
    monkeypatch.undo()
    assert _checkpoints_whole(run) == {"best.pt": 1, "last.pt": 1}
    assert list((run / "checkpoints").glob(".*.tmp")) == []  # the failed temp file is removed
    assert not RunDir(run).lock.exists()  # a clean failure releases the run for --resume


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem (tmpfs), so ENOSPC comes from the kernel, not from a mock."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_on_a_metrics_file_is_one_line(tiny_disk: Path) -> None:
    run = RunDir(tiny_disk / "run")
    run.write_history([{"epoch": 1, "val_acc": 0.5}])
    before = run.metrics_jsonl.read_text()
    _fill(tiny_disk)
    # No last.pt yet: the message must not offer a resume that has nothing to resume from.
    with pytest.raises(
        MedfitError, match=r"metrics\.\w+: No space left on device.*run the command again"
    ):
        run.write_history([{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": "x" * 9000}])
    assert run.metrics_jsonl.read_text() == before  # the old file, whole
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []


def _fill(disk: Path) -> None:
    """Write until the filesystem is full (the kernel says ENOSPC)."""
    with open(disk / "filler", "wb", buffering=0) as f, pytest.raises(OSError) as info:
        while True:
            f.write(b"x" * 4096)
    assert info.value.errno == errno.ENOSPC


_CACHE_ON_FULL_DISK = r"""
import sys
from pathlib import Path
from medfit.data.cache import build_or_load
from medfit.data.sources import Sample
from medfit.errors import MedfitError
paths = sys.argv[2:]
try:
    build_or_load([Sample(p, i % 2, "train") for i, p in enumerate(paths)], 37, Path(sys.argv[1]))
except MedfitError as exc:
    print(exc)
    sys.exit(2)
"""


def test_disk_full_during_the_cache_build_is_a_message_not_a_bus_error(
    tiny_disk: Path, tmp_path: Path
) -> None:
    data = make_dataset(tmp_path / "data", per_class=24)
    paths = sorted(str(p) for p in (data / "train").rglob("*.png"))  # 48 x 37 x 37 > 64 KiB
    result = subprocess.run(
        [sys.executable, "-c", _CACHE_ON_FULL_DISK, str(tiny_disk / "cache"), *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Before the fix a store into the memory map on a full disk killed Python with SIGBUS.
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    message = result.stdout.strip()
    assert message.startswith(f"cannot write the image cache in {tiny_disk / 'cache'}")
    assert "No space left on device" in message and "--cache-dir" in message
    assert [p.name for p in (tiny_disk / "cache").iterdir()] == []  # no partial entry left


def test_save_checkpoint_removes_half_written_temps_of_killed_writes(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.pt"
    target.parent.mkdir()
    dead = target.parent / ".last.pt.abc123.tmp"
    dead.write_bytes(b"half a checkpoint")
    other = target.parent / ".best.pt.abc123.tmp"  # another file's temp is not touched
    other.write_bytes(b"x")
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 4}, target)
    assert not dead.exists() and other.exists()
    assert torch.load(target, weights_only=True)["epoch"] == 4  # a toy state, not a medfit run


# --- NaN / inf losses -------------------------------------------------------------------------


def _toy_batches(n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    for _ in range(n):
        yield torch.randn(4, 3, generator=gen), torch.randint(0, 2, (4,), generator=gen)


class _LossWithHoles(torch.nn.Module):
    """Cross-entropy, but NaN or +inf at the given step numbers (1-based)."""

    def __init__(self, bad: dict[int, float]) -> None:
        super().__init__()
        self.bad, self.calls = bad, 0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * self.bad[self.calls] if self.calls in self.bad else loss


def _epoch(loss_fn: torch.nn.Module, steps: int) -> tuple[engine.EpochStats, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    snapshots: list[torch.Tensor] = []
    stats = engine.train_one_epoch(
        model,
        _toy_batches(steps),
        lambda x: x,
        loss_fn,
        optimizer,
        lambda: snapshots.append(model.weight.detach().clone()),
        torch.device("cpu"),
    )
    assert torch.isfinite(model.weight).all()
    return stats, snapshots


def test_nan_and_inf_steps_are_skipped_without_touching_the_weights() -> None:
    clean, clean_steps = _epoch(_LossWithHoles({}), 6)
    holes, hole_steps = _epoch(_LossWithHoles({2: float("nan"), 5: float("inf")}), 6)
    assert (clean.skipped_steps, clean.steps) == (0, 6)
    assert (holes.skipped_steps, holes.steps) == (2, 4)
    # The weights after the first good step match; a skipped step never moved them.
    assert torch.equal(hole_steps[0], clean_steps[0])
    assert np.isfinite(holes.loss)


def test_nan_loss_in_a_row_stops_the_run_with_the_reason() -> None:
    all_bad = {i: float("nan") for i in range(1, 100)}
    with pytest.raises(MedfitError, match=f"NaN/inf for {engine.MAX_BAD_STEPS} steps.*--lr"):
        _epoch(_LossWithHoles(all_bad), engine.MAX_BAD_STEPS + 5)
    # One fewer bad step in a row is survivable.
    nearly = {i: float("nan") for i in range(1, engine.MAX_BAD_STEPS)}
    stats, _ = _epoch(_LossWithHoles(nearly), engine.MAX_BAD_STEPS + 2)
    assert stats.skipped_steps == engine.MAX_BAD_STEPS - 1 and stats.steps == 3


def test_nan_run_through_the_cli_is_one_line_and_resumable(
    reference: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import medfit.training.fit as fit_module

    data, _, ref_cache = reference
    monkeypatch.setattr(engine, "MAX_BAD_STEPS", 3)  # an epoch has 4 steps
    real_loss_fn = fit_module._loss_fn

    def poisoned(job: Any) -> tuple[Any, Any]:  # finite in epoch 1, NaN from epoch 2 on
        (inner, mix), calls = real_loss_fn(job), [0]

        def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            value = inner(logits, labels)
            return value * float("nan") if calls[0] > STEPS_PER_EPOCH else value

        return loss, mix

    monkeypatch.setattr(fit_module, "_loss_fn", poisoned)
    run = tmp_path / "run"
    code = cli.main(_train_args(data, run, ref_cache))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert "loss was NaN/inf for 3 steps in a row" in err
    assert _checkpoints_whole(run) == {"best.pt": 1, "last.pt": 1}
    assert [r["epoch"] for r in _history(run)] == [1]


# --- two runs, one directory ------------------------------------------------------------------


def test_lock_is_exclusive_and_a_dead_runs_lock_is_taken_over(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = RunDir(tmp_path / "run")
        run.path.mkdir()
        run.lock.write_text(str(sleeper.pid))
        with pytest.raises(MedfitError, match=f"in use by another medfit run \\(pid {sleeper.pid}"):
            run.acquire()
        run.release()  # not ours: left alone
        assert run.lock.read_text() == str(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    run.acquire()  # its owner is dead now (kill -9 leaves exactly this)
    assert run.lock.read_text() == str(os.getpid())
    run.release()
    assert not run.lock.exists()


def test_new_run_refuses_a_directory_another_run_filled_meanwhile(tmp_path: Path) -> None:
    # Both runs picked the name while it was free; the first finished before the second was
    # ready to write. The second must not write into the first's run.
    first, second = fresh_run_dir(str(tmp_path / "run")), fresh_run_dir(str(tmp_path / "run"))
    assert first.path == second.path
    first.acquire(new=True)
    first.write_text(first.config, "seed: 1\n")
    first.release()
    with pytest.raises(MedfitError, match="filled by another medfit run"):
        second.acquire(new=True)
    assert first.config.read_text() == "seed: 1\n" and not first.lock.exists()
    existing_run_dir(str(first.path)).acquire()  # --resume of that run is still allowed


def test_a_run_never_writes_into_a_run_that_took_its_name_meanwhile(
    reference: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _, ref_cache = reference
    out, ready, release = tmp_path / "run", tmp_path / "ready", tmp_path / "release"
    first = [*_train_args(data, out, ref_cache), "--epochs", "1", "--seed", "11"]
    with tempfile.TemporaryFile("w+") as err:
        # The first run picks the name `run`, then is held in its set-up (before its lock) ...
        env = _env("hold-setup:1", MEDFIT_FAULT_READY=str(ready), MEDFIT_FAULT_RELEASE=str(release))
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOOK, *first], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            deadline = time.time() + 240
            while not ready.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert ready.exists(), "the first run never reached its set-up"
            # ... while a second run with the same --out starts, takes `run` and finishes.
            second = [*_train_args(data, out, ref_cache), "--epochs", "1", "--seed", "12"]
            assert cli.main(second) == 0
        finally:
            release.touch()
            proc.wait(timeout=240)
        err.seek(0)
        message = err.read()
    assert proc.returncode == 2 and "Traceback" not in message, message[-2000:]
    assert "another medfit run" in message.strip().splitlines()[-1]
    assert "seed: 12" in (out / "config.yaml").read_text()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["train"]["seed"] == 12
    assert [r["epoch"] for r in _history(out)] == [1, 2]


def test_resume_of_a_live_run_is_refused_in_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    live = shutil.copytree(run, tmp_path / "live", ignore=shutil.ignore_patterns("tb"))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (live / ".lock").write_text(str(sleeper.pid))  # as a run in progress leaves it
        before = (live / "checkpoints" / "last.pt").read_bytes()
        code = cli.main(["train", "--resume", str(live)])
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"in use by another medfit run (pid {sleeper.pid})" in err
    assert (live / "checkpoints" / "last.pt").read_bytes() == before
    assert (live / ".lock").read_text() == str(sleeper.pid)
