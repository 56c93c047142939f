"""convert_dataset: index masks, exact comma10k round trip, official Cityscapes trainIds, instance PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivelab.data import open_dataset
from drivelab.data.convert import convert_dataset
from drivelab.data.validate import validate_dataset
from drivelab.errors import DrivelabError
from drivelab.io import read_label, read_rgb

# cityscapesscripts/helpers/labels.py, written out independently of drivelab.schema:
# labelId -> trainId for the 19 training classes; every other labelId -> 255.
OFFICIAL_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def _official(label_ids: np.ndarray) -> np.ndarray:
    out = np.full(label_ids.shape, 255, np.uint8)
    for label_id, train_id in OFFICIAL_TRAIN_IDS.items():
        out[label_ids == label_id] = train_id
    return out


def test_real_cityscapes_frame_to_official_train_ids(cityscapes_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "cs"
    result = convert_dataset(cityscapes_sample, "cityscapes-trainids", out, progress=False)
    assert result.count == 1
    src = next(cityscapes_sample.glob("gtFine/val/frankfurt/*_gtFine_labelIds.png"))
    dst = out / "gtFine/val/frankfurt" / src.name.replace("_labelIds", "_labelTrainIds")
    train_ids = np.asarray(Image.open(dst))
    assert Image.open(dst).mode == "L"  # 8-bit greyscale, as createTrainIdLabelImgs writes
    label_ids = np.asarray(Image.open(src))
    assert len(np.unique(label_ids)) > 5  # a real street scene, many classes
    np.testing.assert_array_equal(train_ids, _official(label_ids))
    # the mirrored image is untouched; the reader keeps reading labelIds (the source of truth) and
    # validate finds the new trainIds in agreement with them, pixel for pixel
    img = next(cityscapes_sample.glob("leftImg8bit/val/frankfurt/*.png"))
    assert (out / img.relative_to(cityscapes_sample)).read_bytes() == img.read_bytes()
    reader = open_dataset(out)
    assert reader.items[0].meta["label_kind"] == "labelIds"
    np.testing.assert_array_equal(reader[0].mask, _official(label_ids))
    assert validate_dataset(out, progress=False).ok


def test_cityscapes_trainids_in_place_adds_files_only(synth_copy) -> None:
    root = synth_copy("cityscapes")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    result = convert_dataset(root, "cityscapes-trainids", root, progress=False)
    assert result.count == 6
    for p, data in before.items():
        assert p.read_bytes() == data
    for label in root.glob("gtFine/*/*/*_labelIds.png"):
        trainids = read_label(label.with_name(label.name.replace("_labelIds", "_labelTrainIds")))
        np.testing.assert_array_equal(trainids, _official(read_label(label)))


def test_comma10k_index_round_trip_is_exact(synth_copy, tmp_path: Path) -> None:
    src = synth_copy("comma10k")
    convert_dataset(src, "index", tmp_path / "index", progress=False)
    mask = tmp_path / "index" / "masks" / sorted(p.name for p in (src / "masks").iterdir())[0]
    assert Image.open(mask).mode == "P"  # viewers show colours, readers get train ids
    ids = read_label(mask)
    assert ids.max() <= 4
    assert validate_dataset(tmp_path / "index", progress=False).ok
    convert_dataset(tmp_path / "index", "comma10k", tmp_path / "back", progress=False)
    for p in sorted((src / "masks").iterdir()):
        back = tmp_path / "back" / "masks" / p.name
        assert Image.open(back).mode == "RGB"
        np.testing.assert_array_equal(read_rgb(back), read_rgb(p))
        img = tmp_path / "back" / "imgs" / p.name
        assert img.read_bytes() == (src / "imgs" / p.name).read_bytes()
    assert (tmp_path / "back" / "files_trainable").read_text() == (src / "files_trainable").read_text()
    assert json.loads((tmp_path / "back" / "schema.json").read_text())["name"] == "comma10k"


def test_bdd_and_cityscapes_index_keep_train_ids(synth_copy, tmp_path: Path) -> None:
    for fmt in ("bdd100k", "cityscapes"):
        src = open_dataset(synth_copy(fmt))
        out = tmp_path / fmt
        convert_dataset(src.root, "index", out, progress=False)
        converted = open_dataset(out)
        assert converted.format == fmt and converted.names == src.names
        for a, b in zip(src, converted, strict=True):
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_array_equal(a.image, b.image)


def test_coco_to_instance_png(synth_copy, tmp_path: Path) -> None:
    reader = open_dataset(synth_copy("coco"))
    out = tmp_path / "inst"
    assert convert_dataset(reader.root, "instance-png", out, progress=False).count == len(reader)
    table = json.loads((out / "instances.json").read_text())
    for item in reader.items:
        inst = reader.load_instances(item)
        stem = Path(item.name).with_suffix(".png")
        ids = read_label(out / "instances" / stem)
        assert Image.open(out / "instances" / stem).mode.startswith("I")  # 16-bit
        np.testing.assert_array_equal(ids, inst.to_id_map())
        classes = read_label(out / "classes" / stem)
        np.testing.assert_array_equal(classes, reader.load(item).mask)
        assert [r["annotation_id"] for r in table[item.name]] == inst.ids.tolist()
        assert (out / "images" / item.name).read_bytes() == item.image_path.read_bytes()


def test_bad_targets(synth_copy, tmp_path: Path) -> None:
    src = synth_copy("bdd100k")
    with pytest.raises(DrivelabError, match="unknown conversion target"):
        convert_dataset(src, "yolo", tmp_path / "x", progress=False)
    with pytest.raises(DrivelabError, match="comma10k"):
        convert_dataset(src, "comma10k", tmp_path / "x", progress=False)
    with pytest.raises(DrivelabError, match="Cityscapes"):
        convert_dataset(src, "cityscapes-trainids", tmp_path / "x", progress=False)
    with pytest.raises(DrivelabError, match="must differ"):
        convert_dataset(src, "index", src, progress=False)
