"""``drivelab map TABLE --out map.html``: the latent space as an interactive page and a PNG.

<out>.html            plotly WebGL scatter (plotly.js inlined: the page works offline), one dot
                      per image; colour by any numeric column or the cluster (dropdown; a column's
                      values load from a side file when chosen), optional hexbin density layer;
                      hover shows a thumbnail and the main metrics, click opens the image with
                      its label and prediction overlaid and every column of its row; the
                      per-cluster summary table below
<out>_files/          what the page loads on demand, never inlined:
                        thumbs/NNNNN.jpg  sprite sheets of 256 hover thumbnails (16 x 16)
                        views/NNNNN.jpg   sheets of 8 click-through strips (image | label | prediction)
                        cols/NNN.js       one colour column each (float32, base64)
                        rows/NNNNN.js     every column of 1000 rows (the click panel)
<out>.png             static map (PIL; coloured by cluster, sized by loss)
<out>_clusters.csv    per-cluster summary: size, mean loss / entropy / mIoU, mean IoU per class
<out>_points.parquet  name, x, y, cluster (what the page shows)

The page holds per point only what the plot and the hover card need: x, y (float32), colour
(float32), size (uint8), cluster, a few hover metrics quantised to 16 bits and the name, all as
base64 typed arrays: about 30 bytes plus the name's length per point. Side files are loaded with
``<img>`` and ``<script>`` elements, which work from ``file://`` (``fetch`` does not).
"""

from __future__ import annotations

import base64
import html
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drivelab.engine.table import EmbedTable, load_table
from drivelab.errors import DrivelabError

# Columns that are bookkeeping, not something to colour by.
NOT_METRICS = {"name", "split", "image_path", "label_path", "pred_path", "labelled", "x", "y", "cluster"}
HOVER = ("loss", "miou", "entropy", "margin", "brightness", "instances", "pred_instances")
THUMB_GRID = 16  # a thumbnail sheet is 16 x 16 cells
VIEWS_PER_SHEET = 8
ROWS_PER_FILE = 1000
NAN16 = 65535  # the quantised hover values' NaN


def numeric_columns(df: pd.DataFrame) -> list[str]:
    cols = []
    for c in df.columns:
        if c in NOT_METRICS or not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            continue
        if np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)).any():
            cols.append(c)
    return cols


