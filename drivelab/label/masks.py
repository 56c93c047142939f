"""Masks in each dataset's own format: load leniently, save atomically with history, restore.

The app works on (H, W) uint8 train-id masks (255 = unlabelled). On disk a mask stays in the
dataset's native format so every other tool (and ``drivelab validate``) reads it unchanged:

    comma10k    RGB colour PNG, exactly the palette colours        masks*/NAME.png
    cityscapes  labelIds (labelTrainIds too when present)          gtFine/SPLIT/CITY/STEM_gtFine_*.png
    bdd100k     train ids, 255 ignore (colormap too when present)  labels/sem_seg/masks/SPLIT/STEM.png
    folder      palette PNG of train ids                            .drivelab/labels/NAME.png

Before a save replaces a mask, the previous file is copied byte for byte to
``<dataset>/.drivelab/history/NAME/vNNNNN.png`` (NNNNN = the version it had), so any version can
be shown again or restored. The version check and the writes run under the review store's lock.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import read_label, read_rgb, write_bytes
from drivelab.label.store import ReviewStore

IGNORE = 255
HISTORY = Path(".drivelab") / "history"
FOLDER_LABELS = Path(".drivelab") / "labels"


@dataclass
class LoadedMask:
    mask: np.ndarray  # (H, W) uint8 train ids, 255 unlabelled
    version: int
    exists: bool  # a mask file is on disk (else the mask is all unlabelled)
    bad_pixels: int = 0  # pixels whose stored value is not a class (shown as unlabelled)


class MaskIO:
    """Read and write the masks of one dataset reader in their native format."""

    def __init__(self, reader: Reader, store: ReviewStore) -> None:
        self.reader = reader
        self.store = store
        self.root = Path(reader.root)
        self.schema = reader.schema
        self.format = reader.format

    # -- paths -------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self.format in ("comma10k", "cityscapes", "bdd100k", "folder")

    @property
    def allows_unlabelled(self) -> bool:
        # comma10k masks have no "unlabelled" colour: every pixel must be a class.
        return self.format != "comma10k"

    def mask_path(self, item: Item) -> Path:
        """Where this item's mask is (or will be written), the file its reader reads first."""
        if self.format == "comma10k":
            from drivelab.data.comma10k import SETS

            return item.label_path or self.root / SETS[item.meta["set"]][1] / item.image_path.name
        if self.format == "cityscapes":
            if item.label_path is not None:
                return item.label_path
            split, city = item.split, item.meta["city"]
            stem = item.name.split("/", 1)[1]
            ann = getattr(self.reader, "annotations", "gtFine")
            return self.root / ann / split / city / f"{stem}_{ann}_labelIds.png"
        if self.format == "bdd100k":
            return self.root / "labels" / "sem_seg" / "masks" / item.split / f"{item.image_path.stem}.png"
        if self.format == "folder":
            return self.root / FOLDER_LABELS / f"{item.name}.png"
        raise DrivelabError(f"the label app cannot write {self.format} masks (browse only)", self.root)

    def native_files(self, item: Item) -> list[Path]:
        """Every file a save of this item writes (the mask, plus colormap / labelTrainIds twins)."""
        path = self.mask_path(item)
        probe = np.zeros((1, 1), np.uint8)  # encode() only decides paths; the content is thrown away
        return list(self.encode(item, probe, path)) if self.format != "cityscapes" else \
            [p for p in self._encode_cityscapes(item, probe, path) if p == path or p.exists()]

    def history_dir(self, item: Item) -> Path:
        return self.root / HISTORY / item.name

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, item: Item, path: Path, like: Path | None = None) -> tuple[np.ndarray, int]:
        """A native mask file -> (train ids, number of pixels that are not a valid class).
        ``like``: the dataset file ``path`` is a copy of (history files), which names its kind."""
        k = self.schema.num_classes
        if self.format == "comma10k":
            mask, bad = self.schema.encode_colors(read_rgb(path))
            return mask, int(bad.sum())
        if self.format == "cityscapes":
            raw = read_label(path)
            if (like or path).name.endswith("_labelTrainIds.png"):
                mask = raw.astype(np.uint8)
            else:
                lut = np.asarray(self.schema.label_lut, dtype=np.uint8)
                mask = lut[np.clip(raw, 0, 255).astype(np.uint8)]
                if raw.max(initial=0) > 255:
                    mask[raw > 255] = IGNORE
        elif self.format == "coco":
            return self.reader.load_mask(item), 0
        else:
            mask = read_label(path).astype(np.uint8)
        bad = (mask >= k) & (mask != IGNORE)
        mask = mask.copy()
        mask[bad] = IGNORE
        return mask, int(bad.sum())

    def load(self, item: Item) -> LoadedMask:
        version = self.store.version(item.name)
        if self.format == "coco":
            return LoadedMask(self.reader.load_mask(item), version, True)
        path = self.mask_path(item)
        if not path.exists():
            h, w = _image_size(item.image_path)
            return LoadedMask(np.full((h, w), IGNORE, np.uint8), version, False)
        mask, bad = self.decode(item, path)
        return LoadedMask(mask, version, True, bad)

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, item: Item, mask: np.ndarray, path: Path) -> dict[Path, bytes]:
        """Train-id mask -> {file: PNG bytes} in the native format (one or two files)."""
        if self.format == "comma10k":
            return {path: _png(Image.fromarray(self.schema.colorize(mask), "RGB"))}
        if self.format == "bdd100k":
            out = {path: _png(Image.fromarray(mask, "L"))}
            color = self.root / "labels" / "sem_seg" / "colormaps" / item.split / path.name
            if color.exists():
                out[color] = _png(Image.fromarray(self.schema.colorize(mask), "RGB"))
            return out
        if self.format == "folder":
            img = Image.fromarray(mask, "L").convert("P")
            img.putpalette(self.schema.palette_256().reshape(-1).tolist())
            return {path: _png(img)}
        if self.format == "cityscapes":
            return self._encode_cityscapes(item, mask, path)
        raise DrivelabError(f"the label app cannot write {self.format} masks (browse only)", path)

    def _encode_cityscapes(self, item: Item, mask: np.ndarray, path: Path) -> dict[Path, bytes]:
        ann = getattr(self.reader, "annotations", "gtFine")
        base = str(path)
        for suffix in (f"_{ann}_labelTrainIds.png", f"_{ann}_labelIds.png"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        train_path = Path(f"{base}_{ann}_labelTrainIds.png")
        ids_path = Path(f"{base}_{ann}_labelIds.png")
        out = {}
        if train_path == path or train_path.exists():
            out[train_path] = _png(Image.fromarray(mask, "L"))
        if ids_path == path or ids_path.exists():
            out[ids_path] = _png(Image.fromarray(self._label_ids(mask, ids_path), "L"))
        return out

    def _label_ids(self, mask: np.ndarray, ids_path: Path) -> np.ndarray:
        """Train ids -> Cityscapes labelIds. Train ids are coarser than labelIds (parking, guard
        rail ... all become 255), so pixels whose train id did not change keep their old labelId."""
        lut = np.asarray(self.schema.label_lut, dtype=np.uint8)
        inverse = np.zeros(256, dtype=np.uint8)  # 255 -> labelId 0 "unlabeled"
        for label_id in range(len(lut) - 1, -1, -1):  # first labelId of each train id wins
            if lut[label_id] != IGNORE:
                inverse[lut[label_id]] = label_id
        ids = inverse[mask]
        if ids_path.exists():
            old = read_label(ids_path)
            if old.shape == mask.shape and old.max(initial=0) <= 255:
                old = old.astype(np.uint8)
                same = lut[old] == mask
                ids[same] = old[same]
        return ids

    # -- saving ------------------------------------------------------------------------------
    def check(self, item: Item, mask: np.ndarray) -> None:
        """Refuse masks that would not be valid native masks of this dataset."""
        h, w = _image_size(item.image_path)
        if mask.shape != (h, w):
            raise DrivelabError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}", item.name)
        bad = (mask >= self.schema.num_classes) & (mask != IGNORE)
        if bad.any():
            raise DrivelabError(
                f"{int(bad.sum())} pixels hold ids outside 0..{self.schema.num_classes - 1}", item.name
            )
        if not self.allows_unlabelled and (mask == IGNORE).any():
            ys, xs = np.nonzero(mask == IGNORE)
            raise DrivelabError(
                f"{len(xs)} pixels are still unlabelled (first at x={xs[0]}, y={ys[0]}); "
                f"{self.format} masks need a class on every pixel",
                item.name,
            )

    def save(self, item: Item, mask: np.ndarray, expected_version: int, user: str | None = None,
             kind: str = "save") -> int:
        """Write ``mask`` natively if the stored version is ``expected_version``; returns the new
        version. The file being replaced goes to the history first."""
        if not self.writable:
            raise DrivelabError(f"{self.format} datasets are browse-only in the label app", self.root)
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        self.check(item, mask)
        path = self.mask_path(item)
        files = self.encode(item, mask, path)
        with self.store.saving(item.name, expected_version, user=user, kind=kind) as new_version:
            if path.exists():
                keep = self.history_dir(item) / f"v{expected_version:05d}{path.suffix}"
                keep.parent.mkdir(parents=True, exist_ok=True)
                write_bytes(keep, path.read_bytes())
            for p, data in files.items():
                write_bytes(p, data)
        if item.label_path is None and self.format != "folder":
            item.label_path = path  # the reader's index now knows the mask exists
        return new_version

    # -- history -----------------------------------------------------------------------------
    def history(self, item: Item) -> list[dict]:
        """Stored versions, newest first: the current file plus every kept previous file."""
        events = {e["version"]: e for e in self.store.events(item.name) if e["kind"] in ("save", "restore")}
        current = self.store.version(item.name)
        out = []
        if self.mask_path(item).exists():
            e = events.get(current, {})
            out.append({"version": current, "current": True, "user": e.get("user"),
                        "time": e.get("time"), "kind": e.get("kind", "original")})
        folder = self.history_dir(item)
        for p in sorted(folder.glob("v*.*"), reverse=True) if folder.is_dir() else []:
            v = int(p.stem[1:])
            e = events.get(v, {})
            out.append({"version": v, "current": False, "user": e.get("user"), "time": e.get("time"),
                        "kind": e.get("kind", "original")})
        return out

    def version_path(self, item: Item, version: int) -> Path:
        if version == self.store.version(item.name):
            path = self.mask_path(item)
        else:
            path = self.history_dir(item) / f"v{int(version):05d}{self.mask_path(item).suffix}"
        if not path.exists():
            raise DrivelabError(f"no stored version {version}", item.name)
        return path

    def load_version(self, item: Item, version: int) -> np.ndarray:
        return self.decode(item, self.version_path(item, version), like=self.mask_path(item))[0]

    def restore(self, item: Item, version: int, expected_version: int, user: str | None = None) -> int:
        """Make an old version the current one (as a new version; nothing is lost)."""
        mask = self.load_version(item, version)
        return self.save(item, mask, expected_version, user=user, kind="restore")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as e:
        raise DrivelabError(f"unreadable image ({e})", path) from None
