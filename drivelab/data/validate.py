"""``validate_dataset``: every check comma10k's CI runs on a pull request, for every format.

What is checked (docs/data.md has the full list):

- partners: every mask has an image of the same name; comma10k images need a mask, Cityscapes
  train/val images need labelIds (or labelTrainIds); BDD100K and test splits may lack labels.
- sizes: a mask has its image's size; images of one folder share the folder's required size:
  ``expected_size`` when given (``"native"`` = the format's own size, e.g. comma10k imgs/
  874x1164, imgs2/ and imgsd/ 1208x1928), else the folder's most common image size (ties go to
  the native size). A folder whose size is not the native one gets a note, not a problem, so
  synthetic and resized sets validate.
- channels: images are 3-channel RGB; comma10k colour masks are RGB (RGBA, greyscale, or a palette
  with transparency are errors; a palette PNG is decoded through its palette); id masks are
  single-channel.
- pixels: every colour-mask pixel is exactly a palette colour and every id-mask pixel a known id
  (255 only where the format defines it as ignore), zero tolerance. A problem reports the count, the
  most common wrong values and their bounding box (anti-aliased brush edges are the usual cause).
- JPEG masks are errors (lossy compression invents colours).
- COCO json: malformed json, missing/unreadable images, image sizes vs the json, annotations
  naming unknown image or category ids, broken polygons/RLE, polygons and boxes outside the image.
- images unchanged: optional sha1 reference (``sha1  name`` lines as sha1sum writes, or JSON).

Files are decoded once each, in a thread pool (PIL and numpy release the GIL), and every check is
vectorised. Unreadable and truncated files are problems, never crashes; validation always runs to
the end and reports everything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab import schema as schemas
from drivelab.errors import DrivelabError
from drivelab.io import IMAGE_SUFFIXES, write_json, write_text

LOSSY_SUFFIXES = {".jpg", ".jpeg"}
NATIVE_SIZE = {"cityscapes": (1024, 2048), "bdd100k": (720, 1280)}  # comma10k: per set, see SETS
Size = tuple[int, int]


# --------------------------------------------------------------------------- results
@dataclass
class Problem:
    """One thing wrong with one file. ``colors`` holds the most common wrong values as
    ``(value, count)`` (``value`` is ``#rrggbb`` for colour masks, an int for id masks);
    ``bbox`` is ``(x0, y0, x1, y1)``, inclusive pixel coordinates of the wrong pixels."""

    path: Path
    kind: str
    message: str
    count: int | None = None
    colors: list[tuple[str | int, int]] | None = None
    bbox: tuple[int, int, int, int] | None = None

    def display_path(self, root: Path | None = None) -> str:
        if root is not None:
            try:
                return self.path.relative_to(root).as_posix()
            except ValueError:
                pass
        return str(self.path)

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.message}"


@dataclass
class ValidationReport:
    root: Path
    format: str
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # image name (relative, posix) -> sha1
    sizes: dict[str, Size] = field(default_factory=dict)  # folder -> the size its images must have

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def errors(self) -> list[Problem]:
        return self.problems

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems).most_common())

    def summary(self) -> str:
        n = len(self.problems)
        head = f"{self.format}: {self.checked} files checked, {n} problem{'' if n == 1 else 's'}"
        if not self.problems:
            return head
        files = len({p.path for p in self.problems})
        kinds = ", ".join(f"{n} {k}" for k, n in self.by_kind().items())
        return f"{head} in {files} file{'' if files == 1 else 's'} ({kinds})"

    def __str__(self) -> str:
        return "\n".join([*(str(p) for p in self.problems), self.summary()])


# --------------------------------------------------------------------------- mask rules
@dataclass(frozen=True)
class ColorRule:
    """RGB colour mask: every pixel exactly one of the schema's colours."""

    schema: schemas.ClassSchema

    def check(self, img: Image.Image, path: Path) -> list[Problem]:
        if img.mode == "P" and "transparency" in img.info:
            return [
                Problem(
                    path,
                    "channels",
                    "palette PNG with transparency (an alpha channel); "
                    f"{self.schema.name} masks are 3-channel RGB",
                )
            ]
        if img.mode not in ("RGB", "P"):
            return [
                Problem(
                    path,
                    "channels",
                    f"mode {img.mode} ({len(img.getbands())} channels); "
                    f"{self.schema.name} masks must be 3-channel RGB",
                )
            ]
        rgb = np.asarray(img.convert("RGB"))
        key = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        ok = np.zeros(key.shape, bool)
        for r, g, b in self.schema.palette.tolist():
            ok |= key == ((r << 16) | (g << 8) | b)
        if ok.all():
            return []
        bad = ~ok
        return [
            _pixel_problem(
                path, bad, key[bad], f"not {self.schema.name} palette colours", lambda v: f"#{int(v):06x}"
            )
        ]


@dataclass(frozen=True)
class IdRule:
    """Single-channel mask of label ids: every value in ``allowed``."""

    allowed: frozenset[int]
    what: str  # e.g. "Cityscapes labelIds (0..33)"
    instance_ids: bool = False  # Cityscapes instanceIds: v < 1000 a labelId, else labelId * 1000 + k

    def check(self, img: Image.Image, path: Path) -> list[Problem]:
        if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            return [
                Problem(
                    path,
                    "channels",
                    f"mode {img.mode} ({len(img.getbands())} channels); "
                    f"{self.what} masks must be single-channel",
                )
            ]
        arr = np.asarray(img).astype(np.int64)
        values = np.clip(arr, 0, 1 << 16)  # anything past 16 bits is wrong anyway
        if self.instance_ids:  # labelId * 1000 + k: the labelId must be an instance class
            inst = values >= 1000
            values = np.where(inst, values // 1000, values)
            allowed = np.where(inst, _lut(CITYSCAPES_INSTANCE_LABELS)[np.minimum(values, 255)], False)
            ok = np.where(inst, allowed, _lut(self.allowed)[np.minimum(values, 1 << 16)])
        else:
            ok = _lut(self.allowed)[values]
        bad = ~ok | (arr < 0)
        if not bad.any():
            return []
        return [_pixel_problem(path, bad, arr[bad], f"not {self.what}", int)]


@dataclass(frozen=True)
class DecodeOnly:
    """Files validated for readability, partner and size only (Cityscapes colour, BDD colormaps)."""

    def check(self, img: Image.Image, path: Path) -> list[Problem]:
        return []


def _pixel_problem(
    path: Path, bad: np.ndarray, values: np.ndarray, what: str, fmt: Callable[[int], str | int]
) -> Problem:
    n = int(bad.sum())
    uniq, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:5]
    top = [(fmt(uniq[i]), int(counts[i])) for i in order]
    rows, cols = np.flatnonzero(bad.any(1)), np.flatnonzero(bad.any(0))
    bbox = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    listed = ", ".join(f"{v} x{c}" for v, c in top) + (", ..." if len(uniq) > len(top) else "")
    msg = (
        f"{n} pixels are {what}: {listed}; at x {bbox[0]}..{bbox[2]}, y {bbox[1]}..{bbox[3]} "
        "(anti-aliased edges?)"
    )
    return Problem(path, "bad-pixels", msg, count=n, colors=top, bbox=bbox)


def _lut(allowed: frozenset[int]) -> np.ndarray:
    lut = np.zeros((1 << 16) + 1, bool)
    lut[sorted(allowed)] = True
    return lut


def _ids(values: Iterable[int], ignore: bool) -> frozenset[int]:
    return frozenset(list(values) + ([schemas.IGNORE] if ignore else []))


CITYSCAPES_LABEL_IDS = frozenset(row[1] for row in schemas.CITYSCAPES_LABELS)
CITYSCAPES_INSTANCE_LABELS = frozenset(row[1] for row in schemas.CITYSCAPES_LABELS if row[4])


# --------------------------------------------------------------------------- index of files
@dataclass
class Entry:
    """One sample: its image (None when missing) and its label files with their rules."""

    name: str
    group: str  # folder whose images share one size
    image: Path | None
    labels: list[tuple[Path, object]] = field(default_factory=list)
    image_rgb: bool = True  # the image must be 3-channel RGB
    expected: Size | None = None  # fixed size from metadata (COCO json)


@dataclass
class _Decoded:
    size: Size | None = None  # (H, W)
    sha1: str | None = None
    problems: list[Problem] = field(default_factory=list)


def _files(folder: Path) -> dict[str, Path]:
    """Image-like files directly in ``folder``, keyed by stem."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def _index_comma10k(root: Path, report: ValidationReport) -> tuple[list[Entry], dict[str, Size]]:
    from drivelab.data.comma10k import SETS

    entries, native = [], {}
    for s, (img_dir, mask_dir, size) in SETS.items():
        if not (root / img_dir).is_dir() and not (root / mask_dir).is_dir():
            continue
        native[img_dir] = size
        rule = ColorRule(schemas.comma10k(driver_camera=s == "imgsd"))
        for folder in (img_dir, mask_dir):
            if not (root / folder).is_dir():
                report.problems.append(
                    Problem(
                        root / folder,
                        "missing-partner",
                        f"folder missing (its partner {img_dir if folder == mask_dir else mask_dir}/ exists)",
                    )
                )
        images, masks = _files(root / img_dir), _files(root / mask_dir)
        for stem in sorted(images.keys() | masks.keys()):
            img, mask = images.get(stem), masks.get(stem)
            if img is None:
                report.problems.append(
                    Problem(mask, "missing-partner", f"mask has no image {img_dir}/{mask.name}")
                )
            if mask is None:
                report.problems.append(
                    Problem(img, "missing-partner", f"image has no mask {mask_dir}/{img.name}")
                )
            entries.append(Entry(stem, img_dir, img, [(mask, rule)] if mask else []))
    trainable = root / "files_trainable"
    if trainable.exists():
        for line in trainable.read_text().split():
            if not (root / line).exists():
                report.problems.append(
                    Problem(trainable, "missing-file", f"lists {line}, which does not exist")
                )
    return entries, native


def _index_cityscapes(root: Path, report: ValidationReport) -> tuple[list[Entry], dict[str, Size]]:
    suffix = "_leftImg8bit"
    images = {}
    for p in sorted((root / "leftImg8bit").glob("*/*/*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.stem.endswith(suffix):
            images[(p.parent.parent.name, p.parent.name, p.stem[: -len(suffix)])] = p
    rules = {
        "labelIds": IdRule(CITYSCAPES_LABEL_IDS - {-1}, "Cityscapes labelIds (0..33)"),
        "labelTrainIds": IdRule(_ids(range(19), True), "Cityscapes trainIds (0..18, 255 ignore)"),
        "instanceIds": IdRule(
            CITYSCAPES_LABEL_IDS - {-1},
            "Cityscapes instanceIds (labelId, or labelId*1000+k for instance classes)",
            instance_ids=True,
        ),
        "color": DecodeOnly(),
    }
    labels: dict[tuple, list[tuple[Path, object]]] = {}
    for ann in ("gtFine", "gtCoarse"):
        for p in sorted((root / ann).glob("*/*/*")):
            if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            stem, _, kind = p.stem.rpartition(f"_{ann}_")
            if kind not in rules:
                continue
            key = (p.parent.parent.name, p.parent.name, stem)
            if key not in images:
                report.problems.append(
                    Problem(
                        p,
                        "missing-partner",
                        f"label has no image leftImg8bit/{key[0]}/{key[1]}/{stem}{suffix}.png",
                    )
                )
            labels.setdefault(key, []).append((p, rules[kind]))
    entries = []
    for key in sorted(images.keys() | labels.keys()):
        img, labs = images.get(key), labels.get(key, [])
        split = key[0]
        has_ids = any(p.stem.endswith(("_labelIds", "_labelTrainIds")) for p, _ in labs)
        if img is not None and split != "test" and not has_ids:
            report.problems.append(
                Problem(
                    img,
                    "missing-partner",
                    f"{split} image has no gtFine/{split}/{key[1]}/{key[2]}_gtFine_labelIds.png",
                )
            )
        entries.append(Entry("/".join(key), "leftImg8bit", img, labs))
    return entries, {"leftImg8bit": NATIVE_SIZE["cityscapes"]}


def _index_bdd100k(root: Path, report: ValidationReport) -> tuple[list[Entry], dict[str, Size]]:
    sem = root / "labels" / "sem_seg"
    id_rule = IdRule(_ids(range(19), True), "BDD100K train ids (0..18, 255 ignore)")
    splits = {
        p.name
        for base in (root / "images" / "10k", sem / "masks", sem / "colormaps")
        if base.is_dir()
        for p in base.iterdir()
        if p.is_dir()
    }
    entries = []
    for split in sorted(splits):
        images = _files(root / "images" / "10k" / split)
        masks, colormaps = _files(sem / "masks" / split), _files(sem / "colormaps" / split)
        for stem in sorted(images.keys() | masks.keys() | colormaps.keys()):
            img = images.get(stem)
            labs = [(p, r) for p, r in ((masks.get(stem), id_rule), (colormaps.get(stem), DecodeOnly())) if p]
            if img is None:
                for p, _ in labs:
                    report.problems.append(
                        Problem(p, "missing-partner", f"label has no image images/10k/{split}/{stem}.jpg")
                    )
            entries.append(Entry(f"{split}/{stem}", "images/10k", img, labs))
    return entries, {"images/10k": NATIVE_SIZE["bdd100k"]}


def _index_folder(root: Path, report: ValidationReport) -> tuple[list[Entry], dict[str, Size]]:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    # A folder of inference inputs may mix sizes and modes: readability is what matters.
    return [Entry(str(p.relative_to(root)), f"/{p}", p, image_rgb=False) for p in files], {}


def _index_coco(root: Path, report: ValidationReport) -> tuple[list[Entry], dict[str, Size]]:
    from drivelab.data.coco import find_annotation_files

    files = find_annotation_files(root)
    if not files:
        report.problems.append(
            Problem(
                root, "missing-file", "no COCO annotations json (annotations.json or train/val/test.json)"
            )
        )
    entries: list[Entry] = []
    for path in files:
        entries += _check_coco_json(path, report)
    return entries, {}


# --------------------------------------------------------------------------- COCO json
def _coco_image_dir(ann_path: Path) -> Path:
    for cand in (ann_path.parent / "images", ann_path.parent.parent / "images"):
        if cand.is_dir():
            return cand
    return ann_path.parent


def _check_coco_json(path: Path, report: ValidationReport) -> list[Entry]:
    report.checked += 1
    problems = report.problems

    clipped: list[str] = []

    def bad(kind: str, msg: str) -> None:
        if kind == "clipped":
            clipped.append(msg)
        else:
            problems.append(Problem(path, kind, msg))

    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        bad("json", f"malformed json ({e})")
        return []
    if not isinstance(data, dict):
        bad("json", "malformed COCO json: the top level is not an object")
        return []
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            bad("json", f"malformed COCO json: no '{key}' list")
    if any(not isinstance(data.get(k), list) for k in ("images", "categories")):
        return []
    cat_ids = set()
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            bad("json", f"category {c!r} lacks id/name")
        elif c["id"] in cat_ids:
            bad("json", f"duplicate category id {c['id']}")
        else:
            cat_ids.add(c["id"])
    image_dir = _coco_image_dir(path)
    images: dict[int, dict] = {}
    entries = []
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            bad("json", f"image entry {str(im)[:80]} lacks id/file_name")
            continue
        if im["id"] in images:
            bad("json", f"duplicate image id {im['id']} ({im['file_name']})")
            continue
        images[im["id"]] = im
        h, w = im.get("height"), im.get("width")
        size = (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None
        if size is None:
            bad("json", f"image {im['file_name']} (id {im['id']}) lacks integer height/width")
        file = image_dir / im["file_name"]
        if not file.is_file():
            problems.append(
                Problem(file, "missing-file", f"listed in {path.name} (image id {im['id']}) but not found")
            )
            continue
        entries.append(Entry(im["file_name"], f"/{file}", file, expected=size))
    for ann in data.get("annotations") or []:
        _check_annotation(ann, images, cat_ids, bad)
    if clipped:
        report.notes.append(
            f"{path.name}: {len(clipped)} polygons extend more than 1 px past the image border "
            f"(legal, pycocotools clips them), e.g. {clipped[0]}"
        )
    return entries


def _check_annotation(
    ann: object, images: dict[int, dict], cat_ids: set, bad: Callable[[str, str], None]
) -> None:
    if not isinstance(ann, dict):
        bad("annotation", f"annotation {str(ann)[:80]} is not an object")
        return
    aid = ann.get("id", "?")
    im = images.get(ann.get("image_id"))
    if im is None:
        bad("annotation", f"annotation {aid}: unknown image_id {ann.get('image_id')!r}")
    if ann.get("category_id") not in cat_ids:
        bad("annotation", f"annotation {aid}: unknown category_id {ann.get('category_id')!r}")
    if im is None or not isinstance(im.get("height"), int) or not isinstance(im.get("width"), int):
        return
    h, w, where = (
        im["height"],
        im["width"],
        f"annotation {aid} ({im['file_name']}, {im['width']}x{im['height']} WxH)",
    )
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            try:
                xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError):
                bad("polygon", f"{where}: polygon {k} is not an even-length list of numbers")
                continue
            if len(xy) < 3:
                bad("polygon", f"{where}: polygon {k} has {len(xy)} points (needs at least 3)")
                continue
            lo, hi = xy.min(0), xy.max(0)
            span = f"x {lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g}"
            if hi[0] <= 0 or hi[1] <= 0 or lo[0] >= w or lo[1] >= h:
                bad("polygon", f"{where}: polygon {k} lies entirely outside the image ({span})")
            elif lo[0] < -1 or lo[1] < -1 or hi[0] > w + 1 or hi[1] > h + 1:
                # Objects cut by the frame: pycocotools clips them when rasterising, so this is
                # legal COCO; counted in a note, not a problem.
                bad("clipped", f"{where}: polygon {k} extends past the image border ({span})")
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if size != [h, w]:
            bad("rle", f"{where}: RLE size {size} is not the image's [height, width] [{h}, {w}]")
        elif isinstance(counts, list):
            if sum(counts) != h * w or any(c < 0 for c in counts):
                bad("rle", f"{where}: uncompressed RLE counts sum to {sum(counts)}, expected {h * w}")
        elif isinstance(counts, str):
            from pycocotools import mask as mask_utils

            try:
                mask_utils.area({"size": size, "counts": counts.encode()})
            except Exception as e:  # pycocotools raises bare errors
                bad("rle", f"{where}: undecodable RLE ({e})")
        else:
            bad("rle", f"{where}: RLE counts must be a string or a list")
    else:
        bad("annotation", f"annotation {aid}: no polygon list or RLE segmentation")
    box = ann.get("bbox")
    if box is not None:
        try:
            x, y, bw, bh = (float(v) for v in box)
        except (TypeError, ValueError):
            bad("annotation", f"{where}: bbox {box!r} is not 4 numbers")
            return
        if bw < 0 or bh < 0 or x < 0 or y < 0 or x + bw > w + 1e-3 or y + bh > h + 1e-3:
            bad("annotation", f"{where}: bbox [{x:g}, {y:g}, {bw:g}, {bh:g}] (xywh) is outside the image")


# --------------------------------------------------------------------------- decoding
def _decode(path: Path, role: str, rule: object | None, rgb_image: bool, want_sha1: bool) -> _Decoded:
    out = _Decoded()
    try:
        data = path.read_bytes()
    except OSError as e:
        out.problems.append(Problem(path, "unreadable", f"cannot read ({e.strerror or e})"))
        return out
    if want_sha1:
        out.sha1 = hashlib.sha1(data).hexdigest()
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises many types for broken files: all mean "unreadable"
        out.problems.append(Problem(path, "unreadable", f"unreadable or truncated image ({e})"))
        return out
    out.size = (img.height, img.width)
    if role == "image":
        if rgb_image and img.mode != "RGB":
            out.problems.append(
                Problem(
                    path,
                    "channels",
                    f"image mode {img.mode} ({len(img.getbands())} channels); images must be 3-channel RGB",
                )
            )
        return out
    if img.format == "JPEG" or path.suffix.lower() in LOSSY_SUFFIXES:
        out.problems.append(
            Problem(
                path, "lossy-mask", "JPEG mask: lossy compression changes label values; masks must be PNG"
            )
        )
        return out
    out.problems += rule.check(img, path)
    return out


def _run(tasks: list[Callable[[], _Decoded]], progress: bool, label: str) -> list[_Decoded]:
    workers = min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda t: t(), tasks)
        if progress and tasks:
            from rich.progress import track

            results = track(results, total=len(tasks), description=label, transient=True)
        return list(results)


# --------------------------------------------------------------------------- hashes
def read_hashes(path: str | Path) -> dict[str, str]:
    """Reference hashes: ``sha1  name`` lines (``sha1sum`` output) or a JSON object name -> sha1."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DrivelabError(f"cannot read hash file ({e.strerror or e})", path) from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DrivelabError(f"malformed hash json ({e})", path) from None
        return {str(k): str(v).lower() for k, v in data.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 40:
            raise DrivelabError(f"line {n}: expected 'sha1  name', got {line[:80]!r}", path)
        out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def write_hash_file(path: str | Path, hashes: dict[str, str]) -> None:
    """Write hashes as ``sha1  name`` lines (``sha1sum -c`` checks them too) or JSON for ``.json``."""
    path = Path(path)
    if path.suffix == ".json":
        write_json(path, dict(sorted(hashes.items())))
    else:
        write_text(path, "".join(f"{h}  {n}\n" for n, h in sorted(hashes.items())))


# --------------------------------------------------------------------------- main entry
INDEXERS = {
    "comma10k": _index_comma10k,
    "cityscapes": _index_cityscapes,
    "bdd100k": _index_bdd100k,
    "coco": _index_coco,
    "folder": _index_folder,
}


def validate_dataset(
    root: str | Path,
    format: str | None = None,
    *,
    reference_hashes: dict[str, str] | str | Path | None = None,
    expected_size: Size | str | None = None,
    compute_hashes: bool = False,
    progress: bool = True,
) -> ValidationReport:
    """Check every image and mask of a dataset; see the module docstring for the rules.

    ``expected_size`` is (H, W) for every folder, ``"native"`` for the format's own sizes, or None
    (each folder's most common size). Image hashes are computed when ``reference_hashes`` is given
    (a dict or a hash file) or ``compute_hashes`` is set; they end up in ``report.hashes``.
    """
    from drivelab.data import FORMATS, detect_format

    root = Path(root)
    if not root.is_dir():
        raise DrivelabError("dataset folder not found", root)
    format = format or detect_format(root)
    if format not in INDEXERS:
        raise DrivelabError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(reference_hashes, (str, Path)):
        reference_hashes = read_hashes(reference_hashes)
    want_sha1 = compute_hashes or reference_hashes is not None
    report = ValidationReport(root, format)
    entries, native = INDEXERS[format](root, report)

    tasks, slots = [], []  # slots[i] = (entry, label index or -1 for the image)
    for e in entries:
        if e.image is not None:
            tasks.append(lambda p=e.image, rgb=e.image_rgb: _decode(p, "image", None, rgb, want_sha1))
            slots.append((e, -1))
        for k, (path, rule) in enumerate(e.labels):
            tasks.append(lambda p=path, r=rule: _decode(p, "mask", r, True, False))
            slots.append((e, k))
    results = _run(tasks, progress, f"validate {root.name}")
    report.checked += len(tasks)

    decoded: dict[tuple[int, int], _Decoded] = {}
    for (e, k), res in zip(slots, results, strict=True):
        decoded[(id(e), k)] = res
        report.problems += res.problems
        if k == -1 and res.sha1 is not None:
            report.hashes[e.image.relative_to(root).as_posix()] = res.sha1

    _check_sizes(entries, decoded, native, expected_size, report, root)
    if reference_hashes is not None:
        _check_hashes(reference_hashes, report, root)
    report.problems.sort(key=lambda p: (str(p.path), p.kind))
    return report


def _fmt(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def _check_sizes(
    entries: list[Entry],
    decoded: dict,
    native: dict[str, Size],
    expected: Size | str | None,
    report: ValidationReport,
    root: Path,
) -> None:
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    for group, members in groups.items():
        fixed = group.startswith("/")  # one-file groups (COCO, folder): the size comes from metadata
        sizes = Counter(decoded[(id(e), -1)].size for e in members if e.image is not None)
        sizes.pop(None, None)
        if fixed:
            required = members[0].expected if expected is None or expected == "native" else expected
        elif expected == "native":
            required = native.get(group)
        elif expected is not None:
            required = tuple(expected)
        elif sizes:
            best = max(sizes.values())
            tied = [s for s, n in sizes.items() if n == best]
            required = native.get(group) if native.get(group) in tied else tied[0]
        else:
            required = None
        if required is not None and not fixed:
            report.sizes[group] = required
            if group in native and required != native[group] and expected is None:
                report.notes.append(
                    f"{group}/: images are {_fmt(required)} (HxW), not the native "
                    f"{report.format} {_fmt(native[group])}; a synthetic or resized set? "
                    "pass --size native to require the native size"
                )
        for e in members:
            img_size = decoded[(id(e), -1)].size if e.image is not None else None
            if img_size is not None and required is not None and img_size != required:
                why = "the json says" if fixed else f"the folder's size{' (given)' if expected else ''} is"
                report.problems.append(
                    Problem(e.image, "size", f"image is {_fmt(img_size)} (HxW), {why} {_fmt(required)}")
                )
            ref = img_size or required
            for k, (path, _) in enumerate(e.labels):
                size = decoded[(id(e), k)].size
                if size is None or ref is None or size == ref:
                    continue
                other = "its image is" if img_size else "the folder's size is"
                report.problems.append(
                    Problem(path, "size", f"mask is {_fmt(size)} (HxW), {other} {_fmt(ref)}")
                )


def _check_hashes(reference: dict[str, str], report: ValidationReport, root: Path) -> None:
    for name, ref in sorted(reference.items()):
        path = root / name
        got = report.hashes.get(name)
        if got is None:
            if not path.is_file():
                report.problems.append(
                    Problem(path, "missing-file", "listed in the reference hashes but missing")
                )
                continue
            got = hashlib.sha1(path.read_bytes()).hexdigest()
        if got != ref:
            report.problems.append(
                Problem(path, "modified", f"image changed: sha1 {got[:12]}..., reference {ref[:12]}...")
            )
