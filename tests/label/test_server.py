"""Server behaviour a team relies on: a busy store answers 503 without stalling other requests,
symlinks never lead out of the dataset, read-only datasets open browse-only, write failures change
nothing, the index follows the folder, exports are safe to open in a spreadsheet, malformed bodies
get 4xx, the list pages on the server, file modes follow the umask, shared caches survive threads."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from drivelab.data import open_dataset
from drivelab.errors import DrivelabError
from drivelab.label.app import create_app
from tests.label.browser import serve
from tests.label.conftest import client


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only for this process: a read-only bind mount when running as root
    (root ignores permission bits), else permission bits. Skips when neither is possible."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, m in modes.items():
                p.chmod(m)
        return
    if shutil.which("mount") is None:
        pytest.skip("needs mount (root) or a non-root user")
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount: {r.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_busy_store_is_a_503_and_does_not_stall_the_server(comma_set):
    name = open_dataset(comma_set).items[0].name
    app = create_app(comma_set, store_timeout=1.5)
    blocker = sqlite3.connect(comma_set / ".drivelab" / "review.sqlite", isolation_level=None)
    with serve(app) as url, httpx.Client(base_url=url.rstrip("/"), timeout=30) as c:
        c.headers["X-Drivelab-CSRF"] = c.get("/api/session").json()["csrf"]
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        done = {}

        def write() -> None:
            done["review"] = c.post("/api/review", json={"name": name, "status": "done"})
            done["t"] = time.monotonic()

        t = threading.Thread(target=write)
        t.start()
        time.sleep(0.1)
        # While that write waits for the lock, everything else is answered (nothing blocks the loop).
        others = [c.get("/static/js/main.js"), c.get("/api/info"), c.get("/api/images"),
                  c.get("/api/mask", params={"name": name})]
        answered = time.monotonic()
        t.join()
        assert [r.status_code for r in others] == [200] * 4
        assert answered < done["t"], "a request waited behind the blocked write"
        r = done["review"]
        assert r.status_code == 503 and r.json()["detail"] == "store busy, retry" and r.headers["retry-after"]
        blocker.execute("ROLLBACK")
        assert c.post("/api/review", json={"name": name, "status": "done"}).status_code == 200
    blocker.close()


def test_symlinks_never_lead_out_of_the_dataset(comma_set, tmp_path):
    (comma_set / "files_trainable").unlink()
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    outside_png = tmp_path / "outside.png"
    shutil.copy(next((comma_set / "imgs").iterdir()), outside_png)
    (comma_set / "imgs" / "0090_evil.png").symlink_to(secret)
    (comma_set / "imgs" / "0091_evil.png").symlink_to(outside_png)
    first = sorted((comma_set / "imgs").glob("0000_*"))[0]
    (comma_set / "imgs" / "0092_alias.png").symlink_to(first)  # inside the dataset: fine
    c = client(comma_set)
    names = [it["name"] for it in c.get("/api/images").json()["items"]]
    assert "0092_alias.png" in names and not {"0090_evil.png", "0091_evil.png"} & set(names)
    assert c.get("/api/info").json()["skipped"]["outside_root"] == 2
    for n in ("0090_evil.png", "0091_evil.png"):
        assert c.get("/api/image", params={"name": n}).status_code == 404
    assert "top secret" not in c.get("/api/image", params={"name": "0092_alias.png"}).text
    # A mask that is a symlink out of the dataset is refused, for reading and for writing.
    victim = open_dataset(comma_set).items[1]
    victim.label_path.unlink()
    victim.label_path.symlink_to(secret)
    r = c.get("/api/mask", params={"name": victim.name})
    assert r.status_code == 422 and "outside the dataset" in r.json()["detail"]
    r = c.post("/api/mask", params={"name": victim.name, "version": 0}, content=bytes(48 * 64))
    assert r.status_code == 422 and secret.read_text() == "top secret"
    # A .drivelab symlink would move the store and the history elsewhere: refused at start.
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.rmtree(comma_set / ".drivelab")
    (comma_set / ".drivelab").symlink_to(other)
    with pytest.raises(DrivelabError, match="symlink"):
        create_app(comma_set)


def test_read_only_dataset_opens_browse_only(comma_set):
    name = open_dataset(comma_set).items[0].name
    shutil.rmtree(comma_set / ".drivelab", ignore_errors=True)
    with read_only(comma_set):
        c = client(comma_set)
        info = c.get("/api/info").json()
        assert info["writable"] is False and "read-only" in info["read_only_reason"]
        assert len(c.get("/api/images").json()["items"]) == 4
        assert c.get("/api/thumb", params={"name": name, "kind": "mask"}).status_code == 200
        assert c.get("/api/mask", params={"name": name}).status_code == 200
        r = c.post("/api/mask", params={"name": name, "version": 0}, content=bytes(48 * 64))
        assert r.status_code == 403 and "browse only" in r.json()["detail"]
        r = c.post("/api/review", json={"name": name, "status": "done"})
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
    assert not (comma_set / ".drivelab").exists()


def test_a_failed_write_changes_nothing(comma_set):
    item = open_dataset(comma_set).items[0]
    c = client(comma_set)
    before = item.label_path.read_bytes()
    history = c.get("/api/history", params={"name": item.name}).json()
    mask = np.frombuffer(c.get("/api/mask", params={"name": item.name}).content, np.uint8).copy()
    mask[:4] = 1
    with read_only(comma_set / "masks"):  # the folder turns read-only while the app runs
        r = c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask.tobytes())
    assert r.status_code == 403 and "nothing was saved" in r.json()["detail"], r.text
    assert item.label_path.read_bytes() == before
    assert c.get("/api/history", params={"name": item.name}).json() == history  # no duplicate entry
    again = c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask.tobytes())
    assert again.json()["version"] == 1


def test_index_follows_the_folder(comma_set, monkeypatch):
    from drivelab.label import index

    monkeypatch.setattr(index, "REFRESH_EVERY", 0.0)
    (comma_set / "files_trainable").unlink()
    c = client(comma_set)
    assert c.get("/api/images").json()["total"] == 4
    src = sorted((comma_set / "imgs").iterdir())[0]
    shutil.copy(src, comma_set / "imgs" / "0100_new.png")
    assert "0100_new.png" in [it["name"] for it in c.get("/api/images").json()["items"]]
    assert c.get("/api/image", params={"name": "0100_new.png"}).status_code == 200
    os.unlink(src)
    names = [it["name"] for it in c.get("/api/images").json()["items"]]
    assert src.name not in names and len(names) == 4
    # Large indexes re-read in a background thread: requests keep being answered meanwhile.
    monkeypatch.setattr(index, "BACKGROUND_AT", 1)
    shutil.copy(comma_set / "imgs" / "0100_new.png", comma_set / "imgs" / "0101_new.png")
    deadline = time.time() + 30
    while "0101_new.png" not in [it["name"] for it in c.get("/api/images").json()["items"]]:
        assert time.time() < deadline, "the background refresh never landed"
        time.sleep(0.05)


def test_csv_export_is_quoted_and_formula_safe(comma_set):
    from drivelab.label.store import ReviewStore

    (comma_set / "files_trainable").unlink()
    src = sorted((comma_set / "imgs").iterdir())[0]
    odd = 'x,"y";=1+1.png'
    shutil.copy(src, comma_set / "imgs" / odd)
    shutil.copy(sorted((comma_set / "masks").iterdir())[0], comma_set / "masks" / odd)
    c = client(comma_set)
    mask = c.get("/api/mask", params={"name": odd}).content
    assert c.post("/api/mask", params={"name": odd, "version": 0}, content=mask).status_code == 200
    evil = '=HYPERLINK("http://evil.example","click")'
    ReviewStore(comma_set).set_status(odd, "needs_fix", user=evil)
    text = c.get("/api/changed", params={"format": "csv"}).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["name", "path", "version", "status", "holder", "saves", "time"]
    row = next(r for r in rows[1:] if r[0] == odd)
    assert row[1] == f"masks/{odd}" and row[4] == "'" + evil
    assert all(line.startswith('"') for line in text.splitlines())  # every cell quoted
    assert f"masks/{odd}" in c.get("/api/changed", params={"format": "txt"}).text.splitlines()


@pytest.mark.parametrize("body", [
    b"{", b"[]", b'"text"', b"{}", b'{"name": 5}', b'{"name": "%(n)s", "status": 3}',
    b'{"name": "%(n)s", "status": "finished"}', b'{"name": "%(n)s", "status": "done", "priority": "abc"}',
    b'{"name": "%(n)s", "status": "done", "priority": NaN}',
    b'{"name": "%(n)s", "status": "done", "region": [1, 2]}',
    b'{"name": "%(n)s", "status": "done", "region": {"box": [1, 2, 3]}}', b'{"name": "%(n)s"}',
    b'{"name": "%(n)s", "comment": "   "}',
])
def test_malformed_review_bodies_are_4xx(comma_set, body):
    name = open_dataset(comma_set).items[0].name
    c = client(comma_set)
    r = c.post("/api/review", content=body.replace(b"%(n)s", name.encode()),
               headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str) and "\n" not in r.json()["detail"]
    long = c.post("/api/review", json={"name": name, "comment": "x" * 20_000})
    assert long.status_code == 422
    r = c.post("/api/commit", content=b"[1]", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    for branch in ("--upload-pack=evil", "a..b", "label/<x>", "x" * 300):
        r = c.post("/api/commit", json={"branch": branch})
        assert r.status_code == 422 and "\n" not in r.json()["detail"], branch


def test_the_list_is_filtered_sorted_and_paged_on_the_server(comma_set):
    names = [it.name for it in open_dataset(comma_set).items]
    c = client(comma_set)
    c.post("/api/review", json={"name": names[2], "status": "needs_fix", "priority": 2.0})
    c.post("/api/review", json={"name": names[0], "status": "reviewed", "priority": 5.0})
    full = c.get("/api/images", params={"sort": "priority"}).json()
    assert [it["name"] for it in full["items"]] == [names[0], names[2], names[1], names[3]]
    pages = [c.get("/api/images", params={"sort": "priority", "offset": o, "limit": 2}).json()
             for o in (0, 2, 4)]
    assert [p["total"] for p in pages] == [4, 4, 4]
    assert sum((p["items"] for p in pages), []) == full["items"] and pages[2]["items"] == []
    by_status = [it["status"] for it in c.get("/api/images", params={"sort": "status"}).json()["items"]]
    assert by_status == ["unlabelled", "done", "reviewed", "needs_fix"]  # in STATUSES order
    assert c.get("/api/images", params={"q": names[1][:4].upper()}).json()["items"][0]["name"] == names[1]
    assert c.get("/api/images", params={"limit": 5000}).status_code == 422
    assert c.get("/api/images", params={"sort": "bogus"}).status_code == 400
    assert c.get("/api/images", params={"status": "bogus"}).status_code == 400
    counts = c.get("/api/queue").json()["counts"]
    assert counts == {"unlabelled": 1, "in_progress": 0, "done": 1, "reviewed": 1, "needs_fix": 1}


def test_saved_files_follow_the_umask(comma_set):
    item = open_dataset(comma_set).items[0]
    c = client(comma_set)
    mask = c.get("/api/mask", params={"name": item.name}).content
    old = os.umask(0o002)
    try:
        assert c.post("/api/mask", params={"name": item.name, "version": 0}, content=mask).status_code == 200
    finally:
        os.umask(old)
    history = comma_set / ".drivelab" / "history" / item.name
    for p in (item.label_path, history / "v00000.png", history / "v00000.json"):
        assert p.stat().st_mode & 0o777 == 0o664, p


def test_shared_caches_under_concurrent_requests(comma_set):
    names = [it.name for it in open_dataset(comma_set).items]
    app = create_app(comma_set)
    app.state.label.thumbs.size = 3  # force evictions while threads read and write the cache
    results: dict[tuple, set] = {}
    errors = []
    with serve(app) as url:
        def hammer(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with httpx.Client(base_url=url.rstrip("/"), timeout=60) as c:
                for _ in range(12):
                    n, kind = names[rng.integers(len(names))], ("image", "mask")[rng.integers(2)]
                    hide = str(rng.integers(3))
                    r = c.get("/api/thumb", params={"name": n, "kind": kind, "hide": hide})
                    if r.status_code != 200:
                        errors.append(r.text)
                    results.setdefault((n, kind, hide if kind == "mask" else ""), set()).add(r.content)

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert all(len(v) == 1 for v in results.values())  # every key always got the same bytes
