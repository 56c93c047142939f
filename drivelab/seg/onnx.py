"""ONNX for semantic models: export (checked against PyTorch before it is trusted), static int8
quantization, onnxruntime sessions, and the metadata that makes a ``.onnx`` file self-describing.

The graph takes what the model takes: float (B, 3, h', w') in [0, 1] (normalisation is inside the
model, so it is in the graph), a dynamic batch, h' and w' fixed at the training size padded to
/32. The metadata records the class schema and the model input (the *unpadded* training size and
the resize rule of ``drivelab.seg.transforms``), so ``Predictor("model.onnx")`` resizes, pads and
crops exactly as the PyTorch model's ``Predictor`` and ``evaluate`` do.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes
from drivelab.schema import ClassSchema
from drivelab.seg.transforms import ModelInput, eval_batch

TOLERANCE = 1e-3  # max abs difference on logits between onnxruntime and PyTorch fp32
META_SCHEMA = "drivelab_schema"
META_INPUT = "drivelab_input"  # ModelInput.to_dict(): unpadded size, stride, resize rule
META_SIZE = "drivelab_size"  # the graph's (padded) input size, for tools that only need that


# --------------------------------------------------------------------------- sessions + metadata
def metadata(path: str | Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise DrivelabError(f"not a readable ONNX model ({type(e).__name__})", path) from None
    return {p.key: p.value for p in model.metadata_props}


def described_input(meta: dict[str, str], path: str | Path | None = None) -> ModelInput | None:
    """The model input an exported file describes (None when it carries none)."""
    try:
        if META_INPUT in meta:
            return ModelInput.from_dict(json.loads(meta[META_INPUT]))
        if META_SIZE in meta:  # files exported before the input was recorded: the graph size
            return ModelInput(tuple(json.loads(meta[META_SIZE])))
    except (ValueError, TypeError) as e:
        raise DrivelabError(f"bad drivelab metadata in the ONNX file ({e})", path) from None
    return None


def described_schema(meta: dict[str, str]) -> ClassSchema | None:
    return ClassSchema.from_dict(json.loads(meta[META_SCHEMA])) if META_SCHEMA in meta else None


def session(path: str | Path | bytes, device: str = "cpu", threads: int | None = None) -> Any:
    """An onnxruntime session tuned for this machine: all graph optimisations, intra-op threads
    = torch's thread count (2 on CI), sequential execution (no inter-op oversubscription).
    ``path`` may also be a serialized model (bytes)."""
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
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=providers)
    except Exception as e:
        raise DrivelabError(f"onnxruntime cannot load the model ({e})",
                            None if isinstance(path, bytes) else path) from None


# --------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: Path
    size: tuple[int, int]  # the graph's input size (training size padded to /32)
    model_input: ModelInput
    num_classes: int
    max_abs_diff: float | None  # None when not verified
    verified_batch: int

    def summary(self) -> str:
        check = (f"max |onnxruntime - torch| = {self.max_abs_diff:.2e} on logits "
                 f"(batch {self.verified_batch}, tolerance {TOLERANCE:g})"
                 if self.max_abs_diff is not None else "not verified")
        h, w = self.model_input.size or self.size
        return (f"{self.path} (images resized to {h}x{w}, graph {self.size[0]}x{self.size[1]}, "
                f"{self.num_classes} classes): {check}")


def _to_proto(model: torch.nn.Module, x: torch.Tensor, opset: int, dynamo: bool,
              outputs: tuple[str, ...] = ("logits",)) -> Any:
    """``model(x)`` as an ONNX graph with input "image" and ``outputs``, batch dimension dynamic."""
    import onnx

    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but exports these CNNs in well under a second
        # (the dynamo exporter takes ~10 s); both give the same graph numerically.
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, (x,), input_names=["image"], output_names=list(outputs),
                                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        dynamo=True, opset_version=max(opset, 18), verbose=False)
            return program.model_proto
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, input_names=["image"], output_names=list(outputs),
                          dynamic_axes={name: {0: "batch"} for name in ("image", *outputs)},
                          opset_version=opset, dynamo=False, do_constant_folding=True)
        return onnx.load_from_string(buf.getvalue())


def verify(model: torch.nn.Module, path: str | Path, size: tuple[int, int], batch: int = 3,
           seed: int = 0) -> float:
    """Max abs difference of logits between onnxruntime and the PyTorch model (fp32, CPU) on a
    random batch whose size differs from the export's, which also proves the batch is dynamic."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *size, generator=g)
    with torch.inference_mode():
        ref = model(x).float().numpy()
    sess = session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    if got.shape != ref.shape:
        raise DrivelabError(f"ONNX output shape {got.shape} != PyTorch {ref.shape}", path)
    return float(np.abs(got - ref).max())


