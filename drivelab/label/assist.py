"""Assisted tools that need no downloaded weights, computed on the server with the libraries made
for them: box -> mask with OpenCV's GrabCut (refined by include/exclude strokes), superpixels with
scikit-image's SLIC (once per image and size, cached), and a colour-tolerance flood fill on the
image with OpenCV's ``floodFill`` (the "magic wand": pixels connected to the seed whose colour is
within the tolerance of the seed's). Each returns a proposal; the page decides where it goes (the
current class, the selected object), so what is accepted is exactly what was shown.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.label.cache import LockedLRU

SUPERPIXEL_SIZES = (6, 8, 12, 16, 24, 32, 48, 64)  # region sizes in pixels the slider steps through
SLIC_PIXELS = 2_500_000  # larger images are segmented at a reduced scale (SLIC: ~1.5 s CPU per Mpx)
GRABCUT_SIDE = 480  # GrabCut works on at most this many pixels per side (larger boxes are shrunk)
MARK_NONE, MARK_INCLUDE, MARK_EXCLUDE = 0, 1, 2


def check_box(box: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
    """An [x0, x1) x [y0, y1) box clipped to the image; refused when it holds fewer than 2x2 pixels."""
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = sorted((max(0, min(w, x0)), max(0, min(w, x1))))
    y0, y1 = sorted((max(0, min(h, y0)), max(0, min(h, y1))))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise DrivelabError(f"the box [{x0}, {y0}, {x1}, {y1}] is smaller than 2x2 pixels inside the image")
    return x0, y0, x1, y1


def grabcut(image: np.ndarray, box: tuple[int, int, int, int], marks: np.ndarray | None = None,
            iterations: int = 5) -> np.ndarray:
    """GrabCut's foreground inside ``box`` as a (box height, box width) bool array.

    The model sees the box and a margin around it (background by definition); ``marks`` (box-sized,
    0 none, 1 include, 2 exclude) pin pixels to foreground or background. Deterministic: OpenCV's
    random generator is seeded before each call, so the same request gives the same proposal."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = check_box(box, h, w)
    bw, bh = x1 - x0, y1 - y0
    if marks is not None and marks.shape != (bh, bw):
        raise DrivelabError(f"the marks are {marks.shape[1]}x{marks.shape[0]}, the box is {bw}x{bh}")
    m = max(8, round(0.15 * max(bw, bh)))  # background context around the box
    cx0, cy0, cx1, cy1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1, :3])
    gc = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
    inner = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
    gc[inner] = cv2.GC_PR_FGD
    if marks is not None:
        region = gc[inner]
        region[marks == MARK_INCLUDE] = cv2.GC_FGD
        region[marks == MARK_EXCLUDE] = cv2.GC_BGD
    if not (gc == cv2.GC_BGD).any():
        # The box is the whole image: its outer ring is the best guess at background.
        ring = np.ones(gc.shape, bool)
        ring[1:-1, 1:-1] = False
        gc[ring & (gc == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
    scale = min(1.0, GRABCUT_SIDE / max(crop.shape[:2]))
    work, wgc = crop, gc
    if scale < 1.0:
        size = (max(2, round(crop.shape[1] * scale)), max(2, round(crop.shape[0] * scale)))
        work = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        wgc = cv2.resize(gc, size, interpolation=cv2.INTER_NEAREST)
    if not ((wgc == cv2.GC_FGD) | (wgc == cv2.GC_PR_FGD)).any():
        return np.zeros((bh, bw), bool)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(cv2.cvtColor(work, cv2.COLOR_RGB2BGR), wgc, None, bgd, fgd, int(iterations),
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error as e:
        raise DrivelabError(f"GrabCut failed ({str(e).strip().splitlines()[-1]})") from None
    if scale < 1.0:
        wgc = cv2.resize(wgc, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_NEAREST)
    fg = (wgc == cv2.GC_FGD) | (wgc == cv2.GC_PR_FGD)
    out = fg[inner].copy()
    if marks is not None:  # strokes always win, also where resizing blurred them
        out[marks == MARK_INCLUDE] = True
        out[marks == MARK_EXCLUDE] = False
    return out


def superpixel_size(size: int) -> int:
    """The nearest offered region size (the cache keeps a few per image, not one per pixel step)."""
    return min(SUPERPIXEL_SIZES, key=lambda s: (abs(s - int(size)), s))


def superpixels(image: np.ndarray, size: int) -> np.ndarray:
    """SLIC superpixels of about ``size`` x ``size`` pixels: (H, W) int32 labels 0..N-1, each connected.
    Images over ``SLIC_PIXELS`` are segmented at a reduced scale and the labels scaled back (nearest),
    which keeps every region connected and SLIC's float Lab copy of the image bounded."""
    import cv2
    from skimage.segmentation import slic

    h, w = image.shape[:2]
    scale = min(1.0, (SLIC_PIXELS / (h * w)) ** 0.5)
    work = image[..., :3]
    if scale < 1.0:
        work = cv2.resize(np.ascontiguousarray(work), (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    n = max(1, round(work.shape[0] * work.shape[1] / (size * scale) ** 2))
    labels = slic(work, n_segments=n, compactness=10, start_label=0, channel_axis=-1,
                  enforce_connectivity=True)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    if scale < 1.0:
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    return labels


def wand(image: np.ndarray, x: int, y: int, tolerance: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Pixels 4-connected to (x, y) whose colour is within ``tolerance`` of the seed's in every
    channel: (box [x0, y0, x1, y1) , box-sized bool array)."""
    import cv2

    h, w = image.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise DrivelabError(f"({x}, {y}) is outside the {w}x{h} image")
    t = int(max(0, min(255, tolerance)))
    filled = np.zeros((h + 2, w + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    cv2.floodFill(image[..., :3].copy(), filled, (int(x), int(y)), (0, 0, 0), (t, t, t),
                  (t, t, t), flags)
    region = filled[1:-1, 1:-1].astype(bool)
    ys, xs = np.nonzero(region)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return box, region[box[1]:box[3], box[0]:box[2]]


class Assist:
    """The per-app side of the tools: the superpixel cache (bytes ready to send), one computation
    per key at a time (a second request for the same superpixels waits for the first)."""

    def __init__(self, cache_size: int = 8) -> None:
        self.cache = LockedLRU(cache_size)
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def superpixels(self, key: Hashable, image: np.ndarray, size: int) -> tuple[bytes, int, int, bool]:
        """(label bytes (uint16 or uint32, little-endian), bytes per label, segments, cache hit)."""
        hit = self.cache.get(key)
        if hit is not None:
            return (*hit, True)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self.cache.get(key)
            if hit is not None:
                return (*hit, True)
            labels = superpixels(image, size)
            n = int(labels.max()) + 1
            dtype = np.dtype("<u2") if n <= 65536 else np.dtype("<u4")
            value = (labels.astype(dtype).tobytes(), dtype.itemsize, n)
            self.cache.put(key, value)
        with self._guard:
            self._locks.pop(key, None)
        return (*value, False)
