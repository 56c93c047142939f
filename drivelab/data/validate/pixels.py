"""Pixel rules: decode a file once, then check its mode, bit depth and every pixel value.

Colour masks (comma10k) are decoded the way comma10k's CI decodes them (``viewer.fix``: a palette
PNG goes through its palette, a 4th channel is dropped, anything with fewer than 3 channels makes
their script crash or fail its shape check). The default profile then adds what the CI does not
look at (translucent alpha, tRNS, 16 bits per channel, JPEG data) and says so in each message.
Id masks (Cityscapes, BDD100K) hold one id per pixel. Every check is vectorised; only the wrong
pixels are summarised.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from drivelab import schema as schemas
from drivelab.data.validate.report import BEYOND_CI, Problem

LOSSY_SUFFIXES = {".jpg", ".jpeg"}
ID_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")


@dataclass
class Opened:
    """A decoded file: the PIL image (None when unreadable), its bytes' hashes and PNG header."""

    path: Path
    img: Image.Image | None = None
    sha1: str | None = None  # of the bytes, as sha1sum prints it
    git_blob: str | None = None  # the id git gives these bytes (to compare with history)
    bit_depth: int | None = None  # PNG only: bits per sample from IHDR
    size: tuple[int, int] | None = None  # (H, W) once decoded
    mode: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def is_jpeg(self) -> bool:
        decoded_jpeg = self.img is not None and self.img.format == "JPEG"
        return decoded_jpeg or self.path.suffix.lower() in LOSSY_SUFFIXES


def open_file(path: Path, hashes: bool = False) -> Opened:
    """Read ``path`` once and decode it fully; unreadable or truncated files become a problem."""
    out = Opened(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        out.problems.append(Problem(path, "unreadable", f"cannot read ({e.strerror or e})"))
        return out
    if hashes:
        out.sha1 = hashlib.sha1(data).hexdigest()
        out.git_blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        out.bit_depth = data[24]
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises many types for broken files: all mean "unreadable"
        out.problems.append(Problem(path, "unreadable", f"unreadable or truncated image ({e})"))
        return out
    out.img, out.size, out.mode = img, (img.height, img.width), img.mode
    return out


# --------------------------------------------------------------------------- summaries
def pixel_problem(path: Path, bad: np.ndarray, values: np.ndarray, what: str, fmt: Callable[[int], str | int],
                  kind: str = "bad-pixels", hint: str = "anti-aliased edges?", suffix: str = "") -> Problem:
    """``bad`` (H, W) marks the wrong pixels, ``values`` their values (in ``bad``'s order)."""
    n = int(bad.sum())
    uniq, counts = np.unique(values, return_counts=True, axis=0 if values.ndim > 1 else None)
    order = np.argsort(-counts, kind="stable")[:5]
    top = [(fmt(uniq[i]), int(counts[i])) for i in order]
    rows, cols = np.flatnonzero(bad.any(1)), np.flatnonzero(bad.any(0))
    bbox = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    listed = ", ".join(f"{v} x{c}" for v, c in top) + (", ..." if len(uniq) > len(top) else "")
    msg = (f"{n} pixels are {what}: {listed}; at x {bbox[0]}..{bbox[2]}, y {bbox[1]}..{bbox[3]}"
           + (f" ({hint})" if hint else "") + suffix)
    return Problem(path, kind, msg, count=n, colors=top, bbox=bbox)


def _hex(v: int) -> str:
    return f"#{int(v):06x}"


def _rgb_key(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]


# --------------------------------------------------------------------------- colour masks
def ci_refusal(img: Image.Image, path: Path) -> Problem | None:
    """Why comma10k's CI cannot judge this mask's colours at all (``viewer.fix`` crashes on it or
    its (H, W, 3) shape check fails: both refuse the pull request), or None."""
    if img.mode == "P":
        palette_len = len(img.getpalette() or []) // 3
        top = max(i for _, i in img.getcolors(256))
        if top >= palette_len:
            return Problem(path, "channels", f"palette index {top} is past the {palette_len} palette entries "
                           "(comma10k's CI crashes on it)")
        return None
    bands = len(img.getbands())
    if bands == 1:
        what = ("16-bit greyscale" if img.mode.startswith("I") else
                "greyscale" if img.mode in ("L", "1") else "single-channel")
        return Problem(path, "channels", f"mode {img.mode} ({what}); comma10k masks are 3-channel RGB "
                       "(comma10k's CI crashes on single-channel masks)")
    if bands < 3:
        return Problem(path, "channels", f"mode {img.mode} has {bands} channels; comma10k masks are "
                       "3-channel RGB (comma10k's CI refuses the shape)")
    return None


def ci_colors(img: Image.Image, limit: int) -> set[tuple[int, int, int]] | None:
    """The distinct colours comma10k's CI sees in the mask (palette looked up, a 4th channel
    dropped), or None when there are more than ``limit`` (then the pixels must be looked at).
    PIL counts colours in C: a clean mask never needs a full-size numpy pass."""
    colors = img.getcolors(256 if img.mode == "P" else limit)
    if colors is None:
        return None
    if img.mode == "P":
        palette = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
        out = {tuple(int(v) for v in palette[i]) for _, i in colors}
    else:
        out = {tuple(int(v) for v in c[:3]) for _, c in colors}
    return out if len(out) <= limit else None


def ci_array(img: Image.Image) -> np.ndarray:
    """The (H, W, 3) array comma10k's CI checks (``viewer.fix``); ``ci_refusal`` must be None."""
    arr = np.asarray(img)
    if img.mode == "P":
        return np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)[arr]
    return arr[..., :3]  # the CI drops a 4th channel (alpha) without looking at it


