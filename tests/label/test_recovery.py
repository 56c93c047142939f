"""The start-up recovery pass on crash states built by hand: an unfinished save is undone, a lost
store is rebuilt from the history, partial snapshots and temp files are removed; plus the
save-level guarantees (a repeated request is not a conflict with yourself, restores are exact)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np

from drivelab.data import open_dataset
from drivelab.label.app import create_app
from tests.label.conftest import client


def _save(c, name, version, mask):
    r = c.post("/api/mask", params={"name": name, "version": version}, content=mask.tobytes())
    assert r.status_code == 200, r.text
    return r.json()


def _mask(c, name, version=None):
    params = {"name": name} | ({"version": version} if version is not None else {})
    return np.frombuffer(c.get("/api/mask", params=params).content, np.uint8).reshape(48, 64)


def test_an_unfinished_save_is_undone_at_start(comma_set):
    item = open_dataset(comma_set).items[0]
    c = client(comma_set)
    v0 = _mask(c, item.name)
    v1 = v0.copy()
    v1[:8] = 1
    _save(c, item.name, 0, v1)
    v1_bytes = item.label_path.read_bytes()
    # A save 1 -> 2 killed after its snapshot and its new file, before the store commit:
    hist = comma_set / ".drivelab" / "history" / item.name
    shutil.copy(item.label_path, hist / "v00001.png")
    manifest = json.loads((hist / "v00000.json").read_text())
    manifest["version"] = 1
    manifest["files"]["mask"].update(copy="v00001.png", sha256=hashlib.sha256(v1_bytes).hexdigest())
    (hist / "v00001.json").write_text(json.dumps(manifest))
    other = comma_set / "masks" / next(p.name for p in (comma_set / "imgs").iterdir() if p.name != item.name)
    item.label_path.write_bytes(other.read_bytes())  # the unacknowledged version 2
    (comma_set / "masks" / f".{item.name}.abc123.tmp").write_bytes(b"half")
    (hist / ".v00002.png.xyz.tmp").write_bytes(b"half")
    state = create_app(comma_set).state.label
    assert state.recovery.rolled_back == [item.name] and state.recovery.temp_removed == 2
    assert item.label_path.read_bytes() == v1_bytes
    c = client(state.masks.reader.root)
    assert c.get("/api/history", params={"name": item.name}).json()["version"] == 1
    assert np.array_equal(_mask(c, item.name), v1) and np.array_equal(_mask(c, item.name, 0), v0)
    assert not list(comma_set.rglob("*.tmp"))


def test_a_lost_store_is_rebuilt_from_the_history(comma_set):
    item = open_dataset(comma_set).items[0]
    c = client(comma_set)
    masks = [_mask(c, item.name)]
    for v in range(3):
        m = masks[-1].copy()
        m[v * 5:(v + 1) * 5] = v + 1
        _save(c, item.name, v, m)
        masks.append(m)
    (comma_set / ".drivelab" / "review.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (comma_set / ".drivelab" / f"review.sqlite{extra}").unlink(missing_ok=True)
    state = create_app(comma_set).state.label
    assert state.recovery.store_fixed == [item.name]
    c = client(comma_set)
    assert c.get("/api/review", params={"name": item.name}).json()["version"] == 3
    for v, m in enumerate(masks):
        assert np.array_equal(_mask(c, item.name, v), m), v
    _save(c, item.name, 3, masks[0])  # and saving goes on from there


def test_partial_snapshot_copies_are_removed(comma_set):
    root = comma_set
    item = open_dataset(root).items[0]
    hist = root / ".drivelab" / "history" / item.name
    hist.mkdir(parents=True)
    (hist / "v00000.colormap.png").write_bytes(b"partial")  # a sibling copy without its manifest
    state = create_app(root).state.label
    assert state.recovery.partial_removed == 1 and not (hist / "v00000.colormap.png").exists()


def test_repeated_save_is_not_a_conflict_with_yourself(comma_set):
    item = open_dataset(comma_set).items[0]
    ann = client(comma_set, user="ann")
    m = _mask(ann, item.name).copy()
    m[:3] = 2
    first = _save(ann, item.name, 0, m)
    again = _save(ann, item.name, 0, m)  # the same request again (double ctrl-s, a lost response)
    assert (first["version"], first["duplicate"]) == (1, False)
    assert (again["version"], again["duplicate"]) == (1, True)
    assert len(ann.get("/api/history", params={"name": item.name}).json()["versions"]) == 2
    changed = m.copy()
    changed[-3:] = 3
    r = ann.post("/api/mask", params={"name": item.name, "version": 0}, content=changed.tobytes())
    assert r.status_code == 409  # different bytes from an old base: a real conflict
    bob = client(comma_set, user="bob")
    r = bob.post("/api/mask", params={"name": item.name, "version": 0}, content=m.tobytes())
    assert r.status_code == 409 and "saved by ann" in r.json()["detail"]


def test_a_damaged_history_is_reported_not_fatal(comma_set):
    item = open_dataset(comma_set).items[0]
    c = client(comma_set)
    _save(c, item.name, 0, _mask(c, item.name))
    (comma_set / ".drivelab" / "history" / item.name / "v00001.json").write_text("{not json")
    state = create_app(comma_set).state.label  # starts anyway
    assert len(state.recovery.problems) == 1 and "unreadable history manifest" in state.recovery.problems[0]
    assert "1 histories not checked" in state.recovery.line()
