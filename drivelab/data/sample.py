"""Reader -> Sample: the contract every dataset format follows.

A reader indexes a dataset cheaply (names, paths, split) and loads samples on
demand. Everything downstream (train, evaluate, label, embed) takes a reader,
never a path layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivelab.io import read_rgb
from drivelab.schema import ClassSchema


@dataclass
class Instances:
    """Instance annotations of one image. ``masks`` is (N, H, W) bool, ``labels`` train ids
    (1.. for COCO, 0 is background), ``boxes`` (N, 4) xyxy float, ``ids`` the source ids."""

    masks: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    ids: np.ndarray
    iscrowd: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def to_id_map(self) -> np.ndarray:
        """(H, W) int32 map: 0 background, k = the k-th instance (1-based), later ones on top."""
        h, w = self.masks.shape[1:] if len(self) else (0, 0)
        out = np.zeros((h, w), dtype=np.int32)
        for k, m in enumerate(self.masks, start=1):
            out[m] = k
        return out


@dataclass
class Boxes:
    """Annotations that have a box but no usable mask (e.g. bbox-only COCO exports): ``boxes``
    (N, 4) xyxy float, ``labels`` train ids, ``ids`` the source ids. Instance training can use them
    where the model takes boxes without masks; semantic masks never include them."""

    boxes: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Item:
    """One entry of a reader's index: enough to find and load a sample, nothing decoded."""

    name: str
    image_path: Path
    label_path: Path | None = None
    split: str = "train"
    meta: dict = field(default_factory=dict)


@dataclass
class Sample:
    """A loaded sample: RGB image (H, W, 3) uint8, semantic mask (H, W) uint8 train ids with
    the schema's ignore index, and/or instances (plus ``box_only``: annotations with a box and no
    usable mask, kept out of ``instances`` and ``mask``)."""

    name: str
    image: np.ndarray
    mask: np.ndarray | None = None
    instances: Instances | None = None
    split: str = "train"
    meta: dict = field(default_factory=dict)
    box_only: Boxes | None = None


class Reader:
    """Base class: subclasses fill ``self.items`` in ``__init__`` and implement ``load_mask``
    (semantic) and/or ``load_instances`` (instance datasets)."""

    format: str = "base"
    schema: ClassSchema
    root: Path

    @property
    def items(self) -> list[Item]:
        return self.__dict__.setdefault("_items", [])

    @items.setter
    def items(self, items: list[Item]) -> None:
        # Assigning a new list (subset views, the label app's filtering) drops the name index.
        self.__dict__["_items"] = items
        self.__dict__["_by_name"] = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        return self.load(self.items[i])

    def __iter__(self) -> Iterator[Sample]:
        for item in self.items:
            yield self.load(item)

    @property
    def names(self) -> list[str]:
        return [it.name for it in self.items]

    @property
    def has_masks(self) -> bool:
        return any(it.label_path is not None for it in self.items)

    @property
    def task(self) -> str:
        return "semantic"

    def load(self, item: Item) -> Sample:
        image = self.load_image(item)
        mask = self.load_mask(item) if item.label_path is not None else None
        return Sample(item.name, image, mask=mask, split=item.split, meta=dict(item.meta))

    def load_image(self, item: Item) -> np.ndarray:
        return read_rgb(item.image_path)

    def load_mask(self, item: Item) -> np.ndarray:
        raise NotImplementedError

    def index_of(self, name: str) -> int:
        """Position of the item called ``name`` (the first one, if a layout repeats a name)."""
        items = self.items
        key = (id(items), len(items))
        cached = self.__dict__.get("_by_name")
        if cached is None or cached[0] != key:
            cached = (key, _name_index(items))
        i = cached[1].get(name)
        if i is not None and items[i].name != name:  # the list was edited in place: rebuild once
            cached = (key, _name_index(items))
            i = cached[1].get(name)
        self.__dict__["_by_name"] = cached
        if i is None:
            raise KeyError(name)
        return i

    def item(self, name: str) -> Item:
        """The item called ``name`` (a dict lookup; KeyError when there is none)."""
        return self.items[self.index_of(name)]

    def subset(self, split: str | None = None, names: list[str] | None = None) -> Reader:
        """A view of this reader restricted to a split and/or a list of names."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        wanted = set(names) if names is not None else None
        view.items = [
            it
            for it in self.items
            if (split is None or it.split == split) and (wanted is None or it.name in wanted)
        ]
        return view

    @property
    def splits(self) -> list[str]:
        return sorted({it.split for it in self.items})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} items, schema={self.schema.name})"


def _name_index(items: list[Item]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, it in enumerate(items):
        out.setdefault(it.name, k)
    return out
