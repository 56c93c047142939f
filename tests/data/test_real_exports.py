"""Readers and validate on what real exports contain: COCO annotations without a usable
segmentation, BDD100K colormaps, Cityscapes labelTrainIds beside labelIds. For every case the
reader and validate must agree: a validate problem <=> the reader refuses; a validate note <=> the
reader warns and keeps the annotation as a box or skips it; nothing <=> it loads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivelab.data import open_dataset
from drivelab.data.coco import SkippedAnnotationsWarning
from drivelab.data.validate import validate_dataset
from drivelab.errors import DrivelabError
from drivelab.io import read_label, write_png

from .conftest import H, W, random_image

SQUARE = [10.0, 5.0, 30.0, 5.0, 30.0, 25.0, 10.0, 25.0]  # 20x20, inside the 64x32 image


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode()}


def _blob() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[2:9, 40:60] = 1
    return m


BOX = [40.0, 2.0, 20.0, 7.0]
# case -> (the annotation's fields, expected verdict: mask / box / skip / error)
COCO_CASES = {
    "polygon": ({"segmentation": [SQUARE], "bbox": [10, 5, 20, 20]}, "mask"),
    "RLE": ({"segmentation": _rle(_blob()), "bbox": BOX}, "mask"),
    "uncompressed RLE": ({"segmentation": {"size": [H, W], "counts": [100, 50, H * W - 150]}}, "mask"),
    "bbox only (no segmentation)": ({"bbox": BOX}, "box"),
    "segmentation null": ({"segmentation": None, "bbox": BOX}, "box"),
    "segmentation []": ({"segmentation": [], "bbox": BOX}, "box"),
    "segmentation [] and no bbox": ({"segmentation": []}, "skip"),
    "2-point polygon": ({"segmentation": [[40, 2, 60, 9]], "bbox": BOX}, "box"),  # pycocotools: a box!
    "1-point polygon, zero bbox": ({"segmentation": [[40, 2]], "bbox": [40, 2, 0, 0]}, "skip"),
    "good polygon plus a 2-point one": ({"segmentation": [SQUARE, [1, 1, 2, 2]]}, "mask"),
    "zero-area RLE": ({"segmentation": _rle(np.zeros((H, W), np.uint8)), "bbox": BOX}, "box"),
    "zero-area polygon": ({"segmentation": [[10, 10, 20, 10, 30, 10]], "bbox": BOX}, "box"),
    "odd-length polygon": ({"segmentation": [SQUARE[:-1]]}, "error"),
    "polygon of strings": ({"segmentation": [["1", "2", "3", "4", "5", "6"]]}, "error"),
    "polygon outside the image": ({"segmentation": [[v + 1000 for v in SQUARE]]}, "error"),
    "RLE of the wrong size": ({"segmentation": _rle(np.ones((H, W + 1), np.uint8))}, "error"),
    "bbox outside the image": ({"segmentation": [SQUARE], "bbox": [50, 5, 40, 10]}, "error"),
    "bbox of 3 numbers": ({"bbox": [1, 2, 3]}, "error"),
    "unknown category": ({"segmentation": [SQUARE], "category_id": 9}, "error"),
}


def _coco(root: Path, case_fields: dict) -> Path:
    (root / "images").mkdir(parents=True)
    Image.fromarray(random_image(np.random.default_rng(3))).save(root / "images" / "a.png")
    control = {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": [SQUARE],
               "bbox": [10, 5, 20, 20], "area": 400}
    case = {"id": 2, "image_id": 7, "category_id": 2, "iscrowd": 0, **case_fields}
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "bag"}],
        "annotations": [control, case],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json"


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_coco_reader_and_validate_agree(tmp_path: Path, case: str) -> None:
    fields, verdict = COCO_CASES[case]
    ann_file = _coco(tmp_path, fields)
    report = validate_dataset(tmp_path, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reader = open_dataset(tmp_path)
        except DrivelabError as e:
            refused = e
        else:
            refused = None
    warned = [str(w.message) for w in caught if issubclass(w.category, SkippedAnnotationsWarning)]
    notes = [n for n in report.notes if "usable segmentation" in n or "< 3 points" in n]

    if verdict == "error":
        assert refused is not None and not warned
        assert [p.path for p in report.problems] == [ann_file], report
        # the reader's one line is validate's first problem, naming the file
        assert str(refused) == f"{ann_file}: {report.problems[0].message}"
        assert "\n" not in str(refused)
        return
    assert refused is None and report.ok, report
    assert warned == notes  # the same line, word for word
    s = reader[0]
    assert len(s.instances) == (2 if verdict == "mask" else 1)
    assert s.instances.labels[0] == 1  # the control annotation always loads
    if verdict == "mask":
        assert s.instances.masks[1].any() and s.box_only is None
        assert bool(warned) == (case == "good polygon plus a 2-point one")  # the dropped part is counted
    elif verdict == "box":
        assert len(warned) == 1 and "1 kept as boxes only, 0 skipped" in warned[0]
        assert s.box_only is not None and s.box_only.labels.tolist() == [2] and s.box_only.ids.tolist() == [2]
        np.testing.assert_allclose(s.box_only.boxes[0], [40, 2, 60, 9])
        assert not (s.mask == 2).any()  # a box paints no semantic mask
    else:
        assert len(warned) == 1 and "0 kept as boxes only, 1 skipped" in warned[0]
        assert s.box_only is None


def test_good_polygon_keeps_its_mask_when_a_degenerate_part_is_dropped(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    _coco(tmp_path, COCO_CASES["good polygon plus a 2-point one"][0])
    with pytest.warns(SkippedAnnotationsWarning, match="1 annotations lost polygons with < 3 points"):
        reader = open_dataset(tmp_path)
    square = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([SQUARE], H, W))).astype(bool)
    np.testing.assert_array_equal(reader[0].instances.masks[1], square)


def test_cocoeval_runs_on_the_reader_coco_with_box_only_annotations(tmp_path: Path) -> None:
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    _coco(tmp_path, COCO_CASES["bbox only (no segmentation)"][0])
    with pytest.warns(SkippedAnnotationsWarning):
        reader = open_dataset(tmp_path)
    gt = reader.coco("train")
    assert len(gt.dataset["annotations"]) == 1  # only annotations with a usable mask
    results = [{"image_id": 7, "category_id": 1, "segmentation": _rle(reader[0].instances.masks[0]),
                "score": 1.0}]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- BDD100K colormaps
def test_bdd100k_palette_is_the_official_one() -> None:
    from cityscapesscripts.helpers.labels import trainId2label

    from drivelab.data.bdd100k import OFFICIAL_CLASSES, PALETTE

    # BDD100K's train ids and colours are Cityscapes' (bdd100k/label/label.py says so).
    for tid, (name, color) in OFFICIAL_CLASSES.items():
        assert trainId2label[tid].name == name and tuple(trainId2label[tid].color) == color
        assert tuple(PALETTE[tid]) == color
    assert (PALETTE[19:] == 0).all()  # 255 and every unused id: black


def test_bdd100k_colormaps_checked_against_masks(synth_copy) -> None:
    from drivelab.data.bdd100k import PALETTE

    root = synth_copy("bdd100k")
    assert validate_dataset(root, progress=False).ok
    colormaps = sorted(root.glob("labels/sem_seg/colormaps/*/*.png"))
    mask_of = {c: root / "labels/sem_seg/masks" / c.parent.name / c.name for c in colormaps}
    # RGB colormaps (what the label app writes) are as good as palette ones
    ids = read_label(mask_of[colormaps[0]])
    write_png(colormaps[0], PALETTE[ids])
    assert validate_dataset(root, progress=False).ok
    # one pixel of the wrong colour, a missing colormap, a corrupt one
    rgb = PALETTE[ids].copy()
    rgb[4, 9] = (1, 2, 3)
    write_png(colormaps[0], rgb)
    colormaps[1].unlink()
    colormaps[2].write_bytes(colormaps[2].read_bytes()[:60])
    report = validate_dataset(root, progress=False)
    found = sorted((p.path, p.kind) for p in report.problems)
    assert found == sorted([(colormaps[0], "colormap"), (mask_of[colormaps[1]], "missing-partner"),
                            (colormaps[2], "unreadable")]), report
    bad = next(p for p in report.problems if p.kind == "colormap")
    assert bad.count == 1 and bad.bbox == (9, 4, 9, 4) and bad.colors == [("#010203", 1)]
    # a colormap drawn with another palette (comma10k's colours) disagrees wherever it differs
    from drivelab import schema as schemas

    other = schemas.comma10k().palette_256()[np.minimum(ids, 4)]
    write_png(colormaps[0], other)
    p = next(p for p in validate_dataset(root, progress=False).problems if p.kind == "colormap")
    assert p.count == int((other != PALETTE[ids]).any(-1).sum())


def test_bdd100k_without_colormaps_is_fine_with_a_note(synth_copy) -> None:
    import shutil

    root = synth_copy("bdd100k")
    shutil.rmtree(root / "labels/sem_seg/colormaps")
    report = validate_dataset(root, progress=False)
    assert report.ok and any("no labels/sem_seg/colormaps/" in n for n in report.notes)


# --------------------------------------------------------------------------- Cityscapes
def test_cityscapes_train_ids_that_disagree_with_label_ids(cityscapes_sample: Path, tmp_path: Path) -> None:
    import shutil

    from cityscapesscripts.helpers.labels import id2label

    root = tmp_path / "cs"
    shutil.copytree(cityscapes_sample, root)
    label_path = next(root.glob("gtFine/*/*/*_gtFine_labelIds.png"))
    label_ids = read_label(label_path)
    # labelTrainIds as cityscapesscripts' table defines them (trainId -1 and 255 are both ignore)
    lut = np.full(256, 255, np.uint8)
    for i, label in id2label.items():
        if i >= 0:
            lut[i] = label.trainId if 0 <= label.trainId < 255 else 255
    train_path = label_path.with_name(label_path.name.replace("_labelIds", "_labelTrainIds"))
    write_png(train_path, lut[label_ids])
    assert validate_dataset(root, progress=False).ok
    train = lut[label_ids].copy()
    road = np.argwhere(train == 0)[0]
    train[road[0], road[1] : road[1] + 3] = 1  # three road pixels become sidewalk
    write_png(train_path, train)
    report = validate_dataset(root, progress=False)
    assert [(p.path, p.kind) for p in report.problems] == [(train_path, "disagree")]
    p = report.problems[0]
    assert p.count == 3 and p.colors == [(1, 3)]
    assert p.bbox == (int(road[1]), int(road[0]), int(road[1]) + 2, int(road[0]))
    # the reader keeps reading labelIds, the source of truth
    reader = open_dataset(root)
    assert reader.items[0].label_path == label_path
    np.testing.assert_array_equal(reader[0].mask, lut[label_ids])
