"""``drivelab embed RUN DATASET``: one row per image with the model's view of it.

Every image is resized to the checkpoint's training size (as in training), padded to /32 and run
through the model in batches. Per image:

    features     semantic: every encoder stage (``model.stages``) average-pooled and concatenated,
                 shallowest first. The deepest map keeps what the task needs and drops appearance
                 (a night scene pools like a day scene there); the shallow ones keep lighting,
                 weather and camera, the conditions a curator looks for.
                 instance: the levels the model's heads read, average-pooled and concatenated
    loss, miou   cross-entropy and IoU against the label (at training size), NaN when unlabelled
    entropy      mean per-pixel entropy of the softmax, divided by log K (0 sure .. 1 uniform)
    margin       mean gap between the two most probable classes (small = uncertain)
    metadata     size, brightness, class pixel shares (label and prediction), instance counts

Resumable: rows are flushed every ``chunk`` images to ``<out>/chunks/part-NNNNN.{parquet,npy}``;
a rerun skips names already embedded and only then (re)writes ``table.parquet`` and
``features.npy`` from all chunks. Layout: see ``drivelab.engine.table``.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.engine.source import load_instance, load_semantic, open_model_and_dataset, select_items
from drivelab.engine.table import FEATURES, META, TABLE
from drivelab.errors import DrivelabError
from drivelab.schema import IGNORE, ClassSchema


# --------------------------------------------------------------------------- per-batch math
def image_stats(image: np.ndarray) -> dict[str, float]:
    """Size and brightness (mean luma in [0, 1]) of an original image."""
    luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return {
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "brightness": float(luma.mean() / 255),
    }


def prediction_stats(logits: torch.Tensor, masks: list[np.ndarray | None], names: list[str]) -> list[dict]:
    """Per-image loss / IoU / entropy / margin / class shares from logits (B, K, H, W) and labels."""
    k = logits.shape[1]
    logp = F.log_softmax(logits.float(), 1)
    p = logp.exp()
    entropy = -(p * logp).sum(1) / np.log(k)  # (B, H, W) in [0, 1]
    top2 = p.topk(min(2, k), dim=1).values
    margin = top2[:, 0] - top2[:, 1] if k > 1 else torch.ones_like(entropy)
    pred = p.argmax(1)
    rows = []
    for b, mask in enumerate(masks):
        row: dict[str, Any] = {"entropy": float(entropy[b].mean()), "margin": float(margin[b].mean())}
        counts = torch.bincount(pred[b].flatten(), minlength=k).double()
        for c, n in enumerate(names):
            row[f"pred_share_{n}"] = float(counts[c] / counts.sum())
        if mask is None:
            row.update({"labelled": False, "loss": np.nan, "pixel_acc": np.nan, "miou": np.nan})
            row.update({f"iou_{n}": np.nan for n in names})
            row.update({f"share_{n}": np.nan for n in names})
        else:
            t = torch.from_numpy(mask.astype(np.int64)).to(logits.device)
            valid = t != IGNORE
            nvalid = int(valid.sum())
            ce = F.nll_loss(logp[b : b + 1], t[None], ignore_index=IGNORE, reduction="sum")
            row.update({"labelled": True, "loss": float(ce) / nvalid if nvalid else np.nan})
            tv, pv = t[valid], pred[b][valid]
            row["pixel_acc"] = float((tv == pv).double().mean()) if nvalid else np.nan
            ious = []
            for c, n in enumerate(names):
                inter = int(((tv == c) & (pv == c)).sum())
                union = int(((tv == c) | (pv == c)).sum())
                row[f"iou_{n}"] = inter / union if union else np.nan
                row[f"share_{n}"] = float((tv == c).double().mean()) if nvalid else np.nan
                if union:
                    ious.append(inter / union)
            row["miou"] = float(np.mean(ious)) if ious else np.nan
        rows.append(row)
    return rows


class SemanticEmbedder:
    """Run a semantic model on images already at its input size: features + statistics."""

    def __init__(
        self, model: torch.nn.Module, schema: ClassSchema, device: str | torch.device = "cpu"
    ) -> None:
        self.model, self.schema, self.device = model.eval(), schema, torch.device(device)

    load = staticmethod(load_semantic)

    @torch.no_grad()
    def __call__(
        self, images: np.ndarray | list[np.ndarray], masks: list[np.ndarray | None]
    ) -> tuple[np.ndarray, list[dict], np.ndarray]:
        """``images`` (B, H, W, 3) uint8, H and W multiples of 32 -> features (B, C), per-image rows,
        predicted masks (B, H, W)."""
        images = np.stack(images) if isinstance(images, list) else images
        x = (
            torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
            .to(self.device)
            .float()
            .div_(255)
        )
        feats = torch.cat([m.float().mean(dim=(2, 3)) for m in self.model.stages(x)], dim=1)
        logits = self.model(x).float()
        rows = prediction_stats(logits, masks, self.schema.names)
        preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
        return feats.cpu().numpy().astype(np.float32), rows, preds


class InstanceEmbedder:
    """An instance model (ProtoSeg or Mask R-CNN): pooled features, detection counts and score
    uncertainty."""

    def __init__(
        self,
        model: torch.nn.Module,
        schema: ClassSchema,
        device: str | torch.device = "cpu",
        score_thresh: float = 0.5,
    ) -> None:
        self.model, self.schema, self.device = model.eval(), schema, torch.device(device)
        self.score_thresh = score_thresh

    load = staticmethod(load_instance)

    @torch.no_grad()
    def __call__(
        self, images: list[np.ndarray], counts: list[int | None]
    ) -> tuple[np.ndarray, list[dict], None]:
        from drivelab.seg.instance.model import predict_with_features

        x = [
            torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).to(self.device).float().div_(255)
            for im in images
        ]
        outputs, feats = predict_with_features(self.model, x)
        rows = []
        for o, n in zip(outputs, counts, strict=True):
            s = o["scores"].float().clamp(1e-6, 1 - 1e-6)
            ent = -(s * s.log() + (1 - s) * (1 - s).log()) / np.log(2)
            rows.append(
                {
                    "labelled": n is not None,
                    "instances": np.nan if n is None else int(n),
                    "pred_instances": int((s >= self.score_thresh).sum()),
                    "mean_score": float(s.mean()) if len(s) else np.nan,
                    "entropy": float(ent.mean()) if len(s) else 0.0,
                    "margin": float((2 * s - 1).abs().mean()) if len(s) else 1.0,
                }
            )
        return feats.cpu().numpy().astype(np.float32), rows, None


# --------------------------------------------------------------------------- the worker
class EmbedWorker:
    """One model and the dataset: embeds batches of image names, writes their predicted masks and
    returns (rows, features). Runs in this process, or as a Ray actor (``drivelab.cluster``) with
    identical results."""

    def __init__(self, ckpt: dict, dataset: str, device: str, out: str, save_preds: bool,
                 workers: int = 2) -> None:
        from drivelab.device import resolve_device
        from drivelab.seg.checkpoint import training_size
        from drivelab.seg.tasks import for_checkpoint

        device = resolve_device(device)
        model, self.schema, ckpt, self.reader = open_model_and_dataset(ckpt, dataset, device)
        self.embedder = for_checkpoint(ckpt).embedder_class()(model, self.schema, device)
        self.size = training_size(ckpt)
        self.out, self.save_preds, self.workers = Path(out), save_preds, max(1, workers)
        self.palette = self.schema.palette_256()
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self, names: list[str]) -> tuple[list[dict], np.ndarray]:
        from drivelab.io import write_png

        self._pool = self._pool or ThreadPoolExecutor(self.workers)
        items = [self.reader.item(n) for n in names]
        loaded = list(self._pool.map(lambda it: self.embedder.load(self.reader, it, self.size), items))
        feats, stats, preds = self.embedder([b for _, b, _ in loaded], [c for _, _, c in loaded])
        rows = []
        for i, (item, (image, _, _), st) in enumerate(zip(items, loaded, stats, strict=True)):
            row = {
                "name": item.name,
                "split": item.split,
                "image_path": str(Path(item.image_path).resolve()),
                "label_path": str(Path(item.label_path).resolve()) if item.label_path else None,
                **image_stats(image),
                **st,
            }
            if preds is not None and self.save_preds:
                rel = Path("preds") / Path(item.name).with_suffix(".png")
                write_png(self.out / rel, preds[i][: self.size[0], : self.size[1]], palette=self.palette)
                row["pred_path"] = str(rel)
            rows.append(row)
        return rows, feats


# --------------------------------------------------------------------------- the verb
def embed(
    run: str | Path,
    dataset: str | Path,
    out: str | Path | None = None,
    *,
    batch: int = 8,
    device: str = "auto",
    split: str | None = None,
    limit: int | None = None,
    chunk: int = 256,
    save_preds: bool = True,
    overwrite: bool = False,
    workers: int = 2,
    ray: Any = None,
    progress: bool = True,
) -> Path:
    """Embed every image of ``dataset`` with the model of ``run``; returns the table path.

    ``out`` defaults to ``<run>/embed/<dataset name>``. ``ray``: a ``drivelab.cluster.RayOptions``
    to embed on a Ray cluster (one model per actor, the same batches, the same table)."""
    import pandas as pd
    from tqdm import tqdm

    from drivelab.io import write_json
    from drivelab.seg.checkpoint import output_dir, read_checkpoint, reader_options, training_size
    from drivelab.seg.tasks import task_of

    if batch < 1 or chunk < 1:
        raise DrivelabError("--batch and --chunk must be >= 1")
    ckpt = read_checkpoint(run)
    out = Path(out) if out is not None else output_dir(ckpt, "embed", dataset)
    # The driver's worker also checks model and dataset agree before any actor starts.
    worker = EmbedWorker(ckpt, str(dataset), device, str(out), save_preds, workers)
    schema = worker.schema
    reader, items = select_items(worker.reader, dataset, split, limit)
    if not items:
        raise DrivelabError("the dataset has no images", dataset)
    size = training_size(ckpt)
    meta = {
        "checkpoint": str(Path(ckpt["path"]).resolve()),
        "dataset": str(Path(dataset).resolve()),
        "format": reader.format,
        "dataset_options": reader_options(ckpt, dataset),
        "task": task_of(ckpt),
        "classes": schema.names,
        "schema": schema.to_dict(),
        "model_spec": ckpt.get("model_spec"),
        "size": list(size),
        "features": FEATURES,
    }
    done = _start(out, meta, overwrite)
    todo = [it.name for it in items if it.name not in done]
    from drivelab.seg.pipeline import batches

    # Flushes happen between batches: a chunk of rows is `chunk` rounded up to whole batches.
    # The local loop and Ray's actors get these same batches, hence the same numbers.
    jobs = list(batches(todo, batch))
    if ray is not None:
        from drivelab.cluster import map_chunks

        args = (ckpt, str(dataset), device, str(out), save_preds, workers)
        results = map_chunks(EmbedWorker, jobs, ray, ctor_args=args, progress=progress, desc="embed")
    else:
        results = (worker(b) for b in jobs)
    rows: list[dict] = []
    feats: list[np.ndarray] = []
    part = len(list((out / "chunks").glob("part-*.parquet")))
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="embed",
               disable=not progress or ray is not None, unit="img")
    for batch_rows, f in results:
        rows += batch_rows
        feats.append(f)
        bar.update(len(batch_rows))
        if len(rows) >= chunk:
            _flush(out, part, rows, feats)
            part, rows, feats = part + 1, [], []
    bar.close()
    if rows:
        _flush(out, part, rows, feats)
    table = _consolidate(out, [it.name for it in items])
    meta["feature_dim"] = int(np.load(out / FEATURES, mmap_mode="r").shape[1])
    meta["rows"] = len(pd.read_parquet(table, columns=["name"]))
    write_json(out / META, meta)
    return table


def _start(out: Path, meta: dict, overwrite: bool) -> set[str]:
    """Check a previous run in ``out`` is the same embedding; return the names it already did."""
    import shutil

    import pandas as pd

    from drivelab.io import write_json

    prev_path = out / META
    if prev_path.exists():
        prev = json.loads(prev_path.read_text())
        same = all(prev.get(k) == meta[k] for k in ("checkpoint", "dataset", "model_spec", "size"))
        if not same and not overwrite:
            raise DrivelabError(
                f"this folder holds an embedding of another model or dataset "
                f"({prev.get('checkpoint')} on {prev.get('dataset')}); use another --out or "
                "--overwrite",
                out,
            )
        if not same:
            for p in (out / "chunks", out / "preds"):
                shutil.rmtree(p, ignore_errors=True)
    elif overwrite:
        shutil.rmtree(out / "chunks", ignore_errors=True)
    write_json(prev_path, meta)
    done: set[str] = set()
    for p in sorted((out / "chunks").glob("part-*.parquet")):
        if not p.with_suffix(".npy").exists():
            continue  # a chunk whose features never landed is redone
        done.update(pd.read_parquet(p, columns=["name"])["name"].astype(str))
    return done


def _flush(out: Path, part: int, rows: list[dict], feats: list[np.ndarray]) -> None:
    import io

    import pandas as pd

    from drivelab.io import write_bytes, write_table

    buf = io.BytesIO()
    np.save(buf, np.concatenate(feats).astype(np.float32))
    # Features first: a chunk counts as done only once its table exists (see _start).
    write_bytes(out / "chunks" / f"part-{part:05d}.npy", buf.getvalue())
    write_table(out / "chunks" / f"part-{part:05d}.parquet", pd.DataFrame(rows))


def _consolidate(out: Path, order: list[str]) -> Path:
    """All chunks -> table.parquet + features.npy, rows in dataset order (names not in ``order``,
    e.g. from an earlier, larger --limit, come last).

    The chunks' features are memory-mapped and streamed into features.npy block by block in the
    final order, through one atomic write: a pool of any size never sits in memory twice."""
    import pandas as pd

    from drivelab.engine.table import iter_blocks
    from drivelab.io import atomic_write, write_table

    frames, feats = [], []
    for p in sorted((out / "chunks").glob("part-*.parquet")):
        if p.with_suffix(".npy").exists():
            frames.append(pd.read_parquet(p))
            feats.append(np.load(p.with_suffix(".npy"), mmap_mode="r"))
    df = pd.concat(frames, ignore_index=True)
    offsets = np.cumsum([0] + [len(f) for f in feats])
    df["_row"] = np.arange(len(df))
    df = df.drop_duplicates("name", keep="last")
    rank = pd.Index(order).get_indexer(df["name"])
    df["_order"] = np.where(rank >= 0, rank, len(order))
    df = df.sort_values(["_order", "_row"], kind="stable")
    rows = df["_row"].to_numpy()
    df = df.drop(columns=["_row", "_order"]).reset_index(drop=True)
    dim = feats[0].shape[1]
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
        "fortran_order": False,
        "shape": (len(rows), dim),
    }
    with atomic_write(out / FEATURES) as f:
        np.lib.format.write_array_header_1_0(f, header)
        for a, b in iter_blocks(len(rows)):
            r = rows[a:b]
            part = np.searchsorted(offsets, r, side="right") - 1
            block = np.empty((b - a, dim), dtype="<f4")
            for q in np.unique(part):
                sel = part == q
                block[sel] = feats[q][r[sel] - offsets[q]]
            f.write(block.tobytes())
    write_table(out / TABLE, df)
    return out / TABLE
