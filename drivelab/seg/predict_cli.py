"""CLI verbs ``drivelab predict`` and ``drivelab export``. ``register(app)`` adds them."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt), run folder, or exported .onnx model."),
        inputs: list[str] = typer.Argument(..., help="Images, folders, globs (quote them) or videos "
                                                     "(mp4/mkv/mov/hevc/h264)."),
        out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Folder for the outputs."),
        mask: bool = typer.Option(True, help="Write index masks as palette PNGs (masks/)."),
        color: bool = typer.Option(False, help="Write colour maps (color/)."),
        overlay: bool = typer.Option(True, help="Write overlays (overlay/ for images, NAME_overlay.mp4 "
                                                "for videos)."),
        opacity: float = typer.Option(0.5, min=0.0, max=1.0, help="Opacity of class colours in overlays."),
        legend: bool = typer.Option(True, help="Draw a class legend on overlays."),
        stats: bool = typer.Option(True, help="Write per-class pixel shares to CSV."),
        side_by_side: bool = typer.Option(False, help="Videos: also write a frame | colour map MP4."),
        gif: bool = typer.Option(False, help="Videos: also write a GIF preview."),
        save_frames: bool = typer.Option(False, help="Videos: also write mask/colour/overlay per frame."),
        max_frames: int | None = typer.Option(None, help="Process at most this many frames of each video."),
        fps: float | None = typer.Option(None, help="Frame rate of raw .hevc/.h264 streams (default 20)."),
        palette: str | None = typer.Option(
            None, help="Class schema to colour with (e.g. comma10k); must match the checkpoint's classes."),
        batch_size: int = typer.Option(8, min=1, help="Frames per forward pass."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:1 ..."),
        backend: str = typer.Option("torch", help="torch or onnxruntime (exports the model on the fly "
                                                  "unless CHECKPOINT is .onnx)."),
        precision: str = typer.Option("auto", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16."),
        compile: bool = typer.Option(False, "--compile", help="Wrap the model in torch.compile."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
    ) -> None:
        """Segment images, folders, globs or videos and write masks, overlays, videos and stats."""
        from drivelab.seg.predict import PredictOptions
        from drivelab.seg.predict import predict as run_predict

        opts = PredictOptions(mask=mask, color=color, overlay=overlay, opacity=opacity, legend=legend,
                              stats=stats, side_by_side=side_by_side, gif=gif, save_frames=save_frames,
                              max_frames=max_frames, fps=fps, palette=palette, batch_size=batch_size,
                              device=device, backend=backend, precision=precision, compile=compile,
                              progress=progress)
        summary = run_predict(checkpoint, inputs, out, opts)
        line = summary.line() if hasattr(summary, "line") else str(summary)
        typer.echo(line)
        for kind, paths in getattr(summary, "outputs", {}).items():
            typer.echo(f"  {kind}: {', '.join(str(p) for p in paths)}")

    @app.command()
    def export(
        checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or run folder."),
        format: str = typer.Option("onnx", "--format", "-f", help="Export format (onnx)."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Output file (default: beside the checkpoint, .onnx)."),
        height: int | None = typer.Option(None, help="Input height (default: the training size)."),
        width: int | None = typer.Option(None, help="Input width (default: the training size)."),
        opset: int = typer.Option(17, help="ONNX opset."),
        dynamo: bool = typer.Option(False, help="Use the torch.export-based exporter (slower to export)."),
        verify: bool = typer.Option(True, help="Check onnxruntime against PyTorch (max abs diff < 1e-3)."),
        int8: bool = typer.Option(False, "--int8", help="Also write a static int8 model (NAME.int8.onnx), "
                                                        "calibrated on --calibration."),
        calibration: list[str] | None = typer.Option(
            None, help="Images, folders, globs or videos to calibrate int8 on (repeatable)."),
    ) -> None:
        """Export a checkpoint to ONNX (dynamic batch), verified against PyTorch."""
        from drivelab.errors import DrivelabError
        from drivelab.seg.checkpoint import read_checkpoint
        from drivelab.seg.export import export_onnx

        if format != "onnx":
            raise DrivelabError(f"unknown export format {format!r}; supported: onnx")
        if (height is None) != (width is None):
            raise DrivelabError("give both --height and --width, or neither")
        ckpt = read_checkpoint(checkpoint)
        target = out or Path(ckpt["path"]).with_suffix(".onnx")
        result = export_onnx(ckpt, target, size=(height, width) if height else None, opset=opset,
                             dynamo=dynamo, verify=verify)
        typer.echo(f"exported {result.summary()}")
        if int8:
            from drivelab.seg.export import calibration_frames, quantize_onnx

            if not calibration:
                raise DrivelabError("--int8 needs --calibration images or a video")
            frames = calibration_frames(calibration)
            q = quantize_onnx(result.path, result.path.with_suffix(".int8.onnx"), frames)
            typer.echo(f"quantized {q.summary()}")
