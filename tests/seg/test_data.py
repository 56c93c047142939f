"""Torch dataset, resized cache and seeded augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import SequentialSampler

from drivelab.data import open_dataset
from drivelab.seg.cache import build_store
from drivelab.seg.dataset import SeededSampler, SegDataset
from drivelab.seg.transforms import resize_pair


def test_cache_matches_direct_decoding(synth_comma10k: Path, tmp_path: Path) -> None:
    reader = open_dataset(synth_comma10k)
    store = build_store(reader, (48, 80), tmp_path / "cache", progress=False)
    again = build_store(reader, (48, 80), tmp_path / "cache", progress=False)
    assert again.folder == store.folder and len(list((tmp_path / "cache").iterdir())) == 1
    for i in (0, len(reader) - 1):
        s = reader[i]
        image, mask = resize_pair(s.image, s.mask, (48, 80))
        np.testing.assert_array_equal(store.image(i), image)
        np.testing.assert_array_equal(store.mask(i), mask)
    other = build_store(reader, (32, 64), tmp_path / "cache", progress=False)
    assert other.folder != store.folder


def test_padding_is_ignore_and_augmentation_is_seeded(synth_comma10k: Path) -> None:
    reader = open_dataset(synth_comma10k)
    ds = SegDataset(reader, (40, 70), augment={"hflip": 0.5, "scale": [0.7, 1.3], "color": 0.3})
    image, mask = ds[0]
    assert image.shape == (3, 64, 96) and image.dtype == torch.uint8 and mask.shape == (64, 96)
    assert (mask[40:] == 255).all() and (mask[:, 70:] == 255).all()
    assert (mask[:40, :70] != 255).float().mean() > 0.5
    a, b, c = ds[(3, 123)], ds[(3, 123)], ds[(3, 124)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    sampler = SeededSampler(SequentialSampler(range(6)), seed=7)
    sampler.set_epoch(1)
    keys = list(sampler)
    sampler.set_epoch(1, skip=4)
    assert list(sampler) == keys[4:]
    sampler.set_epoch(2)
    assert [k[1] for k in sampler] != [k[1] for k in keys]
