"""Predictor: a trained semantic model applied to images of any size.

Every image goes through the one model-input transform (``drivelab.seg.transforms``), whatever
the backend and whoever calls it (predict, evaluate, compare, the demo, the label app)::

    uint8 (H, W, 3) -> resize to the training size (area down / linear up) -> zero-pad to /32
    -> [0, 1] float -> model (normalises inside) -> crop the padding -> bilinear to (H, W)

so masks come back at full input resolution while the network runs at the resolution it was
trained at. Images of the same size run as one batch. On a GPU the model runs in bf16 (fp16
where bf16 is missing) with channels_last; ``compile=True`` wraps it in torch.compile.
``backend="onnxruntime"`` runs an exported ONNX graph (``drivelab.seg.onnx``) with the same
steps in numpy/OpenCV.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivelab.errors import DrivelabError
from drivelab.schema import ClassSchema
from drivelab.seg.transforms import (
    ModelInput,
    eval_batch,
    logits_to_image_numpy,
    logits_to_image_torch,
)


@torch.no_grad()
def predict_logprobs(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: bool = False
) -> torch.Tensor:
    """Log-probabilities (B, K, H, W) of a padded batch ``x``; with ``tta`` the mean, in
    probability space, of the plain pass and the horizontally flipped one flipped back
    (padding included, so the mirror lines up at any size). The one flip TTA of the torch paths:
    training's validation, ``Predictor`` and the audit."""
    logits = model(x).float()
    if not tta:
        return torch.log_softmax(logits, 1)
    flipped = model(torch.flip(x, dims=[3])).float().flip(3)
    probs = (torch.softmax(logits, 1) + torch.softmax(flipped, 1)) / 2
    return torch.log(probs.clamp_min(1e-12))


