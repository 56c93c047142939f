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

    from drivelab.painter import OPACITY, blend

    blended = blend(image, label_rgb, OPACITY)
    marked = (0.6 * image).astype(np.uint8)
    marked[suspect] = (255, 0, 255)
    both = Image.fromarray(np.concatenate([blended, marked], axis=1))
    if box is not None:
        d = ImageDraw.Draw(both)
        w = image.shape[1]
        for dx in (0, w):
            d.rectangle([box[0] + dx, box[1], box[2] - 1 + dx, box[3] - 1], outline=(255, 255, 0), width=1)
    return np.asarray(both)


# --------------------------------------------------------------------------- the passes
class AuditWorker:
    """One semantic model and the dataset: the audit's passes over batches of image names. Runs in
    this process, or as a Ray actor (``drivelab.cluster``) with identical results: the batches are
    the same, and per-batch partial sums are added in batch order on the driver either way.

    A call takes ``(pass, names, arg)``: ``"scores"`` -> (per-image rows, per-class confidence sums
    and counts); ``"regions"`` (arg: thresholds) -> per image (pair masses, largest region per
    class pair); ``"pictures"`` (arg: (thresholds, out, boxes of the worst regions)) -> per image
    (suspect pixel count, box in image pixels), writing the suspect mask and overlay."""

    def __init__(self, ckpt: dict, dataset: str, device: str, temperature: float, workers: int = 2,
                 tta: bool = True) -> None:
        from drivelab.device import resolve_device
        from drivelab.engine.source import load_semantic, open_model_and_dataset
        from drivelab.seg.checkpoint import expect_task, training_size

        self.device = resolve_device(device)
        self.model, self.schema, ckpt, self.reader = open_model_and_dataset(ckpt, dataset, self.device)
        expect_task(ckpt, "semantic", "audit (it scores per-pixel labels)")
        self.size, self.temperature, self.workers = training_size(ckpt), temperature, max(1, workers)
        self.tta = tta
        self.load = load_semantic
        self._pool: Any = None

    def probabilities(self, names: list[str]) -> list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]]:
        """(item, original image, probabilities (K, h, w), label (h, w)) at the training size."""
        from concurrent.futures import ThreadPoolExecutor

        import torch

        from drivelab.seg.inference import predict_logprobs

        self._pool = self._pool or ThreadPoolExecutor(self.workers)
        items = [self.reader.item(n) for n in names]
        loaded = list(self._pool.map(lambda it: self.load(self.reader, it, self.size), items))
        with torch.no_grad():
            x = np.ascontiguousarray(np.stack([b for _, b, _ in loaded]).transpose(0, 3, 1, 2))
            x = torch.from_numpy(x).to(self.device).float().div_(255)
            probs = predict_logprobs(self.model, x, self.tta).exp().cpu().numpy()
        h, w = self.size
        return [(it, a, p[:, :h, :w], m[:h, :w])
                for it, (a, _, m), p in zip(items, loaded, probs, strict=True)]

    def __call__(self, job: tuple[str, list[str], Any]) -> Any:
        kind, names, arg = job
        ignore, k = self.schema.ignore_index, self.schema.num_classes
        out = []
        if kind == "scores":
            thresholds = ClassThresholds(k)
            for item, _, p, m in self.probabilities(names):
                conf = self_confidence(p, m, ignore)
                thresholds.update(conf, m)
                out.append({
                    "name": item.name,
                    "split": item.split,
                    "softmin": softmin_score(p, m, self.temperature, ignore),
                    "mean_confidence": float(np.nanmean(conf)) if np.isfinite(conf).any() else 1.0,
                    "low_pixels": int((conf < 0.1).sum()),
                })
            return out, thresholds.sum, thresholds.count
        if kind == "regions":
            for _, _, p, m in self.probabilities(names):
                regions = disagreement_regions(p, m, arg, ignore)
                best: dict = {}
                for g in regions:  # largest mass first
                    best.setdefault((g.label, g.pred), g)
                out.append((pair_mass(regions, k), best))
            return out
        if kind == "pictures":
            return [self._picture(item, image, p, m, *arg) for item, image, p, m in self.probabilities(names)]
        raise ValueError(kind)

    def _picture(self, item: Any, image: np.ndarray, p: np.ndarray, m: np.ndarray, thresholds: np.ndarray,
                 out: str, region_box: dict) -> tuple[int, list[int] | None]:
        from drivelab.io import write_image, write_png
        from drivelab.seg.transforms import resize_pair

        h, w = self.size
        sus = suspect_pixels(p, m, thresholds, self.schema.ignore_index)
        box = region_box.get(item.name) or suspect_box(sus)
        stem = Path(item.name).with_suffix("")
        write_png(Path(out) / "suspects" / f"{stem}.png", sus.astype(np.uint8) * 255)
        img_small, _ = resize_pair(image, None, self.size)
        write_image(Path(out) / "overlays" / f"{stem}.jpg",
                    _pil(overlay_suspects(img_small, self.schema.colorize(m), sus, box)), quality=90)
        # Boxes are found at model resolution and reported in the image's own pixels.
        sy, sx = image.shape[0] / h, image.shape[1] / w
        big = None if box is None else [int(box[0] * sx), int(box[1] * sy), int(np.ceil(box[2] * sx)),
                                        int(np.ceil(box[3] * sy))]
        return int(sus.sum()), big


