from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "commavq" / "segment_first_half.npy"


@pytest.fixture(scope="session")
def real_tokens() -> np.ndarray:
    if not SHARED.exists():
        pytest.skip(f"shared data not available: {SHARED}")
    return np.load(SHARED)
