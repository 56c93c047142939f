"""Fixtures for the segmentation tests: tiny synthetic comma10k-layout sets (64x128)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivelab.data.synth import synth_dataset

SIZE = (64, 128)
REPO_ROOT = Path(__file__).resolve().parents[2]


def make_comma10k(root: Path, n: int, seed: int, size: tuple[int, int] = SIZE) -> Path:
    """A synthetic comma10k layout (imgs/, masks/ colour PNGs); names ending 9.png are the val split."""
    return synth_dataset("comma10k", root, n=n, size=size, seed=seed)


@pytest.fixture(scope="session")
def synth_comma10k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_comma10k(tmp_path_factory.mktemp("synth") / "comma10k", n=20, seed=0)


@pytest.fixture(scope="session")
def heldout_comma10k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_comma10k(tmp_path_factory.mktemp("heldout") / "comma10k", n=10, seed=1)


def tiny_overrides(data: Path, out: Path, **extra) -> dict:
    """The synth preset shrunk for tests: tiny U-Net, 64x128, a few steps, no workers."""
    values = {"data": str(data), "out": str(out), "size": list(SIZE), "model": "plain-unet", "encoder": None,
              "model_kwargs": {"base": 4, "depth": 3}, "batch_size": 2, "max_steps": 4, "workers": 0,
              "eval_every": 2, "log_every": 1}
    values.update(extra)
    return values


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a shared 2-core machine an OpenMP
    # team of 2 competing with other processes runs ~10x slower than a single thread.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
