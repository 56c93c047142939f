"""Readers on every native layout: indexing, splits, schemas and exact label decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivelab import schema as schemas
from drivelab.data import detect_format, open_dataset
from drivelab.errors import DrivelabError
from drivelab.io import read_rgb, write_png

from .conftest import H, W, random_ids, random_image


# --------------------------------------------------------------------------- comma10k
def test_comma10k_files_trainable_and_val_split(comma10k_root: Path) -> None:
    reader = open_dataset(comma10k_root)
    assert reader.format == "comma10k" and detect_format(comma10k_root) == "comma10k"
    names = reader.names
    # road sets only by default; 0003 is not in files_trainable
    assert "0003_imgs_103.png" not in names and "0002_imgs_102.png" in names
    assert {it.meta["set"] for it in reader.items} == {"imgs", "imgs2"}
    assert reader.schema.num_classes == 5
    val = [it.name for it in reader.items if it.split == "val"]
    assert val == ["0009_imgs_109.png"]  # the 9.png rule; imgs2 has only 0000/0001
    everything = open_dataset(comma10k_root, trainable_only=False)
    assert "0003_imgs_103.png" in everything.names


def test_comma10k_exact_colour_decoding(comma10k_root: Path) -> None:
    reader = open_dataset(comma10k_root)
    item = reader.item("0001_imgs_101.png")
    rgb = read_rgb(item.label_path)
    expected, bad = reader.schema.encode_colors(rgb)
    assert not bad.any()
    sample = reader[reader.names.index("0001_imgs_101.png")]
    assert sample.image.shape == (H, W, 3) and sample.mask.dtype == np.uint8
    np.testing.assert_array_equal(sample.mask, expected)
    # every class id <-> its published colour
    for cid, hexcol in enumerate(["#402020", "#ff0000", "#808060", "#00ff66", "#cc00ff"]):
        assert reader.schema.hex_colors()[cid] == hexcol
    # one off-by-one colour is not silently rounded to the nearest class
    rgb = rgb.copy()
    rgb[5, 7] = (0x40, 0x20, 0x21)
    write_png(item.label_path, rgb)
    with pytest.raises(DrivelabError, match=item.label_path.name):
        reader.load_mask(item)


def test_comma10k_imgs2_and_driver_camera_sets(comma10k_root: Path) -> None:
    reader = open_dataset(comma10k_root, sets=("imgs", "imgs2", "imgsd"))
    assert reader.schema.num_classes == 6
    assert reader.schema.classes[5].name == "movable in my car"
    assert reader.schema.hex_colors()[5] == "#00ccff"
    driver = [it for it in reader.items if it.meta["set"] == "imgsd"]
    assert [it.name for it in driver] == ["imgsd/0000_imgsd_100.png", "imgsd/0001_imgsd_101.png"]
    assert tuple(driver[0].meta["size"]) == (1208, 1928)
    s = reader.load(driver[0])
    assert s.image.shape == (48, 80, 3)
    assert 5 in np.unique(s.mask)  # class 5 decodes from #00ccff


# --------------------------------------------------------------------------- Cityscapes
def _cityscapes(root: Path, label_ids: np.ndarray, split: str = "train", city: str = "aachen") -> Path:
    stem = f"{city}_000000_000019"
    write_png(
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        random_image(np.random.default_rng(1)),
    )
    write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
    return root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"


def test_cityscapes_labelids_to_trainids_and_trainids_accepted(tmp_path: Path) -> None:
    ids = np.zeros((H, W), np.uint8)
    ids[:, :16], ids[:, 16:32], ids[:, 32:48], ids[:, 48:] = 7, 26, 9, 33  # road, car, parking, bicycle
    label_path = _cityscapes(tmp_path, ids)
    reader = open_dataset(tmp_path)
    assert reader.format == "cityscapes" and reader.items[0].meta["label_kind"] == "labelIds"
    mask = reader[0].mask
    assert (mask[:, :16] == 0).all() and (mask[:, 16:32] == 13).all()
    assert (mask[:, 32:48] == 255).all() and (mask[:, 48:] == 18).all()
    # 30-class set: parking is a class of its own
    all30 = open_dataset(tmp_path, classes="30")
    assert all30.schema.num_classes == 30
    assert (all30[0].mask[:, 32:48] == all30.schema.names.index("parking")).all()
    # labelTrainIds beside labelIds: labelIds stay the source of truth (distinct content proves
    # which file was read) and validate reports the disagreement
    trainids = np.full((H, W), 5, np.uint8)
    train_path = label_path.with_name(label_path.name.replace("labelIds", "labelTrainIds"))
    write_png(train_path, trainids)
    reader = open_dataset(tmp_path)
    assert reader.items[0].meta["label_kind"] == "labelIds" and reader.items[0].label_path == label_path
    assert (reader[0].mask[:, :16] == 0).all()
    from drivelab.data.validate import validate_dataset

    report = validate_dataset(tmp_path, progress=False)
    assert [(p.path, p.kind) for p in report.problems] == [(train_path, "disagree")]
    bad = report.problems[0]
    assert bad.count == H * W and "labelIds are the source of truth" in bad.message
    # without labelIds (e.g. an `index` conversion) the trainIds file is read as is
    label_path.unlink()
    reader = open_dataset(tmp_path)
    assert reader.items[0].meta["label_kind"] == "trainIds"
    assert (reader[0].mask == 5).all()
    assert open_dataset(tmp_path, classes="30").items[0].label_path is None  # 30 classes need labelIds


def test_cityscapes_real_sample(cityscapes_sample: Path) -> None:
    reader = open_dataset(cityscapes_sample)
    assert reader.format == "cityscapes" and len(reader) == 1
    s = reader[0]
    assert s.split == "val" and s.name == "frankfurt/frankfurt_000000_000294"
    assert s.mask.shape == s.image.shape[:2]
    assert set(np.unique(s.mask).tolist()) <= set(range(19)) | {255}
    inst = reader.load_instances(reader.items[0])
    assert len(inst) > 0 and set(inst.labels.tolist()) <= set(range(11, 19))


# --------------------------------------------------------------------------- BDD100K
def test_bdd100k_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ids = random_ids(rng, 19)
    ids[0, :4] = 255
    img_dir = tmp_path / "images" / "10k" / "val"
    img_dir.mkdir(parents=True)
    Image.fromarray(random_image(rng)).save(img_dir / "abc-123.jpg", quality=90)
    Image.fromarray(random_image(rng)).save(img_dir / "unlabelled.jpg", quality=90)
    write_png(tmp_path / "labels" / "sem_seg" / "masks" / "val" / "abc-123.png", ids)
    reader = open_dataset(tmp_path)
    assert reader.format == "bdd100k" and reader.schema.num_classes == 19
    item = reader.item("abc-123.jpg")
    assert item.split == "val" and reader.item("unlabelled.jpg").label_path is None
    np.testing.assert_array_equal(reader.load_mask(item), ids)
    ids[3, 3] = 19
    write_png(item.label_path, ids)
    with pytest.raises(DrivelabError, match="abc-123.png"):
        reader.load_mask(item)


# --------------------------------------------------------------------------- COCO
def test_coco_polygons_and_rle(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    (tmp_path / "images").mkdir()
    Image.fromarray(random_image(np.random.default_rng(3))).save(tmp_path / "images" / "a.png")
    square = [10.0, 5.0, 30.0, 5.0, 30.0, 25.0, 10.0, 25.0]
    blob = np.zeros((H, W), np.uint8)
    blob[2:9, 40:60] = 1
    rle = mask_utils.encode(np.asfortranarray(blob))
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 3, "name": "box"}, {"id": 1, "name": "bag"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "segmentation": [square],
                "iscrowd": 0,
                "bbox": [10, 5, 20, 20],
                "area": 400,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 1,
                "iscrowd": 0,
                "area": 140,
                "bbox": [40, 2, 20, 7],
                "segmentation": {"size": [H, W], "counts": rle["counts"].decode()},
            },
        ],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    reader = open_dataset(tmp_path)
    assert reader.format == "coco" and reader.task == "instance"
    assert reader.items[0].split == "train"
    assert reader.schema.names == ["background", "bag", "box"]  # ascending category id
    s = reader[0]
    inst = s.instances
    assert len(inst) == 2
    assert inst.labels.tolist() == [2, 1]
    np.testing.assert_array_equal(inst.masks[1], blob.astype(bool))
    assert 380 <= inst.masks[0].sum() <= 441  # the 20x20 square, rasterised
    assert (s.mask[blob.astype(bool)] == 1).all() and s.mask[15, 20] == 2
    np.testing.assert_allclose(inst.boxes[0], [10, 5, 30, 25])


# --------------------------------------------------------------------------- folder
def test_folder_reader_recurses_and_skips_hidden(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    write_png(tmp_path / "a.png", random_image(rng))
    write_png(tmp_path / "sub" / "b.png", random_image(rng))
    write_png(tmp_path / ".drivelab" / "labels" / "a.png", random_ids(rng, 3))
    reader = open_dataset(tmp_path)
    assert reader.format == "folder" and reader.names == ["a.png", "sub/b.png"]
    assert reader[1].mask is None and reader[1].image.shape == (H, W, 3)
    (tmp_path / "sub" / "empty").mkdir()
    with pytest.raises(DrivelabError, match="no images"):
        open_dataset(tmp_path / "sub" / "empty", "folder")


def test_missing_dataset_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DrivelabError) as e:
        open_dataset(tmp_path / "nope")
    assert "nope" in str(e.value) and "\n" not in str(e.value)


def test_synth_schemas_match_builtin(synth_copy) -> None:
    assert open_dataset(synth_copy("bdd100k")).schema == schemas.bdd100k()


def test_item_lookup_by_name_follows_the_items(comma10k_root: Path) -> None:
    reader = open_dataset(comma10k_root, trainable_only=False)
    names = reader.names
    assert [reader.index_of(n) for n in names] == list(range(len(names)))
    assert reader.item(names[3]) is reader.items[3]
    with pytest.raises(KeyError):
        reader.item("nope.png")
    val = reader.subset(split="val")  # a view has its own index
    assert val.item("0009_imgs_109.png").split == "val"
    with pytest.raises(KeyError):
        val.item(names[0])
    reader.items = reader.items[::-1]  # reassigned (as the label app filters its reader)
    assert reader.item(names[0]) is reader.items[-1]
    reader.items[0], reader.items[1] = reader.items[1], reader.items[0]  # edited in place
    assert reader.item(names[-1]) is reader.items[1]
    reader.items.append(reader.items[0])  # a repeated name resolves to its first occurrence
    assert reader.index_of(reader.items[0].name) == 0


def test_reader_and_validate_share_one_file_index(comma10k_root: Path) -> None:
    from drivelab.data.comma10k import index_files

    reader = open_dataset(comma10k_root, sets=("imgs", "imgs2", "imgsd"), trainable_only=False)
    index = index_files(comma10k_root)
    assert [(e.name, e.image, e.labels.get("mask")) for e in index.entries] == \
        [(it.name, it.image_path, it.label_path) for it in reader.items]
    (comma10k_root / "masks" / "0002_imgs_102.png").unlink()  # the index keeps the unlabelled image
    (comma10k_root / "imgs" / "0004_imgs_104.png").unlink()  # and the orphan mask, image None
    index = index_files(comma10k_root)
    by_name = {e.name: e for e in index.entries}
    assert by_name["0002_imgs_102.png"].labels == {} and by_name["0004_imgs_104.png"].image is None
    reader = open_dataset(comma10k_root, trainable_only=False)
    assert reader.item("0002_imgs_102.png").label_path is None and "0004_imgs_104.png" not in reader.names
