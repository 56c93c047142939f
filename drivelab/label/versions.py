"""Crash-consistent, versioned saves of a set of files, with history and a recovery pass.

A save replaces the files of one item (a mask and its siblings: Cityscapes labelTrainIds, colour and
instanceIds, a BDD colormap; later a COCO instance file) as version N -> N+1. Under the review
store's write lock, in this order:

1. **snapshot**: each file of version N is copied byte for byte to ``history/NAME/vNNNNN.<role>.png``
   (the primary file to ``vNNNNN.png``), then ``vNNNNN.json`` records which files existed and their
   SHA-256; the manifest is written last, so it exists only when the snapshot is complete;
2. **write**: the new files, each through ``drivelab.io.write_bytes`` (temp, fsync, rename, fsync
   of the folder);
3. **commit**: the store records version N+1 (SQLite, synchronous=FULL) and the save is acknowledged.

So at any instant of a kill -9 the files are either version N (with or without a complete
snapshot) or partly/fully N+1 with the snapshot of N complete and the store still at N. A snapshot
of the store's *current* version therefore means "a save from here did not commit": ``recover``
(run when the app starts, and by every save for its own item) puts the snapshot's files back. No
acknowledged version is ever overwritten: history files are only written for the version the store
holds, and the store only moves forward after the new files are on disk.

The helpers are generic over roles and *slots*: a slot is a whole file (``FileSlot``, what a
``Path`` becomes) or one item's part of a file shared by many items (``drivelab.label.instances``:
one image's annotations inside a COCO json), so instance saves reuse the same version check,
history and durability. A slot reads and writes bytes; writing a part rewrites its shared file
atomically (temp, fsync, rename), so the file on disk is always a whole, parseable version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from drivelab.errors import DrivelabError
from drivelab.io import TEMP_SUFFIX, write_bytes, write_json
from drivelab.label.store import STORE_DIR, ReviewStore, VersionConflict

HISTORY = Path(STORE_DIR) / "history"
PRIMARY = "mask"  # the role of the file a reader reads (history copy: vNNNNN<suffix>)
_ENTRY = re.compile(r"^v(\d{5,})(?:\.([A-Za-z][\w-]*))?(\.[A-Za-z0-9]+)$")
_TEMP_TARGETS = (".png", ".json", ".jpg", ".jpeg")


class WriteFailed(DrivelabError):
    """A save could not write its files (permissions, read-only or full disk); nothing changed."""

    def __init__(self, message: str, path: Path | None, errno_: int | None) -> None:
        super().__init__(message, path)
        self.errno = errno_


@dataclass
class SaveResult:
    version: int
    duplicate: bool = False  # the same user saved the same bytes from the same base already


@dataclass
class RecoveryReport:
    rolled_back: list[str] = field(default_factory=list)  # names whose unacknowledged save was undone
    store_fixed: list[str] = field(default_factory=list)  # names whose store version was behind the history
    temp_removed: int = 0
    partial_removed: int = 0
    problems: list[str] = field(default_factory=list)  # histories that could not be checked

    def line(self) -> str:
        return (f"recovery: {len(self.rolled_back)} unfinished saves undone, {len(self.store_fixed)} store "
                f"versions repaired, {self.temp_removed} temp files and {self.partial_removed} partial "
                "history copies removed" + (f"; {len(self.problems)} histories not checked: "
                                            f"{self.problems[0]}" if self.problems else ""))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Slot:
    """One member of a versioned set: something that holds bytes, can be replaced atomically and
    removed. ``suffix`` names its history copies; ``where`` is what the manifest records."""

    suffix = ".bin"

    def read(self) -> bytes | None:  # None: absent
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    def where(self, root: Path) -> str:
        raise NotImplementedError


class FileSlot(Slot):
    """A whole file, written through ``drivelab.io`` (temp, fsync, rename, fsync of the folder)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.suffix = self.path.suffix

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        write_bytes(self.path, data)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def where(self, root: Path) -> str:
        try:
            return self.path.relative_to(root).as_posix()
        except ValueError:
            return str(self.path)


def as_slots(paths: dict[str, Path | Slot]) -> dict[str, Slot]:
    return {role: p if isinstance(p, Slot) else FileSlot(p) for role, p in paths.items()}


def _file_sha(slot: Path | Slot) -> str | None:
    data = (slot if isinstance(slot, Slot) else FileSlot(slot)).read()
    return None if data is None else sha256(data)


