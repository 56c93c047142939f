"""Instance evaluation: mask and box AP with pycocotools COCOeval (the standard way), over-/under-
segmentation and per-image metadata.

``evaluate_instances(checkpoint, dataset, out_dir, split="val")`` writes to ``out_dir``:

    results.json        COCO-format results (RLE masks, xywh boxes, scores) of every image
    metrics.json        mask_* and box_* AP/AR (COCOeval stats) + the over/under summary
    per_image.parquet   name, split, image_id, GT/prediction counts, recall50/precision50/mean_iou,
                        over/under columns (overunder.ImageOverUnder.row) and metadata (meta.py)
    overunder.json      over/under summary, options and the worst images; worst/*.png drawings

AP values are COCOeval's ``stats`` unchanged (-1 where a size range has no GT objects), so they
equal what pycocotools reports when run directly on ``results.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from drivelab.data.sample import Reader
from drivelab.errors import DrivelabError
from drivelab.seg.instance.overunder import OverUnderOptions
from drivelab.seg.instance.scoring import (  # noqa: F401  (re-exported: the scorers' old home)
    STAT_NAMES,
    analyze,
    category_map,
    coco_metrics,
    match_stats,
    split_reader,
)


def predict_reader(
    model: torch.nn.Module,
    reader: Reader,
    category_ids: list[int],
    device: torch.device | str,
    batch_size: int = 2,
    progress: bool = False,
    on_image: Any = None,
) -> list[dict]:
    """COCO results of ``model`` on every image of a one-split COCO reader, at original resolution.

    ``on_image(item, image, prediction)`` is called per image (for drawings)."""
    from tqdm import tqdm

    from drivelab.seg.instance.infer import predict_images, to_coco_results
    from drivelab.seg.pipeline import batches

    results: list[dict] = []
    with tqdm(
        total=len(reader), desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True
    ) as bar:
        for items in batches(reader.items, max(1, int(batch_size))):
            images = [reader.load_image(it) for it in items]
            for it, im, pred in zip(items, images, predict_images(model, images, device), strict=True):
                results += to_coco_results(pred, it.meta["image_id"], category_ids)
                if on_image is not None:
                    on_image(it, im, pred)
            bar.update(len(items))
    return results


def evaluate_model(
    model: torch.nn.Module,
    reader: Reader,
    model_names: list[str],
    device: torch.device | str,
    options: OverUnderOptions | None = None,
    batch_size: int = 2,
    progress: bool = False,
) -> tuple[dict, list[dict], list, list[dict]]:
    """Run and score ``model`` on a one-split reader -> (metrics, results, over/under per image, rows)."""
    options = options or OverUnderOptions()
    split = reader.items[0].split if reader.items else "val"
    results = predict_reader(model, reader, category_map(model_names, reader), device, batch_size, progress)
    metrics, per_image, rows = analyze(reader, split, results, options)
    return metrics, results, per_image, rows


def load_instance_model(
    checkpoint: str | Path | dict, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Any, dict]:
    """(model, schema, checkpoint dict) from a checkpoint path, run folder or loaded dict."""
    from drivelab.device import resolve_device
    from drivelab.seg.checkpoint import expect_task, load_model, read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    expect_task(ckpt, "instance", "instance evaluation and prediction")
    return load_model(ckpt, resolve_device(device))


def evaluate_instances(
    checkpoint: str | Path | dict,
    dataset: str | Path | Reader,
    out_dir: str | Path | None = None,
    *,
    split: str | None = "val",
    protocol: str = "drivelab",
    score_thresh: float = 0.5,
    under_thresh: float = 0.8,
    over_thresh: float = 0.8,
    batch: int = 2,
    device: str = "auto",
    limit: int | None = None,
    worst: int = 10,
    progress: bool = True,
) -> dict:
    """Evaluate an instance checkpoint on a COCO dataset split; writes the files listed in the module
    docstring and returns the metrics dict. ``protocol`` "drivelab" (= "coco"): pycocotools'
    COCOeval, unchanged."""
    from drivelab.data import open_dataset
    from drivelab.seg.checkpoint import output_dir
    from drivelab.seg.instance.report import write_eval

    if protocol not in ("drivelab", "coco"):
        raise DrivelabError(f"instance checkpoints are scored with COCOeval (protocol coco), "
                            f"not {protocol!r}")
    reader = dataset if isinstance(dataset, Reader) else open_dataset(dataset)
    if reader.task != "instance":
        raise DrivelabError(
            f"instance checkpoints evaluate on COCO-style datasets, not {reader.format}", reader.root
        )
    reader, split = split_reader(reader, split)
    if limit:
        reader.items = reader.items[:limit]
    model, schema, ckpt = load_instance_model(checkpoint, device)
    options = OverUnderOptions(under_thresh=under_thresh, over_thresh=over_thresh, score_thresh=score_thresh)
    dev = next(model.parameters()).device
    results = predict_reader(model, reader, category_map(schema.names, reader), dev, batch, progress)
    out = Path(out_dir) if out_dir is not None else output_dir(ckpt, "eval", reader.root)
    metrics = write_eval(out, reader, split, results, options, worst)
    metrics["out_dir"] = str(out)
    return metrics
