"""Cityscapes in its official layout.

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png       (converted to train ids on the fly)
    gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png  (derived: read only without labelIds)
    gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png    (labelId * 1000 + k for instances)
    gtFine/{split}/{city}/{stem}_gtFine_color.png          (for viewing; not read)

labelIds are the source of truth: they are what cityscapesscripts' evaluation compares against,
and labelTrainIds are written from them (``createTrainIdLabelImgs``). The reader therefore reads
labelIds whenever they exist and falls back to labelTrainIds only without them (e.g. an ``index``
conversion); ``validate`` reports a labelTrainIds file that disagrees with its labelIds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.index import Entry, FileIndex, is_image_file
from drivelab.data.sample import Instances, Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import read_label

IMAGE_SUFFIX = "_leftImg8bit.png"
ANNOTATIONS = ("gtFine", "gtCoarse")
LABEL_KINDS = ("labelIds", "labelTrainIds", "instanceIds", "color")
NATIVE_SIZE = (1024, 2048)


def index_files(root: str | Path) -> FileIndex:
    """Every ``leftImg8bit`` image and every ``gt*`` label file, paired by (split, city, stem).

    An entry's labels are keyed ``<annotations>_<kind>`` (e.g. ``gtFine_labelIds``); label files
    without an image become entries with ``image=None``; other files in the city folders go to
    ``others``."""
    root = Path(root)
    index = FileIndex("cityscapes", root, native={"leftImg8bit": NATIVE_SIZE})
    images: dict[tuple[str, str, str], Path] = {}
    for p in sorted((root / "leftImg8bit").glob("*/*/*")):
        if p.is_file() and is_image_file(p) and p.name.endswith(IMAGE_SUFFIX):
            images[(p.parent.parent.name, p.parent.name, p.name[: -len(IMAGE_SUFFIX)])] = p
        elif p.is_file():
            index.others.append(p)
    labels: dict[tuple[str, str, str], dict[str, Path]] = {}
    for ann in ANNOTATIONS:
        for p in sorted((root / ann).glob("*/*/*")):
            if not p.is_file():
                continue
            stem, _, kind = p.stem.rpartition(f"_{ann}_")
            if not is_image_file(p) or kind not in LABEL_KINDS:
                if p.suffix != ".json":  # the polygon files cityscapesscripts rasterises from
                    index.others.append(p)
                continue
            labels.setdefault((p.parent.parent.name, p.parent.name, stem), {})[f"{ann}_{kind}"] = p
    for key in sorted(images.keys() | labels.keys()):
        split, city, stem = key
        index.entries.append(
            Entry(f"{city}/{stem}", "leftImg8bit", images.get(key), labels.get(key, {}), split,
                  meta={"city": city, "stem": stem})
        )
    return index


class CityscapesReader(Reader):
    format = "cityscapes"

    def __init__(self, root: str | Path, classes: str | list[str] = "19", annotations: str = "gtFine"):
        self.root = Path(root)
        if not (self.root / "leftImg8bit").is_dir():
            raise DrivelabError("not a Cityscapes layout: no leftImg8bit/ folder", self.root)
        self.schema = schemas.cityscapes(classes)
        self.annotations = annotations
        self.file_index = index_files(self.root)
        items = []
        for e in self.file_index.entries:
            if e.image is None:
                continue
            label_ids = e.labels.get(f"{annotations}_labelIds")
            train_ids = e.labels.get(f"{annotations}_labelTrainIds")
            instance_ids = e.labels.get(f"{annotations}_instanceIds")
            if label_ids is not None:
                label, kind = label_ids, "labelIds"
            elif train_ids is not None and self.schema.name == "cityscapes19":
                label, kind = train_ids, "trainIds"  # 19 train ids only: other class sets need labelIds
            else:
                label, kind = None, None
            items.append(
                Item(
                    name=e.name,
                    image_path=e.image,
                    label_path=label,
                    split=e.split,
                    meta={
                        "city": e.meta["city"],
                        "label_kind": kind,
                        "instance_path": str(instance_ids) if instance_ids is not None else None,
                    },
                )
            )
        self.items = items

    def load_mask(self, item: Item) -> np.ndarray:
        raw = read_label(item.label_path)
        if item.meta["label_kind"] == "trainIds":
            return raw.astype(np.uint8)
        try:
            return self.schema.map_labels(raw)
        except ValueError as e:
            raise DrivelabError(str(e), item.label_path) from None

    def load_instances(self, item: Item) -> Instances:
        path = item.meta.get("instance_path")
        if not path:
            raise DrivelabError("no instanceIds file for this image", item.image_path)
        ids = read_label(path).astype(np.int32)
        inst_ids = [int(v) for v in np.unique(ids) if v >= 1000]
        lut = np.asarray(self.schema.label_lut, dtype=np.int32)
        masks = np.stack([ids == v for v in inst_ids]) if inst_ids else np.zeros((0, *ids.shape), bool)
        labels = np.array([lut[v // 1000] for v in inst_ids], dtype=np.int64)
        boxes = np.array([_box(m) for m in masks], dtype=np.float32).reshape(-1, 4)
        return Instances(masks=masks, labels=labels, boxes=boxes, ids=np.array(inst_ids, dtype=np.int64))


def _box(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def is_cityscapes(root: Path) -> bool:
    return (root / "leftImg8bit").is_dir()
