"""Over-/under-segmentation on hand-made masks where the answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from drivelab.seg.instance.infer import encode_masks
from drivelab.seg.instance.overunder import (
    OverUnderOptions,
    analyze_coco,
    analyze_masks,
    draw_overunder,
    ioa_matrix,
    summarize,
    worst,
)

H, W = 64, 96


def box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def stack(*masks: np.ndarray) -> np.ndarray:
    return np.array(masks, bool).reshape(-1, H, W)


# One scene, five cases side by side: split object, merged pair, clean match, miss, false positive.
SPLIT_GT = box(0, 0, 20, 20)
SPLIT_PRED = (box(0, 0, 20, 10), box(0, 10, 20, 20))
MERGE_GT = (box(0, 30, 20, 40), box(0, 40, 20, 50))
MERGE_PRED = box(0, 30, 20, 50)
CLEAN = box(30, 0, 50, 20)
MISS = box(30, 30, 50, 50)
FALSE_POS = box(30, 60, 50, 80)


def test_ioa_is_intersection_over_the_second_area():
    a, b = box(0, 0, 10, 10), box(0, 0, 10, 5)  # b lies inside a, half of a's area
    m = ioa_matrix(encode_masks(stack(a)), encode_masks(stack(b)))
    assert m.shape == (1, 1) and m[0, 0] == pytest.approx(1.0)  # |a∩b| / |b|
    m = ioa_matrix(encode_masks(stack(b)), encode_masks(stack(a)))
    assert m[0, 0] == pytest.approx(0.5)  # |a∩b| / |a|


def test_object_split_in_two_is_one_over_segmentation():
    r = analyze_masks(stack(SPLIT_GT), stack(*SPLIT_PRED))
    assert (r.n_over, r.n_under) == (1, 0)
    assert r.over == [(0, [0, 1])] and r.over_segments == 2.0 and math.isnan(r.under_segments)


def test_two_objects_merged_is_one_under_segmentation():
    r = analyze_masks(stack(*MERGE_GT), stack(MERGE_PRED))
    assert (r.n_under, r.n_over) == (1, 0)
    assert r.under == [(0, [0, 1])] and r.under_segments == 2.0


@pytest.mark.parametrize(
    "gt,pred",
    [(stack(CLEAN), stack(CLEAN)), (stack(MISS), stack()), (stack(), stack(FALSE_POS))],
    ids=["clean", "miss", "false-positive"],
)
def test_clean_match_miss_and_false_positive_offend_nothing(gt, pred):
    r = analyze_masks(gt, pred)
    assert (r.n_under, r.n_over) == (0, 0)
    assert (r.n_gt, r.n_pred) == (len(gt), len(pred))


def test_all_cases_in_one_image_and_dataset_summary():
    gt = stack(SPLIT_GT, *MERGE_GT, CLEAN, MISS)
    pred = stack(*SPLIT_PRED, MERGE_PRED, CLEAN, FALSE_POS)
    r = analyze_masks(gt, pred, name="scene")
    assert r.under == [(2, [1, 2])]  # the merging prediction covers GT 1 and 2
    assert r.over == [(0, [0, 1])]  # GT 0 holds predictions 0 and 1
    clean = analyze_masks(stack(CLEAN), stack(CLEAN), name="clean")
    s = summarize([r, clean])
    assert s["images"] == 2 and s["gt_instances"] == 6 and s["pred_instances"] == 6
    assert (s["under_images"], s["under_instances"], s["merged_gt"]) == (1, 1, 2)
    assert (s["over_images"], s["over_instances"], s["fragments"]) == (1, 1, 2)
    assert s["under_image_rate"] == 0.5 and s["over_image_rate"] == 0.5
    assert s["under_instance_rate"] == pytest.approx(1 / 6) and s["over_instance_rate"] == pytest.approx(
        1 / 6
    )
    assert [w.name for w in worst([clean, r])] == ["scene"]
    picture = draw_overunder(np.zeros((H, W, 3), np.uint8), gt, pred, np.ones(len(pred)), r)
    assert picture.ndim == 3 and picture.shape[1] > 3 * W and picture.shape[0] > H
    assert (picture[..., 0] > 200).any()  # the under-segmenting prediction is filled red


def test_thresholds_are_options():
    gt = stack(box(0, 0, 20, 10), box(0, 10, 20, 20))
    pred = stack(box(3, 0, 20, 20))  # covers 85% of each object
    assert analyze_masks(gt, pred).n_under == 1
    assert analyze_masks(gt, pred, OverUnderOptions(under_thresh=0.9)).n_under == 0
    # Three fragments; at min_segments=3 it still counts, at 4 it does not.
    frags = stack(box(0, 0, 20, 6), box(0, 6, 20, 12), box(0, 12, 20, 20))
    assert analyze_masks(stack(box(0, 0, 20, 20)), frags, OverUnderOptions(min_segments=3)).over_segments == 3
    assert analyze_masks(stack(box(0, 0, 20, 20)), frags, OverUnderOptions(min_segments=4)).n_over == 0


def test_analyze_coco_uses_scores_and_skips_crowd(tmp_path):
    import contextlib
    import io

    from pycocotools.coco import COCO

    gt_masks = [*MERGE_GT, CLEAN]
    anns = [
        {
            "id": k + 1,
            "image_id": 7,
            "category_id": 3,
            "segmentation": rle,
            "area": int(m.sum()),
            "bbox": [0, 0, 1, 1],
            "iscrowd": 0,
        }
        for k, (m, rle) in enumerate(zip(gt_masks, encode_masks(stack(*gt_masks)), strict=True))
    ]
    crowd = encode_masks(stack(FALSE_POS))[0]
    anns.append(
        {
            "id": 9,
            "image_id": 7,
            "category_id": 3,
            "segmentation": crowd,
            "area": 400,
            "bbox": [60, 30, 20, 20],
            "iscrowd": 1,
        }
    )
    path = tmp_path / "val.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
                "annotations": anns,
                "categories": [{"id": 3, "name": "thing"}],
            }
        )
    )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO(str(path))
    merge_rle, clean_rle = encode_masks(stack(MERGE_PRED, CLEAN))
    results = [
        {"image_id": 7, "category_id": 3, "segmentation": merge_rle, "score": 0.9},
        {"image_id": 7, "category_id": 3, "segmentation": clean_rle, "score": 0.3},
    ]
    (r,) = analyze_coco(coco, results)
    assert (r.n_gt, r.n_pred, r.n_under) == (3, 1, 1)  # crowd GT skipped, low score dropped
    (r,) = analyze_coco(coco, results, OverUnderOptions(score_thresh=0.95))
    assert (r.n_pred, r.n_under) == (0, 0)
