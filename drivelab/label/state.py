"""What every route of the label app shares, handed to them with ``Depends(get_state)``.

One ``LabelState`` per app: the image index (with review columns), the review store, mask IO (and
instance IO for COCO datasets), credentials, the optional models, loss table and findings, and the
caches. Routes run in worker threads, so every shared cache is behind a lock.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException, Request

from drivelab.data import open_dataset
from drivelab.data.sample import Item
from drivelab.errors import DrivelabError
from drivelab.label.assist import Assist
from drivelab.label.cache import LockedLRU
from drivelab.label.findings import Findings
from drivelab.label.index import ImageIndex
from drivelab.label.instances import InstanceIO
from drivelab.label.masks import IGNORE, LoadedMask, MaskIO, outside_root
from drivelab.label.models import InstanceModel, SamModel
from drivelab.label.security import Access
from drivelab.label.store import BUSY_TIMEOUT, ReadOnlyStore, ReviewStore
from drivelab.label.versions import RecoveryReport
from drivelab.painter import OPACITY

DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
OVERLAY_ALPHA = OPACITY  # the painter's opacity: class colours over the image, grid and editor alike
DIFF_COLOR = (255, 0, 255)  # "prediction differs from the mask"


class LabelState:
    """Everything the routes share: the dataset index, review store, mask IO, model, loss table."""

    def __init__(self, dataset_root: str | Path, *, access: Access, model: Any = None,
                 table: str | Path | None = None, format: str | None = None,
                 reader_options: dict | None = None, max_upload: int = DEFAULT_MAX_UPLOAD,
                 device: str = "auto", store_timeout: float = BUSY_TIMEOUT,
                 findings: list[str | Path] | None = None, sam: str | Path | None = None,
                 score: float = 0.5) -> None:
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
        # COCO images are edited as objects: their annotations in the json are the versioned unit.
        self.instances = (InstanceIO(self.reader, self.store, self.masks.versions)
                          if self.reader.format == "coco" else None)
        self.schema = self.reader.schema
        self._folders = self._mask_folders()
        self.read_only_reason = self._read_only_reason()
        self.recovery = RecoveryReport()
        if self.writable:
            self.recovery = self.masks.versions.recover(self._paths_of, self._folders)
        self._model_spec = model
        self._predictor = model if (model is not None and hasattr(model, "predict")) else None
        self._model_lock = threading.Lock()
        self.score = float(score)
        self.instance_model = (InstanceModel(model, self.reader, device=device)
                               if model is not None and self.instances is not None and self._predictor is None
                               else None)
        self.sam = SamModel(sam, device=device) if sam is not None else None
        self.assist = Assist()
        self.findings = Findings(findings or [], self.reader)
        self.preds = LockedLRU(16)
        self.images = LockedLRU(4)
        self.thumbs = LockedLRU(512)
        self._classes: dict[str, tuple[tuple, list[int]]] = {}
        self._classes_lock = threading.Lock()

    # -- write access --------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """Masks (or COCO instances) can be saved: a writable format, store and folders."""
        return (self.masks.writable or self.instances is not None) and self.read_only_reason is None

    def _read_only_reason(self) -> str | None:
        if not self.masks.writable and self.instances is None:
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
        if self.instances is not None:
            return {p.parent for p in self.instances.json_files()}
        # One item per image folder decides where that folder's masks go (cheap at 100k images).
        return self.masks.folders(list(self.index.folders.values())) if self.masks.writable else set()

    def _paths_of(self, name: str) -> dict | None:
        it = self.index.item(name)
        if it is None:
            return None
        try:
            return self.instances.files(it) if self.instances is not None else self.masks.files(it)
        except DrivelabError:
            return None

    def load_mask(self, item: Item) -> LoadedMask:
        """The item's current train-id mask; for COCO the label map of its current annotations."""
        if self.instances is not None:
            anns, version = self.instances.current(item)
            return LoadedMask(self.instances.label_map(item), version, True)
        return self.masks.load(item)

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

    @property
    def model_task(self) -> str | None:
        """What ``--model`` predicts here: instances on a COCO dataset, classes otherwise."""
        if self._model_spec is None:
            return None
        return "instance" if self.instance_model is not None else "semantic"

    def predictor(self) -> Any:
        if self._model_spec is None:
            raise HTTPException(404, "no model: start the app with --model CKPT")
        with self._model_lock:
            if self._predictor is None:
                from drivelab.seg.inference import Predictor  # torch is imported only when needed

                self._predictor = Predictor(self._model_spec, device=self.device)
        return self._predictor

    def prediction(self, item: Item) -> np.ndarray:
        hit = self.preds.get(item.name)
        if hit is not None:
            return hit
        if self.instance_model is not None:
            # An instance model's classes: its instances above the score threshold, best on top.
            inst = self.instances_predicted(item)
            out = np.zeros(inst.masks.shape[1:] if len(inst) else self.instances.size(item), np.uint8)
            for m, lab in zip(inst.masks[::-1], inst.labels[::-1], strict=True):
                out[m] = lab
            return self.preds.put(item.name, out)
        pred = self.predictor().predict(self.reader.load_image(item))
        pred = np.asarray(pred, dtype=np.uint8)
        pred = np.where(pred < self.schema.num_classes, pred, IGNORE).astype(np.uint8)
        return self.preds.put(item.name, pred)

    def instances_predicted(self, item: Item) -> Any:
        """The instance model's Prediction for an image (every score; cached)."""
        if self.instance_model is None:
            raise HTTPException(404, "no instance model: start the app with --model CKPT (a Mask R-CNN "
                                     "checkpoint) on a COCO dataset")
        key = ("instances", item.name)
        hit = self.preds.get(key)
        if hit is None:
            hit = self.preds.put(key, self.instance_model.predict(self.reader.load_image(item)))
        return hit

    def image_rgb(self, item: Item) -> np.ndarray:
        """The item's image as (H, W, 3) uint8, checked against the pixel limit first."""
        from drivelab.label.masks import image_size
        from drivelab.label.uploads import check_image_pixels

        path = self.image_file(item)
        check_image_pixels(*image_size(path), item.name)
        st = path.stat()
        key = (item.name, st.st_mtime_ns, st.st_size)
        hit = self.images.get(key)
        if hit is None:  # the assisted tools ask for the same image again and again while refining
            hit = self.images.put(key, self.reader.load_image(item))
        return hit

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
            mask = self.load_mask(item).mask
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
