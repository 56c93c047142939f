"""How an image becomes model input: the one eval transform, with the train transforms beside it.

torchvision's segmentation references keep the train and eval presets in one small module so
whoever changes how an image is resized sees both paths. drivelab does the same: the training
dataset and its cache, ``evaluate``, ``embed``, ``audit``, both ``Predictor`` backends (torch and
onnxruntime), ONNX export and int8 calibration, and the label app's prediction all call the
functions here, so a semantic model sees every image exactly as it saw its training images::

    uint8 (H, W, 3) --resize to the training size (h, w)--> --pad bottom/right with 0 to /32-->
    float [0, 1] (3, h', w') -> model -> logits (K, h', w') --crop to (h, w)--> --bilinear to (H, W)

Resize rule ``RESIZE_RULE``: cv2.INTER_AREA when the image shrinks in either direction (a box
average, no aliasing), cv2.INTER_LINEAR when it grows. Masks resize with nearest neighbour and
their padding is labelled ignore (255), so padding never counts in a loss or a metric. Logits go
back to the image's resolution with half-pixel bilinear interpolation (torch's
``align_corners=False``; cv2.INTER_LINEAR computes the same on float arrays).

Train transforms: the same resize (done once into the cache, ``drivelab.seg.cache``), then the
seeded albumentations pipeline from the config's ``augment`` options, then the same padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from drivelab.schema import IGNORE

STRIDE = 32  # every drivelab semantic model needs H and W divisible by 32
RESIZE_RULE = "cv2-area-down-linear-up"  # stored in ONNX metadata; the only rule there is


@dataclass(frozen=True)
class ModelInput:
    """What a semantic model expects: the unpadded network size (None: each image keeps its own
    size, padded to /32) and the resize rule. Stored in checkpoints' configs and ONNX metadata."""

    size: tuple[int, int] | None
    stride: int = STRIDE
    resize: str = RESIZE_RULE

    def net_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) an image of (height, width) is resized to before padding."""
        return (int(self.size[0]), int(self.size[1])) if self.size is not None else (height, width)

    def padded(self, height: int, width: int) -> tuple[int, int]:
        h, w = self.net_size(height, width)
        return math.ceil(h / self.stride) * self.stride, math.ceil(w / self.stride) * self.stride

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size is not None else None, "stride": self.stride,
                "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInput:
        resize = d.get("resize", RESIZE_RULE)
        if resize != RESIZE_RULE:
            raise ValueError(f"unknown resize rule {resize!r} (this drivelab knows {RESIZE_RULE!r})")
        size = d.get("size")
        return cls(tuple(int(v) for v in size) if size is not None else None, int(d.get("stride", STRIDE)))


# --------------------------------------------------------------------------- shared steps
def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 to (h, w): area when shrinking, bilinear when growing (``RESIZE_RULE``)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return np.ascontiguousarray(image)
    shrink = image.shape[0] > h or image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) train ids to (h, w) with nearest neighbour (cv2's, as every path uses)."""
    h, w = int(size[0]), int(size[1])
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """An image and its mask (or None) resized to (h, w) by the rules above."""
    return resize_image(image, size), (None if mask is None else resize_mask(mask, size))


def pad_to_stride(image: np.ndarray, mask: np.ndarray | None, stride: int = STRIDE
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Pad bottom/right to multiples of ``stride``: image with 0, mask with the ignore index."""
    h, w = image.shape[:2]
    ph, pw = math.ceil(h / stride) * stride - h, math.ceil(w / stride) * stride - w
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2))
        if mask is not None:
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
    return image, mask


# --------------------------------------------------------------------------- eval transform
def eval_batch(images: list[np.ndarray], spec: ModelInput) -> tuple[np.ndarray, tuple[int, int]]:
    """Same-size uint8 RGB images -> ((B, 3, h', w') float32 in [0, 1], (h, w) before padding).

    numpy only, so the onnxruntime backend never wakes torch's thread pool."""
    height, width = images[0].shape[:2]
    h, w = spec.net_size(height, width)
    batch = np.stack([pad_to_stride(resize_image(im, (h, w)), None, spec.stride)[0] for im in images])
    x = batch.transpose(0, 3, 1, 2).astype(np.float32)
    x *= np.float32(1 / 255)
    return np.ascontiguousarray(x), (h, w)


def logits_to_image_torch(logits: Any, net: tuple[int, int], shape: tuple[int, int]) -> Any:
    """(B, K, h', w') torch logits -> (B, K, H, W): crop the padding, bilinear to the image size."""
    import torch.nn.functional as F

    logits = logits[:, :, : net[0], : net[1]]
    if tuple(net) != tuple(shape):
        logits = F.interpolate(logits, size=tuple(shape), mode="bilinear", align_corners=False)
    return logits


def logits_to_image_numpy(logits: np.ndarray, net: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The numpy/OpenCV twin of ``logits_to_image_torch`` (same half-pixel bilinear)."""
    logits = logits[:, :, : net[0], : net[1]]
    if tuple(net) != tuple(shape):
        H, W = shape
        # cv2 resizes (h, w, C) arrays of at most 512 channels: go in chunks of classes.
        logits = np.stack([
            np.concatenate([
                cv2.resize(np.ascontiguousarray(lg[k:k + 512].transpose(1, 2, 0)), (W, H),
                           interpolation=cv2.INTER_LINEAR).reshape(H, W, -1).transpose(2, 0, 1)
                for k in range(0, len(lg), 512)])
            for lg in logits])
    return np.ascontiguousarray(logits, dtype=np.float32)


# --------------------------------------------------------------------------- train transforms
def build_augment(options: dict | None) -> Any:
    """albumentations pipeline from the config's ``augment`` dict (None/{} -> no augmentation).

    hflip: probability; scale: [min, max] zoom (random affine, borders become ignore);
    rotate: max degrees; color: jitter strength; blur: probability. Seeded per sample by the
    dataset (``set_random_seed``), so a resumed run sees the same crops and flips."""
    import albumentations as A

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


class TrainTransform:
    """Resized (image, mask) -> augmented (seeded) -> padded: what the training loader returns."""

    def __init__(self, augment: dict | None, stride: int = STRIDE) -> None:
        self.augment = build_augment(augment)
        self.stride = stride

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        if self.augment is not None and seed is not None:
            self.augment.set_random_seed(seed)
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image, mask = pad_to_stride(image, mask, self.stride)
        return image, mask  # type: ignore[return-value]


class EvalTransform(TrainTransform):
    """Resized (image, mask) -> padded: the validation loader's view (no augmentation)."""

    def __init__(self, stride: int = STRIDE) -> None:
        super().__init__(None, stride)
