"""BDD100K semantic segmentation in its native layout.

    images/10k/{train,val,test}/*.jpg
    labels/sem_seg/masks/{train,val}/*.png      train ids 0..18, 255 ignore
    labels/sem_seg/colormaps/{train,val}/*.png  the same masks in colour (not read)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import list_images, read_label


class Bdd100kReader(Reader):
    format = "bdd100k"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        img_root = self.root / "images" / "10k"
        if not img_root.is_dir():
            raise DrivelabError("not a BDD100K layout: no images/10k/ folder", self.root)
        self.schema = schemas.bdd100k()
        self.items = []
        for split_dir in sorted(p for p in img_root.iterdir() if p.is_dir()):
            masks = self.root / "labels" / "sem_seg" / "masks" / split_dir.name
            for img in list_images(split_dir):
                mask = masks / f"{img.stem}.png"
                self.items.append(
                    Item(img.name, img, mask if mask.exists() else None, split=split_dir.name)
                )

    def load_mask(self, item: Item) -> np.ndarray:
        mask = read_label(item.label_path)
        bad = (mask >= self.schema.num_classes) & (mask != self.schema.ignore_index)
        if bad.any():
            raise DrivelabError(f"{int(bad.sum())} pixels hold ids outside 0..18/255", item.label_path)
        return mask.astype(np.uint8)


def is_bdd100k(root: Path) -> bool:
    return (root / "images" / "10k").is_dir()
