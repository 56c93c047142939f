"""COCO instance annotations in the label app: one image's objects, read from and written into the
dataset's own json, with the same version check, per-image history and crash consistency as masks.

The versioned unit of a COCO image is *its annotations inside the shared json* (``CocoSlot``): a
slot reads them as canonical JSON bytes (sorted keys, no spaces: a stable SHA-256 for the store and
the history) and writes them by rewriting the whole json atomically (temp, fsync, rename) with only
this image's annotations replaced, so other images' annotations never change and the file on disk is
always a complete json. Saves of different images of one json are serialised by the review store's
write lock (``versions.save`` holds it), so two saves never lose each other's edits.

Objects travel to the page as pycocotools' own decode of each annotation (column-major run lengths,
COCO's uncompressed RLE ``counts``), so the page shows exactly what every COCO tool reads. A save
sends, per object in z-order (bottom first), the run lengths of the pixels the page shows and, for a
polygon object, its polygons. The server stores

- the annotation unchanged (``keep``) when its stored segmentation still decodes to those pixels,
- else the polygons when pycocotools rasterises them to exactly those pixels,
- else an RLE of the pixels (pycocotools ``encode``),

so every saved annotation decodes to exactly the pixels shown, whatever the page's polygon
rasteriser did. Each built annotation passes ``drivelab.data.coco.check_annotation`` (the check
``drivelab validate`` runs) before anything is written.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.data.coco import check_annotation
from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.io import write_bytes
from drivelab.label.store import ReviewStore
from drivelab.label.versions import PRIMARY, SaveResult, Slot, VersionedFiles, sha256

MAX_OBJECTS = 5000  # objects in one image's save
MAX_VERTICES = 20000  # per polygon
COPY_SUFFIX = ".annotations.json"  # history copies: vNNNNN.annotations.json beside the manifest
EDITABLE_KEYS = ("id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd")


def canonical(annotations: list[dict]) -> bytes:
    """The bytes an image's annotations are versioned as (stable across key order and spacing)."""
    return json.dumps(annotations, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- masks <-> runs
def runs_of(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> COCO uncompressed RLE counts: column-major run lengths, zeros first."""
    flat = np.asarray(mask, bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        counts = np.concatenate([[0], counts])
    return counts.astype(np.int64).tolist()


def mask_of_runs(runs: Any, h: int, w: int, what: str) -> np.ndarray:
    """COCO uncompressed counts -> (H, W) bool; refuses anything that is not such counts."""
    if not isinstance(runs, list) or not runs or len(runs) > h * w + 1:
        raise DrivelabError(f"{what}: runs must be a non-empty list of at most H*W+1 counts")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in runs):
        raise DrivelabError(f"{what}: runs must be non-negative integers")
    counts = np.asarray(runs, np.int64)
    if int(counts.sum()) != h * w:
        raise DrivelabError(f"{what}: runs sum to {int(counts.sum())}, the image has {h}x{w} = {h * w} "
                            "pixels")
    flat = np.repeat((np.arange(len(counts)) % 2).astype(bool), counts)
    return flat.reshape(w, h).T


def encode(mask: np.ndarray) -> dict:
    """(H, W) bool -> a compressed COCO RLE ready for JSON (pycocotools)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def ann_rle(segmentation: Any, h: int, w: int) -> dict:
    """A (checked) annotation's segmentation -> one pycocotools RLE (polygons merged, as COCO does)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, h, w)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


def decode(segmentation: Any, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode(ann_rle(segmentation, h, w)).astype(bool)


def bbox_of(mask: np.ndarray) -> list[float]:
    """COCO [x, y, width, height] of a mask's pixels (pycocotools' toBbox of its RLE)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return [float(v) for v in mask_utils.toBbox(rle)]


# --------------------------------------------------------------------------- the json files
@dataclass
class CocoDoc:
    """One parsed COCO json, as last read (``key``: the file's identity and stamp when read)."""

    path: Path
    key: tuple
    data: dict
    indent: int | None
    by_image: dict[Any, list[dict]] = field(default_factory=dict)
    images: dict[Any, dict] = field(default_factory=dict)
    cat_ids: set = field(default_factory=set)
    max_id: int = 0

    @classmethod
    def parse(cls, path: Path, raw: bytes, key: tuple) -> CocoDoc:
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise DrivelabError(f"malformed json ({e})", path) from None
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise DrivelabError("malformed COCO json (no annotations list)", path)
        return cls(path, key, data, _indent_of(raw)).index()

    def index(self) -> CocoDoc:
        self.by_image, self.max_id = {}, 0
        for a in self.data["annotations"]:
            if isinstance(a, dict):
                self.by_image.setdefault(a.get("image_id"), []).append(a)
                if isinstance(a.get("id"), int) and not isinstance(a.get("id"), bool):
                    self.max_id = max(self.max_id, a["id"])
        self.images = {im.get("id"): im for im in self.data.get("images", []) if isinstance(im, dict)}
        self.cat_ids = {c.get("id") for c in self.data.get("categories", []) if isinstance(c, dict)}
        return self

    def with_image(self, image_id: Any, annotations: list[dict]) -> tuple[dict, bytes]:
        """(new data, its bytes) with ``image_id``'s annotations replaced, in place of its first one."""
        out, inserted = [], False
        for a in self.data["annotations"]:
            if isinstance(a, dict) and a.get("image_id") == image_id:
                if not inserted:
                    out.extend(annotations)
                    inserted = True
                continue
            out.append(a)
        if not inserted:
            out.extend(annotations)
        data = {**self.data, "annotations": out}
        if self.indent is None:
            text = json.dumps(data, separators=(",", ":"), allow_nan=False)
        else:
            text = json.dumps(data, indent=self.indent, allow_nan=False) + "\n"
        return data, text.encode()


def _indent_of(raw: bytes) -> int | None:
    """The indentation a json was written with (None: compact), so a save keeps the file's style."""
    head = raw[:4096]
    if not head.lstrip().startswith(b"{") or b"\n" not in head:
        return None
    line = head.split(b"\n", 2)[1]
    n = len(line) - len(line.lstrip(b" "))
    return n or None


class CocoSlot(Slot):
    """One image's annotations inside a shared COCO json, as a versioned slot."""

    suffix = COPY_SUFFIX

    def __init__(self, io: InstanceIO, path: Path, image_id: Any) -> None:
        self.io, self.path, self.image_id = io, Path(path), image_id

    def read(self) -> bytes | None:
        try:
            doc = self.io.doc(self.path)
        except FileNotFoundError:
            return None
        return canonical(doc.by_image.get(self.image_id, []))

    def write(self, data: bytes) -> None:
        annotations = json.loads(data)
        doc = self.io.doc(self.path)
        new, raw = doc.with_image(self.image_id, annotations)
        write_bytes(self.path, raw)
        self.io.remember(self.path, new, doc.indent)

    def remove(self) -> None:
        self.write(b"[]")  # an image always has an annotation list, possibly empty

    def where(self, root: Path) -> str:
        try:
            rel = self.path.relative_to(root).as_posix()
        except ValueError:
            rel = str(self.path)
        return f"{rel}#image_id={self.image_id}"


# --------------------------------------------------------------------------- objects
@dataclass
class Built:
    annotations: list[dict]
    stored: list[str]  # per object: kept | polygon | rle


class InstanceIO:
    """Instance annotations of a COCO reader's images: load for the page, save, history, restore."""

    def __init__(self, reader: Reader, store: ReviewStore, versions: VersionedFiles) -> None:
        self.reader = reader
        self.store = store
        self.versions = versions
        self.root = Path(reader.root)
        self._docs: dict[Path, CocoDoc] = {}
        self._lock = threading.Lock()

    # -- files ---------------------------------------------------------------------------------
    def json_path(self, item: Item) -> Path:
        return Path(item.label_path)

    def json_files(self) -> list[Path]:
        return [Path(p) for p in getattr(self.reader, "annotation_files", [])]

    def doc(self, path: Path) -> CocoDoc:
        """The parsed json, re-read only when the file changed (another process, a restore)."""
        path = Path(path)
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())  # identity of exactly the bytes read below
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            with self._lock:
                hit = self._docs.get(path)
            if hit is not None and hit.key == key:
                return hit
            raw = f.read()
        doc = CocoDoc.parse(path, raw, key)
        with self._lock:
            self._docs[path] = doc
        return doc

    def remember(self, path: Path, data: dict, indent: int | None) -> None:
        """After our own write: cache what we wrote (no re-parse of the whole json)."""
        st = os.stat(path)
        doc = CocoDoc(path, (st.st_ino, st.st_mtime_ns, st.st_size), data, indent).index()
        with self._lock:
            self._docs[path] = doc

    def slot(self, item: Item) -> CocoSlot:
        return CocoSlot(self, self.json_path(item), item.meta["image_id"])

    def files(self, item: Item) -> dict[str, Slot]:
        return {PRIMARY: self.slot(item)}

    def size(self, item: Item) -> tuple[int, int]:
        return int(item.meta["height"]), int(item.meta["width"])

    # -- reading -------------------------------------------------------------------------------
    def current(self, item: Item) -> tuple[list[dict], int]:
        """(this image's annotations, their version), consistent: read between two looks at the store
        and checked against the digest it recorded (a save landing meanwhile is never mislabelled)."""
        slot = self.slot(item)
        for _attempt in range(10):
            rec = self.store.get(item.name)
            data = slot.read()
            again = self.store.get(item.name)
            if (again["version"], again["digest"]) != (rec["version"], rec["digest"]):
                continue
            if data is not None and rec["digest"] and sha256(data) != rec["digest"]:
                time.sleep(0.02)  # a save has written the json and is about to commit
                continue
            break
        if data is None:
            raise DrivelabError("the annotations json is gone", slot.path)
        return json.loads(data), int(rec["version"])

    def at_version(self, item: Item, version: int) -> list[dict]:
        current = self.store.version(item.name)
        if int(version) == current:
            return self.current(item)[0]
        if int(version) > current:
            raise DrivelabError(f"no stored version {version}", item.name)
        data = self.versions.read(item.name, int(version)).get(PRIMARY)
        if data is None:
            raise DrivelabError(f"version {version} had no annotations", item.name)
        return json.loads(data)

    def objects(self, annotations: list[dict], item: Item) -> dict:
        """What the page edits: each usable annotation decoded by pycocotools (run lengths), its
        polygons when it has them; annotations without a usable mask are listed as boxes (kept)."""
        h, w = self.size(item)
        doc = self.doc(self.json_path(item))
        images = {item.meta["image_id"]: doc.images.get(item.meta["image_id"], {"height": h, "width": w,
                                                                                  "file_name": item.name})}
        cat_to_train = getattr(self.reader, "cat_to_train", {})
        objects, boxes = [], []
        for a in annotations:
            check = check_annotation(a, images, doc.cat_ids)
            if check.status != "mask":
                boxes.append({"id": a.get("id"), "category_id": a.get("category_id"), "bbox": a.get("bbox"),
                              "reason": check.reason})
                continue
            seg = check.ann["segmentation"]
            m = decode(seg, h, w)
            objects.append({
                "id": a.get("id"), "category_id": a["category_id"],
                "train_id": cat_to_train.get(a["category_id"]), "iscrowd": int(a.get("iscrowd", 0) or 0),
                "kind": "polygon" if isinstance(seg, list) else "rle",
                "polygons": seg if isinstance(seg, list) else None,
                "runs": runs_of(m), "area": int(m.sum()),
            })
        return {"width": w, "height": h, "objects": objects, "boxes": boxes}

    def label_map(self, item: Item, version: int | None = None) -> np.ndarray:
        """Train ids of the annotations (later ones on top), like the reader's mask."""
        h, w = self.size(item)
        out = np.zeros((h, w), np.uint8)
        for ob, m in self._masks(item, version):
            if ob["train_id"] is not None:
                out[m] = ob["train_id"]
        return out

    def instance_map(self, item: Item) -> np.ndarray:
        """(H, W) int32: 0 nothing, k = the k-th object (1-based, later ones on top)."""
        h, w = self.size(item)
        out = np.zeros((h, w), np.int32)
        for k, (_ob, m) in enumerate(self._masks(item), start=1):
            out[m] = k
        return out

    def _masks(self, item: Item, version: int | None = None) -> list[tuple[dict, np.ndarray]]:
        h, w = self.size(item)
        anns = self.current(item)[0] if version is None else self.at_version(item, version)
        obs = self.objects(anns, item)["objects"]
        return [(ob, mask_of_runs(ob["runs"], h, w, "object")) for ob in obs]

    # -- saving --------------------------------------------------------------------------------
    def build(self, item: Item, current: list[dict], objects: list[dict]) -> Built:
        """The page's objects (bottom first) -> this image's new annotation list; see the module doc."""
        h, w = self.size(item)
        if len(objects) > MAX_OBJECTS:
            raise DrivelabError(f"{len(objects)} objects in one image (at most {MAX_OBJECTS})", item.name)
        doc = self.doc(self.json_path(item))
        image_id = item.meta["image_id"]
        images = {image_id: doc.images.get(image_id, {"height": h, "width": w, "file_name": item.name})}
        by_id = {a.get("id"): a for a in current if isinstance(a, dict)}
        checks = {aid: check_annotation(a, images, doc.cat_ids) for aid, a in by_id.items()}
        # Annotations the page does not edit (no usable mask: box-only, empty) stay, first and as they are.
        out = [a for a in current if checks.get(a.get("id")) is None or checks[a.get("id")].status != "mask"]
        used: set = {a.get("id") for a in out}
        # New ids follow every id of the json except this image's newer ones, so a retried save builds
        # the same bytes as the first (the store then answers with the version it made).
        ids = {a.get("id") for img, anns in doc.by_image.items() if img != image_id for a in anns}
        ids |= set(by_id)
        next_id = max((i for i in ids if isinstance(i, int) and not isinstance(i, bool)), default=0) + 1
        stored = []
        for k, ob in enumerate(objects):
            what = f"object {k + 1}" + (f" (id {ob.get('id')})" if ob.get("id") is not None else "")
            oid = ob.get("id")
            if oid is not None and (not isinstance(oid, int) or isinstance(oid, bool)):
                raise DrivelabError(f"{what}: id must be an integer or null", item.name)
            cat = ob.get("category_id")
            if not isinstance(cat, int) or isinstance(cat, bool) or cat not in doc.cat_ids:
                raise DrivelabError(f"{what}: unknown category_id {cat!r}", item.name)
            crowd = int(ob.get("iscrowd") or 0)
            if crowd not in (0, 1):
                raise DrivelabError(f"{what}: iscrowd must be 0 or 1", item.name)
            mask = mask_of_runs(ob.get("runs"), h, w, what)
            if not mask.any():
                raise DrivelabError(f"{what} has no pixels (delete it instead)", item.name)
            old = by_id.get(ob.get("id"))
            old_ok = old is not None and ob.get("id") not in used and checks[ob.get("id")].status == "mask"
            ann = None
            same = old_ok and ob.get("keep") and np.array_equal(
                decode(checks[old["id"]].ann["segmentation"], h, w), mask)
            if same:
                ann = {**old, "category_id": cat, "iscrowd": crowd}
                how = "kept"
            else:
                polygons = ob.get("polygons")
                seg, how = None, "rle"
                if polygons:
                    polygons = _check_polygons(polygons, what, item.name)
                    if np.array_equal(decode(polygons, h, w), mask):
                        seg, how = polygons, "polygon"
                if seg is None:
                    seg = encode(mask)
                extra = {k2: v for k2, v in (old or {}).items() if k2 not in EDITABLE_KEYS} if old_ok else {}
                ann = {**extra, "segmentation": seg, "area": int(mask.sum()), "bbox": bbox_of(mask),
                       "iscrowd": crowd, "category_id": cat}
            if old_ok:
                aid = ob["id"]
            else:
                aid, next_id = next_id, next_id + 1
            ann = {"id": aid, "image_id": image_id,
                   **{k2: v for k2, v in ann.items() if k2 not in ("id", "image_id")}}
            verdict = check_annotation(ann, images, doc.cat_ids)
            if verdict.status != "mask":
                raise DrivelabError(f"{what} would not be a valid COCO annotation ({verdict.reason})",
                                    item.name)
            used.add(aid)
            out.append(ann)
            stored.append(how)
        return Built(out, stored)

    def save(self, item: Item, objects: list[dict], expected: int,
             user: str | None = None) -> tuple[SaveResult, Built]:
        """Write the image's objects into the json if its stored version is ``expected``."""
        current, version = self.current(item)
        if int(expected) < version:
            # Build on the version the page had: a retry of a save that went through makes the same
            # bytes (answered as a duplicate), anything else meets the version check.
            with_base = self.versions.read(item.name, int(expected)).get(PRIMARY) \
                if int(expected) in self.versions.versions(item.name) else None
            current = json.loads(with_base) if with_base is not None else current
        built = self.build(item, current, objects)
        result = self.versions.save(item.name, int(expected), self.files(item),
                                    {PRIMARY: canonical(built.annotations)}, user=user, kind="save")
        return result, built

    def restore(self, item: Item, version: int, expected: int, user: str | None = None) -> SaveResult:
        """Make an older version of the image's annotations the current one (a new version). Ids
        another image took meanwhile are renumbered (ids are unique in a json)."""
        if int(version) >= self.store.version(item.name):
            raise DrivelabError(f"version {version} is not an older version", item.name)
        old = self.versions.read(item.name, int(version)).get(PRIMARY)
        if old is None:
            raise DrivelabError(f"version {version} had no annotations", item.name)
        anns = json.loads(old)
        doc = self.doc(self.json_path(item))
        image_id = item.meta["image_id"]
        taken = {a.get("id") for img, a_list in doc.by_image.items() if img != image_id for a in a_list}
        next_id = doc.max_id + 1
        fixed = []
        for a in anns:
            if a.get("id") in taken:
                a = {**a, "id": next_id}
                next_id += 1
            fixed.append(a)
        data = old if fixed == anns else canonical(fixed)
        return self.versions.save(item.name, int(expected), self.files(item), {PRIMARY: data}, user=user,
                                  kind="restore")

    def history(self, item: Item) -> list[dict]:
        """Stored versions, newest first (the current one and every kept snapshot)."""
        return self.versions.history_rows(item.name)


def _check_polygons(polygons: Any, what: str, name: str) -> list[list[float]]:
    if not isinstance(polygons, list) or len(polygons) > 1000:
        raise DrivelabError(f"{what}: polygons must be a list of polygons", name)
    out = []
    for k, p in enumerate(polygons):
        if not isinstance(p, list) or len(p) % 2 or not 6 <= len(p) <= 2 * MAX_VERTICES:
            raise DrivelabError(f"{what}: polygon {k} needs an even number (6 or more) of coordinates", name)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p):
            raise DrivelabError(f"{what}: polygon {k} holds something that is not a finite number", name)
        out.append([float(v) for v in p])
    return out
