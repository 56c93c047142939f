"""ONNX export of a semantic model, checked against PyTorch before it is trusted.

The graph takes what the model takes: float (B, 3, H, W) in [0, 1] (normalisation is inside
the model, so it is in the graph), with a dynamic batch and H, W fixed at the training size
(``Predictor`` resizes to it). The class schema and training size travel in the ONNX metadata,
so ``drivelab predict model.onnx video.mp4`` needs nothing else.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes
from drivelab.schema import ClassSchema

TOLERANCE = 1e-3  # max abs difference on logits between onnxruntime and PyTorch fp32


@dataclass
class ExportResult:
    path: Path
    size: tuple[int, int]
    num_classes: int
    max_abs_diff: float | None  # None when not verified
    verified_batch: int

    def summary(self) -> str:
        check = (f"max |onnxruntime - torch| = {self.max_abs_diff:.2e} on logits "
                 f"(batch {self.verified_batch}, tolerance {TOLERANCE:g})"
                 if self.max_abs_diff is not None else "not verified")
        return f"{self.path} ({self.size[0]}x{self.size[1]}, {self.num_classes} classes): {check}"


def _load(source: Any) -> tuple[torch.nn.Module, ClassSchema | None, tuple[int, int] | None, dict]:
    from drivelab.seg.inference import model_from_checkpoint, training_size

    if isinstance(source, torch.nn.Module):
        return source, None, None, {}
    if isinstance(source, dict):
        ckpt = source
    else:
        from drivelab.seg.checkpoint import read_checkpoint

        ckpt = read_checkpoint(source)
    if ckpt.get("task", "semantic") != "semantic":
        raise DrivelabError("ONNX export supports semantic checkpoints only", ckpt.get("path"))
    model = model_from_checkpoint(ckpt, "cpu")
    return model, ClassSchema.from_dict(ckpt["schema"]), training_size(ckpt), ckpt


def _to_proto(model: torch.nn.Module, x: torch.Tensor, opset: int, dynamo: bool) -> Any:
    import onnx

    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but exports these CNNs in well under a second
        # (the dynamo exporter takes ~10 s); both give the same graph numerically.
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, (x,), input_names=["image"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        dynamo=True, opset_version=max(opset, 18), verbose=False)
            return program.model_proto
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
        return onnx.load_from_string(buf.getvalue())


def verify_onnx(model: torch.nn.Module, path: str | Path, size: tuple[int, int], batch: int = 3,
                seed: int = 0) -> float:
    """Max abs difference of logits between onnxruntime and the PyTorch model (fp32, CPU) on a
    random batch whose size differs from the export's, which also proves the batch is dynamic."""
    from drivelab.seg.inference import ort_session

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *size, generator=g)
    with torch.inference_mode():
        ref = model(x).float().numpy()
    session = ort_session(path)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if got.shape != ref.shape:
        raise DrivelabError(f"ONNX output shape {got.shape} != PyTorch {ref.shape}", path)
    return float(np.abs(got - ref).max())


def export_onnx(source: Any, out: str | Path, *, size: tuple[int, int] | None = None,
                schema: ClassSchema | None = None, opset: int = 17, dynamo: bool = False,
                verify: bool = True, tolerance: float = TOLERANCE) -> ExportResult:
    """Export a checkpoint (path, run folder or dict) or an ``nn.Module`` to ONNX at ``out``.

    ``size`` defaults to the training size in the checkpoint (rounded up to /32). With
    ``verify`` the graph is run in onnxruntime and compared with PyTorch; a difference above
    ``tolerance`` is an error and no file is left behind.
    """
    out = Path(out)
    model, ck_schema, ck_size, ckpt = _load(source)
    schema = schema or ck_schema
    size = size or ck_size
    if size is None:
        raise DrivelabError("no input size: the checkpoint has no training size, pass size=(H, W)")
    size = (math.ceil(size[0] / 32) * 32, math.ceil(size[1] / 32) * 32)
    model = model.float().cpu().eval()
    x = torch.rand(2, 3, *size)
    proto = _to_proto(model, x, opset, dynamo)
    meta = {"drivelab_size": json.dumps(list(size)), "drivelab_task": "semantic"}
    if schema is not None:
        meta["drivelab_schema"] = json.dumps(schema.to_dict())
    if ckpt.get("path"):
        meta["drivelab_checkpoint"] = str(ckpt["path"])
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    num_classes = int(proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value or 0)
    write_bytes(out, proto.SerializeToString())

    diff = None
    if verify:
        diff = verify_onnx(model, out, size)
        if not diff < tolerance:
            out.unlink(missing_ok=True)
            raise DrivelabError(f"ONNX logits differ from PyTorch by {diff:.2e} (> {tolerance:g}); "
                                "file removed", out)
    return ExportResult(out, size, num_classes or (schema.num_classes if schema else 0), diff, 3)


@dataclass
class QuantizeResult:
    path: Path
    agreement: float  # fraction of calibration pixels where int8 and fp32 argmax agree
    max_abs_diff: float

    def summary(self) -> str:
        return (f"{self.path}: int8 (static, QDQ, per-channel); argmax agrees with fp32 on "
                f"{100 * self.agreement:.2f}% of calibration pixels, "
                f"max |logit diff| {self.max_abs_diff:.3f}")


def quantize_onnx(fp32_path: str | Path, out: str | Path, calibration: list[np.ndarray]) -> QuantizeResult:
    """Static int8 quantization of an exported model (onnxruntime, QDQ, per-channel weights),
    calibrated on uint8 RGB frames. About 1.5x faster on CPUs with VNNI; the price is a few
    percent of pixels flipping class, reported rather than hidden."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from drivelab.seg.inference import ONNX_META_SIZE, _resize_images, onnx_metadata, ort_session

    fp32_path, out = Path(fp32_path), Path(out)
    meta = onnx_metadata(fp32_path)
    size = tuple(json.loads(meta[ONNX_META_SIZE]))
    if not calibration:
        raise DrivelabError("int8 quantization needs calibration images", fp32_path)
    batch = np.stack(_resize_images(calibration, size)).transpose(0, 3, 1, 2).astype(np.float32) / 255
    name = ort_session(fp32_path).get_inputs()[0].name

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({name: batch[i:i + 1]} for i in range(len(batch)))

        def get_next(self) -> dict | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        quantize_static(str(pre), str(q), Frames(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        proto = onnx.load(str(q))
    del proto.metadata_props[:]
    for k, v in {**meta, "drivelab_quantization": "int8-static-qdq"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    write_bytes(out, proto.SerializeToString())
    ref = ort_session(fp32_path).run(None, {name: batch})[0]
    got = ort_session(out).run(None, {name: batch})[0]
    return QuantizeResult(out, float((ref.argmax(1) == got.argmax(1)).mean()), float(np.abs(ref - got).max()))


def calibration_frames(inputs: str | Path | list, limit: int = 32) -> list[np.ndarray]:
    """Up to ``limit`` RGB frames from images/folders/globs/videos, evenly spread over them."""
    from drivelab.io import read_rgb
    from drivelab.seg.predict import resolve_inputs
    from drivelab.video import VideoReader

    images, videos = resolve_inputs(inputs)
    frames: list[np.ndarray] = []
    step = max(1, len(images) // limit)
    frames += [read_rgb(p) for p, _ in images[::step][:limit]]
    for v in videos:
        with VideoReader(v, max_frames=20 * limit) as reader:
            frames += [f for i, f in enumerate(reader) if i % 20 == 0]
    return frames[:limit]
