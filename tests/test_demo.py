"""The demo's download path, offline: one clear line, never a traceback."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from medfit.demo import download_pneumoniamnist
from medfit.errors import MedfitError


def test_demo_without_medmnist_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "medmnist", None)  # import fails
    with pytest.raises(MedfitError, match=r"medfit\[demo\].*--data PATH"):
        download_pneumoniamnist(tmp_path)


def test_demo_offline_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("medmnist")

    def offline(**_: object) -> None:
        raise ConnectionError("Name or service not known")

    fake.PneumoniaMNIST = offline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    with pytest.raises(MedfitError) as err:
        download_pneumoniamnist(tmp_path)
    assert "offline?" in str(err.value) and "--data PATH" in str(err.value)
    assert "\n" not in str(err.value)


def test_demo_download_writes_the_folder_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("medmnist")
    calls: list[str] = []

    class Split:
        def __init__(self, split: str, **_: object) -> None:
            calls.append(split)
            self.imgs = np.full((3, 28, 28), 7, dtype=np.uint8)
            self.labels = np.array([[0], [1], [1]])

    fake.PneumoniaMNIST = Split  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    root = download_pneumoniamnist(tmp_path)
    assert calls == ["train", "val", "test"]
    assert len(list((root / "train" / "pneumonia").glob("*.png"))) == 2
    assert len(list((root / "test" / "normal").glob("*.png"))) == 1
    assert download_pneumoniamnist(tmp_path) == root and len(calls) == 3  # cached, no re-download
