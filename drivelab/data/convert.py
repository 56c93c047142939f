"""``convert_dataset``: write a readable dataset as index masks or into another layout.

Targets:

- ``index``: train-id masks (8-bit palette PNG, 255 = ignore; viewers show the class colours,
  readers get the ids) in the source's own layout: comma10k ``masks*/``, Cityscapes
  ``*_gtFine_labelTrainIds.png``, BDD100K ``labels/sem_seg/masks/``, COCO ``masks/``. Images are
  hard-linked (or copied). Because a palette PNG decodes to the exact palette colours, drivelab's
  comma10k reader reads an index-converted comma10k set unchanged.
- ``comma10k``: RGB colour masks from a comma10k-schema set; index <-> colour is an exact round trip.
- ``cityscapes-trainids``: ``*_gtFine_labelTrainIds.png`` beside every ``*_gtFine_labelIds.png`` with
  the official 19-class table, as cityscapesscripts' createTrainIdLabelImgs writes them (8-bit
  greyscale, 255 ignore). OUT may be SRC itself: then only the new files are added.
- ``instance-png``: instance datasets (COCO) -> per image a uint16 instance-id PNG (0 background,
  k = k-th annotation, later ones on top), a class-id palette PNG and ``instances.json`` mapping
  each k back to its annotation.

Every target writes ``schema.json`` (the class schema) at the output root.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import read_label, write_bytes, write_json, write_png, write_text

TARGETS = ("index", "comma10k", "cityscapes-trainids", "instance-png")


@dataclass
class ConvertResult:
    out: Path
    target: str
    count: int  # samples written


def convert_dataset(
    src: str | Path,
    to: str,
    out: str | Path,
    format: str | None = None,
    *,
    link: bool = True,
    progress: bool = True,
) -> ConvertResult:
    """Convert the dataset at ``src`` to ``to`` (one of ``TARGETS``) under ``out``."""
    from drivelab.data import detect_format

    src, out = Path(src), Path(out)
    if not src.exists():
        raise DrivelabError("dataset not found", src)
    if to not in TARGETS:
        raise DrivelabError(f"unknown conversion target {to!r}; choose one of {', '.join(TARGETS)}")
    format = format or detect_format(src)
    if to == "cityscapes-trainids":
        if format != "cityscapes":
            raise DrivelabError(f"cityscapes-trainids needs a Cityscapes dataset, this is {format}", src)
        return _cityscapes_trainids(src, out, link, progress)
    if out.exists() and out.resolve() == src.resolve():
        raise DrivelabError(f"--to {to} writes a new dataset: OUT must differ from SRC", out)
    reader = _open(src, format)
    if to == "instance-png":
        return _instance_png(reader, out, link, progress)
    if not reader.has_masks and reader.format != "coco":
        raise DrivelabError(f"a {reader.format} dataset without masks has nothing to convert", src)
    if to == "comma10k":
        if reader.format != "comma10k":
            raise DrivelabError(
                f"--to comma10k needs a comma10k-layout dataset, this is {reader.format}", src
            )
        return _mirror_masks(reader, out, "comma10k", link, progress)
    return _mirror_masks(reader, out, "index", link, progress)


def _open(src: Path, format: str) -> Reader:
    from drivelab.data import open_dataset
    from drivelab.data.comma10k import SETS

    if format == "comma10k":  # convert everything, not just the road sets / files_trainable
        sets = tuple(s for s, (img, _, _) in SETS.items() if (src / img).is_dir())
        return open_dataset(src, "comma10k", sets=sets, trainable_only=False)
    return open_dataset(src, format)


# --------------------------------------------------------------------------- helpers
def place_image(src: Path, dst: Path, link: bool = True) -> None:
    """Put ``src`` at ``dst`` as a hard link (atomically, via a temp name) or a byte copy."""
    if dst.exists() and dst.samefile(src):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return
        except OSError:  # another filesystem, or links not allowed: copy instead
            if os.path.exists(tmp):
                os.unlink(tmp)
    write_bytes(dst, src.read_bytes())


def _parallel(fn: Callable[[Item], object], items: list, progress: bool, label: str) -> list:
    with ThreadPoolExecutor(min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(fn, items)
        if progress and items:
            from rich.progress import track

            results = track(results, total=len(items), description=label, transient=True)
        return list(results)


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return Path(path.name)


# --------------------------------------------------------------------------- index / comma10k
def _mask_dest(reader: Reader, item: Item, target: str) -> Path:
    """Where an item's converted mask goes, relative to the output root."""
    if reader.format == "coco":
        return Path("masks") / Path(item.name).with_suffix(".png")
    rel = _rel(item.label_path, reader.root)
    if reader.format == "cityscapes":
        stem = rel.name
        for kind in ("_labelIds.png", "_labelTrainIds.png"):
            if stem.endswith(kind):
                stem = stem[: -len(kind)] + "_labelTrainIds.png"
        return rel.with_name(stem)
    return rel.with_suffix(".png")


