"""Synthetic datasets in native layouts: what tests, the demo and the benchmarks run on.

``synth_dataset(format, out, n, size, seed)`` writes ``n`` procedural samples exactly as the
real dataset lays them out, so ``open_dataset(out)`` reads them with the same reader as the
real thing. Sample ``i`` depends only on ``(seed, i)``: sets are reproducible and grow by
appending. ``synth.json`` beside the data records the generator settings and what each sample
shows (night or day, object counts), ground truth for data-engine experiments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from drivelab import schema as schemas
from drivelab.data.synth.scene import MOVABLE, Scene, SceneOptions, render_scene
from drivelab.data.synth.tote import Tote, ToteOptions, render_tote
from drivelab.errors import DrivelabError
from drivelab.io import write_json, write_png, write_text

SYNTH_FORMATS = ("comma10k", "cityscapes", "bdd100k", "coco")
DEFAULT_SIZE = {"comma10k": (256, 512), "cityscapes": (256, 512), "bdd100k": (256, 512), "coco": (256, 256)}
CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau")}
TOTE_CATEGORIES = [{"id": 1, "name": "object", "supercategory": "item"}]


def synth_dataset(
    format: str,
    out: str | Path,
    n: int = 100,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
    split: str | None = None,
    **options: Any,
) -> Path:
    """Write ``n`` synthetic samples of ``format`` under ``out``; returns ``out``.

    ``size`` is (H, W). Every 5th sample goes to the val split unless ``split`` ("train" or "val")
    puts them all in one (Cityscapes, BDD100K, COCO; comma10k's split is fixed by the names: those
    ending in 9.png are val). ``options`` tune content: driving scenes take ``cars``, ``people``,
    ``poles`` (inclusive (min, max) counts), ``night`` (probability) and ``hood``; totes take
    ``objects`` and ``twin_rate``.
    """
    if format not in SYNTH_FORMATS:
        raise DrivelabError(f"cannot synthesise {format!r}; choose one of {', '.join(SYNTH_FORMATS)}")
    if n < 1:
        raise DrivelabError(f"need at least one sample, got n={n}")
    size = tuple(size or DEFAULT_SIZE[format])
    if len(size) != 2 or min(size) < 16:
        raise DrivelabError(f"size must be (H, W) with both >= 16, got {size}")
    if split not in (None, "train", "val"):
        raise DrivelabError(f"split must be 'train' or 'val', got {split!r}")
    if split and format == "comma10k":
        raise DrivelabError("comma10k's split comes from the names (ending in 9.png: val); drop split=")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = _WRITERS[format](out, size, seed, options)
    writer.split = (lambda i: split) if split else _split
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(writer.write, range(n))
        if progress:
            from rich.progress import track

            results = track(results, total=n, description=f"synth {format}")
        records = list(results)
    writer.finish(records)
    write_json(out / "synth.json", {"format": format, "seed": seed, "size": list(size), "options": options,
                                    "samples": {r["name"]: r["attributes"] for r in records}})
    return out


def _rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, i])


class _SceneWriter:
    """Base for the three driving layouts: render a scene, hand it to ``save``."""

    def __init__(self, out: Path, size: tuple[int, int], seed: int, options: dict) -> None:
        self.out, self.size, self.seed = out, size, seed
        self.split: Callable[[int], str] = _split
        try:
            self.opts = SceneOptions(**options)
        except TypeError as e:
            raise DrivelabError(f"unknown scene option ({e})") from None

    def write(self, i: int) -> dict:
        scene = render_scene(_rng(self.seed, i), self.size, self.opts)
        return {"i": i, "name": self.save(i, scene), "attributes": scene.attributes}

    def save(self, i: int, scene: Scene) -> str:
        """Write one sample; returns its name as the format's reader reports it."""
        raise NotImplementedError

    def finish(self, records: list[Any]) -> None:
        pass


class Comma10kWriter(_SceneWriter):
    """imgs/ + masks/ (RGB colour masks) + files_trainable; names ending 9.png are the val split."""

    schema = schemas.comma10k()

    def save(self, i: int, scene: Scene) -> str:
        name = f"{i:04d}_synth{self.seed:04d}_{i:05d}.png"  # like 0000_0085e9e41513078a_..._864.png
        write_png(self.out / "imgs" / name, scene.image)
        write_png(self.out / "masks" / name, self.schema.colorize(comma10k_train_ids(scene)))
        return name

    def finish(self, records: list[dict]) -> None:
        path = self.out / "files_trainable"
        old = set(path.read_text().split()) if path.exists() else set()
        write_text(path, "".join(f"{r}\n" for r in sorted(old | {f"masks/{r['name']}" for r in records})))


def comma10k_train_ids(scene: Scene) -> np.ndarray:
    ids = scene.label_ids
    mask = np.full(ids.shape, 2, np.uint8)  # undrivable: everything that is not listed below
    mask[ids == 7] = 0
    mask[np.isin(ids, MOVABLE)] = 3
    mask[ids == 1] = 4
    mask[scene.lanes & (ids == 7)] = 1
    return mask


def _split(i: int) -> str:
    return "val" if i % 5 == 4 else "train"


