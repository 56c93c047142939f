"""BDD100K semantic segmentation in its native layout.

    images/10k/{train,val,test}/*.jpg
    labels/sem_seg/masks/{train,val}/*.png      train ids 0..18, 255 ignore
    labels/sem_seg/colormaps/{train,val}/*.png  the same masks in colour (not read; validate
                                                checks them against the masks with the official
                                                palette, ``PALETTE``)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.index import Entry, FileIndex, folder_files
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import read_label

NATIVE_SIZE = (720, 1280)
IMAGE_DIR = Path("images") / "10k"
SEM_SEG = Path("labels") / "sem_seg"


# The BDD100K toolkit's sem_seg classes (bdd100k/label/label.py, the labels with a train id):
# train id -> (name, colour). Its palette (bdd100k/label/palette.py, used by to_color.py to write
# colormaps/) maps each train id to that colour and 255 and every unused id to black.
OFFICIAL_CLASSES = {
    0: ("road", (128, 64, 128)), 1: ("sidewalk", (244, 35, 232)), 2: ("building", (70, 70, 70)),
    3: ("wall", (102, 102, 156)), 4: ("fence", (190, 153, 153)), 5: ("pole", (153, 153, 153)),
    6: ("traffic light", (250, 170, 30)), 7: ("traffic sign", (220, 220, 0)),
    8: ("vegetation", (107, 142, 35)), 9: ("terrain", (152, 251, 152)), 10: ("sky", (70, 130, 180)),
    11: ("person", (220, 20, 60)), 12: ("rider", (255, 0, 0)), 13: ("car", (0, 0, 142)),
    14: ("truck", (0, 0, 70)), 15: ("bus", (0, 60, 100)), 16: ("train", (0, 80, 100)),
    17: ("motorcycle", (0, 0, 230)), 18: ("bicycle", (119, 11, 32)),
}


def official_palette() -> np.ndarray:
    """(256, 3) uint8 colormap palette: train id -> colour, everything else black."""
    palette = np.zeros((256, 3), np.uint8)
    for train_id, (_name, color) in OFFICIAL_CLASSES.items():
        palette[train_id] = color
    return palette


PALETTE = official_palette()


def index_files(root: str | Path) -> FileIndex:
    """Images, masks and colormaps of every split, paired by file stem; a mask or colormap without
    an image becomes an entry with ``image=None``. ``meta["colormap_splits"]`` lists the splits
    that have a ``colormaps/`` folder."""
    root = Path(root)
    index = FileIndex("bdd100k", root, native={IMAGE_DIR.as_posix(): NATIVE_SIZE})
    bases = {"image": root / IMAGE_DIR, "mask": root / SEM_SEG / "masks",
             "colormap": root / SEM_SEG / "colormaps"}
    splits = sorted({p.name for b in bases.values() if b.is_dir() for p in b.iterdir() if p.is_dir()})
    index.meta["colormap_splits"] = [s for s in splits if (bases["colormap"] / s).is_dir()]
    for split in splits:
        found: dict[str, dict[str, Path]] = {}
        for role, base in bases.items():
            files, others = folder_files(base / split)
            index.others += others
            for p in files.values():
                found.setdefault(p.stem, {})[role] = p
        for stem in sorted(found):
            files = found[stem]
            image = files.pop("image", None)
            name = image.name if image is not None else f"{stem}.jpg"
            index.entries.append(Entry(name, IMAGE_DIR.as_posix(), image, files, split))
    return index


class Bdd100kReader(Reader):
    format = "bdd100k"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / IMAGE_DIR).is_dir():
            raise DrivelabError("not a BDD100K layout: no images/10k/ folder", self.root)
        self.schema = schemas.bdd100k()
        self.file_index = index_files(self.root)
        self.items = [
            Item(e.name, e.image, e.labels.get("mask"), split=e.split)
            for e in self.file_index.entries
            if e.image is not None
        ]

    def load_mask(self, item: Item) -> np.ndarray:
        mask = read_label(item.label_path)
        bad = (mask >= self.schema.num_classes) & (mask != self.schema.ignore_index)
        if bad.any():
            raise DrivelabError(f"{int(bad.sum())} pixels hold ids outside 0..18/255", item.label_path)
        return mask.astype(np.uint8)


def is_bdd100k(root: Path) -> bool:
    return (root / IMAGE_DIR).is_dir()
