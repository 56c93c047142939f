"""Decode once, train many epochs: a dataset resized to the training resolution and stored
as raw uint8 arrays (numpy memmaps), so PNG decoding of 874x1164 frames never starves the
GPU. One store per (dataset files, split, size), keyed by a hash of names, file sizes/mtimes and
size; a store is valid once its ``index.json`` exists (written last, atomically).

    <cache_dir>/<key>/images.u8   (N, H, W, 3) uint8
    <cache_dir>/<key>/masks.u8    (N, H, W) uint8 train ids, 255 = ignore
    <cache_dir>/<key>/index.json  names, shape, source
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from drivelab.data.sample import Reader
from drivelab.io import atomic_write, write_json
from drivelab.schema import IGNORE
from drivelab.seg.transforms import resize_pair


def store_key(reader: Reader, size: tuple[int, int]) -> str:
    h = hashlib.sha1()
    head = [reader.format, str(Path(reader.root).resolve()), list(size), reader.schema.name]
    h.update(json.dumps(head).encode())
    for it in reader.items:
        h.update(it.name.encode())
        for p in (it.image_path, it.label_path):
            if p is not None:
                st = Path(p).stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class ResizedStore:
    """Read side of a store: ``image(i)`` / ``mask(i)`` are views into memmaps (opened lazily, so
    DataLoader workers each map the files themselves)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.index = json.loads((self.folder / "index.json").read_text())
        self.names: list[str] = self.index["names"]
        self.size = tuple(self.index["size"])
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def _open(self) -> None:
        n, (h, w) = len(self.names), self.size
        self._images = np.memmap(self.folder / "images.u8", np.uint8, "r", shape=(n, h, w, 3))
        if self.index["has_masks"]:
            self._masks = np.memmap(self.folder / "masks.u8", np.uint8, "r", shape=(n, h, w))

    def image(self, i: int) -> np.ndarray:
        if self._images is None:
            self._open()
        return np.array(self._images[i])

    def mask(self, i: int) -> np.ndarray | None:
        if self._images is None:
            self._open()
        return None if self._masks is None else np.array(self._masks[i])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_masks": None}


def build_store(reader: Reader, size: tuple[int, int], cache_dir: str | Path, workers: int = 2,
                progress: bool = True) -> ResizedStore:
    """The store of ``reader`` at ``size``, decoding and resizing every sample the first time."""
    from tqdm import tqdm

    folder = Path(cache_dir) / store_key(reader, size)
    if (folder / "index.json").exists():
        return ResizedStore(folder)
    folder.mkdir(parents=True, exist_ok=True)
    has_masks = all(it.label_path is not None for it in reader.items) and len(reader) > 0

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None]:
        s = reader[i]
        mask = s.mask if has_masks else None
        return resize_pair(s.image, mask, size)

    # Sequential atomic writes, in order; decoding runs in threads (PIL/cv2 release the GIL).
    with atomic_write(folder / "images.u8") as fi, atomic_write(folder / "masks.u8") as fm, \
            ThreadPoolExecutor(max(1, workers)) as pool:
        bar = tqdm(pool.map(load, range(len(reader))), total=len(reader), desc=f"cache {size[0]}x{size[1]}",
                   disable=not progress, leave=False)
        for image, mask in bar:
            fi.write(image.tobytes())
            if has_masks:
                fm.write(mask.astype(np.uint8).tobytes())
    write_json(folder / "index.json", {"names": reader.names, "size": list(size), "has_masks": has_masks,
                                       "root": str(reader.root), "ignore_index": IGNORE})
    return ResizedStore(folder)
