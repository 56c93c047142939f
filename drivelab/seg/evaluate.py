"""``drivelab evaluate RUN_OR_CHECKPOINT DATASET``: metrics at the labels' full resolution.

Each image is resized to the checkpoint's training size, padded to a multiple of 32, run
through the model (optionally with flip TTA), the padding cropped off and the logits upsampled
bilinearly to the label's own resolution. The confusion matrix and the cross-entropy are then
taken over the real labelled pixels only: padding and ignore (255) never count.

Writes ``<run>/eval/<dataset-name>/per_image.parquet`` (name, split, loss, pixel_acc, miou,
iou_<class>..., pixels) and ``metrics.json`` (the summary) and returns the summary dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.errors import DrivelabError
from drivelab.schema import IGNORE


def _model_input(image: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 -> (1, 3, H', W') float in [0, 1] at ``size`` padded to 32, and ``size``."""
    from drivelab.data.torchdata import pad_to_stride
    from drivelab.seg.cache import resize_pair

    resized, _ = resize_pair(image, None, size)
    padded, _ = pad_to_stride(resized, None)
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))).float().div_(255)
    return x[None], size


@torch.no_grad()
def predict_logprobs_full(model: torch.nn.Module, image: np.ndarray, size: tuple[int, int], tta: bool = False,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """Log-probabilities (K, H, W) at the image's own resolution (see the module docstring)."""
    from drivelab.seg.semantic import predict_logprobs

    x, (h, w) = _model_input(image, size)
    logp = predict_logprobs(model, x.to(device), tta=tta)[:, :, :h, :w]
    full = F.interpolate(logp, size=image.shape[:2], mode="bilinear", align_corners=False)
    return F.log_softmax(full, 1)[0]


def default_split(reader: Any, dataset: Path, ckpt: dict) -> str | None:
    """The validation split when evaluating on the checkpoint's own training data, else everything."""
    cfg = ckpt.get("config") or {}
    trained_on = cfg.get("data")
    if trained_on and Path(trained_on).resolve() == Path(dataset).resolve():
        val = cfg.get("val_split", "val")
        if val in reader.splits:
            return val
    return None


def evaluate(checkpoint: str | Path, dataset: str | Path, out_dir: str | Path | None = None,
             split: str | None = None, tta: bool = False, device: str = "cpu", limit: int | None = None,
             progress: bool = True) -> dict:
    """Evaluate a checkpoint (or run folder) on a labelled dataset; returns the summary metrics.

    ``split``: a split name, "all", or None (the val split when ``dataset`` is the training data,
    else all images). ``out_dir`` defaults to ``<run>/eval/<dataset folder name>``."""
    from drivelab.seg.checkpoint import load_model, read_checkpoint

    ckpt_head = read_checkpoint(checkpoint)
    if ckpt_head.get("task", "semantic") == "instance":
        from drivelab.seg.instance.evaluate import evaluate_instances

        return evaluate_instances(checkpoint, dataset, out_dir, split=split)
    del ckpt_head
    import pandas as pd
    from tqdm import tqdm

    from drivelab.io import write_json, write_table
    from drivelab.seg.metrics import SegMeter, scores
    from drivelab.seg.semantic import open_reader

    model, schema, ckpt = load_model(checkpoint, device)
    cfg = ckpt.get("config") or {}
    size = tuple(cfg.get("size") or (512, 1024))
    # A Cityscapes model keeps its class set (19/29/30) whatever dataset it is evaluated on.
    reader = open_reader(dataset, None, cfg.get("classes") if _is_cityscapes(dataset) else None)
    if reader.schema.names != schema.names:
        raise DrivelabError(f"class mismatch: the checkpoint predicts {schema.num_classes} classes "
                            f"({schema.name}), the dataset has {reader.schema.num_classes} "
                            f"({reader.schema.name})", dataset)
    if split is None:
        split = default_split(reader, Path(dataset), ckpt)
    if split not in (None, "all"):
        if split not in reader.splits:
            raise DrivelabError(f"no split {split!r} (splits: {reader.splits})", dataset)
        reader = reader.subset(split=split)
    reader = reader.subset(names=[it.name for it in reader.items if it.label_path is not None])
    if limit:
        reader.items = reader.items[:limit]
    if len(reader) == 0:
        raise DrivelabError("no labelled images to evaluate", dataset)

    meter = SegMeter(schema.num_classes, IGNORE)
    rows = []
    for sample in tqdm(reader, total=len(reader), desc="evaluate", disable=not progress, leave=False):
        logp = predict_logprobs_full(model, sample.image, size, tta=tta, device=device)
        target = torch.from_numpy(sample.mask.astype(np.int64)).to(logp.device)
        conf, ce, n = meter.update(logp[None], target[None])
        s = scores(conf, schema.names)
        rows.append({"name": sample.name, "split": sample.split, "loss": ce / n if n else float("nan"),
                     "pixel_acc": s["pixel_acc"], "miou": s["miou"],
                     **{f"iou_{c}": s[f"iou_{c}"] for c in schema.names}, "pixels": n})
    summary = meter.compute(schema.names)
    summary.update({"n_images": len(rows), "split": split or "all", "tta": tta, "size": list(size),
                    "checkpoint": str(ckpt["path"]), "dataset": str(dataset), "classes": schema.names})
    run = Path(ckpt["path"]).parent
    out = Path(out_dir) if out_dir is not None else run / "eval" / Path(dataset).resolve().name
    write_table(out / "per_image.parquet", pd.DataFrame(rows))
    write_json(out / "metrics.json", _jsonable(summary))
    conf = pd.DataFrame(meter.conf.numpy(), index=schema.names, columns=schema.names)
    write_table(out / "confusion.csv", conf.reset_index(names="truth \\ prediction"))
    summary["out_dir"] = str(out)
    return summary


def _is_cityscapes(dataset: str | Path) -> bool:
    from drivelab.data import detect_format

    return detect_format(dataset) == "cityscapes"


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}
