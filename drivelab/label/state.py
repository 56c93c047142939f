"""What every route of the label app shares, handed to them with ``Depends(get_state)``.

One ``LabelState`` per app: the image index (with review columns), the review store, mask IO,
credentials, the optional model and loss table, and the caches. Routes run in worker threads, so
every shared cache is behind a lock.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request

from drivelab.data import open_dataset
from drivelab.data.sample import Item
from drivelab.errors import DrivelabError
from drivelab.label.index import ImageIndex
from drivelab.label.masks import IGNORE, MaskIO, outside_root
from drivelab.label.security import Access
from drivelab.label.store import BUSY_TIMEOUT, ReadOnlyStore, ReviewStore
from drivelab.label.versions import RecoveryReport

DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
OVERLAY_ALPHA = 0.5  # opacity of class colours over the image, grid and editor alike
DIFF_COLOR = (255, 0, 255)  # "prediction differs from the mask"


class LockedLRU:
    """A small least-recently-used cache safe to share between worker threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> Any:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


class LabelState:
    """Everything the routes share: the dataset index, review store, mask IO, model, loss table."""

    def __init__(self, dataset_root: str | Path, *, access: Access, model: Any = None,
                 table: str | Path | None = None, format: str | None = None,
                 reader_options: dict | None = None, max_upload: int = DEFAULT_MAX_UPLOAD,
                 device: str = "auto", store_timeout: float = BUSY_TIMEOUT) -> None:
        self.root = Path(dataset_root)
        if not self.root.is_dir():
            raise DrivelabError("dataset folder not found", self.root)
        self.access = access
        self.max_upload = int(max_upload)
        self.device = device
        self.store = ReviewStore(self.root, timeout=store_timeout)
        self.losses = _read_table(table) if table is not None else {}
        self.table = str(table) if table is not None else None
        self.index = ImageIndex(lambda: open_dataset(self.root, format, **(reader_options or {})),
                                self.store, self.losses)
        self.reader = self.index.reader
        self.masks = MaskIO(self.reader, self.store)
        self.schema = self.reader.schema
        self._folders = self._mask_folders()
        self.read_only_reason = self._read_only_reason()
        self.recovery = RecoveryReport()
        if self.writable:
            self.recovery = self.masks.versions.recover(self._paths_of, self._folders)
        self._model_spec = model
        self._predictor = model if (model is not None and hasattr(model, "predict")) else None
        self._model_lock = threading.Lock()
        self.preds = LockedLRU(16)
        self.thumbs = LockedLRU(512)
        self._classes: dict[str, tuple[tuple, list[int]]] = {}
        self._classes_lock = threading.Lock()

    # -- write access --------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """Masks can be saved: a writable format, store and mask folders."""
        return self.masks.writable and self.read_only_reason is None

    def _read_only_reason(self) -> str | None:
        if not self.masks.writable:
            return f"{self.reader.format} datasets are browse-only in the label app"
        if self.store.read_only:
            return f"the dataset is read-only ({self.store.read_only_reason})"
        for folder in self._folders:
            probe = folder
            while not probe.exists() and probe != self.root and probe.parent != probe:
                probe = probe.parent  # a folder a first save would create: its parent must be writable
            if not os.access(probe, os.W_OK | os.X_OK):
                return f"cannot write {probe} (read-only file system or no permission)"
        return None

    def require_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyStore(f"browse only: {self.read_only_reason}", self.root)

    def _mask_folders(self) -> set[Path]:
        # One item per image folder decides where that folder's masks go (cheap at 100k images).
        return self.masks.folders(list(self.index.folders.values())) if self.masks.writable else set()

    def _paths_of(self, name: str) -> dict[str, Path] | None:
        it = self.index.item(name)
        if it is None:
            return None
        try:
            return self.masks.files(it)
        except DrivelabError:
            return None

    # -- lookups -------------------------------------------------------------------------------
    def item(self, name: str) -> Item:
        """The dataset item called ``name``; names not in the index are refused (no traversal)."""
        it = self.index.item(name)
        if it is None:
            raise HTTPException(404, f"{name!r} is not an image of this dataset")
        return it

    def image_file(self, item: Item) -> Path:
        """The item's image, checked again now: it must still resolve inside the dataset."""
        path = Path(item.image_path)
        if outside_root(self.root, path):
            raise HTTPException(404, f"{item.name!r} resolves outside the dataset (a symlink?); refused")
        if not path.is_file():
            raise HTTPException(404, f"{item.name!r}: the image file is gone")
        return path

    def status(self, name: str) -> str:
        return self.index.status_of(name)

    @property
    def has_model(self) -> bool:
        return self._model_spec is not None

    def predictor(self) -> Any:
        if self._model_spec is None:
            raise HTTPException(404, "no model: start the app with --model CKPT")
        with self._model_lock:
            if self._predictor is None:
                from drivelab.seg.inference import Predictor  # torch is imported only when needed

                self._predictor = Predictor(self._model_spec, device=_device(self.device))
        return self._predictor

    def prediction(self, item: Item) -> np.ndarray:
        hit = self.preds.get(item.name)
        if hit is not None:
            return hit
        pred = self.predictor().predict(self.reader.load_image(item))
        pred = np.asarray(pred, dtype=np.uint8)
        pred = np.where(pred < self.schema.num_classes, pred, IGNORE).astype(np.uint8)
        return self.preds.put(item.name, pred)

    def classes_present(self, item: Item) -> list[int]:
        """Class ids in an item's mask, cached until the mask file changes."""
        path = self.masks.mask_path(item)
        try:
            st = path.stat()
        except OSError:
            return []
        key = (st.st_mtime_ns, st.st_size)
        with self._classes_lock:
            hit = self._classes.get(item.name)
        if hit and hit[0] == key:
            return hit[1]
        try:
            mask = self.masks.load(item).mask
        except DrivelabError:
            return []
        ids = [int(v) for v in np.unique(mask) if v != IGNORE]
        with self._classes_lock:
            self._classes[item.name] = (key, ids)
        return ids


async def get_state(request: Request) -> LabelState:
    """FastAPI dependency: the app's shared state."""
    return request.app.state.label


async def current_user(request: Request) -> str:
    """FastAPI dependency: the user the request's credential belongs to (set by SecurityMiddleware)."""
    return request.scope.get("state", {}).get("user") or request.app.state.label.access.local_user


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _read_table(path: str | Path) -> dict[str, float]:
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DrivelabError("per-image table not found", path)
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (ValueError, OSError) as e:
        raise DrivelabError(f"unreadable per-image table ({e})", path) from None
    if "name" not in df.columns or "loss" not in df.columns:
        raise DrivelabError(f"per-image table needs columns name and loss, has {list(df.columns)}", path)
    try:
        losses = df["loss"].to_numpy(dtype=float).tolist()
    except (TypeError, ValueError):
        raise DrivelabError("the loss column must hold numbers", path) from None
    return dict(zip(df["name"].astype(str).tolist(), losses, strict=True))
