"""Pictures of instances: each instance its own colour, its contour, an optional label/score.

Used by ``predict`` (overlays) and the over-/under-segmentation report (GT | prediction |
offenders panels). OpenCV (already a dependency through albumentations) draws contours and text.
"""

from __future__ import annotations

import colorsys

import numpy as np

RED = (230, 40, 40)
ORANGE = (255, 150, 0)
WHITE = (255, 255, 255)


def instance_colors(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct bright colours (golden-ratio hue walk), (n, 3) uint8."""
    h0 = (seed * 0.137) % 1.0
    cols = [colorsys.hsv_to_rgb((h0 + k * 0.618033988749895) % 1.0, 0.75, 1.0) for k in range(n)]
    return (np.array(cols, dtype=np.float32).reshape(-1, 3) * 255).astype(np.uint8)


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray,
    colors: np.ndarray | None = None,
    texts: list[str] | None = None,
    alpha: float = 0.45,
    thickness: int = 1,
    fill: list[bool] | None = None,
) -> np.ndarray:
    """Overlay (N, H, W) bool ``masks`` on an (H, W, 3) uint8 image: filled with ``alpha``, outlined,
    and labelled with ``texts[k]`` (e.g. "box 0.93") at the top-left of each instance."""
    import cv2

    from drivelab.painter import blend

    out = np.ascontiguousarray(image.copy())
    colors = instance_colors(len(masks)) if colors is None else np.asarray(colors, dtype=np.uint8)
    for k, m in enumerate(masks):
        if fill is None or fill[k]:
            out = blend(out, colors[k], alpha, where=m)  # the one painter's blend, per instance
    for k, m in enumerate(masks):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colors[k]), thickness)
    if texts:
        scale = max(0.3, min(image.shape[:2]) / 700)
        for k, m in enumerate(masks):
            if k >= len(texts) or not texts[k] or not m.any():
                continue
            ys, xs = np.nonzero(m)
            org = (int(xs.min()), max(int(ys.min()) + int(10 * scale) + 2, 8))
            cv2.putText(out, texts[k], org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(
                out,
                texts[k],
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                tuple(int(c) for c in colors[k]),
                1,
                cv2.LINE_AA,
            )
    return out


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """Add a black title strip above a panel."""
    import cv2

    h = max(16, panel.shape[0] // 14)
    strip = np.zeros((h, panel.shape[1], 3), np.uint8)
    cv2.putText(strip, title, (4, int(h * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, h / 30, WHITE, 1, cv2.LINE_AA)
    return np.concatenate([strip, panel], 0)


def side_by_side(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    parts = []
    for k, p in enumerate(panels):
        if p.shape[0] < h:
            p = np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)))
        parts.append(p)
        if k + 1 < len(panels):
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(parts, 1)