class Predictor:
    """Run a semantic segmentation model on uint8 RGB images.

    ``checkpoint_or_model``: a drivelab checkpoint path or run folder, a checkpoint dict, an
    ``.onnx`` file written by ``drivelab export``, or an ``nn.Module`` (then pass ``schema``).
    ``size``: (H, W) the network runs at; default the training size stored in the checkpoint
    or the ONNX metadata, else each image's own size padded to /32. ``precision``: "auto"
    (bf16/fp16 on GPU, fp32 on CPU), "fp32", "bf16" or "fp16". ``tta``: average the softmax of
    the image and its horizontal flip.
    """

    def __init__(self, checkpoint_or_model: Any, device: str | torch.device = "auto",
                 backend: str = "torch", *, schema: ClassSchema | None = None,
                 size: tuple[int, int] | None = None, precision: str = "auto",
                 channels_last: bool | None = None, compile: bool = False,
                 threads: int | None = None, onnx_path: str | Path | None = None,
                 tta: bool = False) -> None:
        from drivelab.device import precision_dtype, resolve_device
        from drivelab.seg import checkpoint as ck
        from drivelab.seg import onnx as onnx_io

        if backend not in ("torch", "onnxruntime"):
            raise DrivelabError(f"unknown backend {backend!r}; choose torch or onnxruntime")
        self.device = resolve_device(device)
        self.backend = backend
        self.tta = tta
        self.model: torch.nn.Module | None = None
        self.session: Any = None
        self.ckpt: dict = {}
        spec: ModelInput | None = ModelInput(tuple(size)) if size is not None else None
        src = checkpoint_or_model

        if isinstance(src, (str, Path)) and Path(src).suffix == ".onnx":
            self.backend, onnx_path = "onnxruntime", Path(src)
            meta = onnx_io.metadata(onnx_path)
            schema = schema or onnx_io.described_schema(meta)
            spec = spec or onnx_io.described_input(meta, onnx_path)
        elif isinstance(src, torch.nn.Module):
            self.model = src.to(self.device).eval()
        else:
            self.ckpt = ck.read_checkpoint(src)
            ck.expect_task(self.ckpt, "semantic", "the semantic Predictor")
            self.model = ck.build_from_checkpoint(self.ckpt, self.device)
            schema = schema or ck.schema_of(self.ckpt)
            spec = spec or ck.model_input(self.ckpt)

        self.schema = schema
        self.model_input = spec or ModelInput(None)

        if self.backend == "onnxruntime":
            if onnx_path is None:  # export the torch model on the fly, into a temp folder
                if self.model_input.size is None:
                    raise DrivelabError("the onnxruntime backend needs a fixed input size (size=HxW)")
                onnx_path = Path(tempfile.mkdtemp(prefix="drivelab-onnx-")) / "model.onnx"
                onnx_io.export_onnx(self.model, onnx_path, size=self.model_input.size, schema=self.schema,
                                    check=False)
            self.session = onnx_io.session(onnx_path, str(self.device), threads)
            self._input_name = self.session.get_inputs()[0].name
            shape = self.session.get_inputs()[0].shape
            if self.model_input.size is None and all(isinstance(s, int) for s in shape[2:]):
                self.model_input = ModelInput((shape[2], shape[3]))
            self.model = None  # the graph is all we run
        else:
            on_gpu = self.device.type == "cuda"
            self.dtype = precision_dtype(precision, self.device)
            self.channels_last = on_gpu if channels_last is None else channels_last
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            if compile:
                self.model = torch.compile(self.model)

    @property
    def size(self) -> tuple[int, int] | None:
        """The (H, W) images are resized to before padding (None: their own size)."""
        return self.model_input.size

    @property
    def num_classes(self) -> int | None:
        return self.schema.num_classes if self.schema is not None else None

    # -- core --------------------------------------------------------------
    def _forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.model(x).float()

    @torch.inference_mode()
    def _logits_torch(self, images: list[np.ndarray]) -> torch.Tensor:
        x, net = eval_batch(images, self.model_input)
        x = torch.from_numpy(x).to(self.device, non_blocking=True)
        logits = predict_logprobs(self._forward_torch, x, tta=True) if self.tta else self._forward_torch(x)
        return logits_to_image_torch(logits, net, images[0].shape[:2])

    def _logits_onnx(self, images: list[np.ndarray]) -> np.ndarray:
        """The same steps in numpy/OpenCV: any torch op between onnxruntime calls wakes torch's
        OpenMP pool, which then spins against onnxruntime's threads (measured: 33 -> 20 FPS)."""
        x, net = eval_batch(images, self.model_input)
        logits = self.session.run(None, {self._input_name: x})[0]
        if self.tta:  # predict_logprobs' rule, in numpy
            flipped = self.session.run(None, {self._input_name: np.ascontiguousarray(x[..., ::-1])})[0]
            flipped = flipped[..., ::-1]

            def softmax(z: np.ndarray) -> np.ndarray:
                e = np.exp(z - z.max(1, keepdims=True))
                return e / e.sum(1, keepdims=True)

            logits = np.log(np.maximum((softmax(logits) + softmax(flipped)) / 2, 1e-12)).astype(np.float32)
        return logits_to_image_numpy(logits, net, images[0].shape[:2])

    def logits_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """Same-size uint8 RGB images -> logits (B, K, H, W) float32 at the images' resolution
        (log-probabilities with ``tta``)."""
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"logits_batch needs images of one size, got {sorted(shapes)}")
        self._check(images)
        if self.session is not None:
            return torch.from_numpy(self._logits_onnx(images))
        return self._logits_torch(images)

    @staticmethod
    def _check(images: list[np.ndarray]) -> None:
        for im in images:
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {im.shape} {im.dtype}")

    def _groups(self, images: list[np.ndarray]) -> list[list[int]]:
        self._check(images)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        return list(groups.values())

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 RGB images (any sizes) -> (H, W) uint8 masks of train ids, one per image."""
        out: list[np.ndarray | None] = [None] * len(images)
        for idx in self._groups(images):
            group = [images[i] for i in idx]
            if self.session is not None:
                masks = self._logits_onnx(group).argmax(1).astype(np.uint8)
            else:
                masks = self._logits_torch(group).argmax(1).to(torch.uint8).cpu().numpy()
            for i, m in zip(idx, masks, strict=True):
                out[i] = m
        return out  # type: ignore[return-value]

    def probs_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 RGB images -> (K, H, W) float32 class probabilities, one per image."""
        out: list[np.ndarray | None] = [None] * len(images)
        for idx in self._groups(images):
            logits = self.logits_batch([images[i] for i in idx])
            probs = logits.softmax(1).cpu().numpy()
            for i, p in zip(idx, probs, strict=True):
                out[i] = p
        return out  # type: ignore[return-value]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 mask of train ids."""
        return self.predict_batch([image])[0]

    def probs(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (K, H, W) float32 softmax probabilities."""
        return self.probs_batch([image])[0]
