"""The torch device `--device NAME` names, for training and inference alike."""

from __future__ import annotations

import torch

from medfit.config import check_device_name
from medfit.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """The device `--device name` names; one this machine lacks is one line naming what it has."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    mps = int(torch.backends.mps.is_available())
    counts = {"cpu": 1, "cuda": torch.cuda.device_count(), "mps": mps}
    if (device.index or 0) < counts[device.type]:
        return device
    have = ["cpu", *(f"cuda:{i}" for i in range(counts["cuda"])), *(["mps"] * counts["mps"])]
    raise ConfigError(
        f"--device {name}: PyTorch sees no such device here (it sees {', '.join(have)}); use "
        "--device auto (the best one present) or one of those"
    )