def _mirror_masks(reader: Reader, out: Path, target: str, link: bool, progress: bool) -> ConvertResult:
    schema = reader.schema
    palette = schema.palette_256()

    def one(item: Item) -> int:
        place_image(item.image_path, out / _rel(item.image_path, reader.root), link)
        if item.label_path is None:
            return 0
        mask = reader.load_mask(item)
        dst = out / _mask_dest(reader, item, target)
        if target == "index":
            write_png(dst, mask, palette=palette)
        else:
            if (mask == schema.ignore_index).any():
                raise DrivelabError("ignore pixels (255) have no comma10k colour", item.label_path)
            write_png(dst, schema.colorize(mask))
        return 1

    written = sum(_parallel(one, reader.items, progress, f"convert -> {target}"))
    trainable = reader.root / "files_trainable"
    if reader.format == "comma10k" and trainable.exists():
        write_text(out / "files_trainable", trainable.read_text())
    write_json(out / "schema.json", schema.to_dict())
    return ConvertResult(out, target, written)


# --------------------------------------------------------------------------- cityscapes trainIds
def _cityscapes_trainids(src: Path, out: Path, link: bool, progress: bool) -> ConvertResult:
    lut = np.asarray(schemas.cityscapes("19").label_lut, dtype=np.uint8)
    in_place = out.exists() and out.resolve() == src.resolve()
    if not in_place:  # mirror the dataset (images and every gt file), then add trainIds beside
        files = [p for d in ("leftImg8bit", "gtFine", "gtCoarse") for p in sorted((src / d).rglob("*"))]
        files = [p for p in files if p.is_file()]
        _parallel(lambda p: place_image(p, out / p.relative_to(src), link), files, progress, "link files")
    label_files = sorted(src.glob("gt*/*/*/*_labelIds.png"))
    if not label_files:
        raise DrivelabError("no *_labelIds.png under gtFine/ or gtCoarse/", src)

    def one(path: Path) -> int:
        raw = read_label(path)
        if raw.max(initial=0) > 255:
            raise DrivelabError(f"label id {int(raw.max())} outside the Cityscapes table", path)
        dst = out / path.relative_to(src)
        write_png(dst.with_name(path.name[: -len("_labelIds.png")] + "_labelTrainIds.png"), lut[raw])
        return 1

    count = sum(_parallel(one, label_files, progress, "labelIds -> trainIds"))
    if not in_place:
        write_json(out / "schema.json", schemas.cityscapes("19").to_dict())
    return ConvertResult(out, "cityscapes-trainids", count)


# --------------------------------------------------------------------------- instance PNGs
def _instance_png(reader: Reader, out: Path, link: bool, progress: bool) -> ConvertResult:
    if not hasattr(reader, "load_instances") or reader.task != "instance":
        raise DrivelabError(
            f"--to instance-png needs an instance dataset (COCO), this is {reader.format}", reader.root
        )
    palette = reader.schema.palette_256()
    cat_ids = reader.schema.extra.get("category_ids", [])

    def one(item: Item) -> tuple[str, list[dict]]:
        place_image(item.image_path, out / "images" / item.name, link)
        inst = reader.load_instances(item)
        if len(inst) > 65535:
            raise DrivelabError(f"{len(inst)} instances do not fit a 16-bit PNG", item.label_path)
        h, w = inst.masks.shape[1:]
        ids = np.zeros((h, w), np.uint16)
        classes = np.zeros((h, w), np.uint8)
        for k, (m, label) in enumerate(zip(inst.masks, inst.labels, strict=True), start=1):
            ids[m] = k  # later annotations on top, as Instances.to_id_map
            classes[m] = label
        stem = Path(item.name).with_suffix(".png")
        write_png(out / "instances" / stem, ids.astype(np.int32))
        write_png(out / "classes" / stem, classes, palette=palette)
        table = [
            {
                "instance": k,
                "annotation_id": int(aid),
                "label": int(label),
                "category_id": int(cat_ids[label - 1]) if 0 < label <= len(cat_ids) else None,
                "iscrowd": int(inst.iscrowd[k - 1]) if inst.iscrowd is not None else 0,
            }
            for k, (aid, label) in enumerate(zip(inst.ids, inst.labels, strict=True), start=1)
        ]
        return item.name, table

    results = _parallel(one, reader.items, progress, "instances -> PNG")
    write_json(out / "instances.json", dict(results))
    write_json(out / "schema.json", reader.schema.to_dict())
    return ConvertResult(out, "instance-png", len(results))
