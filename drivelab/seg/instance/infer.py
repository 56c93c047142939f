"""Run a Mask R-CNN on uint8 images and turn its output into numpy instances and COCO results.

Shared by training-time validation, ``evaluate_instances`` and ``predict_instances`` so all
three see exactly the same predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Prediction:
    """Instances predicted for one image at its own resolution (sorted by score, high first)."""

    masks: np.ndarray  # (N, H, W) bool
    boxes: np.ndarray  # (N, 4) float32 xyxy
    labels: np.ndarray  # (N,) train ids (1..)
    scores: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.labels)

    def above(self, score: float) -> Prediction:
        keep = self.scores >= score
        return Prediction(self.masks[keep], self.boxes[keep], self.labels[keep], self.scores[keep])


def model_scale(model: torch.nn.Module, height: int, width: int) -> float:
    """The factor the model's own resize applies to an (height, width) image."""
    if hasattr(model, "scale_for"):  # ProtoSeg
        return float(model.scale_for(height, width))
    t = model.transform  # torchvision's GeneralizedRCNNTransform
    return min(float(t.min_size[-1]) / min(height, width), float(t.max_size) / max(height, width))


@torch.no_grad()
def predict_images(
    model: torch.nn.Module,
    images: list[np.ndarray],
    device: torch.device | str = "cpu",
    mask_thresh: float = 0.5,
) -> list[Prediction]:
    """(H, W, 3) uint8 images (any sizes) -> one Prediction each, masks thresholded at ``mask_thresh``.

    Images larger than the model's working size are shrunk here first and each soft mask is
    scaled back one at a time: torchvision would paste every detection at full size at once
    (100 x 2448 x 2048 floats = 2 GB for one ARMBench tote)."""
    import cv2

    # eval() walks every module: at batch 1 on a CPU that walk costs a third of a prediction,
    # so switch only when the model is in train mode (validation during training)
    was_training = model.training
    if was_training:
        model.eval()
    small = []
    for im in images:
        s = model_scale(model, *im.shape[:2])
        if s < 1.0:
            size = (max(1, round(im.shape[1] * s)), max(1, round(im.shape[0] * s)))
            im = cv2.resize(im, size, interpolation=cv2.INTER_AREA)
        small.append(im)
    x = [
        torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).to(device).float().div_(255)
        for im in small
    ]
    with torch.no_grad():
        outputs = model(x)
    if was_training:
        model.train()
    preds = []
    for im, sm, o in zip(images, small, outputs, strict=True):
        h, w = im.shape[:2]
        soft = o["masks"][:, 0].float().cpu().numpy()
        boxes = o["boxes"].float().cpu().numpy().reshape(-1, 4)
        if sm.shape[:2] != (h, w):
            boxes = boxes * np.array([w / sm.shape[1], h / sm.shape[0]] * 2, np.float32)
            masks = np.zeros((len(soft), h, w), bool)
            for k, m in enumerate(soft):
                masks[k] = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) >= mask_thresh
        else:
            masks = soft >= mask_thresh
        preds.append(
            Prediction(
                masks=masks.reshape(-1, h, w),
                boxes=boxes,
                labels=o["labels"].cpu().numpy().astype(np.int64),
                scores=o["scores"].float().cpu().numpy(),
            )
        )
    return preds


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool -> COCO RLEs with ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def to_coco_results(pred: Prediction, image_id: int, category_ids: list[int]) -> list[dict]:
    """One image's Prediction -> COCO results entries (``category_ids[k-1]`` is train id k)."""
    out = []
    for rle, box, label, score in zip(
        encode_masks(pred.masks), pred.boxes, pred.labels, pred.scores, strict=True
    ):
        x1, y1, x2, y2 = (float(v) for v in box)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_ids[int(label) - 1]),
                "segmentation": rle,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(score), 5),
            }
        )
    return out
