"""Checkpoints carry everything needed to use a model: weights, the model spec, the
ClassSchema and the run config. ``drivelab predict runs/NAME/best.pt video.mp4``
needs nothing else.

Layout of a checkpoint (a dict saved with ``torch.save``, written atomically)::

    {
      "format": "drivelab-checkpoint", "version": 1,
      "task": "semantic" | "instance",
      "model_spec": {"name": ..., "num_classes": ..., ...kwargs of build_model},
      "model": state_dict,
      "schema": ClassSchema.to_dict(),
      "config": TrainConfig as a plain dict,
      # training state, present in last.pt (not needed for inference):
      "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "rng", "metrics"
    }
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from drivelab.errors import DrivelabError
from drivelab.io import save_torch
from drivelab.schema import ClassSchema

FORMAT = "drivelab-checkpoint"


def save_checkpoint(path: str | Path, model: torch.nn.Module, model_spec: dict, schema: ClassSchema,
                    task: str = "semantic", config: dict | None = None, **state: Any) -> None:
    """Write a checkpoint atomically (see the module docstring for the layout)."""
    model = getattr(model, "module", model)  # unwrap DDP
    save_torch(path, {
        "format": FORMAT,
        "version": 1,
        "task": task,
        "model_spec": dict(model_spec),
        "model": model.state_dict(),
        "schema": schema.to_dict(),
        "config": dict(config or {}),
        **state,
    })


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict, with a one-line error for anything that is not one."""
    path = Path(path)
    if path.is_dir():  # a run folder: prefer best.pt
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                path = path / name
                break
    if not path.exists():
        raise DrivelabError("checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise DrivelabError(f"cannot read checkpoint ({type(e).__name__}: {e})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DrivelabError("not a drivelab checkpoint", path)
    ckpt["path"] = str(path)
    return ckpt


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ClassSchema, dict]:
    """Checkpoint (or run folder) -> (model in eval mode on ``device``, schema, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    schema = ClassSchema.from_dict(ckpt["schema"])
    spec = dict(ckpt["model_spec"])
    if ckpt.get("task", "semantic") == "instance":
        from drivelab.seg.instance.model import build_instance_model as build
    else:
        from drivelab.seg.models import build_model as build
    spec.pop("weights", None)  # weights come from the checkpoint, never downloaded again
    model = build(**spec)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), schema, ckpt
