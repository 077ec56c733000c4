"""DistributedDataParallel: sharding, torchrun vs a single process, resume, failure on one rank.

The multi-process tests run 2 ranks on the CPU with Gloo. Without --sync-bn, BatchNorm in train
mode would normalise each rank's half-batch with its own statistics, so they use --bn frozen: then
every image's loss is independent of its batch-mates, DDP's averaged gradient equals the single
process's gradient over the same global batch, and the runs differ only by floating-point
summation order (a few 1e-7 here, hence the 1e-4 tolerance).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import medfit
from medfit.config import RunConfig
from medfit.data.loader import BatchLoader
from medfit.errors import ConfigError, DataError
from medfit.training import distributed
from medfit.training.setup import _check_global_batch, check_distributed
from tests.test_train import make_dataset

PER_RANK_BATCH = 8
CONFIG = {
    "model": {"name": "test_efficientnet", "weights": "none", "drop_rate": 0.0},
    "data": {"img_size": 32, "aug": "none"},
    "train": {
        "head_epochs": 1,
        "epochs": 1,
        "bn": "frozen",
        "lr": 3e-3,
        "warmup_epochs": 0.0,
        "workers": 0,
        "device": "cpu",
        "seed": 1,
    },
}
COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "selection_score")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def tiny_job(tmp: Path) -> tuple[Path, Path]:
    """The torchrun tests' data (2 classes x 32 images) and config file (CONFIG) under TMP."""
    data = make_dataset(tmp / "data", per_class=32)
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return data, config


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "medfit", "train", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_metrics(
    got: list[dict[str, Any]], want: list[dict[str, Any]], rel: float = 0.0
) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want, strict=True):
        for key in COMPARED:
            assert g[key] == pytest.approx(w[key], abs=1e-4, rel=rel), (key, got, want)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]  # type: ignore[no-any-return]


def test_rank_shards_of_a_global_batch_are_the_single_process_batch() -> None:
    pixels = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    labels = np.arange(50, dtype=np.int64)
    single = BatchLoader(pixels, labels, 12, shuffle=True, drop_last=True, seed=4, prefetch=0)
    shards = [
        BatchLoader(pixels, labels, 4, True, None, True, 4, 0, rank=r, world_size=3)
        for r in range(3)
    ]
    for loader in (single, *shards):
        loader.set_epoch(2)
    assert len(single) == 4 and all(len(s) == 4 for s in shards)
    per_rank = [list(s) for s in shards]
    for i, (_, batch) in enumerate(single):
        parts = [per_rank[r][i][1] for r in range(3)]
        assert all(len(p) == 4 for p in parts)
        assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
        assert not set(parts[0].tolist()) & set(parts[1].tolist())
    epoch3 = BatchLoader(pixels, labels, 4, True, None, True, 4, 0, rank=0, world_size=3)
    epoch3.set_epoch(3)
    assert [b.tolist() for _, b in epoch3] != [b.tolist() for _, b in per_rank[0]]


def test_launch_variables_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched() == distributed.SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = distributed.launched()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (
        3, 4, 1, True, False
    )  # fmt: skip
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK 4 is outside WORLD_SIZE 4"):
        distributed.launched()
    with pytest.raises(ConfigError, match="--device mps cannot be used with torchrun"):
        distributed.device_for(ctx, "mps")


