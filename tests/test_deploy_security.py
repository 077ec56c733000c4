"""Loading a run never executes pickled code: a booby-trapped best.pt is refused everywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medfit
from medfit.deploy.export import export_model
from medfit.errors import MedfitError
from medfit.inference import Predictor
from tests.deploy_helpers import copy_run, run_cli, val_images


class _Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def _booby_trap(run: Path, marker: Path) -> None:
    best = run / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    state["extra"] = _Payload(marker)
    torch.save(state, best)


def test_malicious_checkpoint_is_refused_and_its_code_never_runs(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = copy_run(run, tmp_path / "evil")
    marker = tmp_path / "pwned"
    _booby_trap(evil, marker)
    best = evil / "checkpoints" / "best.pt"

    # Control, in another process: a plain torch.load(weights_only=False) does run the payload.
    load = f"import torch; torch.load({str(best)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", load], check=True, capture_output=True)
    assert marker.exists(), "the crafted checkpoint should be a real exploit"
    marker.unlink()

    with pytest.raises(MedfitError, match="refusing to load"):
        medfit.load(evil)
    with pytest.raises(MedfitError, match="refusing to load"):
        Predictor(evil)
    with pytest.raises(MedfitError, match="refusing to load"):
        export_model(evil, "torchscript", out=tmp_path / "m.pt")
    assert run_cli(["predict", str(evil), str(val_images(run)[0])]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "m.pt").exists()
