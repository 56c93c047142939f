"""A tiny comma10k set for the label app: the data helper's synthetic generator when present,
else a hand-made layout (same native format: RGB palette masks in masks/, val = names ending 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivelab.schema import comma10k

H, W = 48, 64


def _hand_made(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    schema = comma10k()
    (root / "imgs").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        name = f"{i:04d}_seq_{i if i != n - 1 else 9}.png"  # the last one ends in 9: val
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "imgs" / name)
        mask = np.full((H, W), 2, np.uint8)  # undrivable
        mask[H // 2 :] = 0  # road
        mask[H // 2 + 4 : H // 2 + 12, 10 + i : 20 + i] = 3  # a movable box
        Image.fromarray(schema.colorize(mask)).save(root / "masks" / name)
    return root


def make_comma10k(root: Path, n: int = 4) -> Path:
    try:
        from drivelab.data.synth import synth_dataset
    except ImportError:
        return _hand_made(root, n)
    return Path(synth_dataset("comma10k", root, n=n, size=(H, W), seed=0))


@pytest.fixture
def comma_set(tmp_path) -> Path:
    """comma10k layout with ``n`` images; the last image's mask is removed (an unlabelled image)."""
    root = make_comma10k(tmp_path / "comma", n=4)
    from drivelab.data import open_dataset

    reader = open_dataset(root)
    assert reader.format == "comma10k" and len(reader) == 4
    reader.items[-1].label_path.unlink()
    return root
