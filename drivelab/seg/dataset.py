"""A torch Dataset over any Reader for semantic training: the transforms of
``drivelab.seg.transforms`` (resize to the training size or read the resized cache, seeded
augmentation, pad to /32 with ignore), returned as uint8 tensors (made float on the device).

Augmentation is seeded per sample: the sampler hands ``(index, seed)`` keys (see
``SeededSampler``), so a resumed run sees exactly the crops and flips of an uninterrupted one,
whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from drivelab.data.sample import Reader
from drivelab.schema import IGNORE
from drivelab.seg.transforms import TrainTransform, resize_pair


class SegDataset(Dataset):
    """``ds[i]`` or ``ds[(i, seed)]`` -> (image (3, H', W') uint8, mask (H', W') uint8) where
    (H', W') is ``size`` padded to multiples of 32. ``store`` is an optional ResizedStore of the
    same reader at ``size`` (drivelab.seg.cache)."""

    def __init__(self, reader: Reader, size: tuple[int, int], augment: dict | None = None,
                 store: Any = None) -> None:
        self.reader = reader
        self.size = (int(size[0]), int(size[1]))
        self.store = store
        self.transform = TrainTransform(augment)  # no options: resize and pad only (eval)

    def __len__(self) -> int:
        return len(self.reader)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized (not augmented, not padded) image and mask of sample ``i``."""
        if self.store is not None:
            image, mask = self.store.image(i), self.store.mask(i)
        else:
            s = self.reader[i]
            image, mask = resize_pair(s.image, s.mask, self.size)
        if mask is None:
            mask = np.full(image.shape[:2], IGNORE, np.uint8)
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.transform(*self.arrays(i), seed)
        return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(mask)))


class SeededSampler(Sampler):
    """Wraps a (Distributed)Sampler: yields ``(index, seed)`` with a seed derived from (run seed,
    epoch, index), and can skip the first ``skip`` items of an epoch (resuming mid-epoch)."""

    def __init__(self, base: Sampler, seed: int) -> None:
        self.base = base
        self.seed = int(seed)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for pos, i in enumerate(self.base):
            if pos < self.skip:
                continue
            yield int(i), (self.seed * 1_000_003 + self.epoch * 10_007 + int(i)) % (2**31 - 1)
