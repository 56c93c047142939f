"""The label app with a real checkpoint (``--model``), and what it saves passing ``drivelab validate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drivelab.data import open_dataset
from drivelab.data.validate import validate_dataset
from drivelab.schema import comma10k
from drivelab.seg.checkpoint import save_checkpoint
from drivelab.seg.inference import Predictor
from tests.label.conftest import client

SPEC = {"name": "plain-unet", "base": 4, "depth": 3}


def _checkpoint(path: Path) -> Path:
    from drivelab.seg.models import build_model

    schema = comma10k()
    torch.manual_seed(0)
    model = build_model(num_classes=schema.num_classes, **SPEC)
    save_checkpoint(path, model, {**SPEC, "num_classes": schema.num_classes}, schema,
                    config={"size": [32, 64], "task": "semantic"})
    return path


def _raw(resp) -> np.ndarray:
    h, w = int(resp.headers["x-height"]), int(resp.headers["x-width"])
    return np.frombuffer(resp.content, np.uint8).reshape(h, w)


def test_prediction_from_a_checkpoint_then_saved_mask_validates(comma_set: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "tiny.pt")
    reader = open_dataset(comma_set)
    unlabelled = reader.items[-1]  # the fixture removed this image's mask
    c = client(comma_set, model=str(ckpt))
    assert c.get("/api/info").json()["has_model"] is True

    pred = _raw(c.get("/api/pred", params={"name": unlabelled.name}))
    image = reader.load_image(unlabelled)
    assert pred.shape == image.shape[:2]  # full resolution, whatever the model's training size
    np.testing.assert_array_equal(pred, Predictor(ckpt).predict(image))

    # "start from the prediction", correct a corner, save: the file on disk is a valid comma10k mask
    mask = pred.copy()
    mask[:4, :4] = 4
    r = c.post("/api/mask", params={"name": unlabelled.name, "version": 0}, content=mask.tobytes(),
               headers={"x-mask-encoding": "raw"})
    assert r.status_code == 200, r.text
    saved = open_dataset(comma_set).load_mask(next(i for i in open_dataset(comma_set).items
                                                   if i.name == unlabelled.name))
    np.testing.assert_array_equal(saved, mask)
    report = validate_dataset(comma_set, progress=False)
    assert report.ok, [str(p) for p in report.problems]
