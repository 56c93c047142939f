"""Per-image metadata on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from drivelab.seg.instance.infer import encode_masks
from drivelab.seg.instance.meta import image_meta


def test_counts_areas_occlusions_and_small_objects():
    h, w = 100, 100
    masks = np.zeros((4, h, w), bool)
    masks[0, 0:50, 0:50] = True  # 2500 px
    masks[1, 40:60, 40:80] = True  # overlaps 0 (10x10 px) -> one occlusion
    masks[2, 90:95, 90:95] = True  # 25 px: small
    masks[3, 60:70, 0:50] = True  # touches nothing
    m = image_meta(encode_masks(masks), h, w)
    assert m["instances"] == 4
    assert m["occlusions"] == 1
    assert m["small"] == 3  # 25, 500 and 800 px are under 32x32 = 1024 px; 2500 is not
    assert m["area_frac_max"] == pytest.approx(0.25)
    assert m["area_frac_min"] == pytest.approx(25 / 1e4)
    union = masks.any(0).sum() / 1e4
    assert m["coverage"] == pytest.approx(union)
    assert m["box_overlaps"] == 1


def test_empty_image():
    m = image_meta([], 10, 10)
    assert m["instances"] == 0 and m["occlusions"] == 0 and m["coverage"] == 0.0
