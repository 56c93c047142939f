"""COCO-style instance segmentation (e.g. ARMBench mix-object-tote).

Accepted layouts: a COCO json file; or a folder with ``annotations.json`` or
``{train,val,test}.json`` (also under ``annotations/``) and the images in
``images/`` or beside the json. Polygons and RLE are decoded with pycocotools.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.sample import Instances, Item, Reader, Sample
from drivelab.errors import DrivelabError

SPLIT_FILES = ("train.json", "val.json", "test.json")


def find_annotation_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    for folder in (root, root / "annotations"):
        found = [folder / n for n in SPLIT_FILES if (folder / n).exists()]
        if found:
            return found
        if (folder / "annotations.json").exists():
            return [folder / "annotations.json"]
    return []


def _load_coco(path: Path):
    from pycocotools.coco import COCO

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DrivelabError(f"malformed COCO json ({e})", path) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DrivelabError(f"malformed COCO json: no '{key}' list", path)
    for ann in data["annotations"]:
        if "segmentation" not in ann or "image_id" not in ann or "category_id" not in ann:
            raise DrivelabError(f"malformed COCO json: annotation {ann.get('id')} lacks "
                                "segmentation/image_id/category_id", path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


class CocoReader(Reader):
    format = "coco"

    def __init__(self, root: str | Path, image_dir: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DrivelabError("dataset not found", self.root)
        files = find_annotation_files(self.root)
        if not files:
            raise DrivelabError(
                "no COCO annotations json (annotations.json or train/val/test.json)", self.root
            )
        self.cocos = {}
        self.items = []
        categories: dict[int, dict] = {}
        for path in files:
            split = "train" if path.stem == "annotations" else path.stem
            coco = _load_coco(path)
            self.cocos[split] = coco
            for c in coco.dataset["categories"]:
                categories[c["id"]] = c
            base = self._image_dir(path, image_dir)
            for img in sorted(coco.dataset["images"], key=lambda d: d["file_name"]):
                self.items.append(
                    Item(
                        name=img["file_name"],
                        image_path=base / img["file_name"],
                        label_path=path,
                        split=split,
                        meta={"image_id": img["id"], "height": img.get("height"), "width": img.get("width")},
                    )
                )
        self.schema = schemas.coco(list(categories.values()))
        self.cat_to_train = {cid: i + 1 for i, cid in enumerate(self.schema.extra["category_ids"])}
        self.annotation_files = files

    def _image_dir(self, ann_path: Path, image_dir: str | Path | None) -> Path:
        if image_dir is not None:
            return Path(image_dir)
        for cand in (ann_path.parent / "images", ann_path.parent.parent / "images"):
            if cand.is_dir():
                return cand
        return ann_path.parent

    @property
    def task(self) -> str:
        return "instance"

    def coco(self, split: str):
        """The pycocotools COCO object of one split (for evaluation with COCOeval)."""
        return self.cocos[split]

    def load_instances(self, item: Item, shape: tuple[int, int] | None = None) -> Instances:
        coco = self.cocos[item.split]
        anns = coco.imgToAnns.get(item.meta["image_id"], [])
        info = coco.imgs[item.meta["image_id"]]
        h, w = shape or (info["height"], info["width"])
        masks, labels, boxes, ids, crowd = [], [], [], [], []
        for ann in anns:
            try:
                m = coco.annToMask(ann).astype(bool)
            except Exception as e:  # pycocotools raises bare errors on bad polygons
                raise DrivelabError(f"annotation {ann.get('id')}: bad segmentation ({e})",
                                    item.label_path) from None
            if m.shape != (h, w):
                raise DrivelabError(f"annotation {ann.get('id')} is {m.shape[1]}x{m.shape[0]}, "
                                    f"image is {w}x{h}", item.label_path)
            x, y, bw, bh = ann.get("bbox") or _bbox(m)
            masks.append(m)
            labels.append(self.cat_to_train[ann["category_id"]])
            boxes.append([x, y, x + bw, y + bh])
            ids.append(ann.get("id", len(ids)))
            crowd.append(ann.get("iscrowd", 0))
        return Instances(
            masks=np.stack(masks) if masks else np.zeros((0, h, w), bool),
            labels=np.array(labels, dtype=np.int64),
            boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            ids=np.array(ids, dtype=np.int64),
            iscrowd=np.array(crowd, dtype=np.int64),
        )

    def load(self, item: Item) -> Sample:
        image = self.load_image(item)
        inst = self.load_instances(item, image.shape[:2])
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
        for m, lab in zip(inst.masks, inst.labels, strict=True):
            mask[m] = lab
        return Sample(item.name, image, mask=mask, instances=inst, split=item.split, meta=dict(item.meta))

    def load_mask(self, item: Item) -> np.ndarray:
        return self.load(item).mask


def _bbox(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def is_coco(root: Path) -> bool:
    return bool(find_annotation_files(root)) if root.exists() else False
