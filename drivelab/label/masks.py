"""Masks in each dataset's own format: load leniently, encode every native file, save through
``versions`` (crash-consistent, with history), restore byte for byte.

The app works on (H, W) uint8 train-id masks (255 = unlabelled). On disk a mask stays in the
dataset's native format so every other tool (and ``drivelab validate``) reads it unchanged:

    comma10k    RGB colour PNG, exactly the palette colours        masks*/NAME.png
    cityscapes  labelIds (labelTrainIds too when present), and      gtFine/SPLIT/CITY/STEM_gtFine_*.png
                the _color and _instanceIds siblings when present
    bdd100k     train ids, 255 ignore (colormap too when present)  labels/sem_seg/masks/SPLIT/STEM.png
    folder      palette PNG of train ids                            .drivelab/labels/NAME.png

Every file of an item is a *role* of one file set (``files(item)``); a save writes all of them in
one versioned transaction, so siblings never disagree with the mask after a crash.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import read_label, read_rgb
from drivelab.label.store import STORE_DIR, ReviewStore
from drivelab.label.uploads import MAX_IMAGE_PIXELS, UploadRefused
from drivelab.label.versions import HISTORY, PRIMARY, SaveResult, VersionedFiles
from drivelab.schema import CITYSCAPES_LABELS

IGNORE = 255
FOLDER_LABELS = Path(STORE_DIR) / "labels"
WRITABLE_FORMATS = ("comma10k", "cityscapes", "bdd100k", "folder")
CITYSCAPES_KINDS = ("labelIds", "labelTrainIds", "instanceIds", "color")
__all__ = ["HISTORY", "IGNORE", "LoadedMask", "MaskIO", "outside_root"]

# Cityscapes labelId -> colour of the official _color.png files.
_CS_COLORS = np.zeros((256, 3), np.uint8)
for _name, _lid, _tid, _cat, _inst, _color in CITYSCAPES_LABELS:
    if 0 <= _lid < 256:
        _CS_COLORS[_lid] = _color


@dataclass
class LoadedMask:
    mask: np.ndarray  # (H, W) uint8 train ids, 255 unlabelled
    version: int
    exists: bool  # a mask file is on disk (else the mask is all unlabelled)
    bad_pixels: int = 0  # pixels whose stored value is not a class (shown as unlabelled)


def outside_root(root: Path, path: Path) -> bool:
    """True when ``path`` (following every symlink) is not inside the dataset folder ``root``."""
    try:
        real = Path(os.path.realpath(path))
    except OSError:
        return True
    return not real.is_relative_to(Path(os.path.realpath(root)))


class MaskIO:
    """Read and write the masks of one dataset reader in their native format."""

    def __init__(self, reader: Reader, store: ReviewStore) -> None:
        self.reader = reader
        self.store = store
        self.root = Path(reader.root)
        self.schema = reader.schema
        self.format = reader.format
        self.versions = VersionedFiles(self.root, store)

    # -- paths -------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self.format in WRITABLE_FORMATS

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
            return Path(f"{self._cityscapes_base(item, None)}_{self._ann}_labelIds.png")
        if self.format == "bdd100k":
            return self.root / "labels" / "sem_seg" / "masks" / item.split / f"{item.image_path.stem}.png"
        if self.format == "folder":
            return self.root / FOLDER_LABELS / f"{item.name}.png"
        if self.format == "coco":
            return item.label_path or item.image_path
        raise DrivelabError(f"the label app cannot write {self.format} masks (browse only)", self.root)

    @property
    def _ann(self) -> str:
        return getattr(self.reader, "annotations", "gtFine")

    def _cityscapes_base(self, item: Item, path: Path | None) -> str:
        """``gtFine/SPLIT/CITY/STEM`` of an item: its files are ``<base>_gtFine_<kind>.png``."""
        if path is None:
            stem = item.name.split("/", 1)[1]
            return str(self.root / self._ann / item.split / item.meta["city"] / stem)
        base = str(path)
        for kind in CITYSCAPES_KINDS:
            suffix = f"_{self._ann}_{kind}.png"
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base[: -len(path.suffix)]

    def files(self, item: Item) -> dict[str, Path]:
        """Every file of this item's native set, by role: the primary mask (``"mask"``, written
        even when absent) and the siblings that exist (rewritten with it)."""
        primary = self.mask_path(item)
        out = {PRIMARY: primary}
        if self.format == "bdd100k":
            color = self.root / "labels" / "sem_seg" / "colormaps" / item.split / primary.name
            if color.exists():
                out["colormap"] = color
        elif self.format == "cityscapes":
            base = self._cityscapes_base(item, primary)
            for kind in CITYSCAPES_KINDS:
                p = Path(f"{base}_{self._ann}_{kind}.png")
                if p != primary and p.exists():
                    out[kind] = p
        for role, p in out.items():
            if outside_root(self.root, p if p.exists() or p.is_symlink() else p.parent):
                raise DrivelabError(f"the {role} file resolves outside the dataset (a symlink?); refused", p)
        return out

    def native_files(self, item: Item) -> list[Path]:
        """The files of this item that exist (what a commit or an export carries)."""
        return [p for p in self.files(item).values() if p.exists()]

    def history_dir(self, item: Item) -> Path:
        return self.versions.history_dir(item.name)

    def folders(self, items: list[Item]) -> set[Path]:
        """Folders the masks of ``items`` live in (the recovery pass cleans their temp files)."""
        out = set()
        for it in items:
            try:
                paths = self.files(it) if self.writable else {}
            except DrivelabError:
                continue
            out.update(p.parent for p in paths.values())
        return out

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, item: Item, path: Path, like: Path | None = None, data: bytes | None = None
               ) -> tuple[np.ndarray, int]:
        """A native mask file (or its ``data``) -> (train ids, pixels that are not a valid class).
        ``like``: the dataset file ``path`` is a copy of (history files), which names its kind."""
        k = self.schema.num_classes
        if self.format == "comma10k":
            mask, bad = self.schema.encode_colors(read_rgb(path) if data is None else _rgb(data, path))
            return mask, int(bad.sum())
        if self.format == "coco":
            return self.reader.load_mask(item), 0
        raw = read_label(path) if data is None else _label(data, path)
        if self.format == "cityscapes" and not (like or path).name.endswith("_labelTrainIds.png"):
            lut = np.asarray(self.schema.label_lut, dtype=np.uint8)
            mask = lut[np.clip(raw, 0, 255).astype(np.uint8)]
            if raw.max(initial=0) > 255:
                mask[raw > 255] = IGNORE
        else:
            mask = raw.astype(np.uint8)
        bad = (mask >= k) & (mask != IGNORE)
        mask = mask.copy()
        mask[bad] = IGNORE
        return mask, int(bad.sum())

    def load(self, item: Item) -> LoadedMask:
        """The current mask and its version. The file is read between two looks at the store and
        checked against the digest the store recorded, so a save landing meanwhile is never
        reported under the old version number."""
        if self.format == "coco":
            return LoadedMask(self.reader.load_mask(item), self.store.version(item.name), True)
        path = self.mask_path(item)
        if outside_root(self.root, path if path.exists() else path.parent):
            raise DrivelabError("the mask resolves outside the dataset (a symlink?); refused", path)
        for _attempt in range(5):
            rec = self.store.get(item.name)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = None
            again = self.store.get(item.name)
            if (again["version"], again["digest"]) != (rec["version"], rec["digest"]):
                continue
            if data is not None and rec["digest"] and hashlib.sha256(data).hexdigest() != rec["digest"]:
                time.sleep(0.02)  # a save has replaced the file and is about to commit
                continue
            break
        if data is None:
            h, w = image_size(item.image_path)
            return LoadedMask(np.full((h, w), IGNORE, np.uint8), rec["version"], False)
        mask, bad = self.decode(item, path, data=data)
        return LoadedMask(mask, rec["version"], True, bad)

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, item: Item, mask: np.ndarray, paths: dict[str, Path] | None = None) -> dict[str, bytes]:
        """Train-id mask -> {role: PNG bytes} for every file of the item's native set."""
        paths = paths or self.files(item)
        primary = paths[PRIMARY]
        if self.format == "comma10k":
            return {PRIMARY: _png(Image.fromarray(self.schema.colorize(mask), "RGB"))}
        if self.format == "bdd100k":
            out = {PRIMARY: _png(Image.fromarray(mask, "L"))}
            if "colormap" in paths:
                out["colormap"] = _png(Image.fromarray(self.schema.colorize(mask), "RGB"))
            return out
        if self.format == "folder":
            img = Image.fromarray(mask, "L").convert("P")
            img.putpalette(self.schema.palette_256().reshape(-1).tolist())
            return {PRIMARY: _png(img)}
        if self.format == "cityscapes":
            return self._encode_cityscapes(mask, paths, primary)
        raise DrivelabError(f"the label app cannot write {self.format} masks (browse only)", primary)

    def _encode_cityscapes(self, mask: np.ndarray, paths: dict[str, Path], primary: Path) -> dict[str, bytes]:
        kind_of = {role: (role if role != PRIMARY else _kind(p, self._ann)) for role, p in paths.items()}
        by_kind = {kind: paths[role] for role, kind in kind_of.items()}
        label_ids = self._label_ids(mask, by_kind.get("labelIds"))
        out = {}
        for role, kind in kind_of.items():
            if kind == "labelTrainIds":
                out[role] = _png(Image.fromarray(mask, "L"))
            elif kind == "labelIds":
                out[role] = _png(Image.fromarray(label_ids, "L"))
            elif kind == "instanceIds":
                out[role] = _png(Image.fromarray(_instance_ids(label_ids, paths[role]).astype(np.uint16)))
            elif kind == "color":
                rgb = _CS_COLORS[label_ids]
                with Image.open(paths[role]) as old:
                    mode = old.mode
                img = Image.fromarray(rgb, "RGB")
                out[role] = _png(img.convert("RGBA") if mode == "RGBA" else img)
        return out

    def _label_ids(self, mask: np.ndarray, ids_path: Path | None) -> np.ndarray:
        """Train ids -> Cityscapes labelIds. Train ids are coarser than labelIds (parking, guard
        rail ... all become 255), so pixels whose train id did not change keep their old labelId."""
        lut = np.asarray(self.schema.label_lut, dtype=np.uint8)
        inverse = np.zeros(256, dtype=np.uint8)  # 255 -> labelId 0 "unlabeled"
        for label_id in range(len(lut) - 1, -1, -1):  # first labelId of each train id wins
            if lut[label_id] != IGNORE:
                inverse[lut[label_id]] = label_id
        ids = inverse[mask]
        if ids_path is not None and ids_path.exists():
            old = read_label(ids_path)
            if old.shape == mask.shape and old.max(initial=0) <= 255:
                old = old.astype(np.uint8)
                same = lut[old] == mask
                ids[same] = old[same]
        return ids

    # -- saving ------------------------------------------------------------------------------
    def check(self, item: Item, mask: np.ndarray) -> None:
        """Refuse masks that would not be valid native masks of this dataset."""
        h, w = image_size(item.image_path)
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
             kind: str = "save") -> SaveResult:
        """Write ``mask`` natively (every file of the set) if the stored version is
        ``expected_version``; the files being replaced go to the history first."""
        if not self.writable:
            raise DrivelabError(f"{self.format} datasets are browse-only in the label app", self.root)
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        self.check(item, mask)
        paths = self.files(item)
        result = self.versions.save(item.name, expected_version, paths, self.encode(item, mask, paths),
                                    user=user, kind=kind)
        self._mark_saved(item, paths[PRIMARY])
        return result

    def _mark_saved(self, item: Item, path: Path) -> None:
        if item.label_path is None and self.format != "folder":
            item.label_path = path  # the reader's index now knows the mask exists
            if self.format == "cityscapes":
                train = path.name.endswith("_labelTrainIds.png")
                item.meta["label_kind"] = "trainIds" if train else "labelIds"

    # -- history -----------------------------------------------------------------------------
    def history(self, item: Item) -> list[dict]:
        """Stored versions, newest first: the current file plus every kept previous file."""
        return self.versions.history_rows(item.name, self.mask_path(item).exists())

    def load_version(self, item: Item, version: int) -> np.ndarray:
        current = self.store.version(item.name)
        if int(version) == current:
            return self.load(item).mask
        if int(version) > current:
            raise DrivelabError(f"no stored version {version}", item.name)
        data = self.versions.read(item.name, int(version)).get(PRIMARY)
        if data is None:
            raise DrivelabError(f"version {version} had no mask file", item.name)
        path = self.mask_path(item)
        return self.decode(item, path, like=path, data=data)[0]

    def restore(self, item: Item, version: int, expected_version: int, user: str | None = None) -> SaveResult:
        """Make an old version the current one, byte for byte (as a new version; nothing is lost).
        Siblings that did not exist back then are derived from the restored mask."""
        if not self.writable:
            raise DrivelabError(f"{self.format} datasets are browse-only in the label app", self.root)
        if int(version) >= self.store.version(item.name):
            raise DrivelabError(f"version {version} is not an older version", item.name)
        old = self.versions.read(item.name, int(version))
        if PRIMARY not in old:
            raise DrivelabError(f"version {version} had no mask file", item.name)
        paths = self.files(item)
        mask = self.decode(item, paths[PRIMARY], like=paths[PRIMARY], data=old[PRIMARY])[0]
        derived = self.encode(item, mask, paths)
        new = {role: old.get(role, derived[role]) for role in paths}
        result = self.versions.save(item.name, expected_version, paths, new, user=user, kind="restore")
        self._mark_saved(item, paths[PRIMARY])
        return result


