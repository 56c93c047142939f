"""ONNX export: dynamic batch, metadata, logits within 1e-3 of PyTorch, onnxruntime backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from drivelab.seg.inference import Predictor
from drivelab.seg.onnx import TOLERANCE, export_onnx
from drivelab.seg.predict import predict
from drivelab.video import probe


def test_onnx_matches_pytorch_with_dynamic_batch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < TOLERANCE
    assert result.size == (64, 128) and result.num_classes == 5
    graph = onnx.load(str(result.path))
    onnx.checker.check_model(graph)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 128]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert "drivelab_schema" in meta and meta["drivelab_size"] == "[64, 128]"

    torch_pred = Predictor(tiny_checkpoint)
    ort_pred = Predictor(result.path)  # schema and size come from the ONNX metadata
    assert ort_pred.backend == "onnxruntime" and ort_pred.schema.names == torch_pred.schema.names
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (72, 100, 3), dtype=np.uint8) for _ in range(5)]  # batch 5 != export's 2
    diff = (ort_pred.logits_batch(images) - torch_pred.logits_batch(images)).abs().max().item()
    assert diff < TOLERANCE


def test_predict_with_onnxruntime_backend_on_video(tiny_checkpoint: Path, driving_video: Path,
                                                   tmp_path: Path) -> None:
    summary = predict(tiny_checkpoint, driving_video, tmp_path / "out", backend="onnxruntime", max_frames=10,
                      progress=False)
    assert summary.frames == 10
    info = probe(tmp_path / "out" / f"{driving_video.stem}_overlay.mp4")
    assert (info.frames, info.width, info.height) == (10, 256, 128)


def test_export_rejects_a_model_that_does_not_match(tiny_checkpoint: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from drivelab.errors import DrivelabError
    from drivelab.seg import onnx as onnx_io

    monkeypatch.setattr(onnx_io, "verify", lambda *a, **k: 0.5)
    with pytest.raises(DrivelabError, match="differ from PyTorch"):
        export_onnx(tiny_checkpoint, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_int8_export_runs_and_reports_agreement(tiny_checkpoint: Path, driving_video: Path,
                                                tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from drivelab.seg.cli import register

    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx"),
                                   "--int8", "--calibration", str(driving_video)])
    assert res.exit_code == 0, res.output
    assert "argmax agrees with fp32" in res.output
    int8 = tmp_path / "m.int8.onnx"
    graph = onnx.load(str(int8))
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    pred = Predictor(int8)  # metadata survives quantization
    assert pred.size == (64, 128) and pred.schema.num_classes == 5
    summary = predict(int8, driving_video, tmp_path / "out", max_frames=4, progress=False)
    assert summary.frames == 4
