"""What the data engine found, drawn on the image like a ``needs_fix`` region (``--findings PATH``).

Sources (a file, or a folder holding any of them):

- ``overunder.json`` (``drivelab evaluate`` on an instance checkpoint, ``drivelab overunder``): the
  model's over- and under-segmentations. With the ``results.json`` it was computed from (beside it or
  one folder up) the analysis is re-run with ``drivelab.seg.instance.overunder`` against the image's
  *current* annotations, so the regions name today's objects (by annotation id) even after edits;
  without it the worst images' recorded pairs are shown.
- ``per_image.parquet`` of an instance evaluation: per-image over/under counts (a note, no region).
- ``audit.parquet`` / ``audit.csv`` (``drivelab audit``): the suspect box of each ranked image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError


class Findings:
    def __init__(self, paths: list[str | Path], reader: Reader) -> None:
        self.reader = reader
        self.options: Any = None
        self.results: dict[Any, list[dict]] | None = None  # image id -> results (overunder)
        self.worst: dict[str, dict] = {}
        self.counts: dict[str, dict] = {}
        self.audit: dict[str, dict] = {}
        self.sources: list[str] = []
        for p in paths:
            self._add(Path(p))

    def __bool__(self) -> bool:
        return bool(self.sources)

    # -- loading -------------------------------------------------------------------------------
    def _add(self, path: Path) -> None:
        if not path.exists():
            raise DrivelabError("findings not found", path)
        if path.is_dir():
            found = [path / n for n in ("overunder.json", "per_image.parquet") if (path / n).is_file()]
            audit = next((path / n for n in ("audit.parquet", "audit.csv") if (path / n).is_file()), None)
            found += [audit] if audit else []
            if not found:
                raise DrivelabError("no overunder.json, per_image.parquet or audit.parquet/csv in this "
                                    "folder", path)
            for f in found:
                self._add(f)
            return
        if path.name.endswith(".json"):
            self._overunder(path)
        elif path.suffix in (".parquet", ".csv"):
            self._table(path)
        else:
            raise DrivelabError("findings are overunder.json, per_image.parquet or audit.parquet/csv", path)
        self.sources.append(str(path))

    def _overunder(self, path: Path) -> None:
        from drivelab.seg.instance.overunder import OverUnderOptions

        try:
            report = json.loads(path.read_text())
            self.options = OverUnderOptions(**report["options"])
            worst = report.get("worst") or []
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DrivelabError(f"not an overunder.json ({type(e).__name__}: {e})", path) from None
        self.worst = {w["name"]: w for w in worst if isinstance(w, dict) and "name" in w}
        for cand in (path.parent / "results.json", path.parent.parent / "results.json"):
            if cand.is_file():
                try:
                    results = json.loads(cand.read_text())
                except (OSError, ValueError) as e:
                    raise DrivelabError(f"unreadable results json ({e})", cand) from None
                if not isinstance(results, list):
                    raise DrivelabError("not a COCO results list", cand)
                self.results = {}
                for r in results:
                    if isinstance(r, dict) and "image_id" in r and "segmentation" in r:
                        self.results.setdefault(r["image_id"], []).append(r)
                self.sources.append(str(cand))
                break

    def _table(self, path: Path) -> None:
        import pandas as pd

        try:
            df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except Exception as e:  # pyarrow and pandas raise many kinds
            raise DrivelabError(f"unreadable table ({type(e).__name__}: {e})", path) from None
        if "name" not in df.columns:
            raise DrivelabError("a findings table needs a name column", path)
        if "box" in df.columns:
            for row in df.to_dict("records"):
                box = _box(row.get("box"))
                if box is not None:
                    self.audit[str(row["name"])] = {"box": box, "score": row.get("score"),
                                                    "rank": row.get("rank")}
        elif {"n_under", "n_over"} <= set(df.columns):
            for row in df.to_dict("records"):
                if row.get("n_under") or row.get("n_over"):
                    self.counts[str(row["name"])] = row
        else:
            raise DrivelabError("a findings table needs a box column (audit) or n_under/n_over (instance "
                                "evaluation)", path)

    # -- per image -----------------------------------------------------------------------------
    def regions(self, item: Item, annotations: list[dict] | None = None) -> list[dict]:
        """[{box: [x0, y0, x1, y1], note, kind, objects: [annotation ids]}] for one image."""
        out = []
        a = self.audit.get(item.name)
        if a is not None:
            extra = f": label agreement {a['score']:.3f}" if _num(a.get("score")) else ""
            rank = f" (rank {int(a['rank'])})" if _num(a.get("rank")) else ""
            out.append({"box": a["box"], "note": f"drivelab audit{extra}{rank}", "kind": "audit",
                        "objects": []})
        if annotations is not None and (self.results is not None or item.name in self.worst):
            out += self._overunder_regions(item, annotations)
        c = self.counts.get(item.name)
        if c is not None and not any(r["kind"] in ("under", "over") for r in out):
            out.append({"box": None, "kind": "counts", "objects": [],
                        "note": f"model: {int(c.get('n_under') or 0)} merging predictions, "
                                f"{int(c.get('n_over') or 0)} split objects (per_image table)"})
        return out

    def _overunder_regions(self, item: Item, annotations: list[dict]) -> list[dict]:
        from drivelab.data.coco import check_annotation
        from drivelab.label.instances import ann_rle
        from drivelab.seg.instance.overunder import analyze_rles

        h, w = int(item.meta["height"]), int(item.meta["width"])
        images = {item.meta["image_id"]: {"height": h, "width": w, "file_name": item.name}}
        cats = {a.get("category_id") for a in annotations}
        gt = []  # what pycocotools' COCO would hold: usable, non-crowd, in file order
        for a in annotations:
            chk = check_annotation(a, images, cats)
            if chk.status == "mask" and not a.get("iscrowd"):
                gt.append((a, ann_rle(chk.ann["segmentation"], h, w)))
        if self.results is not None:
            preds = [r for r in self.results.get(item.meta["image_id"], [])
                     if r.get("score", 1.0) >= self.options.score_thresh]
            res = analyze_rles([g[1] for g in gt], [_rle(r["segmentation"], h, w) for r in preds],
                               self.options, item.name)
            under, over = res.under, res.over
        else:
            rec = self.worst[item.name]
            preds, under, over = [], rec.get("under_pairs") or [], rec.get("over_pairs") or []
        out = []
        for p, gs in under:
            gs = [g for g in gs if g < len(gt)]
            box = _xywh(preds[p].get("bbox")) if p < len(preds) and preds[p].get("bbox") else _union(
                [_bbox(gt[g][1]) for g in gs])
            score = f" (score {preds[p]['score']:.2f})" if p < len(preds) and "score" in preds[p] else ""
            out.append({"box": box, "kind": "under", "objects": [gt[g][0].get("id") for g in gs],
                        "note": f"model merged {len(gs)} objects into one{score}"})
        for g, ps in over:
            if g >= len(gt):
                continue
            out.append({"box": _bbox(gt[g][1]), "kind": "over", "objects": [gt[g][0].get("id")],
                        "note": f"model split this object into {len(ps)}"})
        return out


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _box(v: Any) -> list[float] | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        v = v.replace(",", " ").split()
    try:
        vals = [float(x) for x in v]
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == 4 and all(map(math.isfinite, vals)) else None


def _rle(seg: Any, h: int, w: int) -> dict:
    from drivelab.label.instances import ann_rle

    return ann_rle(seg, h, w)


def _bbox(rle: dict) -> list[float]:
    from pycocotools import mask as mask_utils

    return _xywh(mask_utils.toBbox(rle).tolist())


def _xywh(b: Any) -> list[float]:
    x, y, bw, bh = (float(v) for v in b)
    return [x, y, x + bw, y + bh]


def _union(boxes: list[list[float]]) -> list[float] | None:
    if not boxes:
        return None
    xs0, ys0, xs1, ys1 = zip(*boxes, strict=True)
    return [min(xs0), min(ys0), max(xs1), max(ys1)]
