"""COCO-style instance segmentation (e.g. ARMBench mix-object-tote).

Accepted layouts: a COCO json file; or a folder with ``annotations.json`` or
``{train,val,test}.json`` (also under ``annotations/``) and the images in
``images/`` or beside the json. Polygons and RLE are decoded with pycocotools.

Real exports hold annotations without a usable segmentation: no ``segmentation`` key (bbox-only),
``"segmentation": []``, polygons with fewer than 3 points, or a mask of zero area. Each annotation
is classified once, by ``check_annotation``, and the reader and ``validate`` both use that verdict:

- ``mask``: a usable segmentation (polygons with < 3 points inside an otherwise good annotation
  are dropped; pycocotools would read a 2-point polygon as a box);
- ``box``: no usable segmentation but a usable bbox: kept as a box only (``Sample.box_only``);
- ``skip``: neither: skipped;
- ``error``: malformed (unknown ids, odd-length or non-numeric polygons, a polygon entirely outside
  the image, an RLE of the wrong size or undecodable, a bbox that is not 4 numbers or lies outside
  the image): the reader refuses the file, validate reports a problem.

Boxes and skips are counted in one warning per json file (``SkippedAnnotationsWarning``) and in a
validate note; the pycocotools ``COCO`` object the reader hands out (``reader.coco(split)``, for
COCOeval) holds only the ``mask`` annotations.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.index import Entry, FileIndex
from drivelab.data.sample import Boxes, Instances, Item, Reader, Sample
from drivelab.errors import DrivelabError

SPLIT_FILES = ("train.json", "val.json", "test.json")
# Polygons and boxes may stick out this far past the border before it is worth a word; polygons
# further out are still legal (objects cut by the frame; pycocotools clips them), boxes are not.
BORDER_TOLERANCE = 1.0


class SkippedAnnotationsWarning(UserWarning):
    """Some annotations of a COCO file have no usable segmentation (kept as boxes or skipped)."""


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


def split_of(path: Path) -> str:
    return "train" if path.stem == "annotations" else path.stem


def image_dir_of(ann_path: Path, image_dir: str | Path | None = None) -> Path:
    """Where a json's images are: ``image_dir`` when given, else ``images/`` beside the json or
    one level up, else the json's own folder."""
    if image_dir is not None:
        return Path(image_dir)
    for cand in (ann_path.parent / "images", ann_path.parent.parent / "images"):
        if cand.is_dir():
            return cand
    return ann_path.parent


# --------------------------------------------------------------------------- one annotation
@dataclass
class AnnotationCheck:
    """The verdict on one annotation: ``status`` is ``mask``, ``box``, ``skip`` or ``error``;
    ``reason`` says why it is not a ``mask`` (for errors, the one-line problem, of ``kind``
    annotation / polygon / rle); ``ann`` is the annotation with degenerate polygons dropped."""

    ann: dict | None
    status: str
    reason: str = ""
    kind: str = ""
    dropped: int = 0  # polygons with < 3 points dropped from a kept annotation
    clipped: str = ""  # a polygon sticks out past the border (legal): where


def _error(ann: object, kind: str, message: str) -> AnnotationCheck:
    return AnnotationCheck(ann if isinstance(ann, dict) else None, "error", message, kind)