class CityscapesWriter(_SceneWriter):
    """leftImg8bit/{split}/{city}/ + gtFine/{split}/{city}/ labelIds, instanceIds and color."""

    schema = schemas.cityscapes("30")

    def save(self, i: int, scene: Scene) -> str:
        split = self.split(i)
        cities = CITIES[split]
        city = cities[i % len(cities)]
        stem = f"{city}_{self.seed:06d}_{i:06d}"
        write_png(self.out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", scene.image)
        gt = self.out / "gtFine" / split / city
        write_png(gt / f"{stem}_gtFine_labelIds.png", scene.label_ids)
        write_png(gt / f"{stem}_gtFine_instanceIds.png", scene.instance_ids.astype(np.int32))
        color = CITYSCAPES_COLORS[scene.label_ids]
        rgba = np.concatenate([color, np.full((*color.shape[:2], 1), 255, np.uint8)], axis=2)
        from PIL import Image

        from drivelab.io import write_image

        write_image(gt / f"{stem}_gtFine_color.png", Image.fromarray(rgba, "RGBA"))
        return f"{city}/{stem}"


CITYSCAPES_COLORS = np.zeros((256, 3), np.uint8)
for _name, _label_id, _train_id, _cat, _inst, _color in schemas.CITYSCAPES_LABELS:
    CITYSCAPES_COLORS[_label_id] = _color


class Bdd100kWriter(_SceneWriter):
    """images/10k/{split}/*.jpg + labels/sem_seg/masks/{split}/*.png (train ids, 255 ignore)
    + labels/sem_seg/colormaps/{split}/*.png."""

    schema = schemas.bdd100k()
    lut = np.asarray(schemas.cityscapes("19").label_lut, np.uint8)

    def save(self, i: int, scene: Scene) -> str:
        from PIL import Image

        from drivelab.io import write_image

        split = self.split(i)
        stem = f"{self.seed:08x}-{i:08x}"  # BDD names look like 0a0a0b1a-7c39d841
        image = Image.fromarray(scene.image)
        write_image(self.out / "images" / "10k" / split / f"{stem}.jpg", image, quality=92)
        train_ids = self.lut[scene.label_ids]  # the ego hood has no BDD class: 255
        sem = self.out / "labels" / "sem_seg"
        write_png(sem / "masks" / split / f"{stem}.png", train_ids)
        write_png(sem / "colormaps" / split / f"{stem}.png", train_ids, palette=self.schema.palette_256())
        return f"{stem}.jpg"


class CocoToteWriter:
    """images/*.jpg + annotations/{train,val}.json; unoccluded objects as polygons (their mask
    was rasterised from that polygon by pycocotools, so it decodes exactly), occluded ones as RLE."""

    def __init__(self, out: Path, size: tuple[int, int], seed: int, options: dict) -> None:
        self.out, self.size, self.seed = out, size, seed
        self.split: Callable[[int], str] = _split
        try:
            self.opts = ToteOptions(**options)
        except TypeError as e:
            raise DrivelabError(f"unknown tote option ({e})") from None

    def write(self, i: int) -> dict:
        from PIL import Image

        from drivelab.io import write_image

        tote = render_tote(_rng(self.seed, i), self.size, self.opts)
        name = f"tote_{self.seed:04d}_{i:06d}.jpg"
        write_image(self.out / "images" / name, Image.fromarray(tote.image), quality=92)
        h, w = self.size
        anns = [
            {"category_id": 1, "segmentation": [poly] if poly else _rle(tote.instance_ids == k),
             "area": int(a), "bbox": _bbox(tote.instance_ids == k), "iscrowd": 0,
             "attributes": {"kind": kind}}
            for k, (kind, poly) in enumerate(zip(tote.kinds, tote.polygons, strict=True), start=1)
            if (a := (tote.instance_ids == k).sum())
        ]
        image = {"file_name": name, "height": h, "width": w}
        attributes = {"objects": len(anns), "kinds": tote.kinds}
        return {"i": i, "name": name, "image": image, "annotations": anns, "attributes": attributes}

    def finish(self, records: list[dict]) -> None:
        for split in ("train", "val"):
            images, anns = [], []
            for r in records:
                if self.split(r["i"]) != split:
                    continue
                image_id = r["i"] + 1
                images.append({"id": image_id, **r["image"]})
                for a in r["annotations"]:
                    anns.append({"id": len(anns) + 1, "image_id": image_id, **a})
            if images:
                write_json(self.out / "annotations" / f"{split}.json",
                           {"info": {"description": "drivelab synthetic totes", "seed": self.seed},
                            "images": images, "annotations": anns, "categories": TOTE_CATEGORIES})


def _bbox(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _rle(m: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    h, w = m.shape
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [h, w], "counts": rle["counts"].decode()}


_WRITERS: dict[str, Callable[..., Any]] = {
    "comma10k": Comma10kWriter,
    "cityscapes": CityscapesWriter,
    "bdd100k": Bdd100kWriter,
    "coco": CocoToteWriter,
}

__all__ = ["SYNTH_FORMATS", "SceneOptions", "ToteOptions", "Scene", "Tote", "render_scene", "render_tote",
           "synth_dataset", "comma10k_train_ids"]
