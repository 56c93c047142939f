"""Fixtures for the predict tests: a tiny semantic checkpoint built through the model registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drivelab.schema import comma10k
from drivelab.seg.checkpoint import save_checkpoint

SIZE = (64, 128)  # training size (H, W) stored in the tiny checkpoint's config
# A real smp U-Net with a MobileNetV3 encoder (hard-swish, squeeze-excite: what ONNX export must
# handle), random weights, tiny decoder.
SPEC = {"name": "unet", "encoder": "tu-mobilenetv3_small_100", "decoder_channels": [32, 16, 16, 8, 8]}


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    from drivelab.seg.models import build_model

    schema = comma10k()
    torch.manual_seed(0)
    model = build_model(num_classes=schema.num_classes, **SPEC)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, {**SPEC, "num_classes": schema.num_classes}, schema,
                    config={"size": list(SIZE), "task": "semantic"})
    return path
