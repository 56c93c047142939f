"""Cityscapes in its official layout.

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png       (converted to train ids on the fly)
    gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png  (used as is for the 19-class set)
    gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png    (labelId * 1000 + k for instances)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.sample import Instances, Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import read_label

IMAGE_SUFFIX = "_leftImg8bit.png"


class CityscapesReader(Reader):
    format = "cityscapes"

    def __init__(self, root: str | Path, classes: str | list[str] = "19", annotations: str = "gtFine"):
        self.root = Path(root)
        img_root = self.root / "leftImg8bit"
        if not img_root.is_dir():
            raise DrivelabError("not a Cityscapes layout: no leftImg8bit/ folder", self.root)
        self.schema = schemas.cityscapes(classes)
        self.annotations = annotations
        self.items = []
        for img in sorted(img_root.glob(f"*/*/*{IMAGE_SUFFIX}")):
            split, city = img.parent.parent.name, img.parent.name
            stem = img.name[: -len(IMAGE_SUFFIX)]
            gt = self.root / annotations / split / city
            train_ids = gt / f"{stem}_{annotations}_labelTrainIds.png"
            label_ids = gt / f"{stem}_{annotations}_labelIds.png"
            instance_ids = gt / f"{stem}_{annotations}_instanceIds.png"
            if self.schema.name == "cityscapes19" and train_ids.exists():
                label, kind = train_ids, "trainIds"
            elif label_ids.exists():
                label, kind = label_ids, "labelIds"
            else:
                label, kind = None, None
            self.items.append(
                Item(
                    name=f"{city}/{stem}",
                    image_path=img,
                    label_path=label,
                    split=split,
                    meta={
                        "city": city,
                        "label_kind": kind,
                        "instance_path": str(instance_ids) if instance_ids.exists() else None,
                    },
                )
            )

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