def test_options_a_ddp_run_cannot_honour_are_refused_up_front() -> None:
    cfg = RunConfig()
    cfg.train.lr = "auto"
    with pytest.raises(ConfigError, match="medfit lr-find"):
        check_distributed(cfg, torch.device("cpu"))
    cfg = RunConfig()
    cfg.train.sync_bn = True
    with pytest.raises(ConfigError, match="--sync-bn needs CUDA"):
        check_distributed(cfg, torch.device("cpu"))
    cfg.train.batch_size = 8
    with pytest.raises(DataError, match="global batch of 8 x 4 ranks = 32"):
        _check_global_batch(cfg, 31, distributed.DistContext(0, 4, 0))
    _check_global_batch(cfg, 32, distributed.DistContext(0, 4, 0))
    _check_global_batch(cfg, 3, distributed.SINGLE)  # a single process keeps its old behaviour


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same job twice: torchrun with 2 ranks x 8 images, one process with 16 images."""
    tmp = tmp_path_factory.mktemp("ddp")
    data, config = tiny_job(tmp)
    ddp = tmp / "ddp"
    proc = _torchrun(
        str(data), "--config", str(config), "--out", str(ddp), "--cache-dir", str(tmp / "c1"),
        "--batch-size", str(PER_RANK_BATCH),
    )  # fmt: skip
    single = medfit.train(
        data,
        out=str(tmp / "single"),
        config=config,
        log=lambda _: None,
        batch_size=2 * PER_RANK_BATCH,
        cache_dir=str(tmp / "c2"),
    )
    (tmp / "ddp.log").write_text(proc.stdout + proc.stderr)
    return {"ddp": ddp, "single": single.dir, "data": data, "tmp": tmp}


def test_torchrun_matches_one_process_with_the_global_batch(runs: dict[str, Path]) -> None:
    got, want = _rows(runs["ddp"]), _rows(runs["single"])
    _assert_same_metrics(got, want)
    assert want[0]["train_loss"] != pytest.approx(want[1]["train_loss"], abs=1e-3)  # it trained
    best_ddp, best_single = (
        _weights(runs["ddp"] / "checkpoints/best.pt"),
        _weights(runs["single"] / "checkpoints/best.pt"),
    )
    assert best_ddp.keys() == best_single.keys()
    for name, tensor in best_single.items():
        torch.testing.assert_close(best_ddp[name], tensor, atol=1e-4, rtol=1e-4, msg=name)
    summary = json.loads((runs["ddp"] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    cfg = yaml.safe_load((runs["ddp"] / "config.yaml").read_text())
    assert cfg["train"]["batch_size"] == PER_RANK_BATCH


def test_only_rank_0_writes_and_reports(runs: dict[str, Path]) -> None:
    log = (runs["tmp"] / "ddp.log").read_text()
    assert log.count("done: best") == 1 and log.count("epoch  2/2 full") == 1, log
    assert "global batch 8 x 2 = 16" in log
    assert sorted(p.name for p in runs["tmp"].iterdir() if p.name.startswith("ddp")) == [
        "ddp",
        "ddp.log",
    ]  # rank 1 did not pick a run directory of its own
    assert not (runs["ddp"] / ".lock").exists()


def test_torchrun_resume_continues_like_a_single_process(runs: dict[str, Path]) -> None:
    """A finished run given one more full epoch resumes from last.pt on both ranks."""
    copies = {}
    for name in ("ddp", "single"):
        copy = runs["tmp"] / f"resume-{name}"
        shutil.copytree(runs[name], copy)
        cfg = yaml.safe_load((copy / "config.yaml").read_text())
        cfg["train"]["epochs"] = 2
        (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
        copies[name] = copy
    proc = _torchrun("--resume", str(copies["ddp"]))
    assert "resuming after epoch 2" in proc.stdout
    single_cfg = yaml.safe_load((copies["single"] / "config.yaml").read_text())
    assert single_cfg["train"]["batch_size"] == 2 * PER_RANK_BATCH
    medfit.resume(copies["single"], log=lambda _: None)
    # Summed gradients (gloo all-reduce) and one batch round differently; after two epochs of
    # drift the third epoch's loss differed by 1.3e-4 relative on one machine (1.2870 vs 1.2872).
    _assert_same_metrics(_rows(copies["ddp"]), _rows(copies["single"]), rel=1e-3)
    lrs = [[r["lr"] for r in _rows(copies[name])] for name in ("ddp", "single")]
    assert lrs[0] == pytest.approx(lrs[1], rel=1e-9)  # the same schedule, resumed alike
    assert len(_rows(copies["ddp"])) == 3


PLANTED = """
import os, sys
import medfit.training.fit as fit
from medfit.errors import MedfitError
real = fit.train_one_epoch
def planted(*args, **kwargs):
    if os.environ["RANK"] == "1":
        raise MedfitError("planted failure on rank 1")
    return real(*args, **kwargs)
fit.train_one_epoch = planted
from medfit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_error_on_rank_1_stops_both_ranks_with_its_message(runs: dict[str, Path]) -> None:
    """Launched without torchrun, so no agent kills the survivor: medfit itself must stop it."""
    env = {**_env(), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(_free_port())
    config = runs["tmp"] / "config.yaml"
    args = ["train", str(runs["data"]), "--config", str(config), "--batch-size", "8"]
    args += ["--cache-dir", str(runs["tmp"] / "c1"), "--out", str(runs["tmp"] / "failed")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PLANTED, *args],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    started = time.monotonic()
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120))
    finally:
        for proc in procs:
            proc.kill()
    assert time.monotonic() - started < 120
    err0, err1 = outputs[0][1], outputs[1][1]
    assert procs[1].returncode == 2 and "rank 1/2: planted failure on rank 1" in err1, err1
    assert procs[0].returncode == 2, err0
    assert "rank 0/2: stopped because another rank failed" in err0, err0
    assert "Traceback" not in err0 + err1
