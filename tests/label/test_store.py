"""ReviewStore: statuses, comments, version check, changed list; shared by app and data engine."""

from __future__ import annotations

import threading

import pytest

from drivelab.errors import DrivelabError
from drivelab.label.store import ReviewStore, VersionConflict


def test_status_comments_priority_region(tmp_path):
    store = ReviewStore(tmp_path)
    assert (tmp_path / ".drivelab" / "review.sqlite").exists()
    assert store.get("a.png")["status"] == "unlabelled" and store.get("a.png")["version"] == 0
    rec = store.set_status("a.png", "needs_fix", user="engine", comment="loss 2.3", priority=2.3,
                           region=[1, 2, 30, 40])
    assert rec["status"] == "needs_fix" and rec["holder"] == "engine" and rec["region"] == [1, 2, 30, 40]
    store.set_status("b.png", "in_progress", user="ann")
    store.add_comment("a.png", "fixed the curb", user="ann")
    # A reopened store sees the same data (it is on disk, not in memory).
    again = ReviewStore(tmp_path)
    assert [c["text"] for c in again.get("a.png")["comments"]] == ["loss 2.3", "fixed the curb"]
    assert again.get("a.png")["holder"] == "engine"  # a comment does not change the holder
    assert [r["name"] for r in again.list()] == ["a.png", "b.png"]  # priority first
    assert [r["name"] for r in again.list("in_progress")] == ["b.png"]
    with pytest.raises(DrivelabError, match="unknown review status"):
        again.set_status("a.png", "finished")


def test_saving_bumps_version_and_refuses_stale(tmp_path):
    store = ReviewStore(tmp_path)
    with store.saving("a.png", 0, user="ann") as v:
        assert v == 1
    assert store.version("a.png") == 1 and store.get("a.png")["status"] == "in_progress"
    with pytest.raises(VersionConflict, match="saved by ann") as e:
        with store.saving("a.png", 0, user="bob"):
            pass
    assert e.value.current == 1
    # A failing write does not bump the version.
    with pytest.raises(RuntimeError):
        with store.saving("a.png", 1, user="bob"):
            raise RuntimeError("disk full")
    assert store.version("a.png") == 1
    assert [c["name"] for c in store.changed()] == ["a.png"]


def test_concurrent_saves_one_wins(tmp_path):
    store = ReviewStore(tmp_path)
    barrier, results = threading.Barrier(4), []

    def save(user):
        barrier.wait()
        try:
            with ReviewStore(tmp_path).saving("x.png", 0, user=user):
                results.append(user)
        except VersionConflict:
            results.append("conflict")

    threads = [threading.Thread(target=save, args=(f"u{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("conflict") == 3 and store.version("x.png") == 1


def test_changes_since_returns_only_what_changed(tmp_path):
    store = ReviewStore(tmp_path)
    seq0, rows = store.changes_since(-1)
    assert rows == []
    store.set_status("a.png", "done", user="ann")
    store.add_comment("b.png", "look here", user="bob")
    seq1, rows = store.changes_since(seq0)
    assert seq1 > seq0 and sorted(r["name"] for r in rows) == ["a.png", "b.png"]
    assert next(r for r in rows if r["name"] == "b.png")["n_comments"] == 1
    with store.saving("a.png", 0, user="ann", digest="d" * 64):
        pass
    seq2, rows = store.changes_since(seq1)
    assert [(r["name"], r["version"], r["digest"]) for r in rows] == [("a.png", 1, "d" * 64)]
    assert store.changes_since(seq2) == (seq2, [])


def test_busy_store_raises_store_busy(tmp_path):
    import sqlite3

    from drivelab.label.store import StoreBusy

    store = ReviewStore(tmp_path, timeout=0.2)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy, match="store busy, retry"):
            store.set_status("a.png", "done")
        assert store.get("a.png")["status"] == "unlabelled"  # reads still work (WAL)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_a_store_from_the_first_release_is_migrated(tmp_path):
    import sqlite3

    folder = tmp_path / ".drivelab"
    folder.mkdir()
    db = sqlite3.connect(folder / "review.sqlite")
    db.executescript("""
        CREATE TABLE review (name TEXT PRIMARY KEY, status TEXT NOT NULL DEFAULT 'unlabelled',
            holder TEXT, priority REAL, region TEXT, version INTEGER NOT NULL DEFAULT 0,
            updated REAL NOT NULL);
        CREATE TABLE comments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, user TEXT,
            text TEXT NOT NULL, time REAL NOT NULL);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
            kind TEXT NOT NULL, user TEXT, status TEXT, version INTEGER, time REAL NOT NULL);
        INSERT INTO review (name, status, holder, version, updated)
            VALUES ('a.png', 'needs_fix', 'ann', 3, 1);
        INSERT INTO comments (name, user, text, time)
            VALUES ('a.png', 'ann', 'x', 1), ('a.png', 'bob', 'y', 2);
    """)
    db.commit()
    db.close()
    store = ReviewStore(tmp_path)
    rec = store.get("a.png")
    assert rec["version"] == 3 and rec["n_comments"] == 2 and rec["status"] == "needs_fix"
    store.set_status("a.png", "done")
    assert store.changes_since(0)[1][0]["name"] == "a.png"


def test_read_only_store(tmp_path):
    from drivelab.label.store import ReadOnlyStore

    ReviewStore(tmp_path).set_status("a.png", "done", user="ann")
    ro = ReviewStore(tmp_path, read_only=True)
    assert ro.get("a.png")["holder"] == "ann" and ro.list()[0]["name"] == "a.png"
    with pytest.raises(ReadOnlyStore):
        ro.set_status("a.png", "needs_fix")
    empty = ReviewStore(tmp_path / "nothing-here", read_only=True)  # no store yet: reads as empty
    assert empty.list() == [] and empty.version("x") == 0
    assert not (tmp_path / "nothing-here").exists()
