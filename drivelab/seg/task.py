"""What a training task plugs into the shared training machinery.

The trainer (run folder, checkpoints, resume, AMP, DDP, EMA, progress, metrics CSV,
TensorBoard, NaN guard) is written once in ``drivelab.seg.trainer``. Semantic and
instance segmentation differ only in the pieces below.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from drivelab.schema import ClassSchema


class Task(Protocol):
    """A segmentation task: semantic (``drivelab.seg.semantic``) or instance
    (``drivelab.seg.instance``). ``cfg`` is the run's ``TrainConfig``."""

    name: str  # "semantic" | "instance"
    # The metric that picks best.pt, and whether larger is better.
    best_metric: str
    best_mode: str  # "max" | "min"

    def schema(self, cfg: Any) -> ClassSchema:
        """The class schema the model predicts (stored in every checkpoint)."""

    def build_model(self, cfg: Any, schema: ClassSchema) -> torch.nn.Module:
        """A fresh model sized for ``schema`` (weights loaded from cfg.weights if given)."""

    def datasets(self, cfg: Any, size: tuple[int, int]) -> tuple[Dataset, Dataset]:
        """Train and validation datasets at training resolution ``size`` (H, W)."""

    def collate(self, batch: list) -> Any:
        """Collate function for the DataLoader (None for the default)."""

    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        """Training loss of one batch (the trainer handles AMP, accumulation, backward)."""

    def evaluate(self, model: torch.nn.Module, dataset: Dataset, cfg: Any, device: torch.device) -> dict:
        """Validation metrics as a flat dict of floats (written to metrics.csv)."""