def _numbers(values: object) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def check_annotation(ann: object, images: dict, cat_ids: set) -> AnnotationCheck:
    """Classify one annotation against its json's images (id -> image dict) and category ids."""
    if not isinstance(ann, dict):
        return _error(ann, "annotation", f"annotation {str(ann)[:80]} is not an object")
    aid = ann.get("id", "?")
    im = images.get(ann.get("image_id"))
    if im is None:
        return _error(ann, "annotation", f"annotation {aid}: unknown image_id {ann.get('image_id')!r}")
    if ann.get("category_id") not in cat_ids:
        return _error(ann, "annotation", f"annotation {aid}: unknown category_id {ann.get('category_id')!r}")
    h, w = im.get("height"), im.get("width")
    if not isinstance(h, int) or not isinstance(w, int):
        return _error(ann, "annotation", f"annotation {aid}: its image {im.get('file_name')} has no "
                                         "integer height/width")
    where = f"annotation {aid} ({im['file_name']}, {w}x{h} WxH)"

    box_usable = False
    box = ann.get("bbox")
    if box is not None:
        if not _numbers(box) or len(box) != 4:
            return _error(ann, "annotation", f"{where}: bbox {box!r} is not 4 numbers")
        x, y, bw, bh = (float(v) for v in box)
        t = BORDER_TOLERANCE
        if bw < 0 or bh < 0 or x < -t or y < -t or x + bw > w + t or y + bh > h + t:
            return _error(ann, "annotation",
                          f"{where}: bbox [{x:g}, {y:g}, {bw:g}, {bh:g}] (xywh) is outside the image")
        box_usable = bw > 0 and bh > 0

    def unusable(reason: str) -> AnnotationCheck:
        return AnnotationCheck(ann, "box" if box_usable else "skip", reason)

    seg = ann.get("segmentation")
    if seg is None:
        return unusable("no segmentation")
    if isinstance(seg, list):
        return _check_polygons(ann, seg, h, w, where, unusable)
    if isinstance(seg, dict):
        return _check_rle(ann, seg, h, w, where, unusable)
    return _error(ann, "annotation", f"{where}: segmentation is neither a polygon list nor an RLE")


def _check_polygons(ann: dict, seg: list, h: int, w: int, where: str, unusable) -> AnnotationCheck:
    if not seg:
        return unusable("empty segmentation []")
    kept, dropped, clipped = [], 0, ""
    for k, poly in enumerate(seg):
        if not _numbers(poly):
            return _error(ann, "polygon", f"{where}: polygon {k} is not a list of numbers")
        if len(poly) % 2:
            return _error(ann, "polygon", f"{where}: polygon {k} has an odd number of coordinates "
                                          f"({len(poly)})")
        if len(poly) < 6:
            dropped += 1
            continue
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        lo, hi = xy.min(0), xy.max(0)
        span = f"x {lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g}"
        if hi[0] <= 0 or hi[1] <= 0 or lo[0] >= w or lo[1] >= h:
            return _error(ann, "polygon", f"{where}: polygon {k} lies entirely outside the image ({span})")
        t = BORDER_TOLERANCE
        if not clipped and (lo[0] < -t or lo[1] < -t or hi[0] > w + t or hi[1] > h + t):
            clipped = f"{where}: polygon {k} extends past the image border ({span})"
        kept.append(poly)
    if not kept:
        return unusable("polygons with < 3 points")
    from pycocotools import mask as mask_utils

    area = int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(kept, h, w))))
    if area == 0:
        return unusable("zero-area polygons")
    cleaned = ann if not dropped else {**ann, "segmentation": kept}
    return AnnotationCheck(cleaned, "mask", dropped=dropped, clipped=clipped)


def _check_rle(ann: dict, seg: dict, h: int, w: int, where: str, unusable) -> AnnotationCheck:
    size, counts = seg.get("size"), seg.get("counts")
    if size != [h, w]:
        return _error(ann, "rle", f"{where}: RLE size {size} is not the image's [height, width] [{h}, {w}]")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != h * w:
            return _error(ann, "rle", f"{where}: uncompressed RLE counts are not non-negative integers "
                                      f"summing to {h * w}")
        area = sum(counts[1::2])
    elif isinstance(counts, str):
        from pycocotools import mask as mask_utils

        try:
            area = int(mask_utils.area({"size": size, "counts": counts.encode()}))
        except Exception as e:  # pycocotools raises bare errors
            return _error(ann, "rle", f"{where}: undecodable RLE ({e})")
    else:
        return _error(ann, "rle", f"{where}: RLE counts must be a string or a list")
    if area == 0:
        return unusable("zero-area RLE")
    return AnnotationCheck(ann, "mask")


