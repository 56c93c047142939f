"""Label app API over a comma10k set: list/filter, masks round-trip, versions, history, safety."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from drivelab.data import open_dataset
from drivelab.io import read_rgb
from drivelab.schema import comma10k
from tests.label.conftest import client as _client


def _mask(resp) -> np.ndarray:
    h, w = int(resp.headers["x-height"]), int(resp.headers["x-width"])
    return np.frombuffer(resp.content, np.uint8).reshape(h, w)


def _on_disk(root, name) -> np.ndarray:
    mask, bad = comma10k().encode_colors(read_rgb(root / "masks" / name))
    assert not bad.any(), "saved mask has colours outside the comma10k palette"
    return mask


def test_list_and_filters(comma_set, tmp_path):
    reader = open_dataset(comma_set)
    names = [it.name for it in reader.items]
    c = _client(comma_set)
    items = c.get("/api/images").json()["items"]
    assert [it["name"] for it in items] == names
    # A mask on disk counts as done, the image without one as unlabelled.
    assert [it["status"] for it in items] == ["done"] * 3 + ["unlabelled"]
    val = c.get("/api/images", params={"split": "val"}).json()["items"]
    assert [it["name"] for it in val] == [it.name for it in reader.items if it.name.endswith("9.png")]

    c = _client(comma_set, user="ann")
    # A "user" field is ignored: the name always comes from the caller's credential.
    c.post("/api/review", json={"name": names[1], "status": "needs_fix", "comment": "curb",
                                "user": "mallory"})
    got = c.get("/api/images", params={"status": "needs_fix"}).json()["items"]
    assert [it["name"] for it in got] == [names[1]] and got[0]["holder"] == "ann"
    counts = c.get("/api/queue").json()["counts"]
    assert counts == {"unlabelled": 1, "in_progress": 0, "done": 2, "reviewed": 0, "needs_fix": 1}

    # Class filter: the images whose mask holds the class, read back from the PNGs.
    for cls in range(5):
        expect = [it.name for it in reader.items[:3] if cls in np.unique(reader.load_mask(it))]
        got = [it["name"] for it in c.get("/api/images", params={"cls": cls}).json()["items"]]
        assert got == expect

    table = tmp_path / "per_image.parquet"
    pd.DataFrame({"name": names, "loss": [0.1, 0.9, 0.5, 0.3]}).to_parquet(table)
    c2 = _client(comma_set, table=table)
    assert c2.get("/api/info").json()["has_table"]
    ranked = c2.get("/api/images", params={"sort": "loss"}).json()["items"]
    assert [it["name"] for it in ranked] == [names[1], names[2], names[3], names[0]]


def test_get_save_roundtrip_and_conflict(comma_set):
    reader = open_dataset(comma_set)
    name = reader.items[0].name
    c = _client(comma_set, user="ann")
    r = c.get("/api/mask", params={"name": name})
    assert r.headers["x-version"] == "0"
    original = _mask(r)
    assert np.array_equal(original, reader.load_mask(reader.items[0]))

    edited = original.copy()
    edited[5:9, 3:40] = 1  # lane markings
    edited[0, 0] = 4
    r = c.post("/api/mask", params={"name": name, "version": 0}, content=edited.tobytes())
    assert r.status_code == 200 and r.json()["version"] == 1
    assert np.array_equal(_on_disk(comma_set, name), edited)  # pixel-exact, palette colours only

    # gzip bodies (what the browser sends) decode to the same bytes; bob saves with his own token.
    bob = _client(comma_set, users={"ann": "ann-token-0123", "bob": "bob-token-4567"}, token=None)
    bob.headers["Authorization"] = "Bearer bob-token-4567"
    edited2 = edited.copy()
    edited2[20:30, 20:30] = 3
    r = bob.post("/api/mask", params={"name": name, "version": 1}, content=gzip.compress(edited2.tobytes()),
                 headers={"X-Mask-Encoding": "gzip", "X-User": "mallory"})
    assert r.json()["version"] == 2
    assert np.array_equal(_on_disk(comma_set, name), edited2)

    # A save from a stale version is refused and nothing is overwritten.
    stale = original.copy()
    stale[:] = 2
    r = c.post("/api/mask", params={"name": name, "version": 1}, content=stale.tobytes())
    assert r.status_code == 409
    assert "saved by bob" in r.json()["detail"] and r.json()["current_version"] == 2
    assert np.array_equal(_on_disk(comma_set, name), edited2)
    assert c.get("/api/review", params={"name": name}).json()["holder"] == "bob"


def test_history_and_restore(comma_set):
    reader = open_dataset(comma_set)
    name = reader.items[1].name
    c = _client(comma_set)
    v0 = _mask(c.get("/api/mask", params={"name": name}))
    v1 = v0.copy()
    v1[:10] = 3
    v2 = v1.copy()
    v2[-5:] = 4
    c.post("/api/mask", params={"name": name, "version": 0}, content=v1.tobytes())
    c.post("/api/mask", params={"name": name, "version": 1}, content=v2.tobytes())
    hist = c.get("/api/history", params={"name": name}).json()
    assert [(v["version"], v["current"]) for v in hist["versions"]] == [(2, True), (1, False), (0, False)]
    assert (comma_set / ".drivelab" / "history" / name / "v00000.png").exists()
    for version, expect in ((0, v0), (1, v1), (2, v2)):
        assert np.array_equal(_mask(c.get("/api/mask", params={"name": name, "version": version})), expect)

    r = c.post("/api/restore", params={"name": name, "version": 0, "base": 2})
    assert r.json()["version"] == 3
    assert np.array_equal(_on_disk(comma_set, name), v0)
    assert c.post("/api/restore", params={"name": name, "version": 1, "base": 2}).status_code == 409

    changed = c.get("/api/changed", params={"format": "txt"}).text.split()
    assert changed == [f"masks/{name}"]


def test_unlabelled_image_and_incomplete_masks(comma_set):
    reader = open_dataset(comma_set)
    item = reader.items[-1]  # its mask was removed by the fixture
    c = _client(comma_set)
    r = c.get("/api/mask", params={"name": item.name})
    mask = _mask(r)
    assert r.headers["x-exists"] == "0" and (mask == 255).all()
    mask = mask.copy()
    mask[: mask.shape[0] // 2] = 0
    # comma10k has no unlabelled colour: a mask with holes is refused with the reason.
    r = c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask.tobytes())
    assert r.status_code == 422 and "still unlabelled" in r.json()["detail"]
    mask[mask == 255] = 2
    bad = mask.copy()
    bad[0, 0] = 7
    r = c.post("/api/mask", params={"name": item.name, "version": 0}, content=bad.tobytes())
    assert r.status_code == 422 and "outside 0..4" in r.json()["detail"]
    r = c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask.tobytes()[:-1])
    assert r.status_code == 422 and "expected" in r.json()["detail"]
    r = c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask.tobytes())
    assert r.status_code == 200
    assert np.array_equal(_on_disk(comma_set, item.name), mask)
    # The reader now sees the new mask like any other.
    again = open_dataset(comma_set)
    assert np.array_equal(again.load_mask(again.item(item.name)), mask)


def test_names_are_checked_against_the_index(comma_set):
    c = _client(comma_set)
    secret = comma_set.parent / "secret.png"
    shutil.copy(comma_set / "imgs" / open_dataset(comma_set).items[0].name, secret)
    for name in ("../secret.png", "../../etc/passwd", "imgs/../../secret.png", "/etc/passwd", "masks/x.png"):
        for path in ("/api/image", "/api/mask", "/api/history", "/api/review", "/api/thumb"):
            r = c.get(path, params={"name": name})
            assert r.status_code == 404, (path, name)
        r = c.post("/api/mask", params={"name": name, "version": 0}, content=b"\0" * 3072)
        assert r.status_code == 404
    assert not (comma_set / ".." / "secret.png").resolve().read_bytes() == b"\0" * 3072


def test_token_required_when_set(comma_set):
    from fastapi.testclient import TestClient

    from drivelab.label.app import create_app

    c = TestClient(create_app(comma_set, token="s3cret-token-1"), base_url="http://127.0.0.1:8765")
    assert c.get("/api/info").status_code == 401
    assert c.get("/api/images").status_code == 401
    assert c.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/info", headers={"Authorization": "Bearer s3cret-token-1"}).status_code == 200
    # The token travels only in a header the page keeps in memory: never a query or a cookie
    # (browsers send a host's cookies to all of its ports).
    assert c.get("/api/info", params={"token": "s3cret-token-1"}).status_code == 401
    page = c.get("/", params={"token": "s3cret-token-1"})
    assert page.status_code == 200 and "set-cookie" not in page.headers
    assert c.get("/api/info").status_code == 401
    name = open_dataset(comma_set).items[0].name
    assert c.post("/api/mask", params={"name": name, "version": 0}, content=b"x").status_code == 401


def test_upload_size_limit(comma_set):
    name = open_dataset(comma_set).items[0].name
    c = _client(comma_set, max_upload=1000)
    r = c.post("/api/mask", params={"name": name, "version": 0}, content=b"\1" * 3072)
    assert r.status_code == 413
    # A small gzip body that inflates past the image size is cut off, not inflated in full.
    bomb = gzip.compress(b"\1" * 500_000)
    assert len(bomb) < 1000
    r = c.post("/api/mask", params={"name": name, "version": 0}, content=bomb,
               headers={"X-Mask-Encoding": "gzip"})
    assert r.status_code == 413 and "inflates past" in r.json()["detail"]
    assert c.get("/api/review", params={"name": name}).json()["version"] == 0


def test_model_prediction_is_optional(comma_set):
    reader = open_dataset(comma_set)
    name = reader.items[0].name
    assert _client(comma_set).get("/api/pred", params={"name": name}).status_code == 404

    class Stripes:  # any object with predict(image) -> mask stands in for a Predictor
        def predict(self, image):
            out = np.zeros(image.shape[:2], np.uint8)
            out[:, ::2] = 3
            return out

    c = _client(comma_set, model=Stripes())
    assert c.get("/api/info").json()["has_model"]
    pred = _mask(c.get("/api/pred", params={"name": name}))
    assert (pred[:, ::2] == 3).all() and (pred[:, 1::2] == 0).all()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_commit_changed_masks_to_a_branch(comma_set):
    def git(*args):
        out = subprocess.run(["git", *args], cwd=comma_set, check=True, capture_output=True, text=True)
        return out.stdout

    git("init", "-q", "-b", "master")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "imgs", "masks")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "data")
    head = git("rev-parse", "HEAD").strip()
    name = open_dataset(comma_set).items[0].name
    c = _client(comma_set, user="ann")
    assert c.get("/api/info").json()["git"]
    mask = _mask(c.get("/api/mask", params={"name": name})).copy()
    mask[:4] = 1
    c.post("/api/mask", params={"name": name, "version": 0}, content=mask.tobytes())
    r = c.post("/api/commit", json={"branch": "label/ann", "user": "mallory"})
    assert r.status_code == 200, r.text
    assert r.json()["files"] == [f"masks/{name}"]
    # The branch has the new mask; the checkout (HEAD, branch) is untouched.
    assert git("rev-parse", "HEAD").strip() == head and git("branch", "--show-current").strip() == "master"
    blob = subprocess.run(["git", "show", f"label/ann:masks/{name}"], cwd=comma_set, check=True,
                          capture_output=True).stdout
    assert blob == (comma_set / "masks" / name).read_bytes()
    author = git("log", "-1", "--format=%an <%ae>", "label/ann").strip()
    assert author == "ann <ann@drivelab.local>"  # the caller, not the body's "user"


def test_cli_refuses_lan_without_token(comma_set):
    import typer
    from typer.testing import CliRunner

    from drivelab.errors import DrivelabError
    from drivelab.label.cli import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `label` a named subcommand
    result = CliRunner().invoke(app, ["label", str(comma_set), "--host", "0.0.0.0"])
    assert isinstance(result.exception, DrivelabError) and "--token" in str(result.exception)
