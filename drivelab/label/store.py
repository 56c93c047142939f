"""Review store: who labels what, in which state, with which comments; in SQLite beside the dataset.

Replaces comma10k's shared spreadsheet. One file, ``<dataset>/.drivelab/review.sqlite``, shared by
the label app, the data engine (which flags suspect masks as ``needs_fix``) and anyone with sqlite3.

Tables
    review    one row per image that was ever touched: status, holder, priority, suspect region,
              mask version (bumped by every save: the optimistic-concurrency token), the SHA-256
              of the saved mask file, a comment count and ``seq`` (the store-wide change counter
              when the row last changed, so the app can read only what changed)
    comments  free text per image, appended, never edited
    events    every status change and save, for "who did what" and the changed-masks export
    meta      the change counter

A name without a row is ``unlabelled`` with version 0. Every call opens its own short connection,
so the store is safe to use from the app's worker threads and from other processes at once. A
write waits at most ``timeout`` seconds for another writer and then raises ``StoreBusy``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError

STATUSES = ("unlabelled", "in_progress", "done", "reviewed", "needs_fix")
DB_NAME = "review.sqlite"
STORE_DIR = ".drivelab"
BUSY_TIMEOUT = 5.0  # seconds a write waits for another writer before StoreBusy

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
    kind    TEXT NOT NULL,       -- 'status' | 'save' | 'restore' | 'recover'
    user    TEXT,
    status  TEXT,
    version INTEGER,
    time    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_name ON events(name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', 0);
"""
# Columns added after the first release; stores written by it are migrated on open.
_ADDED = {
    "digest": "ALTER TABLE review ADD COLUMN digest TEXT",
    "n_comments": "ALTER TABLE review ADD COLUMN n_comments INTEGER NOT NULL DEFAULT 0",
    "seq": "ALTER TABLE review ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
}
_RECORD = "name, status, holder, priority, region, version, updated, digest, n_comments, seq"


class VersionConflict(DrivelabError):
    """A save based on an older version of a mask than the one stored (someone else saved first)."""

    def __init__(self, name: str, expected: int, current: int, holder: str | None = None,
                 digest: str | None = None, last_user: str | None = None) -> None:
        self.name, self.expected, self.current, self.holder = name, expected, current, holder
        self.digest, self.last_user = digest, last_user
        by = f" by {last_user or holder}" if (last_user or holder) else ""
        super().__init__(
            f"mask {name!r} was saved{by} since you opened it (your version {expected}, "
            f"stored version {current}); reload it and redo your change"
        )


class StoreBusy(DrivelabError):
    """Another writer held the store's lock for longer than the busy timeout."""

    def __init__(self, path: Path) -> None:
        super().__init__("store busy, retry", path)


class ReadOnlyStore(DrivelabError):
    """A write to a store opened read-only (the dataset folder cannot be written)."""