# --------------------------------------------------------------------------- one json file
@dataclass
class CocoFile:
    """One parsed COCO json: its usable image entries, categories, one ``AnnotationCheck`` per
    annotation, and the file-level problems ``(kind, message)``."""

    path: Path
    split: str
    image_dir: Path
    data: dict | None = None
    images: list[dict] = field(default_factory=list)
    categories: list[dict] = field(default_factory=list)
    checks: list[AnnotationCheck] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def problems(self) -> list[tuple[str, str]]:
        """Every problem (kind, message): the file's own, then each bad annotation's."""
        return self.errors + [(c.kind, c.reason) for c in self.checks if c.status == "error"]

    def unusable_summary(self) -> str | None:
        """One line counting annotations without a usable segmentation, or None when all have one."""
        bad = [c for c in self.checks if c.status in ("box", "skip")]
        dropped = sum(1 for c in self.checks if c.status == "mask" and c.dropped)
        if not bad and not dropped:
            return None
        parts = []
        if bad:
            why = ", ".join(f"{n} {r}" for r, n in Counter(c.reason for c in bad).most_common())
            boxes = sum(c.status == "box" for c in bad)
            parts.append(f"{len(bad)} of {len(self.checks)} annotations have no usable segmentation "
                         f"({why}): {boxes} kept as boxes only, {len(bad) - boxes} skipped")
        if dropped:
            parts.append(f"{dropped} annotations lost polygons with < 3 points")
        return f"{self.path.name}: " + "; ".join(parts)


def read_coco_file(path: Path, image_dir: str | Path | None = None) -> CocoFile:
    """Parse and check one COCO json; never raises for its content (problems are collected)."""
    out = CocoFile(path, split_of(path), image_dir_of(path, image_dir))
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        out.errors.append(("json", f"malformed json ({e})"))
        return out
    if not isinstance(data, dict):
        out.errors.append(("json", "malformed COCO json: the top level is not an object"))
        return out
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            out.errors.append(("json", f"malformed COCO json: no '{key}' list"))
    if any(not isinstance(data.get(k), list) for k in ("images", "categories")):
        return out
    out.data = data
    cat_ids: set = set()
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            out.errors.append(("json", f"category {str(c)[:80]} lacks id/name"))
        elif c["id"] in cat_ids:
            out.errors.append(("json", f"duplicate category id {c['id']}"))
        else:
            cat_ids.add(c["id"])
            out.categories.append(c)
    images: dict = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            out.errors.append(("json", f"image entry {str(im)[:80]} lacks id/file_name"))
            continue
        if im["id"] in images:
            out.errors.append(("json", f"duplicate image id {im['id']} ({im['file_name']})"))
            continue
        images[im["id"]] = im
        if not isinstance(im.get("height"), int) or not isinstance(im.get("width"), int):
            out.errors.append(("json", f"image {im['file_name']} (id {im['id']}) lacks integer height/width"))
            continue
        out.images.append(im)
    out.checks = [check_annotation(a, images, cat_ids) for a in data.get("annotations") or []]
    return out


def index_files(root: str | Path, image_dir: str | Path | None = None) -> FileIndex:
    """Every COCO json of the layout (``meta["files"]``: one ``CocoFile`` each) and one entry per
    listed image, its size fixed by the json (``image`` is None when the file is missing;
    ``meta["image_path"]`` says where it should be)."""
    root = Path(root)
    index = FileIndex("coco", root)
    index.meta["files"] = files = [read_coco_file(p, image_dir) for p in find_annotation_files(root)]
    for f in files:
        for im in sorted(f.images, key=lambda d: d["file_name"]):
            path = f.image_dir / im["file_name"]
            index.entries.append(
                Entry(im["file_name"], f"/{path}", path if path.is_file() else None, split=f.split,
                      meta={"image_id": im["id"], "json": f.path, "image_path": path},
                      expected=(im["height"], im["width"]))
            )
    return index


