"""comma10k in its native layout.

    imgs/ + masks/      874x1164 road-facing frames (RGB colour masks)
    imgs2/ + masks2/    1208x1928 road-facing frames
    imgsd/ + masksd/    1208x1928 driver-camera frames (adds "movable in my car")
    files_trainable     optional list of mask paths edited at least once

Validation split: names ending in ``9.png``, the split every comma10k result is quoted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import list_images, read_rgb

# (image folder, mask folder, required (H, W))
SETS = {
    "imgs": ("imgs", "masks", (874, 1164)),
    "imgs2": ("imgs2", "masks2", (1208, 1928)),
    "imgsd": ("imgsd", "masksd", (1208, 1928)),
}
ROAD_SETS = ("imgs", "imgs2")


def comma10k_split(name: str) -> str:
    return "val" if name.endswith("9.png") else "train"


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
        trainable = self._trainable() if trainable_only else None
        self.items = []
        for s in self.sets:
            img_dir, mask_dir, size = SETS[s]
            for img in list_images(self.root / img_dir):
                mask = self.root / mask_dir / img.name
                rel = f"{mask_dir}/{img.name}"
                if trainable is not None and rel not in trainable:
                    continue
                self.items.append(
                    Item(
                        name=img.name if s == "imgs" else f"{s}/{img.name}",
                        image_path=img,
                        label_path=mask if mask.exists() else None,
                        split=comma10k_split(img.name),
                        meta={"set": s, "size": size},
                    )
                )

    def _trainable(self) -> set[str] | None:
        path = self.root / "files_trainable"
        if not path.exists():
            return None
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}

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