def _kind(path: Path, ann: str) -> str:
    for kind in CITYSCAPES_KINDS:
        if path.name.endswith(f"_{ann}_{kind}.png"):
            return kind
    return "labelIds"


def _instance_ids(label_ids: np.ndarray, path: Path) -> np.ndarray:
    """New Cityscapes instanceIds: pixels whose labelId did not change keep their instance id;
    changed pixels hold their new labelId (no instance: what Cityscapes does for group regions)."""
    old = read_label(path).astype(np.int32)
    if old.shape != label_ids.shape:
        raise DrivelabError(f"instanceIds is {old.shape[1]}x{old.shape[0]}, the mask is "
                            f"{label_ids.shape[1]}x{label_ids.shape[0]}", path)
    old_ids = np.where(old >= 1000, old // 1000, old)
    return np.where(old_ids == label_ids, old, label_ids.astype(np.int32))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _rgb(data: bytes, path: Path) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as e:
        raise DrivelabError(f"unreadable mask ({e})", path) from None


def _label(data: bytes, path: Path) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode in ("L", "P"):
                return np.asarray(img, dtype=np.uint8)
            if img.mode.startswith("I"):
                return np.asarray(img).astype(np.int32)
            raise DrivelabError(f"expected a single-channel label image, got mode {img.mode}", path)
    except OSError as e:
        raise DrivelabError(f"unreadable mask ({e})", path) from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image from its header (nothing decoded)."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Image.DecompressionBombError:
        raise UploadRefused(f"image is over the app's {MAX_IMAGE_PIXELS:,}-pixel limit (and PIL's)",
                            str(path)) from None
    except OSError as e:
        raise DrivelabError(f"unreadable image ({e})", path) from None
