"""A torch Dataset over any Reader: resize to the training size (or read a resized cache),
augment with albumentations, pad to a multiple of 32 (padding is labelled ignore, so it is never
counted in the loss or metrics), return uint8 tensors (converted to float on the device).

Augmentation is seeded per sample: the sampler hands ``(index, seed)`` keys (see
``SeededSampler``), so a resumed run sees exactly the crops and flips of an uninterrupted one,
whatever the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from drivelab.data.sample import Reader
from drivelab.schema import IGNORE

STRIDE = 32


def build_augment(options: dict | None) -> Any:
    """albumentations pipeline from the config's ``augment`` dict (None/{} -> no augmentation).

    hflip: probability; scale: [min, max] zoom (random affine, borders become ignore);
    rotate: max degrees; color: jitter strength; blur: probability."""
    import albumentations as A
    import cv2

    o = dict(options or {})
    ts = []
    if o.get("hflip"):
        ts.append(A.HorizontalFlip(p=float(o["hflip"])))
    scale, rotate = o.get("scale"), float(o.get("rotate") or 0)
    if scale or rotate:
        lo, hi = (scale if isinstance(scale, (list, tuple)) else (1 / float(scale), float(scale))) if scale \
            else (1.0, 1.0)
        ts.append(A.Affine(scale=(float(lo), float(hi)), rotate=(-rotate, rotate),
                           border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE, p=0.8))
    if o.get("color"):
        c = float(o["color"])
        ts.append(A.ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(0.5, c / 4), p=0.8))
    if o.get("blur"):
        ts.append(A.GaussianBlur(blur_limit=(3, 5), p=float(o["blur"])))
    return A.Compose(ts, seed=0) if ts else None


def pad_to_stride(image: np.ndarray, mask: np.ndarray | None, stride: int = STRIDE
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Pad bottom/right to multiples of ``stride``: image with 0, mask with the ignore index."""
    h, w = image.shape[:2]
    ph, pw = math.ceil(h / stride) * stride - h, math.ceil(w / stride) * stride - w
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        if mask is not None:
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
    return image, mask


class SegDataset(Dataset):
    """``ds[i]`` or ``ds[(i, seed)]`` -> (image (3, H', W') uint8, mask (H', W') uint8) where
    (H', W') is ``size`` padded to multiples of 32. ``store`` is an optional ResizedStore of the
    same reader at ``size`` (drivelab.seg.cache)."""

    def __init__(self, reader: Reader, size: tuple[int, int], augment: dict | None = None,
                 store: Any = None) -> None:
        self.reader = reader
        self.size = (int(size[0]), int(size[1]))
        self.store = store
        self.augment = build_augment(augment)

    def __len__(self) -> int:
        return len(self.reader)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized (not augmented, not padded) image and mask of sample ``i``."""
        from drivelab.seg.cache import resize_pair

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
        image, mask = self.arrays(i)
        if self.augment is not None and seed is not None:
            self.augment.set_random_seed(seed)
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image, mask = pad_to_stride(image, mask)
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
