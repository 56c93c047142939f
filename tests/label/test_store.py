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
