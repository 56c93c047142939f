"""Review store: who labels what, in which state, with which comments; in SQLite beside the dataset.

Replaces comma10k's shared spreadsheet. One file, ``<dataset>/.drivelab/review.sqlite``, shared by
the label app, the data engine (which flags suspect masks as ``needs_fix``) and anyone with sqlite3.

Tables
    review    one row per image that was ever touched: status, holder, priority, suspect region,
              mask version (bumped by every save: the optimistic-concurrency token)
    comments  free text per image, appended, never edited
    events    every status change and save, for "who did what" and the changed-masks export

A name without a row is ``unlabelled`` with version 0. Every call opens its own short connection,
so the store is safe to use from the app's worker threads and from other processes at once.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError

STATUSES = ("unlabelled", "in_progress", "done", "reviewed", "needs_fix")
DB_NAME = "review.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS review (
    name     TEXT PRIMARY KEY,
    status   TEXT NOT NULL DEFAULT 'unlabelled',
    holder   TEXT,
    priority REAL,
    region   TEXT,               -- JSON: e.g. [x0, y0, x1, y1] or {"box": [...], "note": ...}
    version  INTEGER NOT NULL DEFAULT 0,
    updated  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS comments (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    name  TEXT NOT NULL,
    user  TEXT,
    text  TEXT NOT NULL,
    time  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_name ON comments(name);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL,       -- 'status' | 'save' | 'restore'
    user    TEXT,
    status  TEXT,
    version INTEGER,
    time    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_name ON events(name);
"""


class VersionConflict(DrivelabError):
    """A save based on an older version of a mask than the one stored (someone else saved first)."""

    def __init__(self, name: str, expected: int, current: int, holder: str | None = None) -> None:
        self.name, self.expected, self.current, self.holder = name, expected, current, holder
        by = f" by {holder}" if holder else ""
        super().__init__(
            f"mask {name!r} was saved{by} since you opened it (your version {expected}, "
            f"stored version {current}); reload it and redo your change"
        )


