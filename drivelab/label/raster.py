"""Reference rasterisation of the paint tools, pixel for pixel what ``static/raster.js`` does.

The browser paints on a Uint8Array of class ids with these integer rules (never with the canvas'
anti-aliased paths), so a mask painted in the app can be predicted exactly from the strokes.
Tests replay strokes through these functions and compare with the PNG the app saved.

Rules
    brush   a disk of diameter ``size``: pixel (x0 + dx, y0 + dy) for dx, dy in [-k, size-1-k],
            k = (size-1)//2, whose offset from the disk centre ((size-1)/2) is within size/2
    stroke  Bresenham line between consecutive pointer pixels, the brush stamped at each step
    polygon pixel centres (x + .5, y + .5) inside the polygon by the even-odd rule, edges half-open
    fill    4-connected region of the seed's class
    guard   "protect classes": an optional 256-entry table, ``guard[v]`` true when a pixel holding
            class ``v`` may be overwritten (paint only over unlabelled: only ``guard[255]``); every
            tool checks the pixel's value at the moment it writes, so a stroke never repaints what it
            was not allowed to
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


def brush_offsets(size: int) -> list[tuple[int, int]]:
    size = max(1, int(size))
    k = (size - 1) // 2
    c = (size - 1) / 2 - k
    r2 = (size / 2) ** 2
    return [
        (dx, dy)
        for dy in range(-k, size - k)
        for dx in range(-k, size - k)
        if (dx - c) ** 2 + (dy - c) ** 2 <= r2
    ]


def line_pixels(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Bresenham's line from (x0, y0) to (x1, y1), both ends included."""
    out = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        out.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return out
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def guard_table(mode: str, protected: set[int] = frozenset()) -> np.ndarray | None:
    """The guard of a protect mode: ``all`` (None), ``unlabelled`` (paint only over 255) or
    ``protect`` (never over the ``protected`` classes)."""
    if mode == "all":
        return None
    g = np.zeros(256, bool)
    if mode == "unlabelled":
        g[255] = True
    elif mode == "protect":
        g[:] = True
        g[list(protected)] = False
    else:
        raise ValueError(f"unknown protect mode {mode!r}")
    return g


def stroke(mask: np.ndarray, points: list[tuple[int, int]], size: int, value: int,
           guard: np.ndarray | None = None) -> None:
    """Paint a brush stroke through integer pixel ``points`` in place."""
    h, w = mask.shape
    offs = brush_offsets(size)
    path = [points[0]]
    for a, b in zip(points, points[1:], strict=False):
        path += line_pixels(*a, *b)[1:]
    for x, y in path:
        for dx, dy in offs:
            if 0 <= x + dx < w and 0 <= y + dy < h and (guard is None or guard[mask[y + dy, x + dx]]):
                mask[y + dy, x + dx] = value


def polygon(mask: np.ndarray, vertices: list[tuple[float, float]], value: int,
            guard: np.ndarray | None = None) -> None:
    """Fill a polygon given in image coordinates (pixel (x, y) spans [x, x+1) x [y, y+1))."""
    h, w = mask.shape
    n = len(vertices)
    if n < 3:
        return
    ys = [v[1] for v in vertices]
    for y in range(max(0, math.floor(min(ys))), min(h, math.ceil(max(ys)) + 1)):
        yc = y + 0.5
        xs = []
        for i in range(n):
            (xa, ya), (xb, yb) = vertices[i], vertices[(i + 1) % n]
            if (ya <= yc < yb) or (yb <= yc < ya):
                xs.append(xa + (yc - ya) * (xb - xa) / (yb - ya))
        xs.sort()
        for xl, xr in zip(xs[0::2], xs[1::2], strict=False):
            # pixel centres x + .5 in [xl, xr)
            lo, hi = max(0, math.ceil(xl - 0.5)), min(w, math.ceil(xr - 0.5))
            if hi > lo:
                row = mask[y, lo:hi]
                row[guard[row] if guard is not None else slice(None)] = value


def flood_fill(mask: np.ndarray, x: int, y: int, value: int, guard: np.ndarray | None = None) -> None:
    """Replace the 4-connected region of mask[y, x]'s class with ``value``, in place."""
    h, w = mask.shape
    old = int(mask[y, x])
    if old == value or (guard is not None and not guard[old]):
        return
    queue = deque([(x, y)])
    mask[y, x] = value
    while queue:
        cx, cy = queue.popleft()
        for nx, ny in ((cx + 1, cy), (cx - 1, cy), (cx, cy + 1), (cx, cy - 1)):
            if 0 <= nx < w and 0 <= ny < h and mask[ny, nx] == old:
                mask[ny, nx] = value
                queue.append((nx, ny))
