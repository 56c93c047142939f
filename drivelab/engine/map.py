"""``drivelab map TABLE --out map.html``: the latent space as an interactive page and a PNG.

<out>.html            plotly scatter (plotly.js inlined: the page works offline), one dot per
                      image: colour by any numeric column or the cluster (dropdown), size by
                      loss, hover shows a thumbnail and the metrics, click opens the image with
                      its label and prediction overlaid; the per-cluster summary table below
<out>_files/          the click-through overlays (JPEG), one per image
<out>.png             static map (PIL; coloured by cluster, sized by loss)
<out>_clusters.csv    per-cluster summary: size, mean loss / entropy / mIoU, mean IoU per class
<out>_points.parquet  name, x, y, cluster (what the page shows)
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drivelab.engine.table import EmbedTable, load_table
from drivelab.errors import DrivelabError

# Columns that are bookkeeping, not something to colour by.
NOT_METRICS = {"name", "split", "image_path", "label_path", "pred_path", "labelled", "x", "y", "cluster"}


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


def _thumb(image: np.ndarray, width: int, quality: int = 70) -> str:
    from PIL import Image

    img = Image.fromarray(image)
    h = max(1, round(img.height * width / img.width))
    buf = io.BytesIO()
    img.resize((width, h), Image.BILINEAR).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _overlays(
    table: EmbedTable, rows: pd.DataFrame, folder: Path, thumb_width: int, progress: bool
) -> tuple[list[str], list[str]]:
    """Thumbnails (data URIs) and click-through overlay files (relative paths) for ``rows``."""
    from PIL import Image
    from tqdm import tqdm

    from drivelab.io import read_label, read_rgb, write_image
    from drivelab.schema import ClassSchema

    reader = None
    if table.meta.get("dataset"):
        try:
            from drivelab.data import open_dataset

            reader = open_dataset(table.meta["dataset"], **table.meta.get("dataset_options", {}))
        except Exception:  # the dataset moved or is gone: no label overlays, the map still works
            reader = None
    schema = ClassSchema.from_dict(table.meta["schema"]) if table.meta.get("schema") else None
    thumbs, files = [], []
    for i, row in enumerate(
        tqdm(
            rows.itertuples(index=False),
            total=len(rows),
            desc="thumbnails",
            disable=not progress,
            leave=False,
        )
    ):
        path = getattr(row, "image_path", None)
        if not isinstance(path, str) or not Path(path).exists():
            thumbs.append("")
            files.append("")
            continue
        image = read_rgb(path)
        thumbs.append(_thumb(image, thumb_width))
        panels = [image]
        if reader is not None and schema is not None and isinstance(getattr(row, "label_path", None), str):
            try:
                mask = reader.load_mask(reader.item(row.name))
                panels.append((0.5 * image + 0.5 * schema.colorize(mask)).astype(np.uint8))
            except Exception:  # an unreadable or mismatched mask only loses its panel
                pass
        pred = getattr(row, "pred_path", None)
        if (
            schema is not None
            and isinstance(pred, str)
            and table.folder is not None
            and (table.folder / pred).exists()
        ):
            pm = np.asarray(
                Image.fromarray(read_label(table.folder / pred)).resize(
                    (image.shape[1], image.shape[0]), Image.NEAREST
                )
            )
            panels.append((0.5 * image + 0.5 * schema.colorize(pm)).astype(np.uint8))
        strip = Image.fromarray(np.concatenate(panels, axis=1))
        if strip.width > 1536:
            strip = strip.resize((1536, max(1, round(strip.height * 1536 / strip.width))), Image.BILINEAR)
        rel = f"{folder.name}/{i:06d}.jpg"
        write_image(folder.parent / rel, strip, quality=85)
        files.append(rel)
    return thumbs, files


def _hover_text(df: pd.DataFrame, cols: list[str]) -> list[str]:
    shown = [
        c
        for c in ["split", "loss", "miou", "entropy", "margin", "brightness", "instances", "pred_instances"]
        if c in df.columns and c in cols + ["split"]
    ]
    out = []
    for row in df.itertuples(index=False):
        parts = [f"<b>{html.escape(str(row.name))}</b>", f"cluster {row.cluster}"]
        for c in shown:
            v = getattr(row, c)
            parts.append(f"{c}: {v:.4g}" if isinstance(v, (float, np.floating)) else f"{c}: {v}")
        out.append("<br>".join(parts))
    return out


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
    thumb_width: int = 128,
    progress: bool = True,
) -> dict[str, Path]:
    """Project, cluster and draw a table (see the module docstring); returns the written paths."""
    import plotly.graph_objects as go

    from drivelab.engine.plot import category_color, scatter_png, viridis
    from drivelab.engine.project import cluster, project
    from drivelab.engine.select import rank01
    from drivelab.io import write_table, write_text

    out = Path(out)
    if out.suffix != ".html":
        out = out.with_suffix(".html")
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
    feats = table.features[finite]
    xy = project(feats, projection, seed=seed)
    df["x"], df["y"] = xy[:, 0], xy[:, 1]
    df["cluster"] = cluster(feats, clustering, k=k, seed=seed)
    metrics = numeric_columns(df)
    options = metrics + ["cluster"]
    if color not in options:
        fallback = next((c for c in ("loss", "entropy") if c in metrics), "cluster")
        if color != "loss":
            raise DrivelabError(f"cannot colour by {color!r}: choose one of {', '.join(options)}", table.path)
        color = fallback
    size_values = df[size].to_numpy(np.float64) if size in metrics else np.full(len(df), np.nan)
    radius = np.where(np.isfinite(size_values), 4 + 10 * rank01(size_values), 5.0)

    cluster_hex = ["#{:02x}{:02x}{:02x}".format(*category_color(int(c))) for c in df["cluster"]]
    folder = out.with_name(out.stem + "_files")
    thumb_uris, files = (
        _overlays(table, df, folder, thumb_width, progress) if thumbs else ([""] * len(df), [""] * len(df))
    )

    def colour_args(col: str) -> dict[str, Any]:
        if col == "cluster":
            return {"color": cluster_hex, "showscale": False}
        v = df[col].to_numpy(np.float64)
        return {
            "color": np.where(np.isfinite(v), v, np.nanmin(v)).tolist(),
            "colorscale": "Viridis",
            "showscale": True,
            "colorbar": {"title": {"text": col}},
        }

    scatter = go.Scattergl if len(df) > 5000 else go.Scatter
    fig = go.Figure(
        scatter(
            x=df["x"],
            y=df["y"],
            mode="markers",
            customdata=np.arange(len(df)),
            text=_hover_text(df, metrics),
            hovertemplate="%{text}<extra></extra>",
            marker={
                "size": (2 * radius).tolist(),
                "line": {"width": 0.5, "color": "#333"},
                **colour_args(color),
            },
        )
    )
    buttons = [
        {
            "label": f"colour: {c}",
            "method": "restyle",
            "args": [
                {
                    f"marker.{k}": [v]
                    for k, v in colour_args(c).items()
                    if k in ("color", "colorscale", "showscale")
                }
                | ({"marker.colorbar.title.text": [c]} if c != "cluster" else {})
            ],
        }
        for c in options
    ]
    active = options.index(color)
    fig.update_layout(
        title=f"{Path(table.meta.get('dataset', '')).name or 'table'}: {len(df)} images, "
        f"{projection.upper()}, {clustering} ({df['cluster'].nunique()} clusters); "
        f"size = {size if size in metrics else 'constant'}",
        updatemenus=[
            {"buttons": buttons, "active": active, "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}
        ],
        xaxis={"title": f"{projection}-1", "zeroline": False},
        yaxis={"title": f"{projection}-2", "zeroline": False},
        height=720,
        margin={"t": 90, "l": 50, "r": 20, "b": 50},
        hovermode="closest",
        plot_bgcolor="#fafafa",
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
    rows_js = [
        {"name": str(n), **{c: _num(df[c].iloc[i]) for c in metrics[:40]}} for i, n in enumerate(df["name"])
    ]
    write_text(out, _page(plot_div, summary, notes, thumb_uris, files, rows_js))
    write_table(paths["clusters"], summary)
    write_table(paths["points"], df[["name", "x", "y", "cluster"]])
    if color == "cluster":
        cols = np.array([category_color(int(c)) for c in df["cluster"]], np.uint8)
    else:
        cols = viridis(rank01(df[color].to_numpy(np.float64)))
    legend = (
        [
            (f"cluster {int(c)} (n={int(n)})", category_color(int(c)))
            for c, n in zip(summary["cluster"], summary["size"], strict=True)
        ][:10]
        if color == "cluster"
        else None
    )
    scatter_png(
        paths["png"],
        df["x"].to_numpy(),
        df["y"].to_numpy(),
        cols,
        radius * 0.8,
        title=f"{projection.upper()} map, colour: {color}, size: {size}",
        legend=legend,
    )
    return paths


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return round(f, 5) if np.isfinite(f) else None


def _page(
    plot_div: str,
    summary: pd.DataFrame,
    notes: list[str],
    thumbs: list[str],
    files: list[str],
    rows: list[dict],
) -> str:
    table_html = summary.to_html(
        index=False, float_format=lambda v: f"{v:.4f}", na_rep="", border=0, classes="summary"
    )
    note_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    data = json.dumps({"thumbs": thumbs, "files": files, "rows": rows}).replace("</", "<\\/")
    return (
        _TEMPLATE.replace("{{PLOT}}", plot_div)
        .replace("{{TABLE}}", table_html)
        .replace("{{NOTES}}", note_html)
        .replace("{{DATA}}", data)
    )


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drivelab map</title>
<link rel="icon" href="data:,">
<style>
body { font-family: system-ui, sans-serif; margin: 12px; color: #222; }
#layout { display: grid; grid-template-columns: minmax(0, 1fr) 420px; gap: 12px; align-items: start; }
#panel { border: 1px solid #ddd; padding: 8px; min-height: 200px; font-size: 13px; }
#panel img { max-width: 100%; display: block; margin: 6px 0; }
#hover { position: fixed; pointer-events: none; display: none; border: 2px solid #333; background: #fff;
         z-index: 10; }
table.summary { border-collapse: collapse; font-size: 13px; margin-top: 12px; }
table.summary td, table.summary th { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
.note { color: #a60; }
</style></head><body>
<h2>drivelab data engine map</h2>
{{NOTES}}
<div id="layout">
  <div id="map-wrap">{{PLOT}}</div>
  <div id="panel"><b>Click a dot</b> to see the image with its label and prediction overlaid.
    Hover shows a thumbnail.</div>
</div>
<img id="hover" alt="">
<h3>Clusters</h3>
{{TABLE}}
<script>
const DATA = {{DATA}};
const hover = document.getElementById("hover");
const panel = document.getElementById("panel");
const plot = document.getElementById("map");
function esc(s) { const d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }
function show(i) {
  const row = DATA.rows[i];
  let h = "<b>" + esc(row.name) + "</b>";
  if (DATA.files[i]) {
    h += "<a href='" + encodeURI(DATA.files[i]) + "' target='_blank'><img id='detail' src='" +
         encodeURI(DATA.files[i]) + "' alt='overlay'></a><small>image | label | prediction</small>";
  }
  h += "<table>";
  for (const [k, v] of Object.entries(row)) if (k !== "name" && v !== null) h += "<tr><td>" + esc(k) +
      "</td><td>" + esc(v) + "</td></tr>";
  panel.innerHTML = h + "</table>";
}
plot.on("plotly_hover", (ev) => {
  const p = ev.points[0], src = DATA.thumbs[p.customdata];
  if (!src) return;
  hover.src = src;
  // left of the cursor: plotly's own hover label is drawn to its right
  hover.style.left = Math.max(0, ev.event.clientX - (hover.naturalWidth || 128) - 24) + "px";
  hover.style.top = (ev.event.clientY + 16) + "px";
  hover.style.display = "block";
});
plot.on("plotly_unhover", () => { hover.style.display = "none"; });
plot.on("plotly_click", (ev) => show(ev.points[0].customdata));
window.drivelabShow = show;
</script>
</body></html>
"""
