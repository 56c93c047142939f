"""Saved masks stay in each dataset's native format (Cityscapes labelIds, BDD100K train ids) and their
sibling files (Cityscapes instanceIds and colour, BDD colormaps) move with them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.data import open_dataset
from drivelab.data.validate import validate_dataset
from drivelab.io import read_label
from drivelab.schema import cityscapes
from tests.label.conftest import client


def _mask(resp) -> np.ndarray:
    h, w = int(resp.headers["x-height"]), int(resp.headers["x-width"])
    return np.frombuffer(resp.content, np.uint8).reshape(h, w)


def test_cityscapes_saves_label_ids_keeping_untouched_ids(cityscapes_sample, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(cityscapes_sample, root)
    reader = open_dataset(root)
    item = reader.items[0]
    raw_before = read_label(item.label_path)
    c = client(root)
    mask = _mask(c.get("/api/mask", params={"name": item.name})).copy()
    assert np.array_equal(mask, reader.load_mask(item))
    mask[100:200, 300:600] = 13  # car
    r = c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask.tobytes())
    assert r.status_code == 200, r.text
    raw = read_label(item.label_path)
    assert np.array_equal(cityscapes("19").map_labels(raw), mask)  # reads back as what was painted
    assert (raw[100:200, 300:600] == 26).all()  # car's labelId
    outside = np.ones(raw.shape, bool)
    outside[100:200, 300:600] = False
    # Ids the 19-class set folds into "ignore" (ego vehicle, parking ...) survive outside the edit.
    assert np.array_equal(raw[outside], raw_before[outside])


def test_bdd100k_saves_train_ids(tmp_path):
    root = tmp_path / "bdd"
    (root / "images" / "10k" / "val").mkdir(parents=True)
    masks = root / "labels" / "sem_seg" / "masks" / "val"
    masks.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(root / "images" / "10k" / "val" / "a.jpg")
    Image.fromarray(np.full((32, 48), 255, np.uint8)).save(masks / "a.png")
    c = client(root)
    assert c.get("/api/info").json()["allows_unlabelled"]
    mask = np.full((32, 48), 255, np.uint8)
    mask[:, :10] = 18
    r = c.post("/api/mask", params={"name": "a.jpg", "version": 0}, content=mask.tobytes())
    assert r.status_code == 200
    saved = Image.open(masks / "a.png")
    assert saved.mode == "L" and np.array_equal(np.asarray(saved), mask)


def test_cityscapes_siblings_are_rewritten_in_the_same_save(cityscapes_sample, tmp_path):
    """labelIds, instanceIds and the colour image move together, into one history version, and a
    restore brings all three back byte for byte."""
    from drivelab.label.masks import _CS_COLORS

    root = tmp_path / "cs"
    shutil.copytree(cityscapes_sample, root)
    item = open_dataset(root).items[0]
    ids_path = item.label_path
    inst_path = Path(str(ids_path).replace("_labelIds.png", "_instanceIds.png"))
    color_path = Path(str(ids_path).replace("_labelIds.png", "_color.png"))
    Image.fromarray(_CS_COLORS[read_label(ids_path)], "RGB").convert("RGBA").save(color_path)
    before = {p: p.read_bytes() for p in (ids_path, inst_path, color_path)}
    inst_before = read_label(inst_path)
    c = client(root)
    mask = _mask(c.get("/api/mask", params={"name": item.name})).copy()
    car = inst_before >= 26000  # pixels of car instances keep their ids where they stay car
    mask[:40, :60] = 0  # road
    r = c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask.tobytes())
    assert r.status_code == 200, r.text
    ids, inst = read_label(ids_path), read_label(inst_path)
    changed = np.zeros(ids.shape, bool)
    changed[:40, :60] = True
    assert (ids[changed] == 7).all() and (inst[changed] == 7).all()  # road has no instances
    assert np.array_equal(inst[~changed], inst_before[~changed])
    assert (inst[car & ~changed] >= 26000).all()
    color = np.asarray(Image.open(color_path))
    assert color.shape[2] == 4 and np.array_equal(color[..., :3], _CS_COLORS[ids])
    assert np.array_equal(color[changed][:, :3], np.tile([128, 64, 128], (int(changed.sum()), 1)))
    report = validate_dataset(root, progress=False)  # the rewritten siblings are valid Cityscapes files
    assert report.ok, [str(p) for p in report.problems]
    # One version holds all three previous files; a restore puts them back exactly.
    hist = root / ".drivelab" / "history" / item.name
    assert sorted(p.name for p in hist.iterdir()) == [
        "v00000.color.png", "v00000.instanceIds.png", "v00000.json", "v00000.png"]
    r = c.post("/api/restore", params={"name": item.name, "version": 0, "base": 1})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert {p: p.read_bytes() for p in before} == before


def test_bdd100k_colormap_follows_the_mask(tmp_path):
    root = tmp_path / "bdd"
    (root / "images" / "10k" / "val").mkdir(parents=True)
    masks = root / "labels" / "sem_seg" / "masks" / "val"
    colors = root / "labels" / "sem_seg" / "colormaps" / "val"
    masks.mkdir(parents=True)
    colors.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(root / "images" / "10k" / "val" / "a.jpg")
    Image.fromarray(np.full((32, 48), 255, np.uint8)).save(masks / "a.png")
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(colors / "a.png")
    c = client(root)
    mask = np.full((32, 48), 255, np.uint8)
    mask[:, :10] = 13  # car
    r = c.post("/api/mask", params={"name": "a.jpg", "version": 0}, content=mask.tobytes())
    assert r.status_code == 200
    rgb = np.asarray(Image.open(colors / "a.png"))
    assert (rgb[:, :10] == (0, 0, 142)).all() and (rgb[:, 10:] == 0).all()
    assert sorted(p.name for p in (root / ".drivelab" / "history" / "a.jpg").iterdir()) == [
        "v00000.colormap.png", "v00000.json", "v00000.png"]