class ReviewStore:
    """Review status, holders, comments and mask versions of one dataset.

    ``read_only``: None (default) opens read-write when ``<dataset>/.drivelab`` can be created and
    written, else read-only; then reads work (an absent store reads as empty) and writes raise
    ``ReadOnlyStore``. ``timeout``: seconds a write waits for another writer (then ``StoreBusy``).
    """

    def __init__(self, dataset_root: str | Path, *, read_only: bool | None = None,
                 timeout: float = BUSY_TIMEOUT) -> None:
        self.root = Path(dataset_root)
        self.folder = self.root / STORE_DIR
        self.path = self.folder / DB_NAME
        self.timeout = float(timeout)
        _refuse_escaping_folder(self.root, self.folder)
        if read_only is None:
            read_only = not _can_write(self.root, self.folder)
        self.read_only = bool(read_only)
        self.read_only_reason = _why_read_only(self.root, self.folder) if self.read_only else None
        if not self.read_only:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.timeout)
            try:
                # WAL: readers never block the writer (the app reads while a save is in progress).
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                have = {r[1] for r in db.execute("PRAGMA table_info(review)")}
                for col, ddl in _ADDED.items():
                    if col not in have:
                        db.execute(ddl)
                        if col == "n_comments":
                            db.execute("UPDATE review SET n_comments = (SELECT COUNT(*) FROM comments c "
                                       "WHERE c.name = review.name)")
                db.execute("CREATE INDEX IF NOT EXISTS review_seq ON review(seq)")
                db.commit()
            except sqlite3.OperationalError as e:
                raise _busy_or(e, self.path) from None
            finally:
                db.close()

    # -- connection ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, immediate: bool = False, durable: bool = False) -> Iterator[sqlite3.Connection]:
        if immediate and self.read_only:
            raise ReadOnlyStore(f"read-only ({self.read_only_reason}): browse only", self.root)
        try:
            db = self._open(durable)
        except sqlite3.OperationalError as e:
            raise _busy_or(e, self.path) from None
        db.row_factory = sqlite3.Row
        try:
            try:
                db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            except sqlite3.OperationalError as e:
                raise _busy_or(e, self.path) from None
            yield db
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                raise _busy_or(e, self.path) from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _open(self, durable: bool = False) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so a write lock can be taken up front.
        if not self.read_only:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            # Mask saves commit with FULL: the commit is on disk when the save is acknowledged (WAL's
            # NORMAL can lose the last commits on power loss, which would put the store behind the
            # files). Status changes keep NORMAL: no fsync each, for the engine's bulk queueing.
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            return db
        if not self.path.exists():
            db = sqlite3.connect(":memory:", isolation_level=None)
            db.executescript(_SCHEMA)
            for ddl in _ADDED.values():
                db.execute(ddl)
            return db
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=self.timeout, isolation_level=None)
            db.execute("SELECT 1 FROM review LIMIT 1")
            return db
        except sqlite3.OperationalError:
            # A WAL database in a folder we cannot write (no -shm file): read it as a snapshot.
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any]:
        """The record of one image (defaults when never touched: ``unlabelled``, version 0)."""
        with self._connect() as db:
            row = db.execute(f"SELECT {_RECORD} FROM review WHERE name = ?", (name,)).fetchone()
            comments = db.execute(
                "SELECT user, text, time FROM comments WHERE name = ? ORDER BY id", (name,)
            ).fetchall()
        rec = _record(row) if row is not None else _default(name)
        rec["comments"] = [dict(c) for c in comments]
        return rec

    def list(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Records of every touched image (optionally one status), highest priority first."""
        if status is not None:
            _check_status(status)
        with self._connect() as db:
            q = f"SELECT {_RECORD} FROM review" + (" WHERE status = ?" if status else "")
            q += " ORDER BY priority IS NULL, priority DESC, name"
            q += f" LIMIT {int(limit)}" if limit is not None else ""
            rows = db.execute(q, (status,) if status else ()).fetchall()
        return [_record(row) for row in rows]

    def changes_since(self, seq: int) -> tuple[int, list[dict[str, Any]]]:
        """(current change counter, records changed after ``seq``): how the app keeps its
        in-memory view of a large store current with one indexed query per request."""
        with self._connect() as db:
            now = int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
            rows = [] if now == seq else db.execute(
                f"SELECT {_RECORD} FROM review WHERE seq > ?", (int(seq),)).fetchall()
        return now, [_record(r) for r in rows]

    def status(self, name: str) -> str:
        return self.get(name)["status"]

    def version(self, name: str) -> int:
        with self._connect() as db:
            row = db.execute("SELECT version FROM review WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def versions(self) -> dict[str, int]:
        """Every stored mask version above 0 (the recovery pass compares them with the history)."""
        with self._connect() as db:
            return {r[0]: int(r[1]) for r in db.execute("SELECT name, version FROM review WHERE version > 0")}

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
            seq = _ensure_row(db, name, now)
            sets, args = ["status = ?", "updated = ?", "seq = ?"], [status, now, seq]
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
                _insert_comment(db, name, user, comment, now)
            db.execute(
                "INSERT INTO events (name, kind, user, status, time) VALUES (?, 'status', ?, ?, ?)",
                (name, user, status, now),
            )
        return self.get(name)

    def add_comment(self, name: str, text: str, *, user: str | None = None) -> dict[str, Any]:
        """Append a comment without changing the status."""
        now = time.time()
        with self._connect(immediate=True) as db:
            seq = _ensure_row(db, name, now)
            db.execute("UPDATE review SET seq = ? WHERE name = ?", (seq, name))
            _insert_comment(db, name, user, text, now)
        return self.get(name)

    @contextlib.contextmanager
    def saving(
        self, name: str, expected_version: int, *, user: str | None = None, kind: str = "save",
        digest: str | None = None,
    ) -> Iterator[int]:
        """Hold the store's write lock while a mask is written; yields the new version.

        Raises ``VersionConflict`` when the stored version is not ``expected_version``. The
        version is bumped only if the body (which writes the files) finishes without error,
        and no second saver can pass the check until then, even from another process.
        ``digest`` (the SHA-256 of the new mask file) is recorded with the version.
        """
        now = time.time()
        with self._connect(immediate=True, durable=True) as db:
            row = db.execute("SELECT version, holder, digest FROM review WHERE name = ?", (name,)).fetchone()
            current = int(row["version"]) if row else 0
            if current != int(expected_version):
                last = db.execute("SELECT user FROM events WHERE name = ? AND kind IN ('save', 'restore') "
                                  "ORDER BY id DESC LIMIT 1", (name,)).fetchone()
                raise VersionConflict(name, int(expected_version), current, row["holder"] if row else None,
                                      row["digest"] if row else None, last["user"] if last else None)
            new = current + 1
            yield new
            seq = _ensure_row(db, name, now)
            sets = "version = ?, updated = ?, digest = ?, seq = ?" + (", holder = ?" if user else "")
            args = (new, now, digest, seq, user) if user else (new, now, digest, seq)
            db.execute(f"UPDATE review SET {sets} WHERE name = ?", (*args, name))
            # A mask that was never labelled becomes in_progress on its first save.
            db.execute(
                "UPDATE review SET status = 'in_progress' WHERE name = ? AND status = 'unlabelled'", (name,)
            )
            db.execute(
                "INSERT INTO events (name, kind, user, version, time) VALUES (?, ?, ?, ?, ?)",
                (name, kind, user, new, now),
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The store's write lock for a while (the recovery pass holds it so no save runs meanwhile)."""
        with self._connect(immediate=True, durable=True) as db:
            yield db

    def set_version(self, db: sqlite3.Connection, name: str, version: int, digest: str | None,
                    user: str = "drivelab-recovery") -> None:
        """Inside ``locked()``: record that the files of ``name`` are at ``version`` (recovery)."""
        now = time.time()
        seq = _ensure_row(db, name, now)
        db.execute("UPDATE review SET version = ?, digest = ?, updated = ?, seq = ? WHERE name = ?",
                   (int(version), digest, now, seq, name))
        db.execute("INSERT INTO events (name, kind, user, version, time) VALUES (?, 'recover', ?, ?, ?)",
                   (name, user, int(version), now))


def _nearest(folder: Path) -> Path:
    """The folder itself or its nearest ancestor that exists (what creating it would need to write)."""
    target = folder
    while not target.exists() and target.parent != target:
        target = target.parent
    return target


def _can_write(root: Path, folder: Path) -> bool:
    target = _nearest(folder)
    return target.is_dir() and os.access(target, os.W_OK | os.X_OK) and (
        not (folder / DB_NAME).exists() or os.access(folder / DB_NAME, os.W_OK))


def _why_read_only(root: Path, folder: Path) -> str:
    target = _nearest(folder)
    if not target.is_dir():
        return f"{target} is not a folder"
    try:
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return f"{target} is on a read-only file system"
    except OSError:
        pass
    return f"no write permission on {target}"


def _refuse_escaping_folder(root: Path, folder: Path) -> None:
    """``.drivelab`` must be a real folder inside the dataset (a symlink would move the store,
    the history and the app's labels somewhere else)."""
    if folder.is_symlink():
        raise DrivelabError(f"{STORE_DIR} is a symlink (to {os.readlink(folder)}); the label store must be "
                            "a folder inside the dataset", folder)
    if folder.exists() and not folder.resolve().is_relative_to(root.resolve()):
        raise DrivelabError(f"{STORE_DIR} resolves outside the dataset", folder)


def _busy_or(e: sqlite3.OperationalError, path: Path) -> DrivelabError:
    msg = str(e).lower()
    if "locked" in msg or "busy" in msg:
        return StoreBusy(path)
    return DrivelabError(f"review store error ({e})", path)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise DrivelabError(f"unknown review status {status!r}; choose one of {', '.join(STATUSES)}")


def _ensure_row(db: sqlite3.Connection, name: str, now: float) -> int:
    """Create the row if needed and return the next change counter value for this transaction."""
    db.execute("INSERT OR IGNORE INTO review (name, updated) VALUES (?, ?)", (name, now))
    row = db.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq' RETURNING value").fetchone()
    return int(row[0])


def _insert_comment(db: sqlite3.Connection, name: str, user: str | None, text: str, now: float) -> None:
    db.execute("INSERT INTO comments (name, user, text, time) VALUES (?, ?, ?, ?)", (name, user, text, now))
    db.execute("UPDATE review SET n_comments = n_comments + 1 WHERE name = ?", (name,))


def _default(name: str) -> dict[str, Any]:
    return {
        "name": name, "status": "unlabelled", "holder": None, "priority": None,
        "region": None, "version": 0, "updated": None, "digest": None, "n_comments": 0, "seq": 0,
    }


def _record(row: sqlite3.Row) -> dict[str, Any]:
    rec = dict(row)
    rec["region"] = json.loads(rec["region"]) if rec["region"] else None
    return rec
