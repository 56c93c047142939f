"""Fixtures for the data-engine tests: a tiny comma10k-layout set (64x128) with a rare condition
and a tiny U-Net trained on it for a few steps (once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivelab.io import write_png
from drivelab.schema import comma10k

SIZE = (64, 128)


def scene(rng: np.random.Generator, h: int, w: int, night: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A crude road scene: undrivable top, road, lane lines, a car, the hood. ``night`` darkens it."""
    mask = np.full((h, w), 2, np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.5))
    yy, xx = np.mgrid[0:h, 0:w]
    half = (yy - horizon) / max(1, h - horizon) * w * 0.6
    centre = w / 2 + rng.uniform(-0.1, 0.1) * w
    road = (yy >= horizon) & (np.abs(xx - centre) < half)
    mask[road] = 0
    for side in (-0.33, 0.33):
        mask[road & (np.abs(xx - (centre + side * half)) < 1 + 0.03 * half)] = 1
    cy, cx = int(rng.uniform(horizon + 4, h * 0.8)), int(rng.uniform(0.2, 0.8) * w)
    s = max(3, int((cy - horizon + 4) * 0.5))
    mask[max(0, cy - s) : cy, max(0, cx - s) : cx + s] = 3
    mask[int(h * 0.88) :] = 4
    colors = np.array([[90, 90, 90], [240, 240, 240], [60, 130, 60], [200, 40, 40], [30, 30, 40]], np.float32)
    image = colors[mask] + rng.normal(0, 8, (h, w, 3))
    if night:
        image = image * 0.3 + np.array([0, 0, 30])
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_set(root: Path, n: int, seed: int, night_every: int = 5, unlabelled: int = 0) -> Path:
    """comma10k layout (imgs/, masks/); every ``night_every``-th image is dark; the last
    ``unlabelled`` images have no mask."""
    rng = np.random.default_rng(seed)
    schema = comma10k()
    for i in range(n):
        image, mask = scene(rng, *SIZE, night=(i % night_every == night_every - 1))
        name = f"{seed:02d}{i:04d}.png"
        write_png(root / "imgs" / name, image)
        if i < n - unlabelled:
            write_png(root / "masks" / name, schema.colorize(mask))
    return root


@pytest.fixture(scope="session")
def engine_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_set(tmp_path_factory.mktemp("engine") / "comma10k", n=24, seed=3)


@pytest.fixture(scope="session")
def engine_run(engine_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain U-Net trained for a few steps with the shared trainer."""
    import torch

    from drivelab.seg.config import TrainConfig
    from drivelab.seg.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(
            data=str(engine_data),
            out=str(tmp_path_factory.mktemp("runs")),
            name="tiny",
            size=list(SIZE),
            model="plain-unet",
            encoder=None,
            model_kwargs={"base": 4, "depth": 3},
            batch_size=4,
            max_steps=6,
            workers=0,
            eval_every=6,
            log_every=3,
            lr=3e-3,
            device="cpu",
        ).validate()
        return train(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
