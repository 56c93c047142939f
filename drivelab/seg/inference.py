"""Predictor: a trained semantic model applied to images of any size.

Every image goes the same way, whatever the backend:

    uint8 (H, W, 3) -> [0, 1] float -> resize to the model's training size -> pad to /32
    -> model (normalises inside) -> crop the padding -> upsample logits to (H, W) -> argmax

so masks come back at full input resolution while the network runs at the resolution it was
trained at. Images of the same size are run as one batch. On a GPU the model runs in bf16
(fp16 where bf16 is missing) with channels_last; ``compile=True`` wraps it in torch.compile.
``backend="onnxruntime"`` runs an exported ONNX graph instead (see ``drivelab.seg.export``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.errors import DrivelabError
from drivelab.schema import ClassSchema

STRIDE = 32  # every drivelab semantic model needs H and W divisible by 32
ONNX_META_SCHEMA = "drivelab_schema"
ONNX_META_SIZE = "drivelab_size"


def training_size(ckpt: dict) -> tuple[int, int] | None:
    """The (H, W) a checkpoint's model was trained at, from its run config (None if unknown)."""
    size = (ckpt.get("config") or {}).get("size")
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the semantic model a checkpoint dict describes and load its weights (eval mode)."""
    from drivelab.seg.models import build_model

    if ckpt.get("task", "semantic") != "semantic":
        raise DrivelabError(f"{ckpt.get('task')} checkpoint: the semantic Predictor cannot run it",
                            ckpt.get("path"))
    spec = dict(ckpt["model_spec"])
    spec.pop("weights", None)  # weights come from the checkpoint, never downloaded again
    model = build_model(**spec)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def onnx_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def ort_session(path: str | Path, device: str = "cpu", threads: int | None = None) -> Any:
    """An onnxruntime session tuned for this machine: all graph optimisations, intra-op threads
    = torch's thread count (2 on CI), sequential execution (no inter-op oversubscription)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # Idle ORT workers spin-wait by default; in the predict pipeline that steals the cores the
    # decode/encode threads need (see benchmarks/predict_speed.py).
    so.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("DRIVELAB_ORT_SPIN", "0"))
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:
        raise DrivelabError(f"onnxruntime cannot load the model ({e})", path) from None


