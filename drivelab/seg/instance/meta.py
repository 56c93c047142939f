"""Per-image GT metadata an analysis can colour by: how crowded, how big, how occluded a tote is.

Columns: ``instances``; ``area_frac_mean / _min / _max`` (object area / image area) and
``coverage`` (union of objects / image area); ``occlusions`` (pairs of GT masks that overlap by
at least ``min_overlap`` pixels), ``box_overlaps`` (pairs whose boxes intersect: touching or
nearly touching objects, which is where merges happen); ``small`` (objects under 32x32 px, the
COCO "small" size, counted at the image's own resolution).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SMALL_AREA = 32 * 32


def image_meta(rles: list[dict], height: int, width: int, min_overlap: int = 1) -> dict:
    """Metadata of one image from its GT RLEs."""
    from pycocotools import mask as mask_utils

    n = len(rles)
    total = float(height * width)
    if n == 0:
        return {
            "instances": 0,
            "area_frac_mean": 0.0,
            "area_frac_min": math.nan,
            "area_frac_max": math.nan,
            "coverage": 0.0,
            "occlusions": 0,
            "box_overlaps": 0,
            "small": 0,
        }
    areas = mask_utils.area(rles).astype(np.float64)
    # iou with iscrowd=1: |a_i ∩ a_j| / |a_i|, times |a_i| -> pixel intersections.
    ioa = np.asarray(mask_utils.iou(rles, rles, [1] * n), np.float64).reshape(n, n)
    inter = np.rint(ioa * areas[:, None])
    upper = np.triu(np.ones((n, n), bool), 1)
    boxes = mask_utils.toBbox(rles)
    box_iou = np.asarray(mask_utils.iou(boxes.tolist(), boxes.tolist(), [0] * n), np.float64).reshape(n, n)
    union = mask_utils.area(mask_utils.merge(rles, intersect=False))
    return {
        "instances": n,
        "area_frac_mean": float(areas.mean() / total),
        "area_frac_min": float(areas.min() / total),
        "area_frac_max": float(areas.max() / total),
        "coverage": float(union / total),
        "occlusions": int(((inter >= min_overlap) & upper).sum()),
        "box_overlaps": int(((box_iou > 0) & upper).sum()),
        "small": int((areas < SMALL_AREA).sum()),
    }


def coco_meta(coco_gt: Any, image_ids: list[int] | None = None, min_overlap: int = 1) -> list[dict]:
    """One metadata row per image of a pycocotools COCO (``name`` and ``image_id`` included)."""
    from drivelab.seg.instance.overunder import gt_rles

    rows = []
    for i in image_ids if image_ids is not None else sorted(coco_gt.imgs):
        info = coco_gt.imgs[i]
        rows.append(
            {
                "name": info["file_name"],
                "image_id": i,
                **image_meta(gt_rles(coco_gt, i), int(info["height"]), int(info["width"]), min_overlap),
            }
        )
    return rows