def _write_metadata(proto: Any, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def export_onnx(source: Any, out: str | Path, *, size: tuple[int, int] | None = None,
                schema: ClassSchema | None = None, opset: int = 17, dynamo: bool = False,
                check: bool = True, tolerance: float = TOLERANCE) -> ExportResult:
    """Export a semantic checkpoint (path, run folder or dict) or an ``nn.Module`` to ONNX.

    ``size``: the (H, W) images are resized to; default the checkpoint's training size (an
    ``nn.Module`` needs it). With ``check`` the graph is run in onnxruntime and compared with
    PyTorch; a difference above ``tolerance`` is an error and no file is left behind."""
    from drivelab.seg import checkpoint as ck

    out = Path(out)
    ckpt: dict = {}
    if isinstance(source, torch.nn.Module):
        model = source
    else:
        ckpt = ck.read_checkpoint(source)
        ck.expect_task(ckpt, "semantic", "ONNX export")
        model = ck.build_from_checkpoint(ckpt, "cpu")
        schema = schema or ck.schema_of(ckpt)
        size = size or ck.training_size(ckpt)
    if size is None:
        raise DrivelabError("no input size: pass size=HxW")
    spec = ModelInput((int(size[0]), int(size[1])))
    graph_size = spec.padded(*spec.size)
    model = model.float().cpu().eval()
    proto = _to_proto(model, torch.rand(2, 3, *graph_size), opset, dynamo)
    meta = {META_SIZE: json.dumps(list(graph_size)), META_INPUT: json.dumps(spec.to_dict()),
            "drivelab_task": "semantic"}
    if schema is not None:
        meta[META_SCHEMA] = json.dumps(schema.to_dict())
    if ckpt.get("path"):
        meta["drivelab_checkpoint"] = str(ckpt["path"])
    _write_metadata(proto, meta)
    num_classes = int(proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value or 0)
    write_bytes(out, proto.SerializeToString())
    diff = None
    if check:
        diff = verify(model, out, graph_size)
        if not diff < tolerance:
            out.unlink(missing_ok=True)
            raise DrivelabError(f"ONNX logits differ from PyTorch by {diff:.2e} (> {tolerance:g}); "
                                "file removed", out)
    return ExportResult(out, graph_size, spec, num_classes or (schema.num_classes if schema else 0), diff, 3)


# --------------------------------------------------------------------------- int8
@dataclass
class QuantizeResult:
    path: Path
    agreement: float  # fraction of calibration pixels where int8 and fp32 argmax agree
    max_abs_diff: float

    def summary(self) -> str:
        return (f"{self.path}: int8 (static, QDQ, per-channel); argmax agrees with fp32 on "
                f"{100 * self.agreement:.2f}% of calibration pixels, "
                f"max |logit diff| {self.max_abs_diff:.3f}")


def quantize(fp32_path: str | Path, out: str | Path, calibration: list[np.ndarray]) -> QuantizeResult:
    """Static int8 quantization of an exported model (onnxruntime, QDQ, per-channel weights),
    calibrated on uint8 RGB frames prepared by the one model-input transform. About 1.5x faster
    on CPUs with VNNI; the price is a few percent of pixels flipping class, reported, not hidden."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out = Path(fp32_path), Path(out)
    meta = metadata(fp32_path)
    spec = described_input(meta, fp32_path)
    if spec is None:
        raise DrivelabError("not a drivelab export (no model input in its metadata)", fp32_path)
    if not calibration:
        raise DrivelabError("int8 quantization needs calibration images", fp32_path)
    batch = np.concatenate([eval_batch([im], spec)[0] for im in calibration])
    name = session(fp32_path).get_inputs()[0].name

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
    _write_metadata(proto, {**meta, "drivelab_quantization": "int8-static-qdq"})
    write_bytes(out, proto.SerializeToString())
    ref = session(fp32_path).run(None, {name: batch})[0]
    got = session(out).run(None, {name: batch})[0]
    return QuantizeResult(out, float((ref.argmax(1) == got.argmax(1)).mean()), float(np.abs(ref - got).max()))
