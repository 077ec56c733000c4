"""`torchrun -m medfit train DATA --folds K`: every rank runs each member's DDP fit in turn, rank 0
alone writes the job's files, and a member that fails on one rank fails on all without a hang.

2 ranks on the CPU with Gloo, compared with one process at the same global batch, under the
settings of tests/test_distributed.py (BN frozen, so the two differ only by the order of
floating-point sums): each member must match its single-process twin epoch by epoch as one
torchrun run does.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_distributed import (
    PER_RANK_BATCH,
    _assert_same_metrics,
    _env,
    _rows,
    tiny_job,
)

pytestmark = pytest.mark.slow

HANG_GUARD_S = 600  # a launch that waits longer than this is a deadlock between ranks


def _medfit(*args: str, ranks: int = 2, script: Path | None = None) -> tuple[int, str]:
    """`medfit train ARGS` under torchrun with RANKS ranks (1: a plain process): (rc, output)."""
    program = [str(script)] if script else ["-m", "medfit"]
    if ranks == 1:
        cmd = [sys.executable, *program]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc-per-node", str(ranks), *program]
    proc = subprocess.run(
        [*cmd, "train", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _folds_json(run: Path) -> dict[str, Any]:
    return json.loads((run / "folds.json").read_text())  # type: ignore[no-any-return]


def _pool(run: Path) -> list[str]:
    with (run / "folds.csv").open(newline="") as f:
        return [row["path"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 2-fold job twice: torchrun with 2 ranks x 8 images, one process x 16 images."""
    tmp = tmp_path_factory.mktemp("folds_ddp")
    data, config = tiny_job(tmp)
    common = [str(data), "--config", str(config), "--folds", "2"]
    for name, ranks in (("ddp", 2), ("single", 1)):
        rc, output = _medfit(
            *common, "--out", str(tmp / name), "--cache-dir", str(tmp / f"cache-{name}"),
            "--batch-size", str(PER_RANK_BATCH * 2 // ranks), ranks=ranks,
        )  # fmt: skip
        (tmp / f"{name}.log").write_text(output)
        assert rc == 0, output[-5000:]
    return {"ddp": tmp / "ddp", "single": tmp / "single", "data": data, "tmp": tmp}


def test_each_member_matches_one_process_epoch_by_epoch(jobs: dict[str, Path]) -> None:
    ddp, single = _folds_json(jobs["ddp"]), _folds_json(jobs["single"])
    assert [m["status"] for m in ddp["members"]] == ["trained", "trained"]
    for fold in range(2):
        got, want = _rows(jobs["ddp"] / f"fold{fold}"), _rows(jobs["single"] / f"fold{fold}")
        _assert_same_metrics(got, want)
        assert want[0]["train_loss"] != pytest.approx(want[1]["train_loss"], abs=1e-3)
        summary = json.loads((jobs["ddp"] / f"fold{fold}" / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    for g, w in zip(ddp["members"], single["members"], strict=True):
        for key in ("val_acc", "val_balanced_accuracy", "val_macro_f1"):
            assert g[key] == pytest.approx(w[key], abs=1e-4), (key, g, w)
    assert ddp["oof"] == pytest.approx(single["oof"], abs=1e-4)


def test_every_pool_image_has_one_oof_prediction(jobs: dict[str, Path]) -> None:
    pool = _pool(jobs["ddp"])
    assert len(pool) == 64 + 32 and _pool(jobs["single"]) == pool
    with (
        np.load(jobs["ddp"] / "oof_logits.npz") as ddp,
        np.load(jobs["single"] / "oof_logits.npz") as single,
    ):
        paths = [str(p) for p in ddp["paths"]]
        assert sorted(paths) == sorted(pool) and len(set(paths)) == len(pool)
        assert paths == [str(p) for p in single["paths"]]
        assert np.isfinite(ddp["logits"]).all()
        np.testing.assert_allclose(ddp["logits"], single["logits"], atol=1e-4)
    assert _folds_json(jobs["ddp"])["oof"]["n_images"] == len(pool)
    assert json.loads((jobs["ddp"] / "eval_oof.json").read_text())["n_images"] == len(pool)


def test_only_rank_0_writes_and_reports(jobs: dict[str, Path]) -> None:
    tree = {
        name: sorted(
            str(p.relative_to(jobs[name])) for p in jobs[name].rglob("*") if "tb" not in p.parts
        )
        for name in ("ddp", "single")
    }
    assert tree["ddp"] == tree["single"]  # the same files: none twice, no rank-1 extras
    assert sorted(p.name for p in jobs["tmp"].iterdir() if p.name.startswith("ddp")) == [
        "ddp",
        "ddp.log",
    ]  # rank 1 claimed no run directory of its own
    assert not list(jobs["ddp"].rglob(".lock"))
    logs = {name: (jobs["tmp"] / f"{name}.log").read_text() for name in ("ddp", "single")}
    for line in ("medfit folds: fold 1/2", "medfit folds: fold 2/2", "medfit folds: 2 members"):
        assert logs["ddp"].count(line) == 1, (line, logs["ddp"])
    for line in ("epoch  2/2 full", "out-of-fold evaluation", "\nrun: "):
        assert logs["ddp"].count(line) == logs["single"].count(line), (line, logs["ddp"])


PLANTED = """
import os, sys
import medfit.training.fit as fit
from medfit.errors import MedfitError
real = fit.train_one_epoch
calls = []
def planted(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:  # fold 0, epoch 2: after its last.pt
        raise MedfitError("planted failure on rank 1")
    return real(*args, **kwargs)
fit.train_one_epoch = planted
from medfit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_member_failing_on_one_rank_is_recorded_then_resumed(jobs: dict[str, Path]) -> None:
    """Rank 1 fails in fold 0: both ranks record it, train fold 1, and end with the error;
    `--resume` under torchrun then continues fold 0 from its last.pt and reuses fold 1."""
    tmp, out = jobs["tmp"], jobs["tmp"] / "failing"
    script = tmp / "planted.py"
    script.write_text(PLANTED)
    rc, output = _medfit(
        str(jobs["data"]), "--config", str(tmp / "config.yaml"), "--folds", "2",
        "--out", str(out), "--cache-dir", str(tmp / "cache-ddp"),
        "--batch-size", str(PER_RANK_BATCH), script=script,
    )  # fmt: skip
    assert rc != 0 and "1 of 2 folds failed: fold0" in output, output[-5000:]
    saved = _folds_json(out)
    assert [m["status"] for m in saved["members"]] == ["failed", "trained"]
    error = saved["members"][0]["error"]
    assert "planted failure on rank 1" in error and "another rank" not in error, error
    assert (out / "fold0" / "checkpoints" / "last.pt").is_file()
    assert saved["oof"]["n_images"] == saved["members"][1]["val_images"]
    assert output.count("fold 0 failed") == 1, output[-5000:]

    rc, output = _medfit("--resume", str(out), "--folds", "2")
    assert rc == 0, output[-5000:]
    saved = _folds_json(out)
    assert [m["status"] for m in saved["members"]] == ["resumed", "reused"]
    # As tests/test_distributed.py's resume: a resumed run drifts a little further (rel 1e-3).
    _assert_same_metrics(_rows(out / "fold0"), _rows(jobs["single"] / "fold0"), rel=1e-3)
    assert saved["oof"]["n_images"] == len(_pool(out))
