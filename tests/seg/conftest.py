"""Fixtures for the segmentation tests: tiny synthetic comma10k-layout sets (64x128)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivelab.io import write_png
from drivelab.schema import comma10k

SIZE = (64, 128)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A crude road scene: undrivable top, road below the horizon, lane lines, cars, the hood."""
    mask = np.full((h, w), 2, np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.5))
    yy, xx = np.mgrid[0:h, 0:w]
    half = (yy - horizon) / max(1, h - horizon) * w * 0.6
    centre = w / 2 + rng.uniform(-0.1, 0.1) * w
    road = (yy >= horizon) & (np.abs(xx - centre) < half)
    mask[road] = 0
    for side in (-0.33, 0.33):
        lane = road & (np.abs(xx - (centre + side * half)) < 1 + 0.03 * half)
        mask[lane] = 1
    for _ in range(rng.integers(1, 3)):
        cy = int(rng.uniform(horizon, h * 0.8))
        cx = int(rng.uniform(0.2, 0.8) * w)
        s = max(3, int((cy - horizon + 4) * 0.5))
        mask[max(0, cy - s):cy, max(0, cx - s):cx + s] = 3
    mask[int(h * 0.88):] = 4
    colors = np.array([[90, 90, 90], [240, 240, 240], [60, 130, 60], [200, 40, 40], [30, 30, 40]], np.uint8)
    image = colors[mask].astype(np.int16) + rng.integers(-20, 21, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_comma10k(root: Path, n: int, seed: int, size: tuple[int, int] = SIZE) -> Path:
    """A comma10k layout (imgs/, masks/ colour PNGs); names ending 9.png are the val split."""
    try:
        from drivelab.data.synth import synth_dataset

        return Path(synth_dataset("comma10k", root, n=n, size=size, seed=seed))
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    schema = comma10k()
    for i in range(n):
        image, mask = _scene(rng, *size)
        write_png(root / "imgs" / f"{seed:02d}{i:04d}.png", image)
        write_png(root / "masks" / f"{seed:02d}{i:04d}.png", schema.colorize(mask))
    return root


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
