"""--compile: the training step runs through torch.compile while checkpoints, EMA and the
metrics stay those of the plain model.

The compiler backend is "aot_eager" here (dynamo's graph capture and AOT autograd, without
generating C++): what medfit's glue can break is exercised in seconds; inductor's kernels are
PyTorch's own business and are measured by bench/gpu_throughput.py --compile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import medfit
from tests.test_determinism import OPTIONS as DETERMINISTIC
from tests.test_train import make_dataset

TIMING = {"data_s", "augment_s", "compute_s", "eval_s", "epoch_s"}


@pytest.fixture()
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Route torch.compile to the aot_eager backend and record what it was given."""
    seen: list[Any] = []
    real = torch.compile

    def spy(model: Any, **kwargs: Any) -> Any:
        seen.append(model)
        return real(model, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    return seen


def _rows(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_compiled_run_matches_eager_and_saves_plain_keys(
    tmp_path: Path, compiled: list[Any]
) -> None:
    torch._dynamo.reset()
    data = make_dataset(tmp_path / "data", per_class=12)
    options = {**DETERMINISTIC, "deterministic": False, "ema": True}
    cache = str(tmp_path / "c")
    eager = medfit.train(data, out=str(tmp_path / "eager"), cache_dir=cache, **options)
    assert not compiled
    lines: list[str] = []
    run = medfit.train(
        data,
        out=str(tmp_path / "compiled"),
        cache_dir=str(tmp_path / "c"),
        log=lines.append,
        compile=True,
        **options,
    )
    assert len(compiled) == 2  # one compile per stage (head, then full)
    assert "torch.compile" in lines[0]  # the run description says so

    for name in ("best.pt", "last.pt"):
        state = torch.load(run.dir / "checkpoints" / name, weights_only=True)
        keys = list(state["model"])
        assert keys and not any("_orig_mod" in k for k in keys), name
    model = timm.create_model("test_efficientnet", num_classes=2)
    best = torch.load(run.dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    model.load_state_dict(best)  # strict: the plain model's keys, nothing extra or missing

    # Same seed, same batches, same augmentation draws: aot_eager differs from eager only by
    # floating-point reassociation.
    a, b = _rows(eager.dir), _rows(run.dir)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            assert abs(ra[key] - rb[key]) < 1e-3, (key, ra[key], rb[key])
