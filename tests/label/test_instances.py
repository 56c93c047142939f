"""COCO objects through the label app's API on a synthetic tote set (drivelab.data.synth coco):
pycocotools decodes of every object, saves written as polygons where drawn as polygons and RLE where
painted, exact round trips, per-image history, conflicts, restores, refusals that change nothing,
iscrowd and box-only annotations kept, `drivelab validate` passing, model proposals and findings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from drivelab.data import open_dataset
from drivelab.data.synth import synth_dataset
from drivelab.data.validate import validate_dataset
from drivelab.label.instances import runs_of
from tests.label.conftest import client

TH, TW = 64, 80


@pytest.fixture
def totes(tmp_path) -> Path:
    root = synth_dataset("coco", tmp_path / "totes", n=5, size=(TH, TW), seed=3, split="train")
    return root


def _json(root: Path) -> dict:
    return json.loads((root / "annotations" / "train.json").read_text())


def _anns(data: dict, image_id: int) -> list[dict]:
    return [a for a in data["annotations"] if a["image_id"] == image_id]


def _decode(ann: dict, h: int = TH, w: int = TW) -> np.ndarray:
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def _mask(runs: list[int], h: int = TH, w: int = TW) -> np.ndarray:
    flat = np.repeat((np.arange(len(runs)) % 2).astype(bool), runs)
    return flat.reshape(w, h).T


def _as_sent(ob: dict) -> dict:
    return {"id": ob["id"], "category_id": ob["category_id"], "iscrowd": ob["iscrowd"], "runs": ob["runs"],
            "polygons": ob["polygons"], "keep": True}


def _validate_ok(root: Path) -> None:
    report = validate_dataset(root, progress=False)
    assert report.ok, [str(p) for p in report.problems]


def test_objects_decode_like_pycocotools_and_unchanged_save_keeps_them(totes):
    reader = open_dataset(totes)
    before = _json(totes)
    kinds = lambda it: {isinstance(a["segmentation"], list) for a in _anns(before, it.meta["image_id"])}  # noqa: E731
    item = next(it for it in reader.items if kinds(it) == {True, False})  # polygons and RLEs
    c = client(totes, user="ann")
    info = c.get("/api/info").json()
    assert info["mode"] == "instances" and info["writable"] and info["categories"][0]["train_id"] == 1
    got = c.get("/api/instances", params={"name": item.name}).json()
    anns = _anns(before, item.meta["image_id"])
    assert [o["id"] for o in got["objects"]] == [a["id"] for a in anns] and got["version"] == 0
    for o, a in zip(got["objects"], anns, strict=True):
        np.testing.assert_array_equal(_mask(o["runs"]), _decode(a))  # the page shows pycocotools' pixels
        assert o["kind"] == ("polygon" if isinstance(a["segmentation"], list) else "rle")
    assert {o["kind"] for o in got["objects"]} == {"polygon", "rle"}

    r = c.post("/api/instances", params={"name": item.name, "version": 0},
               json={"objects": [_as_sent(o) for o in got["objects"]]})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and {o["stored"] for o in r.json()["objects"]} == {"kept"}
    after = _json(totes)
    assert after["annotations"] == before["annotations"]  # nothing changed, nothing moved
    assert after["images"] == before["images"] and after["categories"] == before["categories"]
    hist = c.get("/api/history", params={"name": item.name}).json()["versions"]
    assert [(v["version"], v["current"]) for v in hist] == [(1, True), (0, False)]
    _validate_ok(totes)


def test_polygon_painted_split_and_merge_saved_exactly(totes):
    reader = open_dataset(totes)
    item, other = reader.items[1], reader.items[2]
    before = _json(totes)
    c = client(totes)
    objs = c.get("/api/instances", params={"name": item.name}).json()["objects"]
    a, b = objs[0], objs[1]
    # 1. a new polygon object (vertices on pixel centres, as the page draws them); runs = what it shows
    poly = [[10.5, 5.5, 40.5, 8.5, 30.5, 30.5, 12.5, 25.5]]
    poly_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, TH, TW))).astype(bool)
    # 2. a painted object with a hole (no COCO polygon can hold a hole: RLE)
    painted = np.zeros((TH, TW), bool)
    painted[40:60, 50:78] = True
    painted[45:52, 58:66] = False
    # 3. a polygon whose pixels the page changed afterwards: its polygon no longer fits, so RLE
    edited = poly_mask.copy()
    edited[20, 20] = not edited[20, 20]
    # 4. split: object a cut in two along a column; 5. merge: b takes c's pixels, c goes
    ma = _mask(a["runs"])
    xs = np.nonzero(ma.any(0))[0]
    cut = xs[len(xs) // 2]
    left, right = ma.copy(), ma.copy()
    left[:, cut:] = False
    right[:, :cut] = False
    merged = _mask(b["runs"]) | _mask(objs[2]["runs"])
    sent = [
        {"id": a["id"], "category_id": 1, "iscrowd": 0, "runs": runs_of(left)},
        {"id": None, "category_id": 1, "iscrowd": 0, "runs": runs_of(right)},
        {"id": b["id"], "category_id": 1, "iscrowd": 0, "runs": runs_of(merged)},
        *[_as_sent(o) for o in objs[3:]],
        {"id": None, "category_id": 1, "iscrowd": 0, "runs": runs_of(poly_mask), "polygons": poly},
        {"id": None, "category_id": 1, "iscrowd": 0, "runs": runs_of(painted)},
        {"id": None, "category_id": 1, "iscrowd": 0, "runs": runs_of(edited), "polygons": poly},
    ]
    r = c.post("/api/instances", params={"name": item.name, "version": 0}, json={"objects": sent})
    assert r.status_code == 200, r.text
    stored = [o["stored"] for o in r.json()["objects"]]
    assert stored[-3:] == ["polygon", "rle", "rle"]
    after = _json(totes)
    anns = _anns(after, item.meta["image_id"])
    assert len(anns) == len(sent)
    for ann, ob in zip(anns, sent, strict=True):  # pycocotools decodes every annotation to what was shown
        np.testing.assert_array_equal(_decode(ann), _mask(ob["runs"]))
        assert ann["area"] == int(_mask(ob["runs"]).sum())
        assert ann["bbox"] == [float(v) for v in mask_utils.toBbox(mask_utils.encode(
            np.asfortranarray(_mask(ob["runs"]).astype(np.uint8))))]
    assert anns[-3]["segmentation"] == poly and isinstance(anns[-2]["segmentation"]["counts"], str)
    ids = [x["id"] for x in after["annotations"]]
    assert len(ids) == len(set(ids)), "annotation ids must stay unique in the json"
    assert anns[0]["id"] == a["id"] and anns[2]["id"] == b["id"]
    assert objs[2]["id"] not in ids  # merged away
    # other images' annotations are untouched
    assert _anns(after, other.meta["image_id"]) == _anns(before, other.meta["image_id"])
    # the dataset's own reader sees the new objects, and validate passes
    fresh = open_dataset(totes)
    inst = fresh.load_instances(next(i for i in fresh.items if i.name == item.name))
    assert len(inst) == len(sent)
    np.testing.assert_array_equal(inst.masks[-2], painted)
    _validate_ok(totes)
    # what the page reloads is what it saved
    again = c.get("/api/instances", params={"name": item.name}).json()
    assert again["version"] == 1 and [o["runs"] for o in again["objects"]] == [o["runs"] for o in sent]


def test_conflict_history_restore_and_retry(totes):
    reader = open_dataset(totes)
    item = reader.items[0]
    users = {"ann": "ann-token-123456", "bob": "bob-token-123456"}
    from drivelab.label.app import create_app

    app = create_app(totes, users=users)
    ann, bob = client(app, token=users["ann"]), client(app, token=users["bob"])
    objs = ann.get("/api/instances", params={"name": item.name}).json()["objects"]
    v0 = _anns(_json(totes), item.meta["image_id"])
    body = {"objects": [_as_sent(o) for o in objs[1:]]}  # ann deletes the first object
    r = ann.post("/api/instances", params={"name": item.name, "version": 0}, json=body)
    assert r.json()["version"] == 1
    # the same request again (a double ctrl-s) is answered with the version it made, not a conflict
    again = ann.post("/api/instances", params={"name": item.name, "version": 0}, json=body)
    assert again.status_code == 200 and again.json() == r.json() | {"duplicate": True}
    v1 = _anns(_json(totes), item.meta["image_id"])
    # bob edits the version he opened (v0): refused, nothing written
    stale = {"objects": [_as_sent(o) for o in objs[:1]]}
    r = bob.post("/api/instances", params={"name": item.name, "version": 0}, json=stale)
    assert r.status_code == 409 and "saved by ann" in r.json()["detail"]
    assert _anns(_json(totes), item.meta["image_id"]) == v1
    # history per image; an old version is readable and restorable exactly
    old = bob.get("/api/instances", params={"name": item.name, "version": 0}).json()
    assert [o["id"] for o in old["objects"]] == [o["id"] for o in objs] and old["current"] is False
    r = bob.post("/api/restore", params={"name": item.name, "version": 0, "base": 1})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert _anns(_json(totes), item.meta["image_id"]) == v0
    hist = bob.get("/api/history", params={"name": item.name}).json()["versions"]
    assert [(v["version"], v["user"]) for v in hist] == [(2, "bob"), (1, "ann"), (0, None)]
    # the store's digest is the SHA-256 of exactly the image's annotations on disk
    from drivelab.label.instances import canonical
    from drivelab.label.store import ReviewStore

    digest = ReviewStore(totes).get(item.name)["digest"]
    assert digest == hashlib.sha256(canonical(_anns(_json(totes), item.meta["image_id"]))).hexdigest()
    # a mask upload to a COCO image is refused (objects are the unit)
    r = ann.post("/api/mask", params={"name": item.name, "version": 2}, content=bytes(TH * TW))
    assert r.status_code == 422 and "objects" in r.json()["detail"]


@pytest.mark.parametrize("body,message", [
    ({"objects": [{"id": None, "category_id": 99, "runs": [TH * TW]}]}, "unknown category_id"),
    ({"objects": [{"id": None, "category_id": 1, "runs": [10, 5]}]}, "runs sum to 15"),
    ({"objects": [{"id": None, "category_id": 1, "runs": [TH * TW]}]}, "has no pixels"),
    ({"objects": [{"id": None, "category_id": 1, "runs": [5, -1, TH * TW - 4]}]}, "non-negative"),
    ({"objects": [{"id": "x", "category_id": 1, "runs": [TH * TW]}]}, "id must be an integer"),
    ({"objects": [{"id": None, "category_id": 1, "runs": [0, TH * TW], "polygons": [[1, 2, 3]]}]},
     "even number"),
    ({"objects": [{"id": None, "category_id": 1, "runs": [0, TH * TW], "polygons": [[1, 2, 3, 4, "a", 6]]}]},
     "finite number"),
    ({"objects": {"id": 1}}, "the body must be"),
    ({"objects": [{"id": None, "category_id": 1, "iscrowd": 3, "runs": [0, TH * TW]}]}, "iscrowd"),
])
def test_bad_objects_are_refused_and_nothing_is_written(totes, body, message):
    item = open_dataset(totes).items[0]
    raw = (totes / "annotations" / "train.json").read_bytes()
    c = client(totes)
    r = c.post("/api/instances", params={"name": item.name, "version": 0}, json=body)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert "\n" not in r.json()["detail"]
    assert (totes / "annotations" / "train.json").read_bytes() == raw
    assert c.get("/api/instances", params={"name": item.name}).json()["version"] == 0
    r = c.post("/api/instances", params={"name": item.name, "version": 0}, content=b"{not json")
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]


def test_crowd_and_box_only_annotations_are_shown_and_kept(totes):
    path = totes / "annotations" / "train.json"
    data = json.loads(path.read_text())
    item = open_dataset(totes).items[0]
    iid = item.meta["image_id"]
    crowd = np.zeros((TH, TW), bool)
    crowd[2:12, 2:30] = True
    crowd_ann = {"id": 900, "image_id": iid, "category_id": 1, "iscrowd": 1, "area": int(crowd.sum()),
                 "bbox": [2.0, 2.0, 28.0, 10.0], "segmentation": {"size": [TH, TW], "counts": runs_of(crowd)}}
    box_ann = {"id": 901, "image_id": iid, "category_id": 1, "iscrowd": 0, "area": 20.0,
               "bbox": [50.0, 40.0, 5.0, 4.0]}
    data["annotations"] += [crowd_ann, box_ann]
    path.write_text(json.dumps(data))
    c = client(totes)
    got = c.get("/api/instances", params={"name": item.name}).json()
    crowd_ob = next(o for o in got["objects"] if o["id"] == 900)
    assert crowd_ob["iscrowd"] == 1 and np.array_equal(_mask(crowd_ob["runs"]), crowd)
    assert [b["id"] for b in got["boxes"]] == [901]  # no usable mask: shown as a box, not editable
    objs = [o for o in got["objects"] if o["id"] != 900]
    sent = [_as_sent(o) for o in objs[1:]] + [_as_sent(crowd_ob)]
    r = c.post("/api/instances", params={"name": item.name, "version": 0}, json={"objects": sent})
    assert r.status_code == 200, r.text
    anns = _anns(json.loads(path.read_text()), iid)
    assert box_ann in anns and crowd_ann in anns  # both byte-for-byte as they were (uncompressed counts)
    _validate_ok(totes)


def test_instance_model_proposals_above_the_threshold(totes, tmp_path):
    import torch

    from drivelab.seg.checkpoint import save_checkpoint
    from drivelab.seg.instance.infer import predict_images
    from drivelab.seg.instance.model import build_instance_model, model_spec

    reader = open_dataset(totes)
    torch.manual_seed(0)
    spec = model_spec(reader.schema.num_classes, "mobilenet_v3_small", (TH, TW), mask_channels=8,
                      mask_layers=1, box_repr=32, category_ids=reader.schema.extra["category_ids"],
                      score_thresh=0.0)
    model = build_instance_model(**spec).eval()
    ckpt = tmp_path / "inst.pt"
    save_checkpoint(ckpt, model, spec, reader.schema, task="instance", config={"size": [TH, TW]})
    c = client(totes, model=str(ckpt))
    assert c.get("/api/info").json()["model_task"] == "instance"
    item = reader.items[0]
    got = c.get("/api/instances/pred", params={"name": item.name, "score": 0.0}).json()
    want = predict_images(model, [reader.load_image(item)])[0]
    order = np.argsort(-want.scores, kind="stable")
    expect = [m for m in want.masks[order] if m.any()]
    assert got["total"] == len(want) and len(got["objects"]) == len(expect) > 0
    for o, m in zip(got["objects"], expect, strict=True):
        np.testing.assert_array_equal(_mask(o["runs"]), m)
    scores = [o["score"] for o in got["objects"]]
    assert scores == sorted(scores, reverse=True)
    cut = scores[len(scores) // 2]
    above = c.get("/api/instances/pred", params={"name": item.name, "score": cut}).json()["objects"]
    assert [o["score"] for o in above] == [s for s in scores if s >= cut]


def test_overunder_and_audit_findings_name_the_objects(totes, tmp_path):
    from drivelab.seg.instance.report import overunder_report

    reader = open_dataset(totes)
    item = max(reader.items, key=lambda it: len(reader.load_instances(it)))
    inst = reader.load_instances(item)
    iid = item.meta["image_id"]
    enc = lambda m: {"size": [TH, TW], "counts": mask_utils.encode(  # noqa: E731
        np.asfortranarray(m.astype(np.uint8)))["counts"].decode()}
    # one prediction swallowing objects 0 and 1; object 2 split into two halves
    m2 = inst.masks[2]
    ys, xs = np.nonzero(m2)
    half = np.zeros_like(m2)
    half[:, : int(np.median(xs))] = True
    results = [{"image_id": iid, "category_id": 1, "score": 0.9,
                "segmentation": enc(inst.masks[0] | inst.masks[1]), "bbox": [0.0, 0.0, float(TW), float(TH)]},
               {"image_id": iid, "category_id": 1, "score": 0.8, "segmentation": enc(m2 & half),
                "bbox": [0.0, 0.0, 1.0, 1.0]},
               {"image_id": iid, "category_id": 1, "score": 0.8, "segmentation": enc(m2 & ~half),
                "bbox": [0.0, 0.0, 1.0, 1.0]}]
    run = tmp_path / "eval"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    overunder_report(run / "results.json", totes, run, split="train", worst=0)
    assert (run / "overunder.json").exists() and (run / "per_image.parquet").exists()
    audit = tmp_path / "audit.csv"
    audit.write_text(f"rank,name,score,box\n1,{reader.items[0].name},0.12,3 4 20 30\n")
    c = client(totes, findings=[run, audit])
    regions = c.get("/api/instances", params={"name": item.name}).json()["findings"]
    by_kind = {r["kind"]: r for r in regions}
    assert by_kind["under"]["objects"] == [int(inst.ids[0]), int(inst.ids[1])]
    assert "merged 2 objects" in by_kind["under"]["note"]
    assert by_kind["over"]["objects"] == [int(inst.ids[2])] and "split" in by_kind["over"]["note"]
    first = c.get("/api/findings", params={"name": reader.items[0].name}).json()["regions"]
    assert {"box": [3.0, 4.0, 20.0, 30.0], "kind": "audit", "objects": [],
            "note": "drivelab audit: label agreement 0.120 (rank 1)"} in first
    bad = tmp_path / "nothing"
    bad.mkdir()
    from drivelab.errors import DrivelabError

    with pytest.raises(DrivelabError, match="no overunder.json"):
        client(totes, findings=[bad])


def test_kill_at_every_step_of_an_instance_save(totes):
    """A child saves an image's objects and is SIGKILLed before its 1st, 2nd ... durable step (history
    copy, manifest, the json's temp file, rename and folder fsync, the store commit) until one save
    gets through; after each kill the start-up recovery leaves the image at the last acknowledged
    version or the new one, byte for byte, every other image untouched, the json valid."""
    import os
    import shutil
    import signal

    from drivelab.label.app import create_app
    from drivelab.label.instances import canonical
    from tests.label import procs

    if not hasattr(os, "fork"):
        pytest.skip("needs fork (POSIX)")
    reader = open_dataset(totes)
    item = reader.items[0]
    iid = item.meta["image_id"]
    start = totes.parent / "start"
    shutil.copytree(totes, start)
    objs = client(totes).get("/api/instances", params={"name": item.name}).json()["objects"]
    new = [{"id": o["id"], "category_id": 1, "iscrowd": 0, "runs": o["runs"]} for o in objs[1:]]
    before = _json(start)
    others = [a for a in before["annotations"] if a["image_id"] != iid]
    ctx = procs.context()
    kills = 0
    for kill_at in range(1, 60):
        shutil.rmtree(totes)
        shutil.copytree(start, totes)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=procs.save_objects_and_maybe_die,
                           args=(str(totes), item.name, 0, json.dumps(new), kill_at, child))
        proc.start()
        proc.join(60)
        done = parent.poll() and parent.recv()
        state = create_app(totes).state.label  # the recovery pass
        v = state.store.version(item.name)
        after = _json(totes)
        assert [a for a in after["annotations"] if a["image_id"] != iid] == others
        anns = _anns(after, iid)
        if done:
            assert v == 1 == done[0]
            shown = state.instances.objects(anns, item)["objects"]
            assert [o["runs"] for o in shown] == [o["runs"] for o in new]
            assert state.instances.versions.read(item.name, 0)["mask"] == canonical(_anns(before, iid))
            break
        assert proc.exitcode == -signal.SIGKILL, proc.exitcode
        kills += 1
        if v == 0:
            assert anns == _anns(before, iid), f"kill at step {kill_at}: not the acknowledged version"
        else:  # committed just before the kill
            assert len(anns) == len(new)
        assert not list(totes.rglob("*.tmp")), list(totes.rglob("*.tmp"))
    print(f"{kills} kill points")
    assert kills >= 8, kills  # history copy + manifest + json + commit: every boundary was hit
    _validate_ok(totes)


def test_an_image_without_annotations_is_labelled_from_scratch(totes):
    path = totes / "annotations" / "train.json"
    data = json.loads(path.read_text())
    item = open_dataset(totes).items[2]
    iid = item.meta["image_id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != iid]
    path.write_text(json.dumps(data, indent=2))
    c = client(totes)
    assert c.get("/api/instances", params={"name": item.name}).json()["objects"] == []
    a = np.zeros((TH, TW), bool)
    a[5:20, 5:30] = True
    poly = [[40.5, 30.5, 70.5, 32.5, 60.5, 55.5]]
    b = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, TH, TW))).astype(bool)
    sent = [{"id": None, "category_id": 1, "runs": runs_of(a)},
            {"id": None, "category_id": 1, "runs": runs_of(b), "polygons": poly}]
    r = c.post("/api/instances", params={"name": item.name, "version": 0}, json={"objects": sent})
    assert [o["stored"] for o in r.json()["objects"]] == ["rle", "polygon"]
    raw = path.read_text()
    assert raw.startswith("{\n  ")  # the file keeps its indented style
    anns = _anns(json.loads(raw), iid)
    np.testing.assert_array_equal(_decode(anns[0]), a)
    np.testing.assert_array_equal(_decode(anns[1]), b)
    assert min(x["id"] for x in anns) > max(x["id"] for x in data["annotations"])
    _validate_ok(totes)