def cluster_summary(df: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per cluster: size, mean loss / entropy / mIoU, mean IoU per class (NaN-aware)."""
    cols = [c for c in ["loss", "entropy", "margin", "miou", "brightness"] if c in df.columns]
    cols += [f"iou_{n}" for n in classes if f"iou_{n}" in df.columns]
    g = df.groupby("cluster")
    out = g.size().rename("size").to_frame()
    for c in cols:
        out[f"mean_{c}"] = g[c].mean()
    out = out.reset_index()
    if "mean_loss" in out and out["mean_loss"].notna().any():
        out = out.sort_values("mean_loss", ascending=False, kind="stable")
    return out.reset_index(drop=True)


def hexbin(
    x: np.ndarray, y: np.ndarray, gridsize: int = 60
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Hexagonal binning (the layout of matplotlib's ``hexbin``: two offset lattices, each point
    to the nearer centre). Returns centre x, centre y, count of the non-empty hexagons and the
    hexagon's x / y size (sx, sy) in data units."""
    xmin, xmax, ymin, ymax = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    span_x, span_y = (xmax - xmin) or 1.0, (ymax - ymin) or 1.0
    nx = max(1, int(gridsize))
    ny = max(1, int(round(nx * span_y / span_x / np.sqrt(3))))
    sx, sy = span_x / nx, span_y / ny
    ix, iy = (x - xmin) / sx, (y - ymin) / sy
    ix1, iy1 = np.round(ix), np.round(iy)
    ix2, iy2 = np.floor(ix), np.floor(iy)
    first = (ix - ix1) ** 2 + 3.0 * (iy - iy1) ** 2 < (ix - ix2 - 0.5) ** 2 + 3.0 * (iy - iy2 - 0.5) ** 2
    cx = np.where(first, ix1, ix2 + 0.5) * sx + xmin
    cy = np.where(first, iy1, iy2 + 0.5) * sy + ymin
    key = np.round(np.stack([cx / sx * 2, cy / sy * 2], 1)).astype(np.int64)
    uniq, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    centres_x = np.bincount(inverse.ravel(), weights=cx) / counts
    centres_y = np.bincount(inverse.ravel(), weights=cy) / counts
    return centres_x, centres_y, counts, sx, sy


def density_traces(x: np.ndarray, y: np.ndarray, gridsize: int = 60, levels: int = 6) -> list[Any]:
    """The hexbin density layer: one filled WebGL trace per count level (log-spaced), hexagons
    in data units (they scale with zoom), drawn under the points and never hovered."""
    import plotly.graph_objects as go

    from drivelab.engine.plot import viridis

    hx, hy, counts, sx, sy = hexbin(x, y, gridsize)
    # matplotlib's hexagon, in units of (sx, sy/3)
    shape = np.array(
        [[0.5, -0.5], [0.5, 0.5], [0.0, 1.0], [-0.5, 0.5], [-0.5, -0.5], [0.0, -1.0], [0.5, -0.5]]
    )
    ox, oy = shape[:, 0] * sx, shape[:, 1] * sy / 3
    edges = np.unique(np.geomspace(1, counts.max() + 1, levels + 1).round())
    level = np.clip(np.searchsorted(edges, counts, side="right") - 1, 0, len(edges) - 2)
    colours = viridis(np.linspace(0.1, 1.0, len(edges) - 1))
    traces = []
    for lv in range(len(edges) - 1):
        sel = level == lv
        if not sel.any():
            continue
        n = int(sel.sum())
        px = np.concatenate([hx[sel][:, None] + ox[None], np.full((n, 1), np.nan)], 1).ravel()
        py = np.concatenate([hy[sel][:, None] + oy[None], np.full((n, 1), np.nan)], 1).ravel()
        lo, hi = int(edges[lv]), int(edges[lv + 1]) - 1
        traces.append(
            go.Scattergl(
                x=px.astype(np.float32),
                y=py.astype(np.float32),
                mode="lines",
                fill="toself",
                line={"width": 0},
                fillcolor="rgba({},{},{},0.4)".format(*colours[lv]),
                hoverinfo="skip",
                name=f"{lo}" + (f"-{hi}" if hi > lo else "") + " images",
                legendgroup="density",
                legendgrouptitle={"text": "density (per hexagon)"} if not traces else None,
                showlegend=True,
            )
        )
    return traces


# --------------------------------------------------------------------------- side files
def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).decode()


def _quantise(v: np.ndarray) -> dict:
    """float values -> uint16 codes with a range (NaN = 65535): 2 bytes a value in the page."""
    finite = np.isfinite(v)
    lo = float(v[finite].min()) if finite.any() else 0.0
    hi = float(v[finite].max()) if finite.any() else 0.0
    scale = (hi - lo) or 1.0
    q = np.where(finite, np.round((np.where(finite, v, lo) - lo) / scale * (NAN16 - 1)), NAN16)
    return {"lo": lo, "hi": hi, "q": _b64(q.astype(np.uint16))}


def _fit(img: Any, size: tuple[int, int], resample: int) -> Any:
    """Resize a PIL image to fit inside ``size`` (w, h), keeping its aspect."""
    w, h = size
    scale = min(w / img.width, h / img.height)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)


