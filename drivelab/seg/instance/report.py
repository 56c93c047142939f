"""Write the instance evaluation files for a set of COCO results (model-free).

Shared by ``evaluate_instances`` (results of a checkpoint) and ``drivelab overunder`` (any
results json): ``results.json``, ``metrics.json``, ``per_image.parquet``, ``overunder.json`` and
``worst/*.png`` (see ``drivelab.seg.instance.evaluate``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from drivelab.data.sample import Reader
from drivelab.errors import DrivelabError
from drivelab.seg.instance.overunder import OverUnderOptions


def write_eval(
    out_dir: str | Path,
    reader: Reader,
    split: str,
    results: list[dict],
    options: OverUnderOptions,
    worst: int = 10,
    write_results: bool = True,
) -> dict:
    """Score ``results`` against one split of a COCO reader and write the report; returns metrics."""
    import pandas as pd

    from drivelab.io import write_json, write_table
    from drivelab.seg.instance.overunder import _clean, write_report
    from drivelab.seg.instance.scoring import analyze

    out = Path(out_dir)
    metrics, per_image, rows = analyze(reader, split, results, options)
    if write_results:
        write_json(out / "results.json", results)
    write_table(out / "per_image.parquet", pd.DataFrame(rows))
    paths = {it.meta["image_id"]: it.image_path for it in reader.items}
    write_report(out, reader.coco(split), results, per_image, paths, options, k=worst)
    metrics = {"split": split, **metrics}
    write_json(out / "metrics.json", _clean(metrics))
    return metrics


def load_results(path: Path, reader: Reader, split: str) -> list[dict]:
    """A results json; when ``images.json`` (written by predict) lies beside it, image ids are mapped
    to the dataset's by file name."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DrivelabError(f"cannot read results json ({e})", path) from None
    if not isinstance(results, list) or any("image_id" not in r or "segmentation" not in r for r in results):
        raise DrivelabError("not a COCO results list with segmentations", path)
    gt_ids = {Path(it.name).name: it.meta["image_id"] for it in reader.items}  # predict lists base names
    listing = Path(path).with_name("images.json")
    if listing.exists():
        ids = {}
        for im in json.loads(listing.read_text()):
            if im["file_name"] not in gt_ids:
                continue
            ids[im["id"]] = gt_ids[im["file_name"]]
        results = [{**r, "image_id": ids[r["image_id"]]} for r in results if r["image_id"] in ids]
    known = set(gt_ids.values())
    stray = {r["image_id"] for r in results} - known
    if stray:
        raise DrivelabError(
            f"{len(stray)} result image ids are not in split {split!r} of the dataset "
            f"(e.g. {sorted(stray)[0]})",
            path,
        )
    return results


def overunder_report(
    results: str | Path,
    dataset: str | Path | Reader,
    out: str | Path | None = None,
    split: str | None = "val",
    score_thresh: float = 0.5,
    under_thresh: float = 0.8,
    over_thresh: float = 0.8,
    worst: int = 10,
) -> tuple[str, dict]:
    """``drivelab overunder``: write the report for a results json; returns (one-line summary,
    metrics)."""
    from drivelab.data import open_dataset
    from drivelab.seg.instance.scoring import split_reader

    reader = dataset if isinstance(dataset, Reader) else open_dataset(dataset)
    if reader.task != "instance":
        raise DrivelabError(f"over/under needs a COCO-style dataset, not {reader.format}", reader.root)
    reader, split = split_reader(reader, split)
    options = OverUnderOptions(under_thresh=under_thresh, over_thresh=over_thresh, score_thresh=score_thresh)
    res = load_results(Path(results), reader, split)
    out_dir = Path(out) if out is not None else Path(results).parent / "overunder"
    m = write_eval(out_dir, reader, split, res, options, worst, write_results=False)
    return summary_line(m) + f"; report in {out_dir}", m


def summary_line(m: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    return (
        f"{m['images']} images: mask AP {f(m['mask_ap'])} (AP50 {f(m['mask_ap50'])}), "
        f"box AP {f(m['box_ap'])}; "
        f"under-segmentation {m['under_instances']} predictions in {m['under_images']} images "
        f"({m['under_image_rate']:.1%}), over-segmentation {m['over_instances']} objects in "
        f"{m['over_images']} images ({m['over_image_rate']:.1%})"
    )
