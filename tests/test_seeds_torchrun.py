"""`torchrun -m medfit train DATA --seeds 2`: several fits, one after another, in one torchrun job.

Every fit (and every short group between them) starts a process group on torchrun's one
rendezvous store; before each start took a key prefix of its own (distributed._fresh_store), the
second read the addresses the first had left there and hung at seed 2. 2 ranks on the CPU with
Gloo, compared seed by seed with one process at the same global batch, under the settings of
tests/test_distributed.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_distributed import (
    PER_RANK_BATCH,
    _assert_same_metrics,
    _env,
    _rows,
    tiny_job,
)
from tests.test_folds_torchrun import _medfit

pytestmark = pytest.mark.slow

HANG_GUARD_S = 300  # two tiny fits take well under this; longer means a rank waits forever


def _torchrun(*args: str) -> tuple[int, str]:
    """`medfit train ARGS` under torchrun with 2 ranks: (rc, output); a hang fails the test."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.Popen(
        [*cmd, "-m", "medfit", "train", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun's agent stops its workers (own sessions) on SIGTERM
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(
            f"torchrun --seeds 2 ran past {HANG_GUARD_S} s: the second fit hung (its process "
            f"group read the first's stale addresses in torchrun's store?)\n{output[-5000:]}"
        )
    return proc.returncode, output


def test_torchrun_seeds_finishes_every_seed_like_one_process(tmp_path: Path) -> None:
    data, config = tiny_job(tmp_path)
    common = [str(data), "--config", str(config), "--seeds", "2"]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    rc, output = _torchrun(
        *common, "--out", str(ddp), "--cache-dir", str(tmp_path / "cache-ddp"),
        "--batch-size", str(PER_RANK_BATCH),
    )  # fmt: skip
    assert rc == 0, output[-5000:]
    assert output.count("medfit seeds: seed 2 (2/2)") == 1, output[-5000:]  # rank 0 alone speaks

    table = json.loads((ddp / "seeds.json").read_text())
    assert table["n"] == 2 and table["base_seed"] == 1
    assert [(r["seed"], r["dir"], r["status"]) for r in table["seeds"]] == [
        (1, "seed1", "trained"),
        (2, "seed2", "trained"),
    ]
    for seed in (1, 2):
        run = ddp / f"seed{seed}"
        assert (run / "checkpoints" / "best.pt").is_file(), seed
        summary = json.loads((run / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["epochs_run"] == 2, summary

    rc, output = _medfit(
        *common, "--out", str(single), "--cache-dir", str(tmp_path / "cache-single"),
        "--batch-size", str(2 * PER_RANK_BATCH), ranks=1,
    )  # fmt: skip
    assert rc == 0, output[-5000:]
    for seed in (1, 2):
        _assert_same_metrics(_rows(ddp / f"seed{seed}"), _rows(single / f"seed{seed}"))
    seeds = [_rows(single / f"seed{seed}")[0]["train_loss"] for seed in (1, 2)]
    assert seeds[0] != pytest.approx(seeds[1], abs=1e-4)  # the two seeds trained differently
    want = json.loads((single / "seeds.json").read_text())
    for key in ("selection_score", "best_val_acc", "final_val_macro_f1"):
        assert table["mean"][key] == pytest.approx(want["mean"][key], abs=1e-4), key
