"""Saved masks stay in each dataset's native format: Cityscapes labelIds, BDD100K train ids."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from drivelab.data import open_dataset
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
