"""Semantic segmentation as a Task for the shared trainer: CE (ignore 255) + optional dice,
validation by confusion matrix (mIoU picks best.pt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from drivelab.data.sample import Reader
from drivelab.errors import DrivelabError
from drivelab.schema import IGNORE, ClassSchema
from drivelab.seg.inference import predict_logprobs


def open_reader(data: str | Path, format: str | None = None, classes: str | None = None) -> Reader:
    from drivelab.data import open_dataset

    opts = {"classes": str(classes)} if classes is not None else {}
    try:
        return open_dataset(data, format, **opts)
    except TypeError:
        raise DrivelabError(f"classes={classes!r} does not apply to this dataset's format", data) from None


class SemanticTask:
    name = "semantic"
    best_metric = "miou"
    best_mode = "max"

    def __init__(self) -> None:
        self._readers: dict[tuple, Reader] = {}

    def reader(self, data: str | None, cfg: Any) -> Reader:
        if not data:
            raise DrivelabError("no dataset: set data=PATH")
        key = (str(data), cfg.format, cfg.classes)
        if key not in self._readers:
            self._readers[key] = open_reader(data, cfg.format, cfg.classes)
        return self._readers[key]

    # -- Task protocol ------------------------------------------------------------------
    def schema(self, cfg: Any) -> ClassSchema:
        return self.reader(cfg.data, cfg).schema

    def model_spec(self, cfg: Any, schema: ClassSchema) -> dict:
        spec = {"name": cfg.model, "num_classes": schema.num_classes, **(cfg.model_kwargs or {})}
        if cfg.encoder and cfg.model != "plain-unet":
            spec["encoder"] = cfg.encoder
        return spec

    def build_model(self, cfg: Any, schema: ClassSchema) -> torch.nn.Module:
        from drivelab.seg.models import build_model

        return build_model(**self.model_spec(cfg, schema), weights=cfg.weights)

    def datasets(self, cfg: Any, size: tuple[int, int]) -> tuple[Dataset, Dataset]:
        from drivelab.seg.dataset import SegDataset

        full = self.reader(cfg.data, cfg)
        train = full.subset(split=cfg.train_split)
        val = self.reader(cfg.val_data, cfg) if cfg.val_data else full.subset(split=cfg.val_split)
        if cfg.val_data and cfg.val_split != "all" and cfg.val_split in val.splits:
            val = val.subset(split=cfg.val_split)
        if len(train) == 0:
            raise DrivelabError(f"no training images in split {cfg.train_split!r} (train_split); "
                                f"splits present: {full.splits}", full.root)
        if len(val) == 0:
            raise DrivelabError(f"no validation images in split {cfg.val_split!r} (val_split); set "
                                f"val_data=PATH or val_split (splits present: {full.splits})", full.root)
        for r in (train, val):
            if not all(it.label_path is not None for it in r.items):
                missing = next(it.name for it in r.items if it.label_path is None)
                raise DrivelabError(f"image {missing!r} has no mask; training needs labelled images", r.root)
        stores = (None, None)
        if cfg.cache:
            from drivelab.seg.cache import build_store

            cache_dir = Path(cfg.cache_dir or Path(cfg.out) / "cache")
            stores = tuple(build_store(r, size, cache_dir, workers=max(1, cfg.workers)) for r in (train, val))
        return (SegDataset(train, size, augment=cfg.augment, store=stores[0]),
                SegDataset(val, size, augment=None, store=stores[1]))

    collate = None  # torch's default collate: (images (B, 3, H, W) uint8, masks (B, H, W) uint8)

    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        images, masks = batch
        x = images.to(device, non_blocking=True).float().div_(255)
        y = masks.to(device, non_blocking=True).long()
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE)
        if "dice" in self._loss_name:
            loss = loss + self._dice_weight * self._dice(logits.float(), y)
        return loss

    def configure(self, cfg: Any) -> None:
        """Loss settings from the config (called by the trainer before training)."""
        self._loss_name, self._dice_weight = cfg.loss, float(cfg.dice_weight)
        if "dice" in cfg.loss:
            from segmentation_models_pytorch.losses import DiceLoss

            self._dice = DiceLoss(mode="multiclass", ignore_index=IGNORE, from_logits=True)

    _loss_name = "ce"
    _dice_weight = 1.0

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset, cfg: Any, device: torch.device) -> dict:
        from drivelab.seg.metrics import SegMeter

        schema = self.schema(cfg)
        meter = SegMeter(schema.num_classes, IGNORE, device)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=0)
        was_training = model.training
        model.eval()
        for images, masks in loader:
            x = images.to(device).float().div_(255)
            with _autocast(device, cfg):
                logp = predict_logprobs(model, x, tta=cfg.tta)
            meter.update(logp, masks.to(device))
        model.train(was_training)
        return meter.compute(schema.names)


def _autocast(device: torch.device, cfg: Any) -> Any:
    import contextlib

    from drivelab.device import amp_dtype

    dtype = amp_dtype(device) if cfg.amp else None
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
