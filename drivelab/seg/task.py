"""What a training task plugs into the shared training machinery.

The trainer (run folder, checkpoints, resume, AMP, DDP, EMA, progress, metrics CSV,
TensorBoard, NaN guard) is written once in ``drivelab.seg.trainer``. Semantic and
instance segmentation differ only in the pieces below.

Contract details the trainer relies on:

- ``datasets`` returns map-style datasets. The trainer's sampler hands the *training* dataset
  keys ``(index, seed)``: ``seed`` (an int derived from the run seed, the epoch and the index)
  must seed that sample's random augmentation, so a resumed run sees the same samples as an
  uninterrupted one. The validation dataset is indexed with plain ints.
- ``datasets`` may be called on rank 0 first (it may build caches) and then on the others.
- ``loss`` moves the batch to ``device`` itself and runs the forward pass; the trainer wraps it
  in autocast (CUDA), scales, accumulates and steps. ``model`` may be DDP-wrapped.
- ``evaluate`` gets the unwrapped (or EMA) model and runs on rank 0 only; it returns a flat
  dict of floats that includes ``best_metric``.
- ``model_spec`` is what ``checkpoint.save_checkpoint`` stores so ``load_model`` can rebuild
  the model (``drivelab.seg.models.build_model(**spec)`` for semantic,
  ``drivelab.seg.instance.model.build_instance_model(**spec)`` for instance).
- ``collate`` is used as the DataLoader's ``collate_fn``: a method taking the list of samples,
  or the class attribute ``collate = None`` for torch's default collate.
- Optional ``configure(cfg)``: called once per stage before training (loss settings etc.).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from drivelab.schema import ClassSchema


class Task(Protocol):
    """A segmentation task: semantic (``drivelab.seg.semantic``) or instance
    (``drivelab.seg.instance``). ``cfg`` is the run's ``TrainConfig`` (one stage's view of it:
    ``cfg.size`` is that stage's resolution)."""

    name: str  # "semantic" | "instance"
    # The metric that picks best.pt, and whether larger is better.
    best_metric: str
    best_mode: str  # "max" | "min"

    def schema(self, cfg: Any) -> ClassSchema:
        """The class schema the model predicts (stored in every checkpoint)."""

    def model_spec(self, cfg: Any, schema: ClassSchema) -> dict:
        """Keyword arguments that rebuild the model (without weights); stored in checkpoints."""

    def build_model(self, cfg: Any, schema: ClassSchema) -> torch.nn.Module:
        """A fresh model sized for ``schema`` (weights loaded from cfg.weights if given).
        Raises DrivelabError for a class-count mismatch with a weights checkpoint."""

    def datasets(self, cfg: Any, size: tuple[int, int]) -> tuple[Dataset, Dataset]:
        """Train and validation datasets at training resolution ``size`` (H, W)."""

    def collate(self, batch: list) -> Any:
        """The DataLoader's collate_fn (a task may set ``collate = None`` for torch's default)."""

    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        """Training loss of one batch (the trainer handles AMP, accumulation, backward)."""

    def evaluate(self, model: torch.nn.Module, dataset: Dataset, cfg: Any, device: torch.device) -> dict:
        """Validation metrics as a flat dict of floats (written to metrics.csv)."""
