"""Scoring instance predictions against a COCO split (model-free): COCOeval AP, per-image
matches, over-/under-segmentation and metadata. Used by ``evaluate`` (a checkpoint's results) and
the report (any results json); it imports neither."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Any

import numpy as np

from drivelab.data.sample import Reader
from drivelab.errors import DrivelabError
from drivelab.seg.instance.overunder import OverUnderOptions

STAT_NAMES = (
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
)


def coco_metrics(
    coco_gt: Any,
    results: list[dict],
    image_ids: list[int] | None = None,
    iou_types: tuple[str, ...] = ("segm", "bbox"),
) -> dict:
    """COCOeval stats as ``mask_ap, mask_ap50, ... box_ap ...`` (segm -> mask_, bbox -> box_).

    Box AP uses the predicted boxes (segmentations are dropped for the bbox run, as detectron2
    does; pycocotools would otherwise replace each box by its mask's box). No results at all: 0."""
    from pycocotools.cocoeval import COCOeval

    out: dict[str, float] = {}
    for iou_type in iou_types:
        prefix = {"segm": "mask", "bbox": "box"}[iou_type]
        if results:
            res = copy.deepcopy(results)
            if iou_type == "bbox":
                for r in res:
                    r.pop("segmentation", None)
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
                dt = coco_gt.loadRes(res)
                ev = COCOeval(coco_gt, dt, iou_type)
                if image_ids is not None:
                    ev.params.imgIds = list(image_ids)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            stats = [float(s) for s in ev.stats]
        else:
            stats = [0.0] * len(STAT_NAMES)
        out.update({f"{prefix}_{n}": s for n, s in zip(STAT_NAMES, stats, strict=True)})
    return out


def match_stats(gt: list[dict], pred: list[dict]) -> dict:
    """Per-image recall/precision at mask IoU 0.5 (greedy, by score order) and the mean IoU of
    each GT object with its best prediction."""
    from pycocotools import mask as mask_utils

    if not gt:
        return {"recall50": math.nan, "precision50": 0.0 if pred else math.nan, "mean_iou": math.nan}
    if not pred:
        return {"recall50": 0.0, "precision50": math.nan, "mean_iou": 0.0}
    iou = np.asarray(mask_utils.iou(pred, gt, [0] * len(gt)), np.float64).reshape(len(pred), len(gt))
    taken = np.zeros(len(gt), bool)
    tp = 0
    for p in range(len(pred)):  # predictions arrive sorted by score
        cand = np.where(~taken & (iou[p] >= 0.5), iou[p], -1)
        g = int(cand.argmax())
        if cand[g] >= 0.5:
            taken[g] = True
            tp += 1
    return {"recall50": tp / len(gt), "precision50": tp / len(pred), "mean_iou": float(iou.max(0).mean())}


def category_map(model_names: list[str], reader: Reader) -> list[int]:
    """COCO category id of each model train id 1..N, matched to the dataset's categories by name."""
    ids = reader.schema.extra.get("category_ids")
    data_names = reader.schema.names[1:]
    if ids is None:
        raise DrivelabError("the dataset carries no COCO category ids", reader.root)
    by_name = dict(zip(data_names, ids, strict=True))
    missing = [n for n in model_names[1:] if n not in by_name]
    if missing:
        raise DrivelabError(
            f"class mismatch: the model predicts {missing} which the dataset's categories "
            f"({data_names}) lack",
            reader.root,
        )
    return [by_name[n] for n in model_names[1:]]


def split_reader(reader: Reader, split: str | None) -> tuple[Reader, str]:
    """The reader restricted to ``split``; a dataset with a single split is used whatever its name."""
    splits = reader.splits
    split = "val" if split is None and "val" in splits else split
    if split in splits:
        return reader.subset(split=split), split
    if len(splits) == 1 and split in (None, "all", "val", "test"):
        return reader.subset(split=splits[0]), splits[0]
    if split in (None, "all"):
        raise DrivelabError(
            f"COCO splits have their own image ids: evaluate one split at a time "
            f"(splits: {', '.join(splits)})",
            reader.root,
        )
    raise DrivelabError(
        f"no split {split!r} in this dataset (splits: {', '.join(splits) or 'none'})", reader.root
    )


def analyze(reader: Reader, split: str, results: list[dict], options: OverUnderOptions) -> tuple[dict, list]:
    """AP + over/under summary (flat dict) and per-image rows for one split's results."""
    from drivelab.seg.instance.meta import coco_meta
    from drivelab.seg.instance.overunder import analyze_coco, gt_rles, summarize

    coco_gt = reader.coco(split)
    image_ids = [it.meta["image_id"] for it in reader.items]
    metrics = coco_metrics(coco_gt, results, image_ids)
    per_image = analyze_coco(coco_gt, results, options, image_ids)
    metrics.update(summarize(per_image))
    kept: dict[int, list[dict]] = {}
    for r in results:
        if r.get("score", 1.0) >= options.score_thresh:
            kept.setdefault(int(r["image_id"]), []).append(r)
    rows = []
    for i, ou, meta in zip(image_ids, per_image, coco_meta(coco_gt, image_ids), strict=True):
        preds = sorted(kept.get(i, []), key=lambda r: -r.get("score", 1.0))
        rows.append(
            {
                "split": split,
                **meta,
                **ou.row(),
                **match_stats(gt_rles(coco_gt, i), [r["segmentation"] for r in preds]),
            }
        )
    return metrics, [ou for ou in per_image], rows
