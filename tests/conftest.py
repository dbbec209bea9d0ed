import os
from pathlib import Path

import pytest
import torch

# No network here or in CI: make hub clients fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MASKCLF_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set MASKCLF_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    return _need(SHARED_DATA / "tiny")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point the face cache at a throwaway folder for the test session, never at ~/.cache."""
    monkeypatch.setenv("MASKCLF_CACHE", str(tmp_path_factory.getbasetemp() / "face-cache"))


@pytest.fixture(scope="session")
def crops(tmp_path_factory) -> Path:
    """Face-crop cache shared by the fit tests of a session (the first fit fills it); one torch thread for them."""
    torch.set_num_threads(1)
    return tmp_path_factory.getbasetemp() / "tiny-crops"


class TrainingKilled(Exception):
    """Raised by a `kill_at` hook: stands in for a run killed right after one member's epoch."""


@pytest.fixture
def kill_at():
    """kill_at(member, epoch) -> an `on_epoch` hook for fit() that raises kill_at.Killed after that epoch."""
    def make(member: str, epoch: int):
        def hook(name, e, score):
            if (name, e) == (member, epoch):
                raise TrainingKilled

        return hook

    make.Killed = TrainingKilled
    return make
