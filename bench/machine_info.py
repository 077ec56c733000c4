"""What a bench row ran on: the CPU (model, cores, vector flags) and the commit of the code.

CPU kernels' speed and numerics follow the CPU: the same commit and seed reached the
time-to-accuracy target in 2 epochs on one 2-core machine and 5 on another (bench/README.md), so
every row names both.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_description() -> str:
    """The CPU model, core count and vector flags."""
    path = Path("/proc/cpuinfo")
    lines = path.read_text().splitlines() if path.exists() else []
    # One block per core, all alike: the last block's values stand for them.
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)}
    model = fields.get("model name", "")
    flags = fields.get("flags", "").split()
    vector = sorted(f for f in flags if f.startswith(("avx", "fma", "amx", "sse4")))
    return f"{model or 'unknown CPU'}, {os.cpu_count()} cores, {' '.join(vector)}"


def commit(src: str | Path = REPO) -> str:
    """The short commit of SRC, with "+dirty" when medfit/ has uncommitted changes."""
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "medfit"], check=False)
    return head.stdout.strip() + ("+dirty" if dirty.returncode else "")