# --------------------------------------------------------------------------- reader
class CocoReader(Reader):
    format = "coco"

    def __init__(self, root: str | Path, image_dir: str | Path | None = None) -> None:
        from pycocotools.coco import COCO

        self.root = Path(root)
        if not self.root.exists():
            raise DrivelabError("dataset not found", self.root)
        files = find_annotation_files(self.root)
        if not files:
            raise DrivelabError(
                "no COCO annotations json (annotations.json or train/val/test.json)", self.root
            )
        self.cocos = {}
        self.boxes_only: dict[str, dict[int, list[dict]]] = {}  # split -> image id -> annotations
        self.unusable: dict[str, str] = {}  # split -> the warning line about unusable annotations
        self.items = []
        categories: dict[int, dict] = {}
        for path in files:
            f = read_coco_file(path, image_dir)
            problems = f.problems
            if problems:
                more = f" (and {len(problems) - 1} more: run `drivelab validate`)" if problems[1:] else ""
                raise DrivelabError(problems[0][1] + more, path)
            summary = f.unusable_summary()
            if summary:
                self.unusable[f.split] = summary
                warnings.warn(summary, SkippedAnnotationsWarning, stacklevel=2)
            coco = COCO()
            coco.dataset = {**f.data, "annotations": [c.ann for c in f.checks if c.status == "mask"]}
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
                coco.createIndex()
            self.cocos[f.split] = coco
            boxes: dict[int, list[dict]] = {}
            for c in f.checks:
                if c.status == "box":
                    boxes.setdefault(c.ann["image_id"], []).append(c.ann)
            self.boxes_only[f.split] = boxes
            for c in f.categories:
                categories[c["id"]] = c
            for img in sorted(f.images, key=lambda d: d["file_name"]):
                self.items.append(
                    Item(
                        name=img["file_name"],
                        image_path=f.image_dir / img["file_name"],
                        label_path=path,
                        split=f.split,
                        meta={"image_id": img["id"], "height": img["height"], "width": img["width"]},
                    )
                )
        self.schema = schemas.coco(list(categories.values()))
        self.cat_to_train = {cid: i + 1 for i, cid in enumerate(self.schema.extra["category_ids"])}
        self.annotation_files = files

    @property
    def task(self) -> str:
        return "instance"

    def coco(self, split: str):
        """The pycocotools COCO object of one split (for evaluation with COCOeval); it holds the
        annotations with a usable mask only."""
        return self.cocos[split]

    def load_instances(self, item: Item, shape: tuple[int, int] | None = None) -> Instances:
        coco = self.cocos[item.split]
        anns = coco.imgToAnns.get(item.meta["image_id"], [])
        info = coco.imgs[item.meta["image_id"]]
        h, w = shape or (info["height"], info["width"])
        masks, labels, boxes, ids, crowd = [], [], [], [], []
        for ann in anns:
            m = coco.annToMask(ann).astype(bool)  # checked at open: decodes, non-empty
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

    def load_boxes(self, item: Item) -> Boxes:
        """The image's annotations that have a box but no usable mask (xyxy, clipped to the image)."""
        anns = self.boxes_only.get(item.split, {}).get(item.meta["image_id"], [])
        h, w = item.meta["height"], item.meta["width"]
        xyxy = []
        for a in anns:
            x, y, bw, bh = (float(v) for v in a["bbox"])
            xyxy.append([max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh)])
        return Boxes(
            boxes=np.array(xyxy, dtype=np.float32).reshape(-1, 4),
            labels=np.array([self.cat_to_train[a["category_id"]] for a in anns], dtype=np.int64),
            ids=np.array([a.get("id", -1) for a in anns], dtype=np.int64),
        )

    def load(self, item: Item) -> Sample:
        image = self.load_image(item)
        inst = self.load_instances(item, image.shape[:2])
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
        for m, lab in zip(inst.masks, inst.labels, strict=True):
            mask[m] = lab
        boxes = self.load_boxes(item)
        return Sample(item.name, image, mask=mask, instances=inst, split=item.split, meta=dict(item.meta),
                      box_only=boxes if len(boxes) else None)

    def load_mask(self, item: Item) -> np.ndarray:
        return self.load(item).mask


def _bbox(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def is_coco(root: Path) -> bool:
    return bool(find_annotation_files(root)) if root.exists() else False
