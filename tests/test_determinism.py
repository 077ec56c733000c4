"""--deterministic: two runs with the same seed give bit-identical metrics and weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import medfit
from medfit.cli import build_parser
from medfit.errors import MedfitError
from medfit.training.cli import config_from_args
from medfit.training.engine import deterministic_mode
from tests.test_train import make_dataset

TIMING = {"data_s", "augment_s", "compute_s", "eval_s", "epoch_s"}
OPTIONS = {
    "model": "test_efficientnet",  # timm's 100k-parameter EfficientNet (BN, SiLU, SE)
    "weights": "none",
    "img_size": 32,
    "batch_size": 8,
    "head_epochs": 1,
    "epochs": 1,
    "aug": "xray",  # random crops/rotations and dropout: the RNGs must be seeded to repeat
    "workers": 1,  # the prefetch thread must not change the batches either
    "device": "cpu",
    "deterministic": True,
}


def _run(tmp: Path, data: Path, name: str, **extra: Any) -> tuple[list[dict[str, Any]], Path]:
    flags: list[bool] = []

    def log(_: str) -> None:
        flags.append(torch.are_deterministic_algorithms_enabled())

    run = medfit.train(
        data,
        out=str(tmp / name),
        cache_dir=str(tmp / "c"),
        log=log,
        report=False,
        **{**OPTIONS, **extra},
    )
    assert flags and all(flags)  # deterministic kernels were on while the run logged
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows], run.dir


def _best(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]  # type: ignore[no-any-return]


def test_two_deterministic_runs_are_bit_identical(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=16)
    first, first_dir = _run(tmp_path, data, "a", seed=5)
    second, second_dir = _run(tmp_path, data, "b", seed=5)
    assert len(first) == 2 and first == second  # exact float equality, not approx
    a, b = _best(first_dir), _best(second_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other, _ = _run(tmp_path, data, "c", seed=6)  # the comparison can tell runs apart
    assert other != first
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run


def test_deterministic_mode_restores_settings_and_names_the_problem() -> None:
    before = torch.backends.cudnn.benchmark
    expected = "--deterministic: an operation has no deterministic"
    with pytest.raises(MedfitError, match=expected), deterministic_mode(True, seed=0):
        assert torch.are_deterministic_algorithms_enabled()
        raise RuntimeError("index_put_ does not have a deterministic implementation")
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark == before
    with pytest.raises(RuntimeError, match="unrelated"), deterministic_mode(True, seed=0):
        raise RuntimeError("unrelated")


def test_cli_flags_reach_the_config() -> None:
    args = build_parser().parse_args(["train", "DATA", "--deterministic", "--sync-bn"])
    cfg = config_from_args(args)
    assert cfg.train.deterministic is True and cfg.train.sync_bn is True
    plain = config_from_args(build_parser().parse_args(["train", "DATA"]))
    assert plain.train.deterministic is False and plain.train.sync_bn is False