def _see_through(img: Image.Image) -> int:
    """Pixels a viewer would not show as the stored colour: alpha < 255 or tRNS-transparent."""
    if img.mode == "RGBA":
        if img.getchannel("A").getextrema()[0] == 255:
            return 0
        return int((np.asarray(img.getchannel("A")) < 255).sum())
    t = img.info.get("transparency")
    if t is None:
        return 0
    if img.mode == "P":
        alpha = np.full(256, 255, np.uint8)
        if isinstance(t, int):
            alpha[t] = 0
        else:
            alpha[: len(t)] = np.frombuffer(bytes(t), np.uint8)[:256]
        return sum(n for n, i in img.getcolors(256) if alpha[i] < 255)
    if img.mode == "RGB" and isinstance(t, tuple):
        return int((np.asarray(img) == np.asarray(t, np.uint8)).all(-1).sum())
    return 0


@dataclass(frozen=True)
class ColorRule:
    """RGB colour mask: every pixel exactly one of the schema's colours. ``ci``: judge as comma10k's
    CI does and nothing more; else also refuse what their CI does not see (said in the message)."""

    schema: schemas.ClassSchema
    ci: bool = False

    def check(self, f: Opened, notes: list[str]) -> list[Problem]:
        img, path = f.img, f.path
        if f.is_jpeg and not self.ci:
            return [Problem(path, "lossy-mask", "JPEG mask: lossy compression changes label values; masks "
                            f"must be PNG ({BEYOND_CI}, which judges only the decoded colours)")]
        problem = ci_refusal(img, path)
        if problem is not None:
            return [problem]
        out = []
        if not self.ci:
            hidden = _see_through(img)
            if hidden:
                how = "alpha < 255" if img.mode == "RGBA" else "transparent in its tRNS chunk"
                out.append(Problem(path, "channels", f"{hidden} pixels are {how}: viewers blend them, "
                                   f"training reads the stored colour ({BEYOND_CI}, which ignores "
                                   "transparency)"))
            if f.bit_depth == 16:
                out.append(Problem(path, "channels", "16 bits per channel: readers differ (PIL keeps the "
                                   f"high byte, OpenCV all 16 bits); masks must be 8-bit ({BEYOND_CI}, "
                                   "which sees only the high byte)"))
        palette = {tuple(int(v) for v in c) for c in self.schema.palette}
        colors = ci_colors(img, len(palette))
        if colors is None or not colors <= palette:
            key = _rgb_key(ci_array(img))
            bad = ~np.isin(key, _rgb_key(self.schema.palette))
            if bad.any():  # more distinct RGBA values than colours can still all be exact
                what = f"not {self.schema.name} palette colours"
                out.append(pixel_problem(path, bad, key[bad], what, _hex))
                return out
        if f.is_jpeg:
            notes.append(f"{path.name}: JPEG data, yet every pixel is an exact palette colour (comma10k's CI "
                         "accepts it; the default profile refuses it as a lossy mask)")
        return out

    def arrays(self, f: Opened) -> np.ndarray | None:
        return None


