"""TensorBoard logging and reading must not import TensorFlow (6.6 s of start-up beside Keras).

A planted `tensorflow` package on the path records whether it was imported: tensorboard would
import it, as it imports a real one, unless medfit steers it to its own stub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path
from medfit.rundir import RunDir
from medfit.training.epoch_log import _tensorboard
from medfit.diagnose.foreign.read_files import read_tensorboard

run = RunDir(Path(sys.argv[1]))
writer = _tensorboard(run)
for step, value in enumerate([0.5, 0.25]):
    writer.add_scalar("val/loss", value, step)
writer.close()
history = read_tensorboard(run.tensorboard)
print("tensorflow imported:", "tensorflow" in sys.modules)
print("phases:", len(history.phases))
"""


def test_tensorboard_is_written_and_read_without_importing_tensorflow(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "tensorflow"
    fake.mkdir(parents=True)
    marker = tmp_path / "tensorflow_was_imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists(), "tensorboard imported the (planted) tensorflow package"
    assert "tensorflow imported: False" in proc.stdout
    assert "phases: 1" in proc.stdout  # the scalars written were read back
