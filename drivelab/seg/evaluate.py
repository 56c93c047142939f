"""``drivelab evaluate SOURCE DATASET``: scores at the labels' full resolution, in each field's
convention (``drivelab.seg.protocols``).

SOURCE is a run folder or checkpoint (its task's evaluator, from the task map), or a folder of
prediction PNGs: what ``drivelab predict --out`` writes (its ``masks/`` and ``predict.json``),
or any tool's index / palette (or exact-colour RGB) PNGs. A prediction is matched to its image
by drivelab's sample name, by the image file's path with its extension replaced by ``.png``
(the trailing sub-folders as in the dataset: ``frankfurt/x_leftImg8bit.png``, or just
``x.png``), or, for Cityscapes, by the ``<city>_<seq>_<frame>`` key anywhere in the file name.
A labelled image without a prediction, a prediction no image claims, or an image two
predictions claim is an error naming the file.

A checkpoint is run through the one model-input transform (``drivelab.seg.inference.Predictor``,
the same code ``predict`` runs, so ``predict``'s saved masks score exactly what this scores),
logits are upsampled to each label's resolution, and the range-checked confusion matrix and the
cross-entropy are taken over real labelled pixels only (padding and ignore never count).

Writes ``<out>/metrics.json`` (the summary), ``per_image.parquet`` (name, split, loss,
pixel_acc, miou, iou_<class>..., pixels) and ``confusion.csv``; ``out`` defaults to
``<run>/eval/<dataset name>`` (``<prediction folder>/eval/<dataset name>`` for predictions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.data.sample import Item, Reader, Sample
from drivelab.errors import DrivelabError
from drivelab.io import jsonable
from drivelab.schema import IGNORE, ClassSchema
from drivelab.seg import protocols as P
from drivelab.seg.checkpoint import default_split
from drivelab.seg.metrics import PredictionRangeError, SegMeter, confusion, scores

PREDICTIONS_INFO = "predict.json"  # written by drivelab.seg.predict beside masks/
CITYSCAPES_KEY = re.compile(r"[A-Za-z-]+_\d{6}_\d{6}")


# --------------------------------------------------------------------------- the verb
def evaluate(source: str | Path | dict, dataset: str | Path, out_dir: str | Path | None = None,
             **options: Any) -> dict:
    """Score a checkpoint / run folder (through its task's evaluator) or a folder of prediction
    PNGs on a labelled dataset; returns the summary dict (see the module docstring).

    Options: ``protocol``, ``split``, ``limit``, ``progress``; for checkpoints ``tta``, ``device``,
    ``batch``; for prediction folders ``pred_ids`` ("train" or "label")."""
    options = {k: v for k, v in options.items() if v is not None}  # unset: the evaluator's default
    if not isinstance(source, dict) and is_prediction_folder(source):
        if options.pop("tta", False):
            raise DrivelabError("--tta runs a model: give a checkpoint, not predictions", source)
        options.pop("device", None)  # nothing runs on a device
        return evaluate_predictions(source, dataset, out_dir, **options)
    from drivelab.seg.checkpoint import read_checkpoint
    from drivelab.seg.tasks import for_checkpoint

    ckpt = read_checkpoint(source)
    if options.get("pred_ids") is not None:
        raise DrivelabError("--pred-ids applies to prediction folders, not checkpoints", ckpt.get("path"))
    options.pop("pred_ids", None)
    return for_checkpoint(ckpt).run_evaluate(ckpt, dataset, out_dir, **options)


def is_prediction_folder(source: str | Path) -> bool:
    path = Path(source)
    return path.is_dir() and not any((path / n).exists() for n in ("best.pt", "last.pt", "config.yaml"))


@dataclass
class _Scored:
    """What one image contributes: train-id prediction, optional labelId prediction, optional
    full-resolution logits (for CE)."""

    sample: Sample
    pred: np.ndarray
    pred_label_ids: np.ndarray | None = None
    logits: torch.Tensor | None = None


@dataclass
class ImageScore:
    """One image's counts, computed where the image is (a Ray worker or this process) and summed
    on the driver in image order."""

    conf: np.ndarray  # (K, K + 1) int64
    ce_sum: float | None
    pixels: int
    row: dict
    city: P.CityscapesCounts | None = None


class _Scorer:
    """Per-image counts for every protocol at once (pure: no state between images)."""

    def __init__(self, reader: Reader, schema: ClassSchema, protocol: str) -> None:
        if protocol not in P.PROTOCOLS:
            raise DrivelabError(f"unknown protocol {protocol!r}; choose one of {', '.join(P.PROTOCOLS)}")
        if protocol == "cityscapes" and reader.format != "cityscapes":
            raise DrivelabError("the cityscapes protocol needs a Cityscapes dataset (labelIds and "
                                f"instanceIds), not {reader.format}", reader.root)
        self.reader, self.schema, self.protocol = reader, schema, protocol
        self.to_label_ids = None
        if protocol == "cityscapes":
            try:
                self.to_label_ids = P.train_to_label_ids(schema.label_lut, schema.num_classes)
            except ValueError as e:
                raise DrivelabError(f"the cityscapes protocol: {e}", reader.root) from None

    def score(self, s: _Scored, where: str | Path) -> ImageScore:
        sample, names = s.sample, self.schema.names
        if s.pred.shape != sample.mask.shape:
            raise DrivelabError(f"prediction is {s.pred.shape[1]}x{s.pred.shape[0]} but the labels of "
                                f"{sample.name} are {sample.mask.shape[1]}x{sample.mask.shape[0]}", where)
        target = torch.from_numpy(sample.mask.astype(np.int64))
        try:
            pred = torch.from_numpy(np.array(s.pred, np.int64))  # a writable copy
            conf = confusion(pred, target, self.schema.num_classes, IGNORE)
        except PredictionRangeError as e:
            raise DrivelabError(str(e), where) from None
        n = int((target != IGNORE).sum())
        ce_sum = None
        if s.logits is not None:
            ce_sum = float(F.cross_entropy(s.logits[None].float(), target[None], ignore_index=IGNORE,
                                           reduction="sum"))
        city = None
        if self.to_label_ids is not None:
            label_pred = s.pred_label_ids if s.pred_label_ids is not None else self.to_label_ids[s.pred]
            city = P.CityscapesCounts()
            try:
                city.add(label_pred, _cityscapes_label_ids(self.reader, sample),
                         _cityscapes_instance_ids(self.reader, sample))
            except ValueError as e:
                raise DrivelabError(str(e), where) from None
        m = scores(conf, names)
        ce = ce_sum / n if ce_sum is not None and n else float("nan")
        row = {"name": sample.name, "split": sample.split, "loss": ce, "pixel_acc": m["pixel_acc"],
               "miou": m["miou"], **{f"iou_{c}": m[f"iou_{c}"] for c in names}, "pixels": n}
        return ImageScore(conf.numpy(), ce_sum, n, row, city)


class _Accumulator:
    """The sums over images, in image order, and the files they become."""

    def __init__(self, schema: ClassSchema, protocol: str) -> None:
        self.schema, self.protocol = schema, protocol
        self.meter = SegMeter(schema.num_classes, IGNORE)
        self.city = P.CityscapesCounts() if protocol == "cityscapes" else None
        self.rows: list[dict] = []

    def add(self, score: ImageScore) -> None:
        self.meter.add(torch.from_numpy(score.conf), score.ce_sum or 0.0,
                       score.pixels if score.ce_sum is not None else 0)
        if self.city is not None and score.city is not None:
            self.city.merge(score.city)
        self.rows.append(score.row)

    def summary(self, has_logits: bool) -> dict:
        names = self.schema.names
        conf = self.meter.conf.numpy()
        d = scores(conf, names)
        out: dict[str, Any] = {
            "protocol": self.protocol, "miou": d["miou"], "pixel_acc": d["pixel_acc"],
            "mean_acc": d["mean_acc"], "iou": {c: d[f"iou_{c}"] for c in names},
            "acc": {c: d[f"acc_{c}"] for c in names},
        }
        if self.protocol == "bdd100k":
            out.update(P.bdd100k_scores(conf, names))
        elif self.protocol == "cityscapes":
            cs = P.cityscapes_scores(self.city)
            out.update({"miou": cs["miou"], "iou": cs["iou"], "iiou": cs["iiou"],
                        "category_miou": cs["category_miou"], "category_iiou": cs["category_iiou"],
                        "category_iou": cs["category_iou"], "iiou_per_class": cs["iiou_per_class"],
                        "pixel_acc": d["pixel_acc"], "mean_acc": d["mean_acc"]})
        if has_logits:
            out["ce"] = self.meter.ce_sum / self.meter.pixels if self.meter.pixels else float("nan")
        out["n_images"] = len(self.rows)
        out["classes"] = list(names)
        return out

    def write(self, out: Path, summary: dict) -> None:
        import pandas as pd

        from drivelab.io import write_json, write_table

        write_table(out / "per_image.parquet", pd.DataFrame(self.rows))
        write_json(out / "metrics.json", jsonable(summary))
        names = self.schema.names
        conf = pd.DataFrame(self.meter.conf.numpy(), index=names, columns=[*names, "void"])
        write_table(out / "confusion.csv", conf.reset_index(names="truth \\ prediction"))


def _cityscapes_label_ids(reader: Reader, sample: Sample) -> np.ndarray:
    from drivelab.io import read_label

    item = reader.item(sample.name)
    path = Path(str(item.label_path).replace("_labelTrainIds.png", "_labelIds.png"))
    return read_label(path)


def _cityscapes_instance_ids(reader: Reader, sample: Sample) -> np.ndarray | None:
    from drivelab.io import read_label

    path = reader.item(sample.name).meta.get("instance_path")
    return read_label(path) if path else None


# --------------------------------------------------------------------------- readers + splits
def open_labelled(dataset: str | Path, schema: ClassSchema, ckpt: dict | None, split: str | None,
                  limit: int | None) -> tuple[Reader, str]:
    """The dataset's labelled images of ``split`` with the class set of ``schema``, and the split's
    name ("all" for every image)."""
    from drivelab.seg.checkpoint import reader_options
    from drivelab.seg.semantic import open_reader

    reader = open_reader(dataset, None, reader_options(ckpt, dataset, schema).get("classes"))
    if reader.schema.names != schema.names:
        raise DrivelabError(f"class mismatch: the predictions have {schema.num_classes} classes "
                            f"({schema.name}), the dataset has {reader.schema.num_classes} "
                            f"({reader.schema.name})", dataset)
    if split is None and ckpt is not None:
        split = default_split(reader.splits, Path(dataset), ckpt)
    if split not in (None, "all"):
        if split not in reader.splits:
            raise DrivelabError(f"no split {split!r} (splits: {reader.splits})", dataset)
        reader = reader.subset(split=split)
    reader = reader.subset(names=[it.name for it in reader.items if it.label_path is not None])
    if limit:
        reader.items = reader.items[:limit]
    if len(reader) == 0:
        raise DrivelabError("no labelled images to evaluate", dataset)
    return reader, split or "all"


def _load_all(reader: Reader, indices: list[int], workers: int = 2) -> list[Sample]:
    """Decode a chunk's samples in threads (PNG decoding drops the GIL)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda i: reader.load(reader.items[i]), indices))


def _same_size_runs(samples: list[Sample]) -> Iterator[list[Sample]]:
    """Consecutive samples of one image size (what one forward pass can batch)."""
    group: list[Sample] = []
    for s in samples:
        if group and s.image.shape != group[0].image.shape:
            yield group
            group = []
        group.append(s)
    if group:
        yield group


def chunks_of(n: int, size: int) -> list[list[int]]:
    """Image indices in chunks of ``size``: the batches of both the local loop and Ray's workers,
    so a model sees the same batches (and gives the same numbers) wherever it runs."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


# --------------------------------------------------------------------------- checkpoints
class CheckpointWorker:
    """One model and the dataset: scores chunks of images. Runs in this process, or as a Ray
    actor (``drivelab.cluster``), with identical results."""

    def __init__(self, ckpt: dict, dataset: str, protocol: str, split: str | None, limit: int | None,
                 tta: bool, device: str) -> None:
        from drivelab.seg.inference import Predictor

        self.predictor = Predictor(ckpt, device=device, tta=tta, precision="fp32")
        self.reader, self.split = open_labelled(dataset, self.predictor.schema, ckpt, split, limit)
        self.scorer = _Scorer(self.reader, self.predictor.schema, protocol)
        self.baseline = protocol == "comma10k-baseline"

    def __call__(self, chunk: list[int]) -> tuple[list[ImageScore], tuple | None]:
        samples = _load_all(self.reader, chunk)
        out = []
        for group in _same_size_runs(samples):
            logits = self.predictor.logits_batch([s.image for s in group])  # log-probabilities with tta
            preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
            for s, p, lg in zip(group, preds, logits.cpu(), strict=True):
                out.append(self.scorer.score(_Scored(s, p, None, lg), s.name))
        return out, (_baseline_batch(self.predictor, samples) if self.baseline else None)


def evaluate_checkpoint(checkpoint: str | Path | dict, dataset: str | Path, out_dir: str | Path | None = None,
                        *, protocol: str = "drivelab", split: str | None = None, tta: bool = False,
                        device: str = "auto", batch: int = 8, limit: int | None = None,
                        ray: Any = None, progress: bool = True) -> dict:
    """Evaluate a semantic checkpoint (or run folder) on a labelled dataset; returns the summary.

    ``split``: a split name, "all", or None (the val split when ``dataset`` is the training data,
    else all images). ``ray``: a ``drivelab.cluster.RayOptions`` to score on a Ray cluster (same
    numbers, same files)."""
    from tqdm import tqdm

    from drivelab.seg.checkpoint import output_dir, read_checkpoint, training_size

    ckpt = read_checkpoint(checkpoint)
    if batch < 1:
        raise DrivelabError(f"batch must be >= 1, got {batch}")
    worker = CheckpointWorker(ckpt, str(dataset), protocol, split, limit, tta, device)
    chunks = chunks_of(len(worker.reader), batch)
    if ray is not None:
        from drivelab.cluster import map_chunks

        args = (ckpt, str(dataset), protocol, split, limit, tta, device)
        results = map_chunks(CheckpointWorker, chunks, ray, ctor_args=args, progress=progress,
                             desc="evaluate")
    else:
        results = (worker(c) for c in chunks)
    acc = _Accumulator(worker.predictor.schema, protocol)
    baseline = P.BaselineCE() if protocol == "comma10k-baseline" else None
    with tqdm(total=len(worker.reader), desc="evaluate", disable=not progress or ray is not None,
              leave=False) as bar:
        for image_scores, batch_ce in results:
            for score in image_scores:
                acc.add(score)
            if baseline is not None:
                baseline.add_batch(*batch_ce)
            bar.update(len(image_scores))
    summary = acc.summary(has_logits=True)
    if baseline is not None:
        summary.update(baseline.result())
    summary.update({"split": worker.split, "tta": tta, "size": list(training_size(ckpt)),
                    "checkpoint": str(ckpt["path"]), "dataset": str(dataset)})
    out = Path(out_dir) if out_dir is not None else output_dir(ckpt, "eval", dataset)
    acc.write(out, summary)
    summary["out_dir"] = str(out)
    return summary


@torch.no_grad()
def _baseline_batch(predictor: Any, group: list[Sample]) -> tuple[float, int, int]:
    """comma10k-baseline's CE of one batch at training resolution (see drivelab.seg.protocols):
    (CE sum, real pixels, all pixels)."""
    from drivelab.seg.transforms import eval_batch, resize_mask

    x, (h, w) = eval_batch([s.image for s in group], predictor.model_input)
    logits = predictor._forward_torch(torch.from_numpy(x).to(predictor.device)).float()
    target = torch.stack([torch.from_numpy(resize_mask(s.mask, (h, w)).astype(np.int64)) for s in group])
    target[target == IGNORE] = 0  # their one-hot argmax: a pixel matching no class is class 0
    ce_sum = float(F.cross_entropy(logits[:, :, :h, :w].cpu(), target, reduction="sum"))
    return ce_sum, int(target.numel()), int(logits[:, 0].numel())


# --------------------------------------------------------------------------- prediction folders
class PredictionWorker:
    """The dataset and a folder of predictions: scores chunks of images (here or as a Ray actor)."""

    def __init__(self, schema_dict: dict, dataset: str, protocol: str, split: str | None,
                 limit: int | None, matched: dict[str, Path], ids: str, root: Path) -> None:
        schema = ClassSchema.from_dict(schema_dict)
        self.reader, self.split = open_labelled(dataset, schema, None, split, limit)
        self.scorer = _Scorer(self.reader, schema, protocol)
        self.schema, self.matched, self.root = schema, matched, root
        self.lut = np.asarray(schema.label_lut, np.uint8) if ids == "label" else None

    def __call__(self, chunk: list[int]) -> tuple[list[ImageScore], None]:
        out = []
        for sample in _load_all(self.reader, chunk):
            path = self.matched.get(sample.name)
            if path is None:
                raise DrivelabError(f"no prediction for this labelled image (looked in {self.root})",
                                    self.reader.item(sample.name).image_path)
            raw = read_prediction(path, self.schema)
            scored = _Scored(sample, self.lut[raw], raw.astype(np.uint8)) if self.lut is not None \
                else _Scored(sample, raw)
            out.append(self.scorer.score(scored, path))
        return out, None


def evaluate_predictions(folder: str | Path, dataset: str | Path, out_dir: str | Path | None = None, *,
                         protocol: str = "drivelab", split: str | None = None, limit: int | None = None,
                         pred_ids: str | None = None, batch: int = 8, ray: Any = None,
                         progress: bool = True) -> dict:
    """Score a folder of prediction PNGs (see the module docstring) on a labelled dataset."""
    from tqdm import tqdm

    from drivelab.data import open_dataset
    from drivelab.seg.checkpoint import output_dir

    folder = Path(folder)
    info = _prediction_info(folder)
    root = folder / "masks" if info is not None and (folder / "masks").is_dir() else folder
    if protocol == "comma10k-baseline":
        raise DrivelabError("the comma10k-baseline protocol scores cross-entropy: give a checkpoint, "
                            "not predictions", folder)
    schema = ClassSchema.from_dict(info["schema"]) if info is not None else open_dataset(dataset).schema
    reader, split = open_labelled(dataset, schema, None, split, limit)
    ids = pred_ids or (info or {}).get("ids") or ("label" if reader.format == "cityscapes" and
                                                  protocol == "cityscapes" else "train")
    if ids not in ("train", "label"):
        raise DrivelabError(f"--pred-ids must be train or label, got {ids!r}")
    if ids == "label" and schema.label_lut is None:
        raise DrivelabError("labelId predictions need a Cityscapes dataset", dataset)
    all_items = open_labelled(dataset, schema, None, "all", None)[0].items
    matched = match_predictions(root, all_items, cityscapes=reader.format == "cityscapes")
    args = (schema.to_dict(), str(dataset), protocol, split, limit, matched, ids, root)
    chunks = chunks_of(len(reader), max(1, batch))
    if ray is not None:
        from drivelab.cluster import map_chunks

        results = map_chunks(PredictionWorker, chunks, ray, ctor_args=args, progress=progress,
                             desc="evaluate")
    else:
        worker = PredictionWorker(*args)
        results = (worker(c) for c in chunks)
    acc = _Accumulator(schema, protocol)
    with tqdm(total=len(reader), desc="evaluate", disable=not progress or ray is not None,
              leave=False) as bar:
        for image_scores, _ in results:
            for score in image_scores:
                acc.add(score)
            bar.update(len(image_scores))
    summary = acc.summary(has_logits=False)
    summary.update({"split": split, "predictions": str(root), "pred_ids": ids, "dataset": str(dataset)})
    out = Path(out_dir) if out_dir is not None else output_dir(folder, "eval", dataset)  # its own run
    acc.write(out, summary)
    summary["out_dir"] = str(out)
    return summary


def _prediction_info(folder: Path) -> dict | None:
    for path in (folder / PREDICTIONS_INFO, folder.parent / PREDICTIONS_INFO):
        if path.exists():
            try:
                return json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise DrivelabError(f"unreadable ({e})", path) from None
    return None


def _stem(name: str) -> str:
    from drivelab.io import IMAGE_SUFFIXES

    p = Path(name)
    return p.with_suffix("").as_posix() if p.suffix.lower() in IMAGE_SUFFIXES else p.as_posix()


def match_predictions(folder: Path, items: list[Item], cityscapes: bool = False) -> dict[str, Path]:
    """Sample name -> prediction file (see the module docstring for the rules); errors name the
    file that is missing, extra or ambiguous."""
    files = sorted(p for p in folder.rglob("*.png") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DrivelabError("no prediction PNGs in this folder", folder)
    by_rel = {p.relative_to(folder).with_suffix("").as_posix(): p for p in files}
    by_key: dict[str, list[Path]] = {}
    if cityscapes:
        for p in files:
            m = CITYSCAPES_KEY.search(p.name)
            if m:
                by_key.setdefault(m.group(0), []).append(p)
    out: dict[str, Path] = {}
    claimed: dict[Path, str] = {}
    for item in items:
        found: set[Path] = set()
        if _stem(item.name) in by_rel:
            found.add(by_rel[_stem(item.name)])
        parts = Path(item.image_path).with_suffix("").parts
        for k in range(1, len(parts) + 1):
            hit = by_rel.get("/".join(parts[-k:]))
            if hit is not None:
                found.add(hit)
        if cityscapes:
            m = CITYSCAPES_KEY.search(Path(item.image_path).name)
            if m:
                found.update(by_key.get(m.group(0), []))
        if len(found) > 1:
            a, b = sorted(found)[:2]
            raise DrivelabError(f"ambiguous: {a.relative_to(folder)} and {b.relative_to(folder)} both "
                                f"match image {item.name}", folder)
        if found:
            path = found.pop()
            if path in claimed:
                raise DrivelabError(f"ambiguous: this prediction matches images {claimed[path]} and "
                                    f"{item.name}", path)
            claimed[path] = item.name
            out[item.name] = path
    extra = [p for p in files if p not in claimed]
    if extra:
        raise DrivelabError(f"prediction matches no labelled image of the dataset"
                            f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}", extra[0])
    return out


def read_prediction(path: Path, schema: ClassSchema) -> np.ndarray:
    """A prediction PNG -> (H, W) ids: index or palette PNGs give their values, 16-bit PNGs too
    (range-checked later), RGB PNGs are decoded with the schema's colours exactly."""
    from drivelab.io import open_image

    img = open_image(path)
    if img.mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(img).astype(np.int64)
        if arr.max(initial=0) > 255:
            raise DrivelabError(f"prediction holds value {int(arr.max())}, not a class id", path)
        return arr.astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        ids, bad = schema.encode_colors(np.asarray(img.convert("RGB")))
        if bad.any():
            ys, xs = np.nonzero(bad)
            raise DrivelabError(f"{int(bad.sum())} pixels are not a class colour of {schema.name} "
                                f"(first at x={xs[0]}, y={ys[0]})", path)
        return ids.astype(np.uint8)
    raise DrivelabError(f"unsupported prediction image mode {img.mode}", path)
