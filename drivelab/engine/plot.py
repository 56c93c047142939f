"""Static PNG charts without matplotlib or kaleido (neither is a drivelab dependency): a scatter
plot for the map and line/bar charts for the benchmark, drawn with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Tableau-10: distinguishable categorical colours.
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def category_color(i: int) -> tuple[int, int, int]:
    return (170, 170, 170) if i < 0 else PALETTE[i % len(PALETTE)]


def viridis(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (N, 3) uint8 along a 5-stop approximation of viridis."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)
    t = np.clip(np.nan_to_num(np.asarray(t, np.float64), nan=0.0), 0, 1) * (len(stops) - 1)
    i = np.minimum(t.astype(int), len(stops) - 2)
    f = (t - i)[:, None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


class Canvas:
    """A plot area with data -> pixel mapping, axes and labels."""

    def __init__(
        self,
        width: int,
        height: int,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        title: str = "",
        xlabel: str = "",
        ylabel: str = "",
        margin: tuple[int, int, int, int] = (70, 40, 20, 55),
    ):
        self.img = Image.new("RGB", (width, height), "white")
        self.d = ImageDraw.Draw(self.img)
        self.left, self.top, self.right, self.bottom = (
            margin[0],
            margin[1],
            width - margin[2],
            height - margin[3],
        )
        pad_x = (xlim[1] - xlim[0]) * 0.04 or 1.0
        pad_y = (ylim[1] - ylim[0]) * 0.06 or 1.0
        self.xlim = (xlim[0] - pad_x, xlim[1] + pad_x)
        self.ylim = (ylim[0] - pad_y, ylim[1] + pad_y)
        self.font, self.small = _font(14), _font(11)
        self.d.rectangle([self.left, self.top, self.right, self.bottom], outline=(60, 60, 60))
        if title:
            self.d.text((width / 2, 12), title, fill="black", font=self.font, anchor="mt")
        if xlabel:
            self.d.text(
                ((self.left + self.right) / 2, height - 8), xlabel, fill="black", font=self.small, anchor="mb"
            )
        if ylabel:
            lab = Image.new("RGBA", (300, 16), (255, 255, 255, 0))
            ImageDraw.Draw(lab).text((150, 8), ylabel, fill="black", font=self.small, anchor="mm")
            lab = lab.rotate(90, expand=True)
            self.img.paste(lab, (2, int((self.top + self.bottom) / 2 - 150)), lab)

    def px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fx = (np.asarray(x, np.float64) - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (np.asarray(y, np.float64) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return self.left + fx * (self.right - self.left), self.bottom - fy * (self.bottom - self.top)

    def ticks(self, xticks: bool = True, xvalues: np.ndarray | None = None) -> None:
        """Grid lines and labels; ``xvalues``: label these x positions (e.g. the measured ones)
        instead of evenly spaced ones."""
        for v in np.linspace(*self.ylim, 5)[1:-1]:
            _, py = self.px(np.array([0]), np.array([v]))
            self.d.line([self.left, py[0], self.right, py[0]], fill=(230, 230, 230))
            self.d.text((self.left - 4, py[0]), f"{v:.3g}", fill="black", font=self.small, anchor="rm")
        if xticks:
            for v in np.linspace(*self.xlim, 6)[1:-1] if xvalues is None else xvalues:
                px, _ = self.px(np.array([v]), np.array([0]))
                self.d.text((px[0], self.bottom + 4), f"{v:.3g}", fill="black", font=self.small, anchor="mt")

    def legend(self, entries: list[tuple[str, tuple[int, int, int]]], corner: str = "br") -> None:
        line_h = 16
        w = 12 + max((self.d.textlength(t, font=self.small) for t, _ in entries), default=0) + 24
        h = line_h * len(entries) + 8
        x0 = self.right - w - 8 if corner.endswith("r") else self.left + 8
        y0 = self.bottom - h - 8 if corner.startswith("b") else self.top + 8
        self.d.rectangle([x0, y0, x0 + w, y0 + h], fill="white", outline=(150, 150, 150))
        for i, (text, color) in enumerate(entries):
            y = y0 + 4 + i * line_h + line_h / 2
            self.d.line([x0 + 6, y, x0 + 24, y], fill=color, width=3)
            self.d.text((x0 + 30, y), text, fill="black", font=self.small, anchor="lm")

    def save(self, path: str | Path) -> None:
        from drivelab.io import write_image

        write_image(path, self.img)


def scatter_png(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    colors: np.ndarray,
    sizes: np.ndarray,
    title: str = "",
    legend: list[tuple[str, tuple[int, int, int]]] | None = None,
    width: int = 900,
    height: int = 700,
) -> None:
    """Scatter plot: ``colors`` (N, 3) uint8, ``sizes`` (N,) radii in pixels."""
    c = Canvas(
        width,
        height,
        (float(np.min(x)), float(np.max(x))),
        (float(np.min(y)), float(np.max(y))),
        title=title,
        margin=(20, 40, 20, 20),
    )
    px, py = c.px(x, y)
    for i in np.argsort(sizes, kind="stable")[::-1]:  # small dots on top of big ones
        r = float(sizes[i])
        col = tuple(int(v) for v in colors[i])
        c.d.ellipse([px[i] - r, py[i] - r, px[i] + r, py[i] + r], fill=col, outline=(40, 40, 40))
    if legend:
        c.legend(legend, corner="tr")
    c.save(path)


def line_png(
    path: str | Path,
    series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    hline: tuple[str, float] | None = None,
    width: int = 820,
    height: int = 520,
) -> None:
    """Lines with optional +-error bands: ``series`` = [(label, xs, ys, errs or None), ...]."""
    xs = np.concatenate([s[1] for s in series])
    lo = np.concatenate([s[2] - (s[3] if s[3] is not None else 0) for s in series])
    hi = np.concatenate([s[2] + (s[3] if s[3] is not None else 0) for s in series])
    if hline is not None:
        lo, hi = np.append(lo, hline[1]), np.append(hi, hline[1])
    c = Canvas(
        width,
        height,
        (float(xs.min()), float(xs.max())),
        (float(lo.min()), float(hi.max())),
        title,
        xlabel,
        ylabel,
    )
    distinct = np.unique(xs)
    c.ticks(xvalues=distinct if len(distinct) <= 12 else None)  # few measured x: label exactly those
    entries = []
    for i, (label, x, y, err) in enumerate(series):
        col = category_color(i)
        px, py = c.px(x, y)
        if err is not None:
            for xv, yv, ev in zip(x, y, err, strict=True):
                bx, (b0, b1) = c.px(np.array([xv]), np.array([yv - ev, yv + ev]))
                c.d.line([bx[0], b0, bx[0], b1], fill=col, width=1)
        c.d.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=col, width=2)
        for a, b in zip(px, py, strict=True):
            c.d.ellipse([a - 3, b - 3, a + 3, b + 3], fill=col)
        entries.append((label, col))
    if hline is not None:
        _, hy = c.px(np.array([0]), np.array([hline[1]]))
        for x0 in range(int(c.left), int(c.right), 12):
            c.d.line([x0, hy[0], min(x0 + 6, c.right), hy[0]], fill=(0, 0, 0), width=1)
        entries.append((hline[0], (0, 0, 0)))
    c.legend(entries)
    c.save(path)


def bar_png(
    path: str | Path,
    labels: list[str],
    values: np.ndarray,
    errors: np.ndarray | None = None,
    title: str = "",
    ylabel: str = "",
    width: int = 700,
    height: int = 460,
) -> None:
    """Bars with optional error whiskers."""
    values = np.asarray(values, np.float64)
    err = np.zeros_like(values) if errors is None else np.asarray(errors, np.float64)
    lo = min(0.0, float((values - err).min()))
    c = Canvas(width, height, (-0.5, len(values) - 0.5), (lo, float((values + err).max())), title, "", ylabel)
    c.ticks(xticks=False)
    for i, (v, e) in enumerate(zip(values, err, strict=True)):
        (x0, x1), (y0, y1) = c.px(np.array([i - 0.35, i + 0.35]), np.array([lo, v]))
        c.d.rectangle([x0, y1, x1, y0], fill=category_color(i))
        (xm,), (e0, e1) = c.px(np.array([i]), np.array([v - e, v + e]))
        if e > 0:
            c.d.line([xm, e0, xm, e1], fill="black", width=2)
        c.d.text((xm, c.bottom + 4), labels[i], fill="black", font=c.small, anchor="mt")
        c.d.text((xm, y1 - 4), f"{v:.3f}", fill="black", font=c.small, anchor="mb")
    c.save(path)
