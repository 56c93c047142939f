"""A tiny synthetic comma10k set for the label app (native layout: RGB palette masks in masks/,
val = names ending 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivelab.data.synth import synth_dataset

H, W = 48, 64


def make_comma10k(root: Path, n: int = 4) -> Path:
    return synth_dataset("comma10k", root, n=n, size=(H, W), seed=0)


@pytest.fixture
def comma_set(tmp_path) -> Path:
    """comma10k layout with ``n`` images; the last image's mask is removed (an unlabelled image)."""
    root = make_comma10k(tmp_path / "comma", n=4)
    from drivelab.data import open_dataset

    reader = open_dataset(root)
    assert reader.format == "comma10k" and len(reader) == 4
    reader.items[-1].label_path.unlink()
    return root