def _resize_images(images: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """uint8 images to the network size with Pillow's antialiased bilinear filter: the same
    pixels for every backend, and resizing uint8 is cheaper than resizing floats."""
    from PIL import Image

    if images[0].shape[:2] == tuple(size):
        return images
    return [np.asarray(Image.fromarray(im).resize((size[1], size[0]), Image.BILINEAR)) for im in images]


def _resize_chw(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    y = cv2.resize(x.transpose(1, 2, 0), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return y.reshape(size[0], size[1], -1).transpose(2, 0, 1)


class Predictor:
    """Run a semantic segmentation model on uint8 RGB images.

    ``checkpoint_or_model``: a drivelab checkpoint path or run folder, a checkpoint dict, an
    ``.onnx`` file written by ``drivelab export``, or an ``nn.Module`` (then pass ``schema``).
    ``size``: (H, W) the network runs at; default the training size stored in the checkpoint,
    else each image's own size padded to /32. ``precision``: "auto" (bf16/fp16 on GPU, fp32 on
    CPU), "fp32", "bf16" or "fp16".
    """

    def __init__(self, checkpoint_or_model: Any, device: str | torch.device = "cpu",
                 backend: str = "torch", *, schema: ClassSchema | None = None,
                 size: tuple[int, int] | None = None, precision: str = "auto",
                 channels_last: bool | None = None, compile: bool = False,
                 threads: int | None = None, onnx_path: str | Path | None = None) -> None:
        if backend not in ("torch", "onnxruntime"):
            raise DrivelabError(f"unknown backend {backend!r}; choose torch or onnxruntime")
        self.device = torch.device(device)
        self.backend = backend
        self.model: torch.nn.Module | None = None
        self.session: Any = None
        self.ckpt: dict = {}
        src = checkpoint_or_model

        if isinstance(src, (str, Path)) and Path(src).suffix == ".onnx":
            self.backend, onnx_path = "onnxruntime", Path(src)
            meta = onnx_metadata(onnx_path)
            if schema is None and ONNX_META_SCHEMA in meta:
                schema = ClassSchema.from_dict(json.loads(meta[ONNX_META_SCHEMA]))
            if size is None and meta.get(ONNX_META_SIZE):
                size = tuple(json.loads(meta[ONNX_META_SIZE]))
        elif isinstance(src, torch.nn.Module):
            self.model = src.to(self.device).eval()
        else:
            if isinstance(src, dict):
                self.ckpt = src
            else:
                from drivelab.seg.checkpoint import read_checkpoint

                self.ckpt = read_checkpoint(src)
            self.model = model_from_checkpoint(self.ckpt, self.device)
            schema = schema or ClassSchema.from_dict(self.ckpt["schema"])
            size = size or training_size(self.ckpt)

        self.schema = schema
        self.size = tuple(size) if size is not None else None

        if self.backend == "onnxruntime":
            if onnx_path is None:  # export the torch model on the fly, into a temp folder
                from drivelab.seg.export import export_onnx

                onnx_path = Path(tempfile.mkdtemp(prefix="drivelab-onnx-")) / "model.onnx"
                export_onnx(self.model, onnx_path, size=self.size or (256, 512), schema=self.schema,
                            verify=False)
            self.session = ort_session(onnx_path, str(self.device), threads)
            self._input_name = self.session.get_inputs()[0].name
            shape = self.session.get_inputs()[0].shape
            if self.size is None and all(isinstance(s, int) for s in shape[2:]):
                self.size = (shape[2], shape[3])
            self.model = None  # the graph is all we run
        else:
            self._setup_torch(precision, channels_last, compile)

    # -- setup -------------------------------------------------------------
    def _setup_torch(self, precision: str, channels_last: bool | None, compile: bool) -> None:
        on_gpu = self.device.type == "cuda"
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, "bad")
        if self.dtype == "bad":
            raise DrivelabError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
        self.channels_last = on_gpu if channels_last is None else channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model = torch.compile(self.model)

    @property
    def num_classes(self) -> int | None:
        return self.schema.num_classes if self.schema is not None else None

    # -- core --------------------------------------------------------------
    def _net_size(self, h: int, w: int) -> tuple[int, int]:
        return self.size if self.size is not None else (h, w)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) float [0, 1], h and w multiples of 32 -> logits (B, K, h, w) float32."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.model(x).float()

    @torch.inference_mode()
    def _logits_torch(self, images: list[np.ndarray]) -> torch.Tensor:
        H, W, _ = images[0].shape
        h, w = self._net_size(H, W)
        x = torch.from_numpy(np.stack(_resize_images(images, (h, w)))).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        ph, pw = math.ceil(h / STRIDE) * STRIDE, math.ceil(w / STRIDE) * STRIDE
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
        logits = self._run(x)[:, :, :h, :w]
        if (h, w) != (H, W):
            logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        return logits

    def _logits_onnx(self, images: list[np.ndarray]) -> np.ndarray:
        """The same steps in numpy/OpenCV: any torch op between onnxruntime calls wakes torch's
        OpenMP pool, which then spins against onnxruntime's threads (measured: 33 -> 20 FPS)."""
        H, W, _ = images[0].shape
        h, w = self._net_size(H, W)
        x = np.stack(_resize_images(images, (h, w))).transpose(0, 3, 1, 2)
        x = x.astype(np.float32) * np.float32(1 / 255)
        ph, pw = math.ceil(h / STRIDE) * STRIDE, math.ceil(w / STRIDE) * STRIDE
        if (ph, pw) != (h, w):
            x = np.pad(x, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="edge")
        logits = self.session.run(None, {self._input_name: np.ascontiguousarray(x)})[0][:, :, :h, :w]
        if (h, w) != (H, W):
            # cv2 resizes (h, w, K) arrays; K > 512 channels is beyond it, so go in chunks.
            logits = np.stack([
                np.concatenate([_resize_chw(lg[k:k + 512], (H, W)) for k in range(0, len(lg), 512)])
                for lg in logits])
        return np.ascontiguousarray(logits, dtype=np.float32)

    def logits_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """Same-size uint8 RGB images -> logits (B, K, H, W) float32 at the images' resolution."""
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"logits_batch needs images of one size, got {sorted(shapes)}")
        if self.session is not None:
            return torch.from_numpy(self._logits_onnx(images))
        return self._logits_torch(images)

    def _groups(self, images: list[np.ndarray]) -> list[list[int]]:
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {im.shape} {im.dtype}")
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
