"""Self-contained HTML reports: one file with tables, plotly curves, images and video inside.

Everything is embedded (images and MP4 as base64 data URIs, plotly.js inline once), so the
file can be mailed, attached to an issue or opened offline.

    report = Report("drivelab demo")
    report.section("Metrics", metrics_table({"mIoU": 0.91, "CE": 0.12}))
    report.section("Training", curves(run / "metrics.csv", x="step"))
    report.section("Samples", image_grid([("frame 0", overlay)]))
    report.section("Video", video(run / "clip_overlay.mp4"))
    report.write(out / "report.html")
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.io import write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.grid{display:grid;gap:.6rem} figure{margin:0} figure img{width:100%;image-rendering:pixelated}
figcaption{font-size:.8rem;color:#555} video{max-width:100%} pre{background:#f6f6f6;padding:.6rem}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return html.escape(str(v))


def metrics_table(rows: dict | Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A dict (one row of name -> value pairs, shown as two columns) or a list of dicts (a table)."""
    if isinstance(rows, dict):
        body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in rows.items())
        return f"<table><tr><th>metric</th><th>value</th></tr>{body}</table>"
    rows = list(rows)
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    cells = ("".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) for r in rows)
    body = "".join(f"<tr>{c}</tr>" for c in cells)
    return f"<table><tr>{head}</tr>{body}</table>"


class _PlotlyJs:
    """plotly.js goes into the page once, with the first figure."""

    def __init__(self) -> None:
        self.included = False

    def mode(self) -> str | bool:
        if self.included:
            return False
        self.included = True
        return "inline"


def curves(metrics: str | Path | Any, x: str = "step", columns: Sequence[str] | None = None,
           title: str = "", plotly_js: _PlotlyJs | None = None) -> str:
    """Training curves from a metrics CSV (or DataFrame): one subplot per metric column.

    Rows with no value for a column are skipped, so train-loss-every-step and
    val-metrics-every-epoch in one CSV both draw as lines.
    """
    import pandas as pd
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    df = pd.read_csv(metrics) if isinstance(metrics, (str, Path)) else metrics
    if x not in df.columns:
        x = df.columns[0]
    numeric = [c for c in df.columns if c != x and pd.api.types.is_numeric_dtype(df[c])]
    columns = [c for c in (columns or numeric) if c in df.columns and df[c].notna().any()]
    if not columns:
        return "<p>no metrics to plot</p>"
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=columns)
    for i, c in enumerate(columns):
        d = df[[x, c]].dropna()
        fig.add_trace(go.Scatter(x=d[x], y=d[c], mode="lines+markers" if len(d) < 30 else "lines", name=c),
                      row=i // ncols + 1, col=i % ncols + 1)
    fig.update_layout(height=260 * nrows, showlegend=False, title=title or None,
                      margin={"l": 40, "r": 20, "t": 50, "b": 30})
    fig.update_xaxes(title_text=x)
    js = (plotly_js or _PlotlyJs()).mode()
    return fig.to_html(full_html=False, include_plotlyjs=js)


def image_uri(image: np.ndarray | Path | str, fmt: str = "PNG", max_width: int | None = None) -> str:
    from PIL import Image

    img = Image.open(image) if isinstance(image, (str, Path)) else Image.fromarray(np.asarray(image))
    if max_width and img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.BILINEAR)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def image_grid(items: Sequence[tuple[str, np.ndarray | Path | str]], columns: int = 3,
               fmt: str = "JPEG", max_width: int | None = 640) -> str:
    """Captioned images in a grid (JPEG by default: overlays are photos; PNG for masks)."""
    figs = "".join(f'<figure><img src="{image_uri(img, fmt, max_width)}" alt="{html.escape(cap)}">'
                   f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, img in items)
    return f'<div class="grid" style="grid-template-columns:repeat({columns},1fr)">{figs}</div>'


def video(path: str | Path, caption: str = "", loop: bool = True) -> str:
    """An MP4 embedded as a data URI (H.264/yuv420p plays in every browser)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    attrs = "controls muted autoplay playsinline" + (" loop" if loop else "")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><video {attrs} src="data:video/mp4;base64,{data}"></video>{cap}</figure>'


def preformatted(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


class Report:
    """Sections of HTML fragments, written as one self-contained page."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title, self.subtitle = title, subtitle
        self.sections: list[tuple[str, str]] = []
        self.plotly_js = _PlotlyJs()

    def section(self, title: str, *fragments: str) -> None:
        self.sections.append((title, "\n".join(fragments)))

    def curves(self, metrics: str | Path | Any, **kw: Any) -> str:
        """``curves`` sharing this report's single copy of plotly.js."""
        return curves(metrics, plotly_js=self.plotly_js, **kw)

    def html(self) -> str:
        body = "\n".join(f"<section><h2>{html.escape(t)}</h2>\n{h}</section>" for t, h in self.sections)
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        title = html.escape(self.title)
        return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
                f"<style>{_CSS}</style></head><body><h1>{title}</h1>{sub}\n{body}\n</body></html>\n")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        write_text(path, self.html())
        return path
