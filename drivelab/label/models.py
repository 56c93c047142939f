"""The label app's optional models besides the semantic ``Predictor``: an instance checkpoint
(``--model`` on a COCO dataset: a drivelab Mask R-CNN, ``drivelab.seg.instance.infer``) and a
Segment Anything checkpoint (``--sam PATH``, the ``segment-anything`` package). Each is loaded on
first use (torch is imported then, never at start-up) and runs behind a lock: the app's worker
threads share one model. Nothing is ever downloaded: both need a local file.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.data.sample import Reader
from drivelab.errors import DrivelabError


@dataclass
class Instances:
    """One image's predicted instances in the dataset's terms, best score first."""

    masks: np.ndarray  # (N, H, W) bool
    labels: np.ndarray  # (N,) the dataset's train ids
    category_ids: list[int]
    scores: np.ndarray  # (N,) float

    def __len__(self) -> int:
        return len(self.labels)


class InstanceModel:
    """A drivelab instance checkpoint (or run folder) applied to full-resolution images."""

    def __init__(self, checkpoint: str | Path, reader: Reader, device: str = "auto") -> None:
        self.checkpoint = checkpoint
        self.reader = reader
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        from drivelab.device import resolve_device
        from drivelab.seg.checkpoint import load_model, read_checkpoint
        from drivelab.seg.instance.scoring import category_map
        from drivelab.seg.tasks import task_of

        ckpt = read_checkpoint(self.checkpoint)
        if task_of(ckpt) != "instance":
            raise DrivelabError(f"--model is a {task_of(ckpt)} checkpoint; COCO objects are proposed by an "
                                "instance (Mask R-CNN) checkpoint", ckpt.get("path"))
        self.device = resolve_device(self.device)
        model, schema, _ = load_model(ckpt, self.device)
        cats = category_map(list(schema.names), self.reader)  # model train id k -> COCO category id
        to_train = getattr(self.reader, "cat_to_train", {})
        self._cats = cats
        self._train = np.array([0] + [to_train[c] for c in cats], np.int64)
        self._model = model

    def predict(self, image: np.ndarray) -> Instances:
        from drivelab.seg.instance.infer import predict_images

        with self._lock:
            if self._model is None:
                self._load()
            pred = predict_images(self._model, [image], self.device)[0]
        order = np.argsort(-pred.scores, kind="stable")
        labels = pred.labels[order]
        return Instances(masks=pred.masks[order], labels=self._train[labels],
                         category_ids=[int(self._cats[k - 1]) for k in labels.tolist()],
                         scores=pred.scores[order].astype(float))


SAM_TYPES = {12: "vit_b", 24: "vit_l", 32: "vit_h"}  # image encoder depth -> registry name


class SamModel:
    """Segment Anything from a local checkpoint: point and box prompts -> one mask. The package and
    the file are checked when the app starts, so a wrong ``--sam`` is a one-line error then."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DrivelabError("Segment Anything checkpoint not found (--sam takes a local .pth file; "
                                "nothing is downloaded)", self.path)
        try:
            import segment_anything  # noqa: F401
        except ImportError:
            raise DrivelabError("--sam needs the optional segment-anything package (pip install "
                                "segment-anything); the app runs without it", self.path) from None
        self.device = device
        self._predictor: Any = None
        self._image: str | None = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        import torch
        from segment_anything import SamPredictor, sam_model_registry

        from drivelab.device import resolve_device

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DrivelabError(f"cannot read the SAM checkpoint ({type(e).__name__}: {e})",
                                self.path) from None
        blocks = {int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")}
        kind = SAM_TYPES.get(len(blocks))
        if kind is None:
            raise DrivelabError(f"not a Segment Anything checkpoint ({len(blocks)} encoder blocks)",
                                self.path)
        sam = sam_model_registry[kind]()
        sam.load_state_dict(state)
        sam.to(resolve_device(self.device)).eval()
        self._predictor = SamPredictor(sam)

    def predict(self, key: str, image: np.ndarray, points: list[tuple[float, float, int]],
                box: list[float] | None) -> np.ndarray:
        """(H, W) bool mask for positive/negative ``points`` (x, y, 1|0) and an optional xyxy ``box``."""
        with self._lock:
            if self._predictor is None:
                self._load()
            if self._image != key:  # the image embedding is the expensive part: once per image
                self._predictor.set_image(image)
                self._image = key
            coords = np.array([[p[0], p[1]] for p in points], np.float32) if points else None
            labels = np.array([int(p[2]) for p in points], np.int64) if points else None
            masks, _scores, _ = self._predictor.predict(
                point_coords=coords, point_labels=labels,
                box=np.array(box, np.float32) if box is not None else None, multimask_output=False)
        return np.asarray(masks[0], bool)