class ReviewStore:
    """Review status, holders, comments and mask versions of one dataset."""

    def __init__(self, dataset_root: str | Path) -> None:
        self.root = Path(dataset_root)
        self.path = self.root / ".drivelab" / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            # WAL: readers never block the writer (the app reads while a save is in progress).
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.commit()
        finally:
            db.close()

    # -- connection ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN ourselves, so a write lock can be taken up front.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any]:
        """The record of one image (defaults when never touched: ``unlabelled``, version 0)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM review WHERE name = ?", (name,)).fetchone()
            comments = db.execute(
                "SELECT user, text, time FROM comments WHERE name = ? ORDER BY id", (name,)
            ).fetchall()
        rec = _record(row) if row is not None else _default(name)
        rec["comments"] = [dict(c) for c in comments]
        return rec

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        """Records of every touched image (optionally one status), highest priority first."""
        if status is not None:
            _check_status(status)
        with self._connect() as db:
            q = "SELECT * FROM review" + (" WHERE status = ?" if status else "")
            q += " ORDER BY priority IS NULL, priority DESC, name"
            rows = db.execute(q, (status,) if status else ()).fetchall()
            counts = dict(db.execute("SELECT name, COUNT(*) FROM comments GROUP BY name").fetchall())
        out = []
        for row in rows:
            rec = _record(row)
            rec["n_comments"] = counts.get(rec["name"], 0)
            out.append(rec)
        return out

    def status(self, name: str) -> str:
        return self.get(name)["status"]

    def version(self, name: str) -> int:
        with self._connect() as db:
            row = db.execute("SELECT version FROM review WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The event log (status changes, saves, restores), oldest first."""
        with self._connect() as db:
            q = "SELECT * FROM events" + (" WHERE name = ?" if name else "") + " ORDER BY id"
            return [dict(r) for r in db.execute(q, (name,) if name else ()).fetchall()]

    def changed(self, since: float | None = None) -> list[dict[str, Any]]:
        """Masks saved (or restored) at least once, optionally since a unix time: the export list."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT e.name, MAX(e.time) AS time, COUNT(*) AS saves, r.version, r.status, r.holder "
                "FROM events e LEFT JOIN review r ON r.name = e.name "
                "WHERE e.kind IN ('save', 'restore') AND e.time >= ? GROUP BY e.name ORDER BY e.name",
                (since or 0.0,),
            ).fetchall()
        return [dict(r) for r in rows]

    # -- writing -------------------------------------------------------------------------------
    def set_status(
        self,
        name: str,
        status: str,
        *,
        user: str | None = None,
        comment: str | None = None,
        priority: float | None = None,
        region: Any = None,
    ) -> dict[str, Any]:
        """Set an image's status; ``user`` becomes its holder, ``comment`` is appended,
        ``priority`` / ``region`` (any JSON value, e.g. a suspect box) replace the stored ones
        when given. Returns the updated record."""
        _check_status(status)
        now = time.time()
        with self._connect(immediate=True) as db:
            _ensure_row(db, name, now)
            sets, args = ["status = ?", "updated = ?"], [status, now]
            if user is not None:
                sets.append("holder = ?")
                args.append(user)
            if priority is not None:
                sets.append("priority = ?")
                args.append(float(priority))
            if region is not None:
                sets.append("region = ?")
                args.append(json.dumps(region))
            db.execute(f"UPDATE review SET {', '.join(sets)} WHERE name = ?", (*args, name))
            if comment:
                db.execute(
                    "INSERT INTO comments (name, user, text, time) VALUES (?, ?, ?, ?)",
                    (name, user, comment, now),
                )
            db.execute(
                "INSERT INTO events (name, kind, user, status, time) VALUES (?, 'status', ?, ?, ?)",
                (name, user, status, now),
            )
        return self.get(name)

    def add_comment(self, name: str, text: str, *, user: str | None = None) -> dict[str, Any]:
        """Append a comment without changing the status."""
        now = time.time()
        with self._connect(immediate=True) as db:
            _ensure_row(db, name, now)
            db.execute(
                "INSERT INTO comments (name, user, text, time) VALUES (?, ?, ?, ?)", (name, user, text, now)
            )
        return self.get(name)

    @contextlib.contextmanager
    def saving(
        self, name: str, expected_version: int, *, user: str | None = None, kind: str = "save"
    ) -> Iterator[int]:
        """Hold the store's write lock while a mask is written; yields the new version.

        Raises ``VersionConflict`` when the stored version is not ``expected_version``. The
        version is bumped only if the body (which writes the files) finishes without error,
        and no second saver can pass the check until then, even from another process.
        """
        now = time.time()
        with self._connect(immediate=True) as db:
            _ensure_row(db, name, now)
            row = db.execute("SELECT version, holder FROM review WHERE name = ?", (name,)).fetchone()
            if int(row["version"]) != int(expected_version):
                raise VersionConflict(name, int(expected_version), int(row["version"]), row["holder"])
            new = int(row["version"]) + 1
            yield new
            sets = "version = ?, updated = ?" + (", holder = ?" if user else "")
            args = (new, now, user) if user else (new, now)
            db.execute(f"UPDATE review SET {sets} WHERE name = ?", (*args, name))
            # A mask that was never labelled becomes in_progress on its first save.
            db.execute(
                "UPDATE review SET status = 'in_progress' WHERE name = ? AND status = 'unlabelled'", (name,)
            )
            db.execute(
                "INSERT INTO events (name, kind, user, version, time) VALUES (?, ?, ?, ?, ?)",
                (name, kind, user, new, now),
            )


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise DrivelabError(f"unknown review status {status!r}; choose one of {', '.join(STATUSES)}")


def _ensure_row(db: sqlite3.Connection, name: str, now: float) -> None:
    db.execute("INSERT OR IGNORE INTO review (name, updated) VALUES (?, ?)", (name, now))


def _default(name: str) -> dict[str, Any]:
    return {
        "name": name, "status": "unlabelled", "holder": None, "priority": None,
        "region": None, "version": 0, "updated": None,
    }


def _record(row: sqlite3.Row) -> dict[str, Any]:
    rec = dict(row)
    rec["region"] = json.loads(rec["region"]) if rec["region"] else None
    return rec
