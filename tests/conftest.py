"""Shared fixtures: paths to the shared real data (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def cityscapes_sample() -> Path:
    return _shared("cityscapes_sample")


@pytest.fixture
def commavq_tokens() -> Path:
    return _shared("commavq/segment_first_half.npy")


@pytest.fixture
def driving_video() -> Path:
    return _shared("commavq/decoded_segment.mp4")


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # CI has 2 cores; keep torch from oversubscribing when tests run model code.
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