# --------------------------------------------------------------------------- the verb
def audit(
    run: str | Path,
    dataset: str | Path,
    out: str | Path | None = None,
    *,
    split: str | None = None,
    top: float = 0.1,
    push: int = 0,
    temperature: float = 0.1,
    rank: str = "regions",
    tta: bool = True,
    batch: int = 8,
    device: str = "auto",
    limit: int | None = None,
    workers: int = 2,
    ray: Any = None,
    progress: bool = True,
) -> Any:
    """Score, rank and (optionally) push the worst labelled images; returns the ranked DataFrame.

    ``rank``: ``regions`` (drivelab's ranking: region score and cleanlab's softmin, see
    ``drivelab.engine.audit_scores``) or ``softmin`` (cleanlab's score alone). ``tta``: score the
    mean of the image's and its mirror's probabilities (what the benchmark measures).
    ``top``: a fraction (< 1) or a count (>= 1) of the ranked images that get suspect masks.
    ``out`` defaults to ``<run>/audit/<dataset name>``; ``ray``: a ``drivelab.cluster.RayOptions``.

    Three passes of the model: every image (self-confidences, the per-class thresholds, softmin),
    every image again (regions, which need the final thresholds), the top ones (masks, overlays)."""
    import pandas as pd
    from tqdm import tqdm

    from drivelab.engine.source import select_items
    from drivelab.io import write_json, write_table
    from drivelab.seg.checkpoint import output_dir, read_checkpoint
    from drivelab.seg.pipeline import batches

    if rank not in RANKINGS:
        raise DrivelabError(f"--rank must be one of {', '.join(RANKINGS)}, got {rank!r}")
    if temperature <= 0:
        raise DrivelabError(f"--temperature must be > 0, got {temperature}")
    if batch < 1:
        raise DrivelabError(f"--batch must be >= 1, got {batch}")
    ckpt = read_checkpoint(run)
    out = Path(out) if out is not None else output_dir(ckpt, "audit", dataset)
    worker = AuditWorker(ckpt, str(dataset), device, temperature, workers, tta)
    schema = worker.schema
    _, items = select_items(worker.reader, dataset, split, limit, labelled_only=True)
    if not items:
        raise DrivelabError("no labelled images to audit", dataset)
    k = schema.num_classes

    def passes(kind: str, names: list[str], arg: Any, desc: str) -> list:
        jobs = [(kind, b, arg) for b in batches(names, batch)]  # the same batches here and on Ray
        if ray is not None:
            from drivelab.cluster import map_chunks

            return map_chunks(AuditWorker, jobs, ray, ctor_args=(ckpt, str(dataset), device, temperature,
                              workers, tta), progress=progress, desc=desc, count=lambda j: len(j[1]))
        return [worker(j) for j in tqdm(jobs, desc=desc, disable=not progress, leave=False)]

    names = [it.name for it in items]
    thresholds = ClassThresholds(k)
    rows = []
    for batch_rows, sums, counts in passes("scores", names, None, "audit 1/3"):
        rows += batch_rows
        thresholds.sum += sums
        thresholds.count += counts
    t = thresholds.values
    masses = np.zeros((len(items), k, k))
    worst_of_pair: list[dict] = []  # per image: (label, pred) -> its largest region
    for i, (mass, best) in enumerate(r for b in passes("regions", names, t, "audit 2/3") for r in b):
        masses[i] = mass
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
    region_box = {n: g.box for n, g in zip(df["name"], worst, strict=True) if g}
    df = df.sort_values(["score", "softmin"], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    n_top = int(top) if top >= 1 else max(1, int(round(top * len(df))))
    top_names = list(df["name"].iloc[: min(n_top, len(df))])
    pictures = [r for b in passes("pictures", top_names, (t, str(out), region_box), "audit 3/3") for r in b]
    suspects = {n: s for n, (s, _) in zip(top_names, pictures, strict=True)}
    boxes = {n: b for n, (_, b) in zip(top_names, pictures, strict=True)}
    df["suspect_pixels"] = df["name"].map(suspects).astype("float")
    df["box"] = df["name"].map(lambda n: None if boxes.get(n) is None else list(boxes[n]))
    write_table(out / "audit.parquet", df)
    write_table(
        out / "audit.csv", df.assign(box=df["box"].map(lambda b: "" if b is None else " ".join(map(str, b))))
    )
    write_json(out / "thresholds.json", dict(zip(schema.names, map(float, t), strict=True)))
    if push:
        push_needs_fix(dataset, df.head(int(push)), run)
    df.attrs["out"] = str(out)
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
