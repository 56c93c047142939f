"""Procedural robot totes (ARMBench mix-object-tote style) with exact instance masks.

A plastic tote seen from above holds cardboard boxes, polybags, books and bottles that
overlap: later objects occlude earlier ones and each mask is the object's *visible* part,
which is what instance annotations of cluttered totes record. The hard cases of the real data
are kept on purpose: objects of the same colour touching each other, bags with the tote's
colour, glossy highlights that cut an object in two.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("box", "bag", "book", "bottle")


@dataclass
class Tote:
    image: np.ndarray  # (H, W, 3) uint8
    instance_ids: np.ndarray  # (H, W) int32: 0 tote/background, k = k-th object (1-based)
    kinds: list[str]  # kind of object k (index k-1)
    polygons: list[list[float] | None]  # outline of object k when nothing covers it, else None


@dataclass
class ToteOptions:
    objects: tuple[int, int] = (3, 9)  # inclusive range of objects placed per tote
    twin_rate: float = 0.3  # chance an object is a same-coloured twin placed against the last one


def _rotated_rect(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], np.float32) / 2
    rot = corners @ np.array([[c, s], [-s, c]], np.float32)
    return rot + np.array([cx, cy], np.float32)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    """A lumpy closed outline (a polybag): radius modulated by a few low harmonics."""
    a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    radius = np.ones_like(a)
    for k in (2, 3, 5):
        radius += rng.uniform(-0.18, 0.18) * np.cos(k * a + rng.uniform(0, 2 * np.pi))
    sx, sy = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)
    outline = np.stack([cx + r * sx * radius * np.cos(a), cy + r * sy * radius * np.sin(a)], 1)
    return outline.astype(np.float32)


def _fill(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    """Rasterise with pycocotools itself, so a polygon annotation decodes to exactly this mask."""
    from pycocotools import mask as mask_utils

    flat = [float(v) for v in poly.reshape(-1)]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], *shape))).astype(bool)


def render_tote(rng: np.random.Generator, size: tuple[int, int], opts: ToteOptions | None = None) -> Tote:
    opts = opts or ToteOptions()
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tote_color = np.array([40, 90, 160] if rng.random() < 0.6 else [70, 70, 75], np.float32)
    tote_color = np.clip(tote_color + rng.normal(0, 12, 3), 0, 255)
    img = np.empty((h, w, 3), np.float32)
    img[:] = tote_color
    # Tote walls: a lighter frame whose width varies by side (the camera is not centred).
    margins = rng.uniform(0.04, 0.12, 4) * np.array([h, h, w, w])
    wall = (yy < margins[0]) | (yy > h - margins[1]) | (xx < margins[2]) | (xx > w - margins[3])
    img[wall] *= 1.35
    inner = (margins[2], margins[0], w - margins[3], h - margins[1])  # x0, y0, x1, y1

    ids = np.zeros((h, w), np.int32)
    kinds: list[str] = []
    shapes: list[tuple[np.ndarray, np.ndarray]] = []  # (outline, full mask) per placed object
    highlights = np.zeros((h, w), bool)
    scale = min(h, w)
    last: tuple[float, float, float, float, float, np.ndarray] | None = None
    for _ in range(int(rng.integers(opts.objects[0], opts.objects[1] + 1))):
        kind = KINDS[int(rng.choice(4, p=[0.4, 0.3, 0.15, 0.15]))]
        cx, cy = rng.uniform(inner[0], inner[2]), rng.uniform(inner[1], inner[3])
        angle = rng.uniform(0, np.pi)
        color = None
        if last is not None and rng.random() < opts.twin_rate:
            # A same-coloured twin pressed against the previous object: the classic
            # under-segmentation trap (two boxes that look like one).
            lx, ly, lw, lh, la, color = last
            kind = "box"
            cx, cy = lx + np.cos(la) * lw * 1.02, ly + np.sin(la) * lw * 1.02
            angle, bw, bh = la, lw, lh
        if kind in ("box", "book"):
            if color is None:
                bw, bh = scale * rng.uniform(0.12, 0.32), scale * rng.uniform(0.1, 0.26)
            if kind == "book":
                bh *= 0.6
            poly = _rotated_rect(cx, cy, bw, bh, angle)
        elif kind == "bottle":
            bw, bh = scale * rng.uniform(0.2, 0.35), scale * rng.uniform(0.06, 0.1)
            poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(bw / 2), max(2, int(bh / 2))),
                                    int(np.degrees(angle)), 0, 360, 10).astype(np.float32)
        else:
            bw = bh = scale * rng.uniform(0.08, 0.16)
            poly = _blob(rng, cx, cy, bw)
        # Objects may lean over the tote wall out of view: clamp the outline to the image, so the
        # annotation stays inside it (validate flags polygons that leave the image).
        poly = np.clip(poly, 0, [w, h]).astype(np.float32)
        shape = _fill((h, w), poly)
        if shape.sum() < 12:
            continue
        if color is None:
            if kind == "box":
                color = np.clip(np.array([165, 125, 80]) + rng.normal(0, 18, 3), 0, 255)
            elif kind == "bag":
                like_tote = rng.random() < 0.25  # a bag the colour of the tote: hard to see
                color = tote_color * rng.uniform(0.9, 1.6) if like_tote else rng.uniform(120, 250, 3)
            else:
                color = rng.uniform(30, 230, 3)
        img[shape] = color
        # Shading towards one edge makes each object's extent visible without a border line.
        grad = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / max(bw, 1)
        img[shape] *= (1 + 0.15 * grad[shape])[:, None]
        if kind == "box" and rng.random() < 0.7:  # packing tape across the box
            tape = shape & (np.abs((xx - cx) * -np.sin(angle) + (yy - cy) * np.cos(angle)) < bh * 0.08)
            img[tape] = np.clip(color * 1.25, 0, 255)
        if kind == "bag":
            highlights |= shape & (((xx - cx - bw * 0.2) ** 2 + (yy - cy + bw * 0.2) ** 2) < (bw * 0.25) ** 2)
        ids[shape] = len(kinds) + 1
        kinds.append(kind)
        shapes.append((poly, shape))
        last = (cx, cy, bw, bh, angle, np.asarray(color, np.float32))

    img[highlights] = img[highlights] * 0.4 + 255 * 0.6
    coarse = rng.standard_normal((4, 4)).astype(np.float32)
    shading = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img *= (1 + 0.08 * shading)[..., None] * rng.uniform(0.8, 1.15)
    img += rng.normal(0, 4, (h, w, 3))
    image = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), rng.uniform(0.4, 0.9))
    # Renumber so ids are 1..N over objects that stayed visible.
    visible = [k for k in range(1, len(kinds) + 1) if (ids == k).sum() >= 12]
    out = np.zeros_like(ids)
    polygons: list[list[float] | None] = []
    for new, k in enumerate(visible, start=1):
        m = ids == k
        out[m] = new
        poly, full = shapes[k - 1]
        polygons.append([float(v) for v in poly.reshape(-1)] if np.array_equal(m, full) else None)
    return Tote(image=image, instance_ids=out, kinds=[kinds[k - 1] for k in visible], polygons=polygons)