# --------------------------------------------------------------------------- id masks
def _lut(allowed: Iterable[int]) -> np.ndarray:
    lut = np.zeros((1 << 16) + 1, bool)
    lut[sorted(allowed)] = True
    return lut


def id_set(values: Iterable[int], ignore: bool) -> frozenset[int]:
    return frozenset(list(values) + ([schemas.IGNORE] if ignore else []))


CITYSCAPES_LABEL_IDS = frozenset(row[1] for row in schemas.CITYSCAPES_LABELS if row[1] >= 0)
CITYSCAPES_INSTANCE_LABELS = frozenset(row[1] for row in schemas.CITYSCAPES_LABELS if row[4])


@dataclass(frozen=True)
class IdRule:
    """Single-channel mask of label ids: every value in ``allowed``."""

    allowed: frozenset[int]
    what: str  # e.g. "Cityscapes labelIds (0..33)"
    instance_ids: bool = False  # Cityscapes instanceIds: v < 1000 a labelId, else labelId * 1000 + k

    def values(self, img: Image.Image) -> np.ndarray:
        return np.asarray(img).astype(np.int64)

    def check(self, f: Opened, notes: list[str]) -> list[Problem]:
        img, path = f.img, f.path
        if f.is_jpeg:
            return [Problem(path, "lossy-mask", "JPEG mask: lossy compression changes label values; "
                            "masks must be PNG")]
        if img.mode not in ID_MODES:
            return [Problem(path, "channels", f"mode {img.mode} ({len(img.getbands())} channels); "
                            f"{self.what} masks must be single-channel")]
        arr = self.values(img)
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
        return [pixel_problem(path, bad, arr[bad], f"not {self.what}", int)]

    def arrays(self, f: Opened) -> np.ndarray | None:
        if f.img is None or f.img.mode not in ID_MODES or f.is_jpeg:
            return None
        return self.values(f.img)


@dataclass(frozen=True)
class ColormapRule:
    """A colour rendering of a mask (BDD100K ``colormaps/``): any RGB, RGBA or palette PNG; its
    colours are compared with the mask's in ``colormap_agrees``."""

    def check(self, f: Opened, notes: list[str]) -> list[Problem]:
        if f.img.mode not in ("RGB", "RGBA", "P"):
            return [Problem(f.path, "channels", f"mode {f.img.mode}: a colormap is an RGB or palette image")]
        return []

    def arrays(self, f: Opened) -> np.ndarray | None:
        if f.img is None or f.img.mode not in ("RGB", "RGBA", "P"):
            return None
        return np.asarray(f.img.convert("RGB"))


@dataclass(frozen=True)
class DecodeOnly:
    """Files validated for readability, partner and size only (Cityscapes colour images)."""

    def check(self, f: Opened, notes: list[str]) -> list[Problem]:
        return []

    def arrays(self, f: Opened) -> np.ndarray | None:
        return None


# --------------------------------------------------------------------------- two files of one sample
def colormap_agrees(mask: np.ndarray, colormap: np.ndarray, palette: np.ndarray, path: Path) -> list[Problem]:
    """Every colormap pixel is the official colour of the mask's train id at that pixel."""
    if mask.shape != colormap.shape[:2]:
        return []  # the size rule reports it
    expected = palette[np.clip(mask, 0, 255).astype(np.uint8)]
    bad = (colormap != expected).any(-1)
    if not bad.any():
        return []
    return [pixel_problem(path, bad, _rgb_key(colormap[bad]),
                          "not the official BDD100K colour of the mask's train id", _hex,
                          kind="colormap", hint="", suffix="; regenerate it from the mask")]


def train_ids_agree(label_ids: np.ndarray, train_ids: np.ndarray, lut: np.ndarray,
                    path: Path) -> list[Problem]:
    """labelTrainIds == the official labelId -> trainId table applied to labelIds, pixel for pixel."""
    if label_ids.shape != train_ids.shape:
        return []  # the size rule reports it
    expected = lut[np.clip(label_ids, 0, 255)]
    bad = train_ids != expected
    if not bad.any():
        return []
    return [pixel_problem(path, bad, train_ids[bad], "not the trainId of their labelIds pixel", int,
                          kind="disagree", hint="",
                          suffix="; labelIds are the source of truth (the reader reads them): regenerate "
                                 "labelTrainIds with `drivelab convert --to cityscapes-trainids`")]
