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


@pytest.fixture(scope="session")
def prior_model(real_tokens):
    """A small prior network trained on frames 0-39 (seconds on one core)."""
    import torch

    from drivelab.vq.prior import train_prior

    torch.set_num_threads(1)
    x = real_tokens.reshape(-1, 128)[:40].astype(np.int64)
    model, bits = train_prior([x], steps=300, val_frac=0.2)
    assert np.isfinite(bits)
    return model


@pytest.fixture(scope="session")
def network_blob(prior_model) -> bytes:
    """The integer network the prior and mix codecs ship."""
    from drivelab.vq.prior import network_blob as export

    return export(prior_model)
