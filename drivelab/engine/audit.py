"""``drivelab audit RUN DATASET``: rank labelled images by how likely their masks are wrong.

The scores are in ``drivelab.engine.audit_scores``: cleanlab's softmin label-quality score (the
cleanlab package itself) and drivelab's region score (connected regions where the model
confidently contradicts the label, each judged against what is typical for its class pair). The
ranking combines the two (``--rank regions``, the default) or uses cleanlab's alone
(``--rank softmin``). Lower score = more suspect.

The worst images get a suspect-pixel mask (PNG), an overlay (label blend | suspect pixels and the
box of the worst region) and, with ``push``, a ``needs_fix`` entry in the label store whose region
(the box) the label app draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivelab.engine.audit_scores import (
    ClassThresholds,
    combined_score,
    disagreement_regions,
    pair_mass,
    region_scores,
    self_confidence,
    softmin_score,
    suspect_box,
    suspect_pixels,
    typical_pair_mass,
)
from drivelab.errors import DrivelabError

RANKINGS = ("regions", "softmin")


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
    rank: str = "regions",
    batch_size: int = 8,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
) -> Any:
    """Score, rank and (optionally) push the worst labelled images; returns the ranked DataFrame.

    ``rank``: ``regions`` (drivelab's ranking: region score and cleanlab's softmin, see
    ``drivelab.engine.audit_scores``) or ``softmin`` (cleanlab's score alone).
    ``top``: a fraction (< 1) or a count (>= 1) of the ranked images that get suspect masks.

    Three passes of the model: every image (self-confidences, the per-class thresholds, softmin),
    every image again (regions, which need the final thresholds), the top ones (masks, overlays)."""
    import pandas as pd
    from tqdm import tqdm

    from drivelab.engine.embed import load_batches, model_size, open_model_and_dataset, resolve_device
    from drivelab.io import write_image, write_json, write_png, write_table
    from drivelab.seg.transforms import resize_pair

    if rank not in RANKINGS:
        raise DrivelabError(f"--rank must be one of {', '.join(RANKINGS)}, got {rank!r}")
    if temperature <= 0:
        raise DrivelabError(f"--temperature must be > 0, got {temperature}")
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
    size = model_size(ckpt)
    h, w = size
    k = schema.num_classes

    def passes(subset: list, desc: str):  # noqa: ANN202 - (item, original, probs, mask) per image
        batches = load_batches(reader, subset, size, batch_size, "semantic")
        for batch, originals, inputs, masks in tqdm(
            batches, total=-(-len(subset) // batch_size), desc=desc, disable=not progress, leave=False
        ):
            probs = probabilities(model, inputs, device)
            for item, image, p, m in zip(batch, originals, probs, masks, strict=True):
                yield item, image, p[:, :h, :w], m[:h, :w]

    thresholds = ClassThresholds(k)
    rows = []
    for item, _, p, m in passes(items, "audit 1/3"):
        conf = self_confidence(p, m, schema.ignore_index)
        thresholds.update(conf, m)
        rows.append(
            {
                "name": item.name,
                "split": item.split,
                "softmin": softmin_score(p, m, temperature, schema.ignore_index),
                "mean_confidence": float(np.nanmean(conf)) if np.isfinite(conf).any() else 1.0,
                "low_pixels": int((conf < 0.1).sum()),
            }
        )
    t = thresholds.values
    masses = np.zeros((len(items), k, k))
    worst_of_pair: list[dict] = []  # per image: (label, pred) -> its largest region
    for i, (_, _, p, m) in enumerate(passes(items, "audit 2/3")):
        regions = disagreement_regions(p, m, t, schema.ignore_index)
        masses[i] = pair_mass(regions, k)
        best: dict = {}
        for g in regions:  # largest mass first
            best.setdefault((g.label, g.pred), g)
        worst_of_pair.append(best)
    region, pairs = region_scores(masses, typical_pair_mass(masses))
    df = pd.DataFrame(rows)
    df["region_score"] = region
    worst = [
        wp.get((int(a), int(b))) if z > 0 else None
        for wp, (a, b), z in zip(worst_of_pair, pairs, region, strict=True)
    ]
    df["region_pair"] = [f"{schema.names[g.label]} -> {schema.names[g.pred]}" if g else "" for g in worst]
    df["region_area"] = [g.area if g else 0 for g in worst]
    df["region_confidence"] = [g.confidence if g else np.nan for g in worst]
    df["score"] = combined_score(df["softmin"].to_numpy(), region) if rank == "regions" else df["softmin"]
    region_box = {n: (g.box if g else None) for n, g in zip(df["name"], worst, strict=True)}
    df = df.sort_values(["score", "softmin"], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    n_top = int(top) if top >= 1 else max(1, int(round(top * len(df))))
    n_top = min(n_top, len(df))
    by_name = {it.name: it for it in items}
    boxes: dict[str, Any] = {}
    suspects: dict[str, int] = {}
    for item, image, p, m in passes([by_name[n] for n in df["name"].iloc[:n_top]], "audit 3/3"):
        sus = suspect_pixels(p, m, t, schema.ignore_index)
        box = region_box[item.name] or suspect_box(sus)
        suspects[item.name] = int(sus.sum())
        # Boxes are found at model resolution and reported in the image's own pixels.
        sy, sx = image.shape[0] / h, image.shape[1] / w
        boxes[item.name] = (
            None
            if box is None
            else [int(box[0] * sx), int(box[1] * sy), int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy))]
        )
        stem = Path(item.name).with_suffix("")
        write_png(out / "suspects" / f"{stem}.png", sus.astype(np.uint8) * 255)
        img_small, _ = resize_pair(image, None, size)
        write_image(
            out / "overlays" / f"{stem}.jpg",
            _pil(overlay_suspects(img_small, schema.colorize(m), sus, box)),
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
        what = f"{row.region_pair}, {row.region_area} px" if row.region_pair else "suspect pixels"
        region = (
            {"box": list(row.box), "note": f"suspect label region ({what}; drivelab audit)"}
            if row.box
            else None
        )
        store.set_status(
            row.name,
            "needs_fix",
            user="drivelab-audit",
            priority=float(1.0 - row.score),
            region=region,
            comment=f"drivelab audit: rank {row.rank}, score {row.score:.3f} (cleanlab softmin "
            f"{row.softmin:.3f}, region score {row.region_score:.1f}), model {Path(run).name}",
        )
    return len(worst)
