"""Instance segmentation as a Task for the shared trainer (``drivelab.seg.trainer``).

Config fields used: ``data``/``format``/``val_data``/``train_split``/``val_split``; ``model``
(``maskrcnn``) and ``encoder`` (the backbone: resnet50, resnet18, mobilenet_v3_large, ...);
``weights`` (a local file only); ``model_kwargs`` (-> ``build_instance_model``: anchor_sizes,
detections_per_img, trainable_layers, any MaskRCNN argument); ``size`` [H, W]; ``augment``.
``task_options``: ``score_thresh`` (0.5, predictions counted in over/under), ``under_thresh`` /
``over_thresh`` (0.8, IoA), ``min_area`` (4 px: smaller instances are dropped from targets),
``eval_batch_size``, ``dihedral`` (vertical flips and transposes on top of ``augment``: totes
seen from above have no up or left).

Validation runs the model on the original images (it resizes inside) and scores them with
COCOeval against the split's json; ``mask_ap`` picks best.pt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from drivelab.data.sample import Reader
from drivelab.errors import DrivelabError
from drivelab.schema import ClassSchema

OPTION_KEYS = {"score_thresh", "under_thresh", "over_thresh", "min_area", "eval_batch_size", "dihedral"}


class InstanceTask:
    name = "instance"
    best_metric = "mask_ap"
    best_mode = "max"

    def __init__(self) -> None:
        self._readers: dict[tuple, Reader] = {}

    def reader(self, data: str | None, cfg: Any) -> Reader:
        from drivelab.data import open_dataset

        if not data:
            raise DrivelabError("no dataset: set data=PATH (a COCO json or a folder with one)")
        key = (str(data), cfg.format)
        if key not in self._readers:
            reader = open_dataset(data, cfg.format)
            if reader.task != "instance":
                raise DrivelabError(
                    f"task=instance needs a COCO-style dataset; {data} reads as {reader.format}", data
                )
            self._readers[key] = reader
        return self._readers[key]

    def options(self, cfg: Any) -> dict:
        opts = dict(cfg.task_options or {})
        unknown = set(opts) - OPTION_KEYS
        if unknown:
            raise DrivelabError(
                f"unknown key 'task_options.{sorted(unknown)[0]}'; the instance task takes "
                f"{', '.join(sorted(OPTION_KEYS))}"
            )
        return opts

    # -- Task protocol ------------------------------------------------------------------
    def schema(self, cfg: Any) -> ClassSchema:
        self.options(cfg)
        return self.reader(cfg.data, cfg).schema

    def model_spec(self, cfg: Any, schema: ClassSchema) -> dict:
        from drivelab.seg.instance.model import MODELS, model_spec

        if cfg.model not in MODELS:
            raise DrivelabError(
                f"the instance task trains model=protoseg or model=maskrcnn, got model={cfg.model!r}"
            )
        ids = schema.extra.get("category_ids") or self.reader(cfg.data, cfg).schema.extra.get("category_ids")
        return model_spec(
            schema.num_classes,
            cfg.encoder,
            cfg.size,
            name=cfg.model,
            category_ids=list(ids),
            **(cfg.model_kwargs or {}),
        )

    def build_model(self, cfg: Any, schema: ClassSchema) -> torch.nn.Module:
        from drivelab.seg.instance.model import build_instance_model

        return build_instance_model(**self.model_spec(cfg, schema), weights=cfg.weights)

    def datasets(self, cfg: Any, size: tuple[int, int]) -> tuple[Dataset, Dataset]:
        from drivelab.seg.instance.data import InstanceDataset

        full = self.reader(cfg.data, cfg)
        train = full.subset(split=cfg.train_split)
        val = self.reader(cfg.val_data, cfg) if cfg.val_data else full.subset(split=cfg.val_split)
        if cfg.val_data and cfg.val_split in val.splits:
            val = val.subset(split=cfg.val_split)
        if len(train) == 0:
            raise DrivelabError(
                f"no training images in split {cfg.train_split!r} (train_split); "
                f"splits present: {full.splits}",
                full.root,
            )
        if len(val) == 0:
            raise DrivelabError(
                f"no validation images in split {cfg.val_split!r} (val_split); set val_data=PATH "
                f"or val_split (splits present: {full.splits})",
                full.root,
            )
        if len(val.splits) != 1:
            raise DrivelabError(
                f"validation data must be one split, got {val.splits}; set val_split", val.root
            )
        opts = self.options(cfg)
        min_area = int(opts.get("min_area", 4))
        return (
            InstanceDataset(
                train, size, augment=cfg.augment, min_area=min_area, dihedral=bool(opts.get("dihedral"))
            ),
            InstanceDataset(val, size, augment=None, min_area=min_area),
        )

    def collate(self, batch: list | None = None) -> Any:
        """With a batch: lists of images and targets. Without: the collate function itself."""
        from drivelab.seg.instance.data import collate_detection

        return collate_detection if batch is None else collate_detection(batch)

    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        images, targets = batch
        x = [im.to(device, non_blocking=True).float().div_(255) for im in images]
        t = [{k: v.to(device, non_blocking=True) for k, v in tg.items()} for tg in targets]
        losses = model(x, t)
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        return sum(v.float() for v in losses.values())

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset, cfg: Any, device: torch.device) -> dict:
        from drivelab.seg.instance.evaluate import evaluate_model
        from drivelab.seg.instance.overunder import OverUnderOptions

        o = self.options(cfg)
        options = OverUnderOptions(
            score_thresh=float(o.get("score_thresh", 0.5)),
            under_thresh=float(o.get("under_thresh", 0.8)),
            over_thresh=float(o.get("over_thresh", 0.8)),
        )
        reader = dataset.reader
        was_training = model.training
        metrics, *_ = evaluate_model(
            model,
            reader,
            self.schema(cfg).names,
            device,
            options,
            batch_size=int(o.get("eval_batch_size", cfg.batch_size)),
        )
        model.train(was_training)
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