class VersionedFiles:
    """History and crash-consistent saves for the items of one dataset."""

    def __init__(self, root: str | Path, store: ReviewStore) -> None:
        self.root = Path(root)
        self.store = store
        self.history_root = self.root / HISTORY

    def history_rows(self, name: str, current_exists: bool = True) -> list[dict]:
        """An item's stored versions, newest first, for the history panel: the current one (when
        its file exists) and every kept snapshot, with the user, time and kind of the save behind
        each."""
        events = {e["version"]: e for e in self.store.events(name) if e["kind"] in ("save", "restore")}
        current = self.store.version(name)

        def row(v: int, is_current: bool) -> dict:
            e = events.get(v, {})
            return {"version": v, "current": is_current, "user": e.get("user"), "time": e.get("time"),
                    "kind": e.get("kind", "original")}

        out = [row(current, True)] if current_exists else []
        for v in reversed(self.versions(name)):
            # A snapshot of the current version (or newer) belongs to a save that has not committed.
            snap = self.manifest(name, v) if v < current else None
            if snap is not None and snap.get(PRIMARY, {}).get("copy") is not None:
                out.append(row(v, False))
        return out

    # -- layout ------------------------------------------------------------------------------
    def history_dir(self, name: str) -> Path:
        return self.history_root / name

    def copy_path(self, name: str, version: int, role: str, suffix: str) -> Path:
        tag = "" if role == PRIMARY else f".{role}"
        return self.history_dir(name) / f"v{int(version):05d}{tag}{suffix}"

    def manifest_path(self, name: str, version: int) -> Path:
        return self.history_dir(name) / f"v{int(version):05d}.json"

    def manifest(self, name: str, version: int) -> dict | None:
        """The snapshot of ``version``: {role: {"path", "sha256", "copy"}}; a history file written
        before manifests existed counts as a snapshot of the primary file alone."""
        path = self.manifest_path(name, version)
        try:
            return json.loads(path.read_text())["files"]
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, OSError) as e:
            raise DrivelabError(f"unreadable history manifest ({e})", path) from None
        for p in _entries(self.history_dir(name)).get(int(version), []):
            m = _ENTRY.match(p.name)
            if m and m.group(2) is None and m.group(3) != ".json":
                return {PRIMARY: {"path": None, "sha256": _file_sha(p), "copy": p.name}}
        return None

    def versions(self, name: str) -> list[int]:
        """Versions with a stored snapshot (complete or legacy), ascending."""
        found = []
        for v, files in _entries(self.history_dir(name)).items():
            names = {p.name for p in files}
            if f"v{v:05d}.json" in names or any(_is_primary(n) for n in names):
                found.append(v)
        return sorted(found)

    def read(self, name: str, version: int) -> dict[str, bytes]:
        """{role: bytes} of an older version (roles absent then are left out)."""
        files = self.manifest(name, version)
        if files is None:
            raise DrivelabError(f"no stored version {version}", name)
        out = {}
        for role, f in files.items():
            if f["copy"] is not None:
                out[role] = (self.history_dir(name) / f["copy"]).read_bytes()
        return out

    # -- saving ------------------------------------------------------------------------------
    def save(self, name: str, expected: int, paths: dict[str, Path | Slot], new: dict[str, bytes], *,
             user: str | None = None, kind: str = "save") -> SaveResult:
        """Replace the files of ``name`` (``paths``: every role's file or slot, existing or not;
        ``new``: the bytes to write per role, ``PRIMARY`` included) if the store is at ``expected``."""
        if PRIMARY not in new or PRIMARY not in paths:
            raise ValueError("a save needs the primary file")
        paths = as_slots(paths)
        digest = sha256(new[PRIMARY])
        try:
            with self.store.saving(name, expected, user=user, kind=kind, digest=digest) as version:
                snap, created = None, False
                try:
                    self._undo_unfinished(name, expected, paths)
                    snap, created = self._snapshot(name, expected, paths)
                    for role, data in new.items():
                        paths[role].write(data)
                except OSError as e:
                    if snap is not None:
                        self._put_back(name, snap, paths)
                        if created:
                            self._drop_snapshot(name, expected, snap)
                    target = Path(e.filename) if e.filename else self.root / paths[PRIMARY].where(self.root)
                    raise WriteFailed(f"cannot write ({e.strerror or e}); nothing was saved", target,
                                      e.errno) from None
        except VersionConflict as e:
            # A retried request (a double ctrl-s, a lost response) is not a conflict with yourself.
            if e.current == expected + 1 and e.last_user == user and e.digest == digest:
                return SaveResult(e.current, duplicate=True)
            raise
        return SaveResult(version)

    def _snapshot(self, name: str, version: int, paths: dict[str, Slot]) -> tuple[dict, bool]:
        """Copy the files of ``version`` into the history (unless that snapshot is complete already)."""
        data_of = {role: p.read() for role, p in paths.items()}
        state = {role: None if d is None else sha256(d) for role, d in data_of.items()}
        snap = self.manifest(name, version)
        if snap is not None and all(r in snap and snap[r]["sha256"] == sha for r, sha in state.items()):
            return snap, False
        files = {}
        for role, p in paths.items():
            copy = None
            if data_of[role] is not None:
                dest = self.copy_path(name, version, role, p.suffix)
                write_bytes(dest, data_of[role])
                copy = dest.name
            files[role] = {"path": p.where(self.root), "sha256": state[role], "copy": copy}
        write_json(self.manifest_path(name, version), {"version": int(version), "files": files})
        return files, True

    def _put_back(self, name: str, snap: dict, paths: dict[str, Path | Slot]) -> bool:
        """Make the files equal the snapshot again; True if anything had to change."""
        changed = False
        for role, p in as_slots(paths).items():
            want = snap.get(role)
            if want is None:
                continue  # a role the snapshot does not know (legacy history): leave it
            if _file_sha(p) == want["sha256"]:
                continue
            changed = True
            if want["copy"] is None:
                p.remove()
            else:
                p.write((self.history_dir(name) / want["copy"]).read_bytes())
        return changed

    def _drop_snapshot(self, name: str, version: int, snap: dict) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.manifest_path(name, version))
            for f in snap.values():
                if f["copy"]:
                    os.unlink(self.history_dir(name) / f["copy"])

    def _undo_unfinished(self, name: str, version: int, paths: dict[str, Path | Slot]) -> bool:
        snap = self.manifest(name, version)
        return snap is not None and self._put_back(name, snap, paths)

    # -- recovery ----------------------------------------------------------------------------
    def recover(self, paths_of: Callable[[str], dict[str, Path | Slot] | None],
                folders: Iterable[Path] = ()) -> RecoveryReport:
        """Reconcile files, history and store after a crash; holds the store's write lock so no
        save runs meanwhile. ``paths_of(name)``: the roles and files of an indexed item (None when
        the name is not in the dataset any more); ``folders``: where the dataset's masks live (their
        stale temp files are removed)."""
        report = RecoveryReport()
        if self.store.read_only:
            return report
        with self.store.locked() as db:
            stored = {r[0]: int(r[1]) for r in db.execute("SELECT name, version FROM review")}
            for name, entries in self._walk():
                try:
                    self._recover_one(db, name, entries, stored.get(name, 0), paths_of(name), report)
                except (DrivelabError, OSError) as e:
                    # One damaged history (a hand-edited manifest, an unreadable file) must not keep
                    # the app from starting: report it and leave that item as it is.
                    report.problems.append(f"{name}: {e}")
            report.temp_removed = _remove_temp(self.history_root, folders)
        return report

    def _recover_one(self, db, name: str, entries: dict[int, list[Path]], current: int,
                     paths: dict[str, Path | Slot] | None, report: RecoveryReport) -> None:
        if paths is not None:
            paths = as_slots(paths)
        snapshots = self.versions(name)
        if paths is not None and snapshots and snapshots[-1] > current:
            # The store is behind its own history (it was deleted or restored from a backup):
            # the files are the newest snapshot, or one version past it.
            top = snapshots[-1]
            snap = self.manifest(name, top)
            same = all(_file_sha(paths[r]) == f["sha256"] for r, f in snap.items() if r in paths)
            current = top if same else top + 1
            self.store.set_version(db, name, current, _file_sha(paths[PRIMARY]))
            report.store_fixed.append(name)
        elif paths is not None and current in snapshots and self._undo_unfinished(name, current, paths):
            report.rolled_back.append(name)
        # Copies of a snapshot that never got its manifest (killed while copying) are junk.
        for v, files in entries.items():
            names = {p.name for p in files}
            if v >= current and f"v{v:05d}.json" not in names:
                for p in files:
                    if not _is_primary(p.name) or v > current:
                        p.unlink()
                        report.partial_removed += 1

    def _walk(self) -> Iterable[tuple[str, dict[int, list[Path]]]]:
        if not self.history_root.is_dir():
            return
        for folder, _dirs, files in os.walk(self.history_root):
            if any(_ENTRY.match(f) for f in files):
                d = Path(folder)
                yield d.relative_to(self.history_root).as_posix(), _entries(d)


def _is_primary(filename: str) -> bool:
    m = _ENTRY.match(filename)
    return bool(m) and m.group(2) is None and m.group(3) != ".json"


def _entries(folder: Path) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = {}
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for n in names:
        m = _ENTRY.match(n)
        if m:
            out.setdefault(int(m.group(1)), []).append(folder / n)
    return out


def _remove_temp(history_root: Path, folders: Iterable[Path]) -> int:
    """Delete ``drivelab.io`` temp files (``.NAME.<random>.tmp``) left by a killed writer: anywhere in
    the history, and directly inside the dataset's mask folders."""
    walks = list(os.walk(history_root)) if history_root.is_dir() else []
    for top in {Path(f) for f in folders}:
        with contextlib.suppress(OSError):
            walks.append((str(top), [], os.listdir(top)))
    removed = 0
    for folder, _dirs, files in walks:
        for f in files:
            if not (f.endswith(TEMP_SUFFIX) and f.startswith(".")):
                continue
            if any(f"{s}." in f.lower() for s in _TEMP_TARGETS):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, f))
                    removed += 1
    return removed
