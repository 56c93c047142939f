"""Datasets: readers for native layouts, synthetic generators, validation, conversion."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from drivelab.data.sample import Instances, Item, Reader, Sample
from drivelab.errors import DrivelabError

FORMATS = ("comma10k", "cityscapes", "bdd100k", "coco", "folder")


def detect_format(root: str | Path) -> str:
    """Guess a dataset's format from its layout."""
    from drivelab.data import bdd100k, cityscapes, coco, comma10k

    root = Path(root)
    if not root.exists():
        raise DrivelabError("dataset not found", root)
    if cityscapes.is_cityscapes(root):
        return "cityscapes"
    if bdd100k.is_bdd100k(root):
        return "bdd100k"
    if comma10k.is_comma10k(root):
        return "comma10k"
    if coco.is_coco(root):
        return "coco"
    return "folder"


def open_dataset(root: str | Path, format: str | None = None, **options) -> Reader:
    """Open a dataset in its native layout; ``format`` is detected when not given.

    Options go to the reader: ``classes`` (cityscapes: "19", "29", "30" or names),
    ``sets`` (comma10k: e.g. ("imgs", "imgs2", "imgsd")), ``image_dir`` (coco), ``schema`` (folder).
    """
    from drivelab.data.bdd100k import Bdd100kReader
    from drivelab.data.cityscapes import CityscapesReader
    from drivelab.data.coco import CocoReader
    from drivelab.data.comma10k import Comma10kReader
    from drivelab.data.folder import FolderReader

    readers = {
        "comma10k": Comma10kReader,
        "cityscapes": CityscapesReader,
        "bdd100k": Bdd100kReader,
        "coco": CocoReader,
        "folder": FolderReader,
    }
    format = format or detect_format(root)
    if format not in readers:
        raise DrivelabError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    with gc_paused():
        return readers[format](root, **options)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while an index is built: a 100k-image layout
    allocates a few hundred thousand paths and items and no cycles, and each full collection the
    allocations trigger rescans the whole heap (half of the time spent opening 100k images)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


__all__ = ["FORMATS", "Instances", "Item", "Reader", "Sample", "detect_format", "open_dataset"]
