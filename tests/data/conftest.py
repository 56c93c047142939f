"""Data-layer fixtures: tiny hand-built datasets in each native layout, and cached synthetic sets."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from drivelab import schema as schemas
from drivelab.io import write_png

H, W = 32, 64


def random_ids(rng: np.random.Generator, k: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """Blocky train-id mask using ``k`` classes (every class present)."""
    small = rng.integers(0, k, (size[0] // 8, size[1] // 8))
    ids = np.kron(small, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    ids.reshape(-1)[:k] = np.arange(k)  # every class occurs at least once
    return ids


def random_image(rng: np.random.Generator, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.fixture
def comma10k_root(tmp_path: Path) -> Path:
    """imgs/masks (5 classes), imgs2/masks2, imgsd/masksd (6 classes), files_trainable.

    imgs/ holds 0000_imgs_100.png .. 0009_imgs_109.png (ends in 9.png: val);
    files_trainable lists all but 0003."""
    rng = np.random.default_rng(0)
    root = tmp_path / "comma10k"
    road, driver = schemas.comma10k(), schemas.comma10k(driver_camera=True)
    sets = [
        ("imgs", "masks", road, 10, (H, W)),
        ("imgs2", "masks2", road, 2, (48, 80)),
        ("imgsd", "masksd", driver, 2, (48, 80)),
    ]
    trainable = []
    for img_dir, mask_dir, schema, n, size in sets:
        for i in range(n):
            name = f"{i:04d}_{img_dir}_{100 + i}.png"  # like 0009_<hash>_<route>_109.png
            write_png(root / img_dir / name, random_image(rng, size))
            write_png(root / mask_dir / name, schema.colorize(random_ids(rng, schema.num_classes, size)))
            if not (img_dir == "imgs" and i == 3):
                trainable.append(f"{mask_dir}/{name}")
    (root / "files_trainable").write_text("".join(f"{t}\n" for t in trainable))
    return root


@pytest.fixture(scope="session")
def _synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    from drivelab.data.synth import synth_dataset

    base = tmp_path_factory.mktemp("synth")
    made: dict[str, Path] = {}

    def get(fmt: str) -> Path:
        if fmt not in made:
            made[fmt] = synth_dataset(fmt, base / fmt, n=6, size=(H, W), seed=0, workers=1)
        return made[fmt]

    return get


@pytest.fixture
def synth_copy(_synth_cache: Callable[[str], Path], tmp_path: Path) -> Callable[[str], Path]:
    """A fresh, writable copy of a small synthetic set of the given format (safe to break)."""

    def copy(fmt: str) -> Path:
        dst = tmp_path / f"{fmt}-copy"
        shutil.copytree(_synth_cache(fmt), dst)
        return dst

    return copy
