"""``drivelab audit RUN DATASET``: rank labelled images by how much the model disagrees with the label.

Confident learning for segmentation (Northcutt et al. 2021; cleanlab's segmentation scores),
per pixel:

    self-confidence   p[label] : the probability the model gives the labelled class
    image score       soft minimum of the self-confidences, sum_i p_i * softmax((1 - p)/T)_i with
                      T = 0.1: a few pixels the model is sure are mislabelled pull it to 0 while
                      the long tail of confident pixels does not average them away
    suspect pixel     p[label] < t[label] and the predicted class c has p[c] >= t[c], where t[k]
                      is the mean self-confidence of pixels labelled k over the dataset (the
                      per-class thresholds of confident learning)

Lower score = more suspect. The worst images get a suspect-pixel mask (PNG overlay), the box of
their largest suspect region, and, with ``push``, a ``needs_fix`` entry in the label store whose
region the label app draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.schema import IGNORE


def self_confidence(probs: np.ndarray, label: np.ndarray, ignore_index: int = IGNORE) -> np.ndarray:
    """(K, H, W) probabilities + (H, W) label -> (H, W) p[label], NaN on ignored pixels."""
    k = probs.shape[0]
    valid = (label != ignore_index) & (label < k)
    safe = np.where(valid, label, 0).astype(np.int64)
    conf = np.take_along_axis(probs, safe[None], axis=0)[0].astype(np.float64)
    return np.where(valid, conf, np.nan)


def softmin_score(conf: np.ndarray, temperature: float = 0.1) -> float:
    """Soft minimum of pixel self-confidences (NaN ignored); 1.0 for an image with no valid pixel."""
    p = conf[np.isfinite(conf)].ravel()
    if p.size == 0:
        return 1.0
    z = (1.0 - p) / temperature
    w = np.exp(z - z.max())
    return float((p * w).sum() / w.sum())


class ClassThresholds:
    """Running per-class mean self-confidence (confident learning's t_k)."""

    def __init__(self, num_classes: int) -> None:
        self.sum = np.zeros(num_classes)
        self.count = np.zeros(num_classes)

    def update(self, conf: np.ndarray, label: np.ndarray) -> None:
        valid = np.isfinite(conf)
        k = len(self.sum)
        self.sum += np.bincount(label[valid].astype(np.int64), weights=conf[valid], minlength=k)[:k]
        self.count += np.bincount(label[valid].astype(np.int64), minlength=k)[:k]

    @property
    def values(self) -> np.ndarray:
        # A class never labelled gets threshold 0.5: any confident prediction of it counts.
        return np.where(self.count > 0, self.sum / np.maximum(self.count, 1), 0.5)


def suspect_pixels(
    probs: np.ndarray, label: np.ndarray, thresholds: np.ndarray, ignore_index: int = IGNORE
) -> np.ndarray:
    """(H, W) bool: pixels whose label the model confidently contradicts."""
    conf = self_confidence(probs, label, ignore_index)
    pred = probs.argmax(0)
    p_pred = probs.max(0)
    valid = np.isfinite(conf)
    lab = np.where(valid, label, 0).astype(np.int64)
    return valid & (pred != lab) & (conf < thresholds[lab]) & (p_pred >= thresholds[pred])


def suspect_box(mask: np.ndarray, min_pixels: int = 4) -> list[int] | None:
    """[x0, y0, x1, y1] (inclusive-exclusive) of the largest connected suspect region, or None."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < min_pixels:
        return None
    ys, xs = np.nonzero(labels == best)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def overlay_suspects(
    image: np.ndarray, label_rgb: np.ndarray, suspect: np.ndarray, box: list[int] | None
) -> np.ndarray:
    """Side by side: image with the label blended in | suspect pixels in magenta and the box."""
    from PIL import Image, ImageDraw

    blend = (0.55 * image + 0.45 * label_rgb).astype(np.uint8)
    marked = (0.6 * image).astype(np.uint8)
    marked[suspect] = (255, 0, 255)
    both = Image.fromarray(np.concatenate([blend, marked], axis=1))
    if box is not None:
        d = ImageDraw.Draw(both)
        w = image.shape[1]
        for dx in (0, w):
            d.rectangle([box[0] + dx, box[1], box[2] - 1 + dx, box[3] - 1], outline=(255, 255, 0), width=1)
    return np.asarray(both)


# --------------------------------------------------------------------------- the verb
def probabilities(model: Any, inputs: list[np.ndarray], device: str) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.stack(inputs).transpose(0, 3, 1, 2))).to(device)
        return torch.softmax(model(x.float().div_(255)).float(), 1).cpu().numpy()


def audit(
    run: str | Path,
    dataset: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    top: float = 0.1,
    push: int = 0,
    temperature: float = 0.1,
    batch_size: int = 8,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
) -> Any:
    """Score, rank and (optionally) push the worst labelled images; returns the ranked DataFrame.

    ``top``: a fraction (< 1) or a count (>= 1) of the ranked images that get suspect masks."""
    import pandas as pd
    from tqdm import tqdm

    from drivelab.engine.embed import load_batches, model_size, open_model_and_dataset, resolve_device
    from drivelab.io import write_image, write_json, write_png, write_table
    from drivelab.seg.transforms import resize_pair

    out = Path(out)
    device = resolve_device(device)
    model, schema, ckpt, reader = open_model_and_dataset(run, dataset, device)
    if ckpt.get("task", "semantic") != "semantic":
        raise DrivelabError("audit scores per-pixel labels: it needs a semantic segmentation checkpoint", run)
    if split is not None:
        if split not in reader.splits:
            raise DrivelabError(f"no split {split!r} (splits: {', '.join(reader.splits)})", dataset)
        reader = reader.subset(split=split)
    items = [it for it in reader.items if it.label_path is not None][: limit or None]
    if not items:
        raise DrivelabError("no labelled images to audit", dataset)
    if temperature <= 0:
        raise DrivelabError(f"--temperature must be > 0, got {temperature}")
    size = model_size(ckpt)
    h, w = size
    thresholds = ClassThresholds(schema.num_classes)
    rows = []
    for batch, _, inputs, masks in tqdm(
        load_batches(reader, items, size, batch_size, "semantic"),
        total=-(-len(items) // batch_size),
        desc="audit",
        disable=not progress,
    ):
        probs = probabilities(model, inputs, device)
        for item, p, m in zip(batch, probs, masks, strict=True):
            conf = self_confidence(p[:, :h, :w], m[:h, :w], schema.ignore_index)
            thresholds.update(conf, m[:h, :w])
            rows.append(
                {
                    "name": item.name,
                    "split": item.split,
                    "score": softmin_score(conf, temperature),
                    "mean_confidence": float(np.nanmean(conf)) if np.isfinite(conf).any() else 1.0,
                    "low_pixels": int((conf < 0.1).sum()),
                }
            )
    df = pd.DataFrame(rows).sort_values(["score", "mean_confidence"], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    n_top = int(top) if top >= 1 else max(1, int(round(top * len(df))))
    n_top = min(n_top, len(df))
    t = thresholds.values
    worst = df["name"].iloc[:n_top].tolist()
    by_name = {it.name: it for it in items}
    boxes: dict[str, Any] = {}
    suspects: dict[str, int] = {}
    for batch, originals, inputs, masks in load_batches(
        reader, [by_name[n] for n in worst], size, batch_size, "semantic"
    ):
        probs = probabilities(model, inputs, device)
        for item, image, p, m in zip(batch, originals, probs, masks, strict=True):
            sus = suspect_pixels(p[:, :h, :w], m[:h, :w], t, schema.ignore_index)
            box = suspect_box(sus)
            suspects[item.name] = int(sus.sum())
            # Boxes are found at model resolution and reported in the image's own pixels.
            sy, sx = image.shape[0] / h, image.shape[1] / w
            boxes[item.name] = (
                None
                if box is None
                else [
                    int(box[0] * sx),
                    int(box[1] * sy),
                    int(np.ceil(box[2] * sx)),
                    int(np.ceil(box[3] * sy)),
                ]
            )
            stem = Path(item.name).with_suffix("")
            write_png(out / "suspects" / f"{stem}.png", sus.astype(np.uint8) * 255)
            img_small, _ = resize_pair(image, None, size)
            label_rgb = schema.colorize(m[:h, :w])
            write_image(
                out / "overlays" / f"{stem}.jpg",
                _pil(overlay_suspects(img_small, label_rgb, sus, box)),
                quality=90,
            )
    df["suspect_pixels"] = df["name"].map(suspects).astype("float")
    df["box"] = df["name"].map(lambda n: None if boxes.get(n) is None else list(boxes[n]))
    write_table(out / "audit.parquet", df)
    write_table(
        out / "audit.csv", df.assign(box=df["box"].map(lambda b: "" if b is None else " ".join(map(str, b))))
    )
    write_json(out / "thresholds.json", dict(zip(schema.names, map(float, t), strict=True)))
    if push:
        push_needs_fix(dataset, df.head(int(push)), run)
    return df


def _pil(arr: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(arr)


def push_needs_fix(dataset: str | Path, worst: Any, run: str | Path) -> int:
    """Mark ranked rows ``needs_fix`` in the dataset's label store with their suspect box."""
    from drivelab.label.store import ReviewStore

    store = ReviewStore(dataset)
    for row in worst.itertuples():
        region = {"box": list(row.box), "note": "suspect label region (drivelab audit)"} if row.box else None
        store.set_status(
            row.name,
            "needs_fix",
            user="drivelab-audit",
            priority=float(1.0 - row.score),
            region=region,
            comment=f"drivelab audit: label agreement {row.score:.3f} (rank {row.rank}), "
            f"model {Path(run).name}",
        )
    return len(worst)
