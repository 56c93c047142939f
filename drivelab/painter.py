"""The one overlay painter: class colours over images for predict, the demo report, the engine's
map and audit pictures and instance drawings. The label app's JavaScript paints interactively
with its own canvas code but takes its colours and opacity from ``overlay_style`` (the same
schema call), so a mask looks the same in every picture drivelab makes."""

from __future__ import annotations

from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.schema import ClassSchema

OPACITY = 0.5  # class colours over an image, everywhere a default is needed


def blend(image: np.ndarray, colors: np.ndarray, opacity: float, where: np.ndarray | None = None
          ) -> np.ndarray:
    """``image`` with ``colors`` (same shape, uint8 RGB, or one RGB triple) blended in at
    ``opacity``; only where ``where`` is true when given. Integer arithmetic: ~3x faster than
    float on big frames, and exact enough for pictures."""
    a = int(round(float(opacity) * 256))
    colors = np.broadcast_to(np.asarray(colors, np.uint8), image.shape)
    mixed = ((image.astype(np.uint16) * (256 - a) + colors.astype(np.uint16) * a) >> 8).astype(np.uint8)
    if where is None:
        return mixed
    out = image.copy()
    out[where] = mixed[where]
    return out


def blend_pil(image: Any, colors: Any, opacity: float = OPACITY) -> Any:
    """``blend`` for PIL images of one size (thumbnail sheets of many small panels: PIL's C code
    saves the numpy round trip per panel)."""
    from PIL import Image

    return Image.blend(image, colors, float(opacity))


def overlay_style(schema: ClassSchema, opacity: float = OPACITY) -> dict:
    """Colours (hex, by train id) and opacity for the label app's canvas."""
    return {"colors": schema.hex_colors(), "opacity": float(opacity), "names": list(schema.names)}


class Painter:
    """Colour maps, overlays with a legend, and side-by-side frames for one class schema."""

    def __init__(self, schema: ClassSchema, opacity: float = OPACITY, legend: bool = True) -> None:
        if not 0.0 <= opacity <= 1.0:
            raise DrivelabError(f"opacity must be between 0 and 1, got {opacity}")
        self.schema = schema
        self.lut = schema.palette_256()
        self.opacity = opacity
        self.legend = legend
        self._legend_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def color(self, mask: np.ndarray) -> np.ndarray:
        return self.lut[mask]

    def overlay(self, image: np.ndarray, mask: np.ndarray, legend: bool | None = None) -> np.ndarray:
        """Class colours blended over the image (ignore/unknown ids keep the image's pixels)."""
        known = mask < self.schema.num_classes
        out = blend(image, self.lut[mask], self.opacity, where=None if known.all() else known)
        if self.legend if legend is None else legend:
            self._draw_legend(out)
        return out

    def side_by_side(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.concatenate([image, self.color(mask)], axis=1)

    def legend_image(self, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, alpha) patch listing every class with its colour, scaled to the frame height."""
        if height in self._legend_cache:
            return self._legend_cache[height]
        from PIL import Image, ImageDraw, ImageFont

        px = max(8, round(height / 30))
        try:
            font = ImageFont.load_default(size=px)
        except TypeError:  # Pillow < 10.1: fixed bitmap font
            font = ImageFont.load_default()
        names = self.schema.names
        pad, box = max(2, px // 4), px
        w = pad * 3 + box + max(int(font.getlength(n)) for n in names)
        h = pad + len(names) * (box + pad)
        img = Image.new("RGBA", (w, h), (0, 0, 0, 150))
        draw = ImageDraw.Draw(img)
        for i, (name, c) in enumerate(zip(names, self.schema.palette, strict=True)):
            y = pad + i * (box + pad)
            draw.rectangle([pad, y, pad + box - 1, y + box - 1], fill=tuple(int(v) for v in c) + (255,))
            draw.text((pad * 2 + box, y + box / 2), name, fill=(255, 255, 255, 255), font=font, anchor="lm")
        arr = np.asarray(img)
        patch = (arr[..., :3], arr[..., 3:].astype(np.uint16))
        self._legend_cache[height] = patch
        return patch

    def _draw_legend(self, frame: np.ndarray) -> None:
        rgb, alpha = self.legend_image(frame.shape[0])
        h, w = min(rgb.shape[0], frame.shape[0]), min(rgb.shape[1], frame.shape[1])
        m = 2
        region = frame[m:m + h, m:m + w]
        h, w = region.shape[:2]
        a = alpha[:h, :w]
        region[:] = ((rgb[:h, :w] * a + region * (255 - a)) // 255).astype(np.uint8)
