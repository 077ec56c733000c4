"""Shared fixtures. Tests never touch the network: the hub is forced offline here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The hang guard for tests that train a real model (pyproject's `timeout` is for the rest).
SLOW_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


def shared_dataset(name: str) -> Path:
    """Path to a real data set in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found: integration data lives in ../shared beside the repo")
    return path


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny trained run (tests/deploy_helpers.py), trained once and shared."""
    from tests.deploy_helpers import trained_run

    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run: Path) -> Any:
    from medfit.inference import Predictor

    return Predictor(run, device="cpu")
