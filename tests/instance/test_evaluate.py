"""AP from drivelab equals pycocotools run directly on the same results json."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from drivelab.data import open_dataset
from drivelab.seg.instance.infer import encode_masks
from drivelab.seg.instance.overunder import OverUnderOptions
from drivelab.seg.instance.report import write_eval
from tests.instance.conftest import one_split


def fake_results(reader, split: str, seed: int = 0) -> list[dict]:
    """Results with known kinds of error: shifted masks, a dropped object, merged pairs, junk."""
    rng = np.random.default_rng(seed)
    coco = reader.coco(split)
    cats = reader.schema.extra["category_ids"]
    out = []
    for item in reader.subset(split=split).items:
        inst = reader.load_instances(item)
        masks = list(inst.masks)
        if len(masks) > 2:
            masks.pop(0)  # a miss
            masks[0] = masks[0] | masks[1]  # a merge
        for m in masks:
            m = np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
            out.append(
                {
                    "image_id": item.meta["image_id"],
                    "category_id": cats[0],
                    "score": float(rng.random()),
                    "segmentation": encode_masks(m[None])[0],
                    "bbox": [
                        float(v) for v in __import__("pycocotools.mask").mask.toBbox(encode_masks(m[None])[0])
                    ],
                }
            )
        junk = np.zeros(masks[0].shape, bool)
        junk[:8, :8] = True
        out.append(
            {
                "image_id": item.meta["image_id"],
                "category_id": cats[0],
                "score": 0.05,
                "segmentation": encode_masks(junk[None])[0],
                "bbox": [0.0, 0.0, 8.0, 8.0],
            }
        )
    assert coco is not None
    return out


def test_ap_equals_pycocotools_directly(tote_sets, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, val = tote_sets
    split, gt_json, _ = one_split(val)
    reader = open_dataset(val)
    results = fake_results(reader, split)
    m = write_eval(tmp_path, reader.subset(split=split), split, results, OverUnderOptions(), worst=2)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        for iou_type, prefix in (("segm", "mask"), ("bbox", "box")):
            dt_list = json.loads((tmp_path / "results.json").read_text())
            if iou_type == "bbox":
                for r in dt_list:
                    r.pop("segmentation")
            ev = COCOeval(gt, gt.loadRes(dt_list), iou_type)
            ev.evaluate(), ev.accumulate(), ev.summarize()
            names = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"]
            for k, name in enumerate(names):
                assert m[f"{prefix}_{name}"] == pytest.approx(ev.stats[k]), (prefix, name)
    assert 0.0 < m["mask_ap"] < 1.0
    # The merged pairs are under-segmentations (one per image with more than two objects).
    want = sum(len(reader.load_instances(it)) > 2 for it in reader.subset(split=split).items)
    scored = [r for r in results if r["score"] >= 0.5]
    assert m["under_instances"] <= want and m["pred_instances"] == len(scored)
    assert (tmp_path / "per_image.parquet").exists() and (tmp_path / "overunder.json").exists()


def test_no_results_scores_zero(tote_sets, tmp_path):
    _, val = tote_sets
    split, _, _ = one_split(val)
    reader = open_dataset(val).subset(split=split)
    m = write_eval(tmp_path, reader, split, [], OverUnderOptions())
    assert m["mask_ap"] == 0.0 and m["pred_instances"] == 0 and m["under_instances"] == 0
