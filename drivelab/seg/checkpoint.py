"""Checkpoints carry everything needed to use a model: weights, the model spec, the
ClassSchema and the run config. ``drivelab predict runs/NAME/best.pt video.mp4``
needs nothing else. This module is the one place that reads them: the format constant, the
load (once per call: every function here takes a path, a run folder or an already-read dict),
the task a checkpoint belongs to, its training size, and where a verb writes its outputs.

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
from drivelab.seg.tasks import DEFAULT_TASK, for_checkpoint, task_of

FORMAT = "drivelab-checkpoint"

Source = str | Path | dict


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a drivelab checkpoint dict."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A weights file -> (its tensors by name, ``module.`` stripped; the drivelab checkpoint it came
    from, or None). Takes a drivelab checkpoint, a ``{"state_dict": ...}`` wrapper or a bare state
    dict; what to do with names and shapes is the caller's (semantic and instance models differ)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise DrivelabError(f"cannot read weights ({type(e).__name__}: {e})", path) from None
    ckpt = obj if is_checkpoint(obj) else None
    if ckpt is not None:
        obj = ckpt["model"]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise DrivelabError("weights file holds no state dict", path)
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return state, ckpt


def save_checkpoint(path: str | Path, model: torch.nn.Module, model_spec: dict, schema: ClassSchema,
                    task: str = DEFAULT_TASK, config: dict | None = None, **state: Any) -> None:
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


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best.pt (else last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return path / name
    return path


def read_checkpoint(source: Source, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint dict from a file, a run folder, or a dict already read (returned as is, so a
    verb reads the file once and hands the dict down). One-line errors for anything else."""
    if isinstance(source, dict):
        if not is_checkpoint(source):
            raise DrivelabError("not a drivelab checkpoint", source.get("path"))
        return source
    path = checkpoint_file(source)
    if not path.exists():
        raise DrivelabError("checkpoint not found", path)
    if path.is_dir():
        raise DrivelabError("no best.pt or last.pt in this folder", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise DrivelabError(f"cannot read checkpoint ({type(e).__name__}: {e})", path) from None
    if not is_checkpoint(ckpt):
        raise DrivelabError("not a drivelab checkpoint", path)
    ckpt["path"] = str(path)
    return ckpt


def schema_of(ckpt: dict) -> ClassSchema:
    return ClassSchema.from_dict(ckpt["schema"])


def training_size(ckpt: dict) -> tuple[int, int]:
    """The (H, W) the model was trained at (the last stage's), from the run config."""
    size = (ckpt.get("config") or {}).get("size")
    if size is None:
        raise DrivelabError("the checkpoint records no training size; pass size=HxW", ckpt.get("path"))
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def model_input(ckpt: dict) -> Any:
    """The ``ModelInput`` (training size, resize rule) a semantic checkpoint's model expects."""
    from drivelab.seg.transforms import ModelInput

    return ModelInput(training_size(ckpt))


def build_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model a checkpoint describes, with its weights, in eval mode on ``device``."""
    spec = dict(ckpt["model_spec"])
    spec.pop("weights", None)  # weights come from the checkpoint, never downloaded again
    model = for_checkpoint(ckpt).build_model(spec)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DrivelabError(f"weights do not fit the model the checkpoint describes ({first})",
                            ckpt.get("path")) from None
    return model.to(device).eval()


def load_model(source: Source, device: str | torch.device = "cpu"
               ) -> tuple[torch.nn.Module, ClassSchema, dict]:
    """Checkpoint, run folder or dict -> (model in eval mode on ``device``, schema, checkpoint)."""
    ckpt = read_checkpoint(source)
    return build_from_checkpoint(ckpt, device), schema_of(ckpt), ckpt


def expect_task(ckpt: dict, task: str, what: str) -> None:
    """One-line error when ``what`` (a verb) is given a checkpoint of another task."""
    if task_of(ckpt) != task:
        raise DrivelabError(f"{what} needs a {task} checkpoint; this one is {task_of(ckpt)}",
                            ckpt.get("path"))


# --------------------------------------------------------------------------- run folders
def run_dir(source: Source) -> Path:
    """The run folder a checkpoint lives in (a run folder is its own)."""
    if isinstance(source, dict):
        return Path(source.get("path") or ".").parent
    path = Path(source)
    return path if path.is_dir() else path.parent


def dataset_name(dataset: str | Path) -> str:
    """How a dataset is named in output folders: its folder's name, or a COCO json's stem."""
    path = Path(dataset).resolve()
    return path.stem if path.is_file() else path.name


def output_dir(source: Source, verb: str, dataset: str | Path) -> Path:
    """Where a verb writes by default: ``<run>/<verb>/<dataset name>`` (eval, embed, audit ...)."""
    return run_dir(source) / verb / dataset_name(dataset)


def reader_options(ckpt: dict | None, dataset: str | Path, schema: ClassSchema | None = None) -> dict:
    """Reader options a checkpoint implies for ``dataset``: a Cityscapes model keeps its class set
    (19/29/30), from its config or, for prediction folders, from the schema's name."""
    from drivelab.data import detect_format

    if detect_format(dataset) != "cityscapes":
        return {}
    classes = ((ckpt or {}).get("config") or {}).get("classes")
    if not classes and schema is not None:
        classes = {"cityscapes19": "19", "cityscapes29": "29", "cityscapes30": "30"}.get(schema.name)
    return {"classes": str(classes)} if classes else {}


def default_split(splits: list[str], dataset: str | Path, ckpt: dict) -> str | None:
    """The validation split when evaluating on the checkpoint's own training data, else everything."""
    cfg = ckpt.get("config") or {}
    trained_on = cfg.get("data")
    if trained_on and Path(trained_on).resolve() == Path(dataset).resolve():
        val = cfg.get("val_split", "val")
        if val in splits:
            return val
    return None