class _SheetMaker:
    """Draws thumbnail and click-through sheets for blocks of rows (one block per thread task)."""

    def __init__(self, table: EmbedTable, df: pd.DataFrame, folder: Path, thumb_width: int) -> None:
        from drivelab.schema import ClassSchema

        self.table, self.df, self.folder = table, df, folder
        self.schema = ClassSchema.from_dict(table.meta["schema"]) if table.meta.get("schema") else None
        self.palette = self.schema.palette_256().ravel().tolist() if self.schema is not None else None
        self.reader, self.items = None, {}
        if table.meta.get("dataset"):
            try:
                from drivelab.data import open_dataset

                self.reader = open_dataset(table.meta["dataset"], **table.meta.get("dataset_options", {}))
                self.items = {it.name: it for it in self.reader.items}  # one dict, not a search per row
            except Exception:  # the dataset moved or is gone: no label overlays, the map still works
                self.reader = None
        self.paths = df["image_path"].to_numpy(object) if "image_path" in df.columns else None
        self.labels = df["label_path"].to_numpy(object) if "label_path" in df.columns else None
        self.preds = df["pred_path"].to_numpy(object) if "pred_path" in df.columns else None
        self.names = df["name"].astype(str).to_numpy(object)
        self.splits = df["split"].astype(str).to_numpy(object) if "split" in df.columns else None
        first = next((p for p in (self.paths if self.paths is not None else []) if _exists(p)), None)
        aspect, width = 0.5, 512
        if first is not None:
            from PIL import Image

            with Image.open(first) as im:
                aspect, width = im.height / im.width, im.width
        self.thumb = (thumb_width, int(np.clip(round(thumb_width * aspect), 16, 4 * thumb_width)))
        pw = int(np.clip(width, 128, 384))  # click-through panels: the image's own width, at most 384
        self.panel = (pw, int(np.clip(round(pw * aspect), 32, 4 * pw)))

    def sheet(self, sheet: int) -> np.ndarray:
        """Write thumbnail sheet ``sheet`` and its view sheets; returns which rows got a thumbnail."""
        from PIL import Image

        from drivelab.io import write_image

        per = THUMB_GRID * THUMB_GRID
        rows = range(sheet * per, min(len(self.df), (sheet + 1) * per))
        tw, th = self.thumb
        pw, ph = self.panel
        thumbs = Image.new("RGB", (THUMB_GRID * tw, THUMB_GRID * th), (255, 255, 255))
        views = [
            Image.new("RGB", (3 * pw, VIEWS_PER_SHEET * ph), (255, 255, 255))
            for _ in range(-(-len(rows) // VIEWS_PER_SHEET))
        ]
        ok = np.zeros(len(rows), dtype=bool)
        for k, i in enumerate(rows):
            panels = self._panels(i)
            if panels is None:
                continue
            ok[k] = True
            t = _fit(panels[0], self.thumb, Image.BILINEAR)
            thumbs.paste(t, ((k % THUMB_GRID) * tw, (k // THUMB_GRID) * th))
            v = views[k // VIEWS_PER_SHEET]
            for j, p in enumerate(panels):
                v.paste(p, (j * pw, (k % VIEWS_PER_SHEET) * ph))
        used_rows = -(-len(rows) // THUMB_GRID)
        write_image(
            self.folder / "thumbs" / f"{sheet:05d}.jpg",
            thumbs.crop((0, 0, thumbs.width, used_rows * th)),
            quality=75,
        )
        for j, v in enumerate(views):
            # view sheet numbers follow the row: row i is in views/(i // VIEWS_PER_SHEET)
            write_image(
                self.folder / "views" / f"{sheet * (per // VIEWS_PER_SHEET) + j:05d}.jpg", v, quality=85
            )
        return ok

    def _panels(self, i: int) -> list[Any] | None:
        """image | label blended | prediction blended, each fitted to the panel size (or None)."""
        from PIL import Image

        from drivelab.data.sample import Item
        from drivelab.io import read_label, read_rgb

        path = self.paths[i] if self.paths is not None else None
        if not _exists(path):
            return None
        try:
            image = read_rgb(path)
        except DrivelabError:
            return None
        base = _fit(Image.fromarray(image), self.panel, Image.BILINEAR)
        panels = [base]
        if self.schema is None:
            return panels
        label_path = self.labels[i] if self.labels is not None else None
        if self.reader is not None and isinstance(label_path, str):
            name = self.names[i]
            item = self.items.get(name) or Item(
                name, Path(path), Path(label_path), self.splits[i] if self.splits is not None else "train"
            )
            try:
                mask = self.reader.load_mask(item)
                panels.append(self._blend(base, mask))
            except Exception:  # an unreadable or mismatched mask only loses its panel
                pass
        pred = self.preds[i] if self.preds is not None else None
        if isinstance(pred, str) and self.table.folder is not None and (self.table.folder / pred).exists():
            try:
                panels.append(self._blend(base, read_label(self.table.folder / pred)))
            except DrivelabError:
                pass
        return panels

    def _blend(self, base: Any, mask: np.ndarray) -> Any:
        """The image with its class colours (the schema's palette) blended in at the painter's opacity."""
        from PIL import Image

        from drivelab.painter import blend_pil

        m = Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize(base.size, Image.NEAREST)
        m.putpalette(self.palette)
        return blend_pil(base, m.convert("RGB"))


def _exists(path: Any) -> bool:
    return isinstance(path, str) and Path(path).exists()


def _side_files(df: pd.DataFrame, metrics: list[str], folder: Path, workers: int) -> list[str]:
    """cols/NNN.js (one colour column each) and rows/NNNNN.js (every column of 1000 rows)."""
    from drivelab.io import write_text

    for j, c in enumerate(metrics):
        v = df[c].to_numpy(np.float64)
        v = np.where(np.isfinite(v), v, np.nanmin(v)).astype(np.float32)
        write_text(folder / "cols" / f"{j:03d}.js", f"drivelabColumn({j}, {json.dumps(_b64(v))});\n")
    shown = [c for c in df.columns if c not in ("x", "y", "image_path", "label_path", "pred_path")]
    part = df[shown]

    def one(start: int) -> None:
        block = part.iloc[start : start + ROWS_PER_FILE].to_json(orient="values", double_precision=5)
        block = block.replace("</", "<\\/")  # a name holding "</script>" cannot end the script
        write_text(
            folder / "rows" / f"{start // ROWS_PER_FILE:05d}.js",
            f"drivelabRows({start // ROWS_PER_FILE}, {block});\n",
        )

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(one, range(0, len(df), ROWS_PER_FILE)))
    return shown


# --------------------------------------------------------------------------- the verb
def build_map(
    table_path: str | Path,
    out: str | Path,
    *,
    projection: str = "umap",
    clustering: str = "kmeans",
    k: int | None = None,
    color: str = "loss",
    size: str = "loss",
    seed: int = 0,
    thumbs: bool = True,
    density: bool = False,
    workers: int = 2,
    thumb_width: int = 128,
    progress: bool = True,
) -> dict[str, Path]:
    """Project, cluster and draw a table (see the module docstring); returns the written paths."""
    import shutil

    import plotly.graph_objects as go

    from drivelab.engine.plot import PALETTE, category_color, scatter_png, viridis
    from drivelab.engine.project import cluster_prepared, prepare, project_prepared
    from drivelab.engine.select import rank01
    from drivelab.io import write_table, write_text

    out = Path(out)
    if out.suffix != ".html":
        out = out.with_suffix(".html")
    if workers < 1:
        raise DrivelabError(f"--workers must be >= 1, got {workers}")
    table = load_table(table_path)
    finite = table.finite_rows()
    notes = []
    if (~finite).any():
        notes.append(f"{int((~finite).sum())} of {len(table)} images have NaN/inf features and are not shown")
    if finite.sum() < 3:
        raise DrivelabError(
            f"a map needs at least 3 images with finite features, the table has {int(finite.sum())}",
            table.path,
        )
    df = table.df[finite].reset_index(drop=True)
    x = prepare(table.features, seed=seed, rows=None if finite.all() else np.flatnonzero(finite))
    metrics = numeric_columns(df)
    options = metrics + ["cluster"]
    if color not in options:
        fallback = next((c for c in ("loss", "entropy") if c in metrics), "cluster")
        if color != "loss":
            raise DrivelabError(f"cannot colour by {color!r}: choose one of {', '.join(options)}", table.path)
        color = fallback
    xy = project_prepared(x, projection, seed=seed)
    df["x"], df["y"] = xy[:, 0], xy[:, 1]
    df["cluster"] = cluster_prepared(x, clustering, k=k, seed=seed)
    del x
    n = len(df)
    size_values = df[size].to_numpy(np.float64) if size in metrics else np.full(n, np.nan)
    radius = np.where(np.isfinite(size_values), 4 + 10 * rank01(size_values), 5.0)
    # Dots shrink as the map fills up (28 px dots would hide each other at 100k).
    shrink = float(np.clip(np.sqrt(5000 / n), 0.25, 1.0))

    folder = out.with_name(out.stem + "_files")
    shutil.rmtree(folder, ignore_errors=True)  # sheets of an earlier, bigger table must not linger
    has_thumb = np.zeros(n, dtype=bool)
    maker = None
    if thumbs:
        maker = _SheetMaker(table, df, folder, thumb_width)
        sheets = range(-(-n // THUMB_GRID**2))
        from tqdm import tqdm

        with ThreadPoolExecutor(workers) as pool:
            done = tqdm(
                pool.map(maker.sheet, sheets),
                total=len(sheets),
                desc="thumbnails",
                unit="sheet",
                disable=not progress,
                leave=False,
            )
            has_thumb = np.concatenate(list(done))
    row_columns = _side_files(df, metrics, folder, workers)

    clusters = df["cluster"].to_numpy(np.int64)
    cmin, cmax = int(clusters.min()), int(clusters.max())
    cluster_scale = []
    for c in range(cmin, cmax + 1):  # a stepped colour scale: cluster id -> its palette colour
        col = "rgb({},{},{})".format(*category_color(c))
        span = max(1, cmax - cmin + 1)
        cluster_scale += [[(c - cmin) / span, col], [(c - cmin + 1) / span, col]]

    def colour_args(col: str) -> dict[str, Any]:
        if col == "cluster":
            return {
                "color": clusters.astype(np.int16),
                "colorscale": cluster_scale,
                "cmin": cmin - 0.5,
                "cmax": cmax + 0.5,
                "showscale": False,
            }
        v = df[col].to_numpy(np.float64)
        return {
            "color": np.where(np.isfinite(v), v, np.nanmin(v)).astype(np.float32),
            "colorscale": "Viridis",
            "showscale": True,
            "colorbar": {"title": {"text": col}},
        }

    traces = density_traces(df["x"].to_numpy(), df["y"].to_numpy()) if density else []
    traces.append(
        go.Scattergl(
            x=df["x"].to_numpy(np.float32),
            y=df["y"].to_numpy(np.float32),
            mode="markers",
            hoverinfo="none",  # the page draws its own hover card (thumbnail + metrics)
            showlegend=False,
            name="images",
            marker={
                "size": np.round(2 * radius * shrink).astype(np.uint8),
                "line": {"width": 0.5 if n <= 5000 else 0, "color": "#333"},
                **colour_args(color),
            },
        )
    )
    fig = go.Figure(traces)
    fig.update_layout(
        title=f"{Path(table.meta.get('dataset', '')).name or 'table'}: {n} images, "
        f"{projection.upper()}, {clustering} ({df['cluster'].nunique()} clusters); "
        f"size = {size if size in metrics else 'constant'}",
        xaxis={"title": f"{projection}-1", "zeroline": False},
        yaxis={"title": f"{projection}-2", "zeroline": False},
        height=720,
        margin={"t": 60, "l": 50, "r": 20, "b": 50},
        hovermode="closest",
        plot_bgcolor="#fafafa",
        legend={"x": 0, "y": 1, "bgcolor": "rgba(255,255,255,0.7)"},
    )
    plot_div = fig.to_html(full_html=False, include_plotlyjs=True, div_id="map", config={"responsive": True})

    summary = cluster_summary(df, table.class_names())
    paths = {
        "html": out,
        "png": out.with_suffix(".png"),
        "clusters": out.with_name(out.stem + "_clusters.csv"),
        "points": out.with_name(out.stem + "_points.parquet"),
        "files": folder,
    }
    hover_cols = [c for c in HOVER if c in metrics]
    splits = df["split"].astype(str) if "split" in df.columns else None
    split_codes = pd.Categorical(splits) if splits is not None else None
    data = {
        "n": n,
        "dir": folder.name,
        "names": "\n".join(df["name"].astype(str).tolist()),
        "cluster": _b64(clusters.astype(np.int16)),
        "split": None
        if split_codes is None
        else {
            "codes": _b64(split_codes.codes.astype(np.int16)),
            "levels": list(map(str, split_codes.categories)),
        },
        "hover": {c: _quantise(df[c].to_numpy(np.float64)) for c in hover_cols},
        "columns": metrics,
        "rowColumns": row_columns,
        "rowsPerFile": ROWS_PER_FILE,
        "color": color,
        "clusterScale": cluster_scale,
        "clusterRange": [cmin - 0.5, cmax + 0.5],
        "palette": ["rgb({},{},{})".format(*c) for c in PALETTE],
        "pointsTrace": len(traces) - 1,
        "hasThumb": _b64(np.packbits(has_thumb, bitorder="little")),
        "thumb": None if maker is None else {"w": maker.thumb[0], "h": maker.thumb[1], "grid": THUMB_GRID},
        "view": None
        if maker is None
        else {"w": 3 * maker.panel[0], "h": maker.panel[1], "per": VIEWS_PER_SHEET},
    }
    write_text(out, _page(plot_div, summary, notes, data, options))
    write_table(paths["clusters"], summary)
    write_table(paths["points"], df[["name", "x", "y", "cluster"]])
    if color == "cluster":
        cols = np.array([category_color(int(c)) for c in range(cmin, cmax + 1)], np.uint8)[clusters - cmin]
    else:
        cols = viridis(rank01(df[color].to_numpy(np.float64)))
    legend = (
        [
            (f"cluster {int(c)} (n={int(m)})", category_color(int(c)))
            for c, m in zip(summary["cluster"], summary["size"], strict=True)
        ][:10]
        if color == "cluster"
        else None
    )
    scatter_png(
        paths["png"],
        df["x"].to_numpy(),
        df["y"].to_numpy(),
        cols,
        radius * 0.8 * shrink,
        title=f"{projection.upper()} map, colour: {color}, size: {size}",
        legend=legend,
    )
    return paths


def _page(plot_div: str, summary: pd.DataFrame, notes: list[str], data: dict, options: list[str]) -> str:
    table_html = summary.to_html(
        index=False, float_format=lambda v: f"{v:.4f}", na_rep="", border=0, classes="summary"
    )
    note_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    select = "".join(
        f"<option value='{html.escape(c)}'{' selected' if c == data['color'] else ''}>"
        f"{html.escape(c)}</option>"
        for c in options
    )
    parts = {
        "PLOT": plot_div,
        "TABLE": table_html,
        "NOTES": note_html,
        "OPTIONS": select,
        "DATA": json.dumps(data).replace("</", "<\\/"),
    }
    # one pass over the template only: plotly.js itself is never searched for placeholders
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], _TEMPLATE)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drivelab map</title>
<link rel="icon" href="data:,">
<style>
body { font-family: system-ui, sans-serif; margin: 12px; color: #222; }
#layout { display: grid; grid-template-columns: minmax(0, 1fr) 420px; gap: 12px; align-items: start; }
#panel { border: 1px solid #ddd; padding: 8px; min-height: 200px; font-size: 13px; }
#panel table { border-collapse: collapse; }
#panel td { padding: 1px 6px; border-bottom: 1px solid #f0f0f0; }
#view { position: relative; overflow: hidden; width: 100%; margin: 6px 0; background: #eee; }
#view img { position: absolute; left: 0; width: 100%; }
#hover { position: fixed; pointer-events: none; display: none; border: 1px solid #333; background: #fff;
         z-index: 10; font-size: 12px; padding: 4px; max-width: 260px; }
#hover .thumb { background-repeat: no-repeat; margin-bottom: 4px; }
table.summary { border-collapse: collapse; font-size: 13px; margin-top: 12px; }
table.summary td, table.summary th { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
.note { color: #a60; }
</style></head><body>
<h2>drivelab data engine map</h2>
{{NOTES}}
<label>colour by <select id="colour">{{OPTIONS}}</select></label>
<div id="layout">
  <div id="map-wrap">{{PLOT}}</div>
  <div id="panel"><b>Click a dot</b> to see the image with its label and prediction overlaid.
    Hover shows a thumbnail.</div>
</div>
<div id="hover"></div>
<h3>Clusters</h3>
{{TABLE}}
<script>
const DATA = {{DATA}};
function bytes(s) { const b = atob(s), a = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) a[i] = b.charCodeAt(i); return a; }
const NAMES = DATA.names.split("\\n");
const CLUSTER = new Int16Array(bytes(DATA.cluster).buffer);
const SPLIT = DATA.split ? new Int16Array(bytes(DATA.split.codes).buffer) : null;
const HAS_THUMB = bytes(DATA.hasThumb);
const HOVER = Object.entries(DATA.hover).map(([k, v]) => [k, v, new Uint16Array(bytes(v.q).buffer)]);
const hover = document.getElementById("hover");
const panel = document.getElementById("panel");
const plot = document.getElementById("map");
function esc(s) { const d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }
function fmt(v) {
  return (v === null || v === undefined) ? "" : (typeof v === "number" ? +v.toPrecision(4) : v);
}
function hasThumb(i) { return (HAS_THUMB[i >> 3] >> (i & 7)) & 1; }
function file(dir, k, ext) { return DATA.dir + "/" + dir + "/" + String(k).padStart(5, "0") + ext; }
// side files arrive as <script> calls (file:// pages cannot fetch)
const waiting = {};
function load(src, key, then) {
  if (waiting[key]) { waiting[key].push(then); return; }
  waiting[key] = [then];
  const s = document.createElement("script");
  s.src = src;
  s.onerror = () => {
    panel.insertAdjacentHTML("beforeend", "<p class='note'>missing " + esc(src) + "</p>");
  };
  document.head.appendChild(s);
}
const COLUMNS = {}, ROWS = {};
window.drivelabColumn = (j, b64) => { COLUMNS[j] = new Float32Array(bytes(b64).buffer);
  (waiting["c" + j] || []).forEach((f) => f()); };
window.drivelabRows = (part, rows) => { ROWS[part] = rows; (waiting["r" + part] || []).forEach((f) => f()); };
function withColumn(j, then) {
  if (COLUMNS[j]) then(); else load(DATA.dir + "/cols/" + String(j).padStart(3, "0") + ".js", "c" + j, then);
}
function withRow(i, then) { const part = Math.floor(i / DATA.rowsPerFile);
  if (ROWS[part]) then(ROWS[part][i % DATA.rowsPerFile]);
  else load(file("rows", part, ".js"), "r" + part, () => then(ROWS[part][i % DATA.rowsPerFile])); }
function hoverValue(v, q) { return q === 65535 ? null : v.lo + (q / 65534) * (v.hi - v.lo); }
function card(i) {
  let h = "";
  if (DATA.thumb && hasThumb(i)) {
    const t = DATA.thumb, per = t.grid * t.grid, k = i % per;
    h += "<div class='thumb' style='width:" + t.w + "px;height:" + t.h + "px;background-image:url(\\"" +
      encodeURI(file("thumbs", Math.floor(i / per), ".jpg")) + "\\");background-position:-" +
      (k % t.grid) * t.w + "px -" + Math.floor(k / t.grid) * t.h + "px'></div>";
  }
  h += "<b>" + esc(NAMES[i]) + "</b><br>cluster " + CLUSTER[i];
  if (SPLIT) h += "<br>split: " + esc(DATA.split.levels[SPLIT[i]]);
  for (const [k, v, q] of HOVER) {
    const x = hoverValue(v, q[i]);
    if (x !== null) h += "<br>" + esc(k) + ": " + fmt(x);
  }
  return h;
}
function show(i) {
  let h = "<b>" + esc(NAMES[i]) + "</b>";
  if (DATA.view && hasThumb(i)) {
    const v = DATA.view, k = i % v.per;
    h += "<div id='view' style='aspect-ratio:" + v.w + "/" + v.h + "'><img id='detail' alt='overlay' src='" +
      encodeURI(file("views", Math.floor(i / v.per), ".jpg")) + "' style='top:-" + (k * 100) +
      "%'></div><small>image | label | prediction</small>";
  }
  panel.innerHTML = h + "<table id='row'><tr><td>loading ...</td></tr></table>";
  withRow(i, (row) => {
    let t = "";
    DATA.rowColumns.forEach((c, j) => { if (c !== "name" && row[j] !== null) t += "<tr><td>" + esc(c) +
      "</td><td>" + esc(fmt(row[j])) + "</td></tr>"; });
    document.getElementById("row").innerHTML = t;
  });
}
plot.on("plotly_hover", (ev) => {
  const p = ev.points.find((q) => q.curveNumber === DATA.pointsTrace);
  if (!p) return;
  hover.innerHTML = card(p.pointNumber);
  const w = hover.offsetWidth || 140;
  hover.style.left = Math.max(0, ev.event.clientX - w - 16) + "px";
  hover.style.top = (ev.event.clientY + 16) + "px";
  hover.style.display = "block";
});
plot.on("plotly_unhover", () => { hover.style.display = "none"; });
plot.on("plotly_click", (ev) => {
  const p = ev.points.find((q) => q.curveNumber === DATA.pointsTrace);
  if (p) show(p.pointNumber);
});
document.getElementById("colour").addEventListener("change", (ev) => {
  const col = ev.target.value, t = [DATA.pointsTrace];
  if (col === "cluster") {
    Plotly.restyle(plot, {"marker.color": [CLUSTER], "marker.colorscale": [DATA.clusterScale],
      "marker.cmin": DATA.clusterRange[0], "marker.cmax": DATA.clusterRange[1],
      "marker.showscale": false}, t);
    return;
  }
  const j = DATA.columns.indexOf(col);
  withColumn(j, () => {
    const v = COLUMNS[j];
    let lo = Infinity, hi = -Infinity;
    for (const a of v) { if (a < lo) lo = a; if (a > hi) hi = a; }
    Plotly.restyle(plot, {"marker.color": [v], "marker.colorscale": "Viridis", "marker.cmin": lo,
      "marker.cmax": hi, "marker.showscale": true, "marker.colorbar.title.text": col}, t);
  });
});
window.drivelabShow = show;
</script>
</body></html>
"""
