"""comma10k in its native layout.

    imgs/ + masks/      874x1164 road-facing frames (RGB colour masks)
    imgs2/ + masks2/    1208x1928 road-facing frames
    imgsd/ + masksd/    1208x1928 driver-camera frames (adds "movable in my car")
    files_trainable     optional list of mask paths edited at least once

A mask has exactly its image's file name (comma10k's CI refuses any other name).
Validation split: names ending in ``9.png``, the split every comma10k result is quoted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.index import Entry, FileIndex, folder_files
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import read_rgb

# set -> (image folder, mask folder, required (H, W))
SETS = {
    "imgs": ("imgs", "masks", (874, 1164)),
    "imgs2": ("imgs2", "masks2", (1208, 1928)),
    "imgsd": ("imgsd", "masksd", (1208, 1928)),
}
ROAD_SETS = ("imgs", "imgs2")


def comma10k_split(name: str) -> str:
    return "val" if name.endswith("9.png") else "train"


def sample_name(set_name: str, file_name: str) -> str:
    """The reader's name of a sample: the file name for imgs/, ``SET/file`` for the other sets."""
    return file_name if set_name == "imgs" else f"{set_name}/{file_name}"


def read_trainable(root: Path) -> list[str] | None:
    """``files_trainable`` entries (mask paths relative to the root), or None without the file."""
    path = Path(root) / "files_trainable"
    if not path.exists():
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def index_files(root: str | Path) -> FileIndex:
    """Every image and mask of every set present, paired by file name (orphans on either side
    become entries with the other side missing); non-image files in the set folders go to
    ``others``; ``meta["trainable"]`` is the ``files_trainable`` list (None when absent)."""
    root = Path(root)
    index = FileIndex("comma10k", root, meta={"trainable": read_trainable(root)})
    for s, (img_dir, mask_dir, size) in SETS.items():
        if not (root / img_dir).is_dir() and not (root / mask_dir).is_dir():
            continue
        index.native[img_dir] = size
        for folder, partner in ((img_dir, mask_dir), (mask_dir, img_dir)):
            if not (root / folder).is_dir():
                index.missing_dirs.append((root / folder, f"its partner {partner}/ exists"))
        images, img_others = folder_files(root / img_dir)
        masks, mask_others = folder_files(root / mask_dir)
        index.others += img_others + mask_others
        for name in sorted(images.keys() | masks.keys()):
            mask = masks.get(name)
            index.entries.append(
                Entry(
                    name=sample_name(s, name),
                    group=img_dir,
                    image=images.get(name),
                    labels={"mask": mask} if mask is not None else {},
                    split=comma10k_split(name),
                    meta={"set": s, "size": size},
                )
            )
    return index


class Comma10kReader(Reader):
    format = "comma10k"

    def __init__(
        self,
        root: str | Path,
        sets: tuple[str, ...] | None = None,
        trainable_only: bool = True,
        check_size: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DrivelabError("dataset folder not found", self.root)
        present = [s for s in SETS if (self.root / SETS[s][0]).is_dir()]
        if sets is None:
            sets = tuple(s for s in present if s in ROAD_SETS)
        missing = [s for s in sets if s not in present]
        if missing or not sets:
            raise DrivelabError(f"not a comma10k layout: missing {missing or list(ROAD_SETS)}", self.root)
        self.sets = tuple(sets)
        self.schema = schemas.comma10k(driver_camera="imgsd" in self.sets)
        self.check_size = check_size
        self.file_index = index_files(self.root)
        listed = self.file_index.meta["trainable"] if trainable_only else None
        trainable = set(listed) if listed is not None else None
        by_set: dict[str, list[Entry]] = {}
        for e in self.file_index.entries:
            by_set.setdefault(e.meta["set"], []).append(e)
        items = []
        for s in self.sets:
            for e in by_set.get(s, []):
                if e.image is None:  # a mask without its image is not a sample (validate reports it)
                    continue
                if trainable is not None and f"{SETS[s][1]}/{e.image.name}" not in trainable:
                    continue
                items.append(Item(e.name, e.image, e.labels.get("mask"), e.split, dict(e.meta)))
        self.items = items

    def load_mask(self, item: Item) -> np.ndarray:
        rgb = read_rgb(item.label_path)
        mask, bad = self.schema.encode_colors(rgb)
        if bad.any():
            raise DrivelabError(
                f"{int(bad.sum())} pixels are not a {self.schema.name} palette colour "
                "(run `drivelab validate` for details)",
                item.label_path,
            )
        return mask

    def load_image(self, item: Item) -> np.ndarray:
        img = read_rgb(item.image_path)
        if self.check_size and img.shape[:2] != tuple(item.meta["size"]):
            raise DrivelabError(f"image is {img.shape[1]}x{img.shape[0]}, expected "
                                f"{item.meta['size'][1]}x{item.meta['size'][0]}", item.image_path)
        return img


def is_comma10k(root: Path) -> bool:
    return any((root / img).is_dir() and (root / mask).is_dir() for img, mask, _ in SETS.values())
