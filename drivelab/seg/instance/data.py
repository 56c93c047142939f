"""A torch Dataset over a COCO reader, with targets in torchvision's detection format.

``ds[i]`` or ``ds[(i, seed)]`` (the trainer's SeededSampler keys) -> ``(image, target)``:
image (3, H, W) uint8 at the training size, target ``{"boxes": (N, 4) float xyxy, "labels": (N,)
int64 train ids (1..), "masks": (N, H, W) uint8, "image_id", "area", "iscrowd"}``.

Augmentation is the shared albumentations pipeline (``drivelab.seg.transforms.build_augment``,
config key ``augment``) applied to the image and every instance mask; boxes are recomputed
from the augmented masks, so a flip, zoom or rotation can never leave a box that does not fit
its mask, and instances pushed out of the frame are dropped. ``dihedral`` adds what a camera
looking straight down into a tote allows and the shared pipeline lacks: vertical flips and, for
square sizes, transposes (with its horizontal flip: all eight flips/quarter turns).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from drivelab.data.sample import Reader
from drivelab.errors import DrivelabError


def resize_instances(
    image: np.ndarray, masks: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) and masks (N, H, W) bool -> the same at ``size`` (H, W).

    Masks are resized as float and thresholded at 0.5 (bilinear), which keeps thin objects
    better than nearest-neighbour when shrinking 2448x2048 totes."""
    import cv2

    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image, masks.astype(bool)
    shrink = h * w < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    resized = np.zeros((len(masks), h, w), dtype=bool)
    for k, m in enumerate(masks):
        resized[k] = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
    return out, resized


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 xyxy boxes enclosing each mask (x2/y2 exclusive)."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for k, m in enumerate(masks):
        ys = np.flatnonzero(m.any(1))
        xs = np.flatnonzero(m.any(0))
        if len(xs):
            boxes[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


class InstanceDataset(Dataset):
    """Instance samples of ``reader`` resized to ``size`` (H, W), optionally augmented.

    ``min_area``: instances smaller than this (pixels, after resize/augmentation) are dropped;
    crowd annotations are dropped too (Mask R-CNN has no notion of them)."""

    def __init__(
        self,
        reader: Reader,
        size: tuple[int, int],
        augment: dict | None = None,
        min_area: int = 4,
        dihedral: bool = False,
    ) -> None:
        from drivelab.seg.transforms import build_augment

        if not hasattr(reader, "load_instances"):
            raise DrivelabError(
                f"the instance task needs a COCO-style dataset, got {reader.format}", reader.root
            )
        self.reader = reader
        self.size = (int(size[0]), int(size[1]))
        self.min_area = int(min_area)
        self.augment = build_augment(augment)
        self.dihedral = bool(dihedral)

    def __len__(self) -> int:
        return len(self.reader)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Resized image (H, W, 3) uint8, masks (N, H, W) bool, labels (N,) of sample ``i``."""
        item = self.reader.items[i]
        image = self.reader.load_image(item)
        inst = self.reader.load_instances(item, image.shape[:2])
        keep = np.ones(len(inst), bool) if inst.iscrowd is None else inst.iscrowd == 0
        image, masks = resize_instances(image, inst.masks[keep], self.size)
        return image, masks, inst.labels[keep]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        image, masks, labels = self.arrays(i)
        if self.augment is not None and seed is not None:
            self.augment.set_random_seed(seed)
            if len(masks):
                out = self.augment(image=image, masks=list(masks.astype(np.uint8)))
                # The shared pipeline fills affine borders with the ignore index (255): not object.
                masks = np.stack([np.asarray(m) == 1 for m in out["masks"]])
            else:
                out = self.augment(image=image)
            image = out["image"]
        if self.dihedral and seed is not None:
            image, masks = dihedral_flip(image, masks, np.random.default_rng(seed))
        area = masks.reshape(len(masks), -1).sum(1)
        keep = area >= self.min_area
        masks, labels, area = masks[keep], labels[keep], area[keep]
        target = {
            "boxes": torch.from_numpy(boxes_from_masks(masks)).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "image_id": torch.tensor(i, dtype=torch.int64),
            "area": torch.as_tensor(area, dtype=torch.float32),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        }
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), target


def dihedral_flip(
    image: np.ndarray, masks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random vertical flip and, when the image is square, a random transpose of image (H, W, 3)
    and masks (N, H, W) together."""
    if rng.random() < 0.5:
        image, masks = image[::-1], masks[:, ::-1]
    if image.shape[0] == image.shape[1] and rng.random() < 0.5:
        image, masks = image.transpose(1, 0, 2), masks.transpose(0, 2, 1)
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Detection batches stay lists: images differ in instance count (and may differ in size)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
