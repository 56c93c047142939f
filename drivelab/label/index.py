"""The image list the app serves: the dataset's index plus review state, filtered, sorted and paged on
the server, so a 100k-image dataset sends one page (not the whole list) per request.

Per-image columns (split, mask present, status, holder, version, priority, loss, comment count)
live in numpy arrays; a request filters with vectorised comparisons, sorts the survivors and sends
``limit`` rows. Review state comes from the store incrementally (``ReviewStore.changes_since``: one
indexed query returning only rows changed since the last request). The dataset index refreshes when
a folder it was read from changes (its mtime), at most once a second: the reader re-indexes and the
merge keeps every known row, adds new names and drops vanished ones.

Index hygiene: images whose path leaves the dataset folder through a symlink, names with control
characters and the app's own ``.drivelab`` files are never offered.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.label.masks import FOLDER_LABELS, outside_root
from drivelab.label.store import STATUSES, STORE_DIR, ReviewStore

SORTS = ("name", "loss", "priority", "status")
MAX_LIMIT = 1000
REFRESH_EVERY = 1.0  # seconds between folder mtime checks
BACKGROUND_AT = 5000  # images from which a re-index runs in a background thread
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DONE, _UNLABELLED = STATUSES.index("done"), STATUSES.index("unlabelled")


@dataclass
class Skipped:
    outside_root: int = 0
    bad_name: int = 0


class ImageIndex:
    """Items of one dataset with their review columns; thread-safe (one lock, short sections)."""

    def __init__(self, open_reader: Callable[[], Reader], store: ReviewStore,
                 losses: dict[str, float] | None = None) -> None:
        self._open_reader = open_reader
        self.store = store
        self.losses = losses or {}
        self._lock = threading.RLock()
        self._refreshing = threading.Lock()
        self._seq = -1
        self._checked = 0.0
        self.records: dict[str, dict] = {}
        self.skipped = Skipped()
        self.reader = open_reader()
        self._build(self._clean(self.reader.items))
        self._watch = self._watched_mtimes()
        self.sync()

    # -- building ------------------------------------------------------------------------------
    def _clean(self, items: list[Item]) -> list[Item]:
        root = Path(self.reader.root)
        skipped = Skipped()
        # At 100k images pathlib costs seconds here: plain strings, each folder resolved once, and
        # files only when they are symlinks themselves.
        store = f"{os.sep}{STORE_DIR}{os.sep}"
        folder_ok: dict[str, bool] = {}
        links: dict[str, set[str]] = {}  # folder -> names of the symlinks in it (one scandir each)
        folders: dict[str, Item] = {}
        out = []
        for it in items:
            path = str(it.image_path)
            if store in path:
                continue
            if _CONTROL.search(it.name):
                skipped.bad_name += 1
                continue
            parent, _, base = path.rpartition(os.sep)
            ok = folder_ok.get(parent)
            if ok is None:
                ok = folder_ok[parent] = not outside_root(root, Path(parent))
                links[parent] = _symlinks(parent)
                if ok:
                    folders[parent] = it
            if not ok or (base in links[parent] and outside_root(root, Path(path))):
                skipped.outside_root += 1
                continue
            out.append(it)
        self.skipped = skipped
        self.folders = folders  # image folder -> one of its items (where that folder's masks go)
        return out

    def _build(self, items: list[Item]) -> None:
        n = len(items)
        names = [it.name for it in items]
        splits = sorted({it.split for it in items})
        code = {s: i for i, s in enumerate(splits)}
        has_mask = np.fromiter((m for m in self._mask_flags(items)), bool, n)
        with self._lock:
            self.items = items
            self.names = names
            self.lower = [s.lower() for s in names]
            self.pos = {nm: i for i, nm in enumerate(names)}
            self.splits = splits
            self.split_code = np.fromiter((code[it.split] for it in items), np.int16, n)
            self.has_mask = has_mask
            self.status_code = np.where(has_mask, _DONE, _UNLABELLED).astype(np.int8)
            self.priority = np.full(n, np.nan)
            self.version = np.zeros(n, np.int32)
            self.n_comments = np.zeros(n, np.int32)
            self.holder = np.full(n, None, dtype=object)
            self.loss = np.fromiter((self.losses.get(nm, math.nan) for nm in names), float, n)
            # loss order is fixed: precompute it (highest first, images without a loss last)
            self._loss_order = np.lexsort((np.arange(n), -np.nan_to_num(self.loss, nan=-np.inf)))
            for rec in self.records.values():
                self._apply(rec)

    def _mask_flags(self, items: list[Item]) -> list[bool]:
        fmt = self.reader.format
        if fmt == "folder":
            labels = Path(self.reader.root) / FOLDER_LABELS
            have = set()
            if labels.is_dir():
                for folder, _d, files in os.walk(labels):
                    rel = Path(folder).relative_to(labels)
                    have.update((rel / f).as_posix() for f in files if f.endswith(".png"))
            return [f"{it.name}.png" in have for it in items]
        return [it.label_path is not None for it in items]

    def _watched_mtimes(self) -> dict[str, int]:
        # Image folders and their parents only: the app's own saves change the mask folders, and a
        # re-index at 100k images costs seconds, so masks written by other tools are picked up
        # with the next image change (or restart).
        folders = set(self.folders)
        folders |= {os.path.dirname(f) for f in folders}
        folders.add(str(self.reader.root))
        out = {}
        for f in folders:
            try:
                out[f] = os.stat(f).st_mtime_ns
            except OSError:
                out[f] = -1
        return out

    # -- keeping current -----------------------------------------------------------------------
    def sync(self) -> None:
        """Apply review changes made since the last call (by this app or anyone else)."""
        seq, rows = self.store.changes_since(self._seq)
        if seq == self._seq:
            return
        with self._lock:
            for rec in rows:
                self.records[rec["name"]] = rec
                self._apply(rec)
            self._seq = seq

    def _apply(self, rec: dict) -> None:
        i = self.pos.get(rec["name"])
        if i is None:
            return
        st = STATUSES.index(rec["status"]) if rec["status"] in STATUSES else _UNLABELLED
        if st == _UNLABELLED and self.has_mask[i]:
            st = _DONE  # a mask on disk is never "unlabelled"
        self.status_code[i] = st
        self.priority[i] = rec["priority"] if rec["priority"] is not None else np.nan
        self.version[i] = rec["version"]
        self.n_comments[i] = rec.get("n_comments") or 0
        self.holder[i] = rec["holder"]

    def mark_saved(self, name: str, path: Path) -> None:
        """A save wrote ``path`` (the mask of ``name``): it has a mask now, and the folder's new
        mtime is our own doing, not a reason to re-index."""
        with self._lock:
            i = self.pos.get(name)
            if i is not None:
                self.has_mask[i] = True
                rec = self.records.get(name)
                if rec is not None:
                    self._apply(rec)
            folder = str(Path(path).parent)
            if folder in self._watch:
                try:
                    self._watch[folder] = os.stat(folder).st_mtime_ns
                except OSError:
                    pass

    def maybe_refresh(self, force: bool = False) -> bool:
        """Re-index when a watched folder changed (files appeared or vanished). Non-blocking: while
        one thread refreshes, others keep using the current index; from ``BACKGROUND_AT`` images the
        re-index runs in its own thread and this returns at once. True when the index changed."""
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_EVERY:
            return False
        self._checked = now
        changed = False
        for f, old in list(self._watch.items()):
            try:
                m = os.stat(f).st_mtime_ns
            except OSError:
                m = -1
            if m != old:
                changed = True
                break
        if not changed or not self._refreshing.acquire(blocking=False):
            return False
        if len(self.items) >= BACKGROUND_AT:
            # Re-reading a large index takes seconds: do it beside the requests, not in one.
            threading.Thread(target=self._refresh, name="label-index-refresh", daemon=True).start()
            return False
        return self._refresh()

    def _refresh(self) -> bool:
        try:
            try:
                reader = self._open_reader()
            except (DrivelabError, OSError):
                return False  # the dataset is mid-change (or gone): keep serving what we have
            # Mask IO holds this same reader object: update it in place rather than replace it.
            self.reader.__dict__.update(reader.__dict__)
            self._build(self._clean(self.reader.items))
            self._watch = self._watched_mtimes()
            return True
        finally:
            self._refreshing.release()

    # -- queries -------------------------------------------------------------------------------
    def item(self, name: str) -> Item | None:
        i = self.pos.get(name)
        if i is None and self.maybe_refresh():
            i = self.pos.get(name)
        return self.items[i] if i is not None else None

    def status_of(self, name: str) -> str:
        i = self.pos.get(name)
        return STATUSES[int(self.status_code[i])] if i is not None else "unlabelled"

    def counts(self) -> dict[str, int]:
        with self._lock:
            c = np.bincount(self.status_code.astype(np.int64), minlength=len(STATUSES))
        return {s: int(c[i]) for i, s in enumerate(STATUSES)}

    def page(self, *, split: str | None = None, status: str | None = None, q: str | None = None,
             sort: str = "name", offset: int = 0, limit: int = 240,
             cls: int | None = None, classes_of: Callable[[Item], list[int]] | None = None) -> dict[str, Any]:
        """One page of the filtered, sorted list: {"total", "offset", "limit", "items"}. With
        ``cls`` (images whose mask holds a class) masks are decoded lazily, only until the page is
        full; ``total`` is then exact only when the scan reached the end (``total_exact``)."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}: {', '.join(SORTS)}")
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}: {', '.join(STATUSES)}")
        offset, limit = max(0, int(offset)), max(1, min(MAX_LIMIT, int(limit)))
        with self._lock:
            order = self._order(sort, self._keep(split, status, q))
            cols = (self.items, self.split_code, self.status_code, self.has_mask, self.holder, self.version,
                    self.priority, self.loss, self.n_comments)
        exact = True
        if cls is not None and classes_of is not None:
            chosen, scanned = [], 0
            for i in order:
                scanned += 1
                if cls in classes_of(cols[0][i]):
                    chosen.append(i)
                    if len(chosen) > offset + limit:
                        break
            exact = scanned == len(order)
            total = len(chosen)
            order = np.asarray(chosen[offset:offset + limit], np.int64)
        else:
            total = len(order)
            order = order[offset:offset + limit]
        items, split_code, status_code, has_mask, holder, version, priority, loss, n_comments = cols
        rows = [{
            "name": items[i].name, "split": self.splits[split_code[i]], "status": STATUSES[status_code[i]],
            "has_mask": bool(has_mask[i]), "holder": holder[i], "version": int(version[i]),
            "priority": _num(priority[i]), "loss": _num(loss[i]), "n_comments": int(n_comments[i]),
        } for i in order.tolist()]
        return {"total": total, "total_exact": exact, "offset": offset, "limit": limit, "items": rows}

    def _keep(self, split: str | None, status: str | None, q: str | None) -> np.ndarray:
        n = len(self.items)
        keep = np.ones(n, bool)
        if split:
            code = self.splits.index(split) if split in self.splits else -1
            keep &= self.split_code == code
        if status:
            keep &= self.status_code == STATUSES.index(status)
        if q:
            needle = q.lower()
            keep &= np.fromiter((needle in s for s in self.lower), bool, n)
        return keep

    def next_after(self, name: str, want: str, user: str, *, sort: str = "name", split: str | None = None,
                   status: str | None = None, q: str | None = None) -> dict[str, Any]:
        """The first image after ``name`` in ``sort`` order (wrapping round; ``name`` itself never) that
        is ``unlabelled``, ``needs_fix`` or ``mine`` (in progress, held by ``user``): {"name",
        "position" (its row in the list filtered by split/status/q, or None), "remaining"}."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}: {', '.join(SORTS)}")
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}: {', '.join(STATUSES)}")
        with self._lock:
            n = len(self.items)
            order = self._order(sort, np.ones(n, bool))
            if want == "unlabelled":
                cand = self.status_code == _UNLABELLED
            elif want == "needs_fix":
                cand = self.status_code == STATUSES.index("needs_fix")
            elif want == "mine":
                cand = (self.status_code == STATUSES.index("in_progress")) & (self.holder == user)
            else:
                raise ValueError(f"unknown target {want!r}: unlabelled, needs_fix or mine")
            i = self.pos.get(name)
            start = int(np.flatnonzero(order == i)[0]) + 1 if i is not None else 0
            rotated = np.concatenate([order[start:], order[:start]])
            hits = rotated[cand[rotated] & (rotated != (-1 if i is None else i))]
            if not len(hits):
                return {"name": None, "position": None, "remaining": 0}
            j = int(hits[0])
            shown = self._order(sort, self._keep(split, status, q))
            at = np.flatnonzero(shown == j)
            return {"name": self.items[j].name, "position": int(at[0]) if len(at) else None,
                    "remaining": int(len(hits))}

    def _order(self, sort: str, keep: np.ndarray) -> np.ndarray:
        if sort == "name":
            return np.nonzero(keep)[0]
        if sort == "loss":
            return self._loss_order[keep[self._loss_order]]
        idx = np.nonzero(keep)[0]
        if sort == "priority":
            p = self.priority[idx]
            return idx[np.lexsort((idx, -np.nan_to_num(p, nan=-np.inf)))]
        return idx[np.lexsort((idx, self.status_code[idx]))]

    def __len__(self) -> int:
        return len(self.items)


def _symlinks(folder: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.is_symlink()}
    except OSError:
        return set()


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)
