"""CLI verbs of the seg pillar: ``train``, ``evaluate``, ``compare``, ``predict``, ``export``.
Thin: each parses its options (the shared vocabulary of ``drivelab.cliutil``) and calls one
function; heavy imports happen inside the commands so ``drivelab --help`` stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from drivelab import cliutil as cu


def train(
    config: str = typer.Argument(..., help="Preset name (comma10k, cityscapes19, cityscapes29, bdd100k, "
                                 "synth; instance: armbench, totes-synth), a YAML config file, or a run "
                                 "folder (with --resume)."),
    overrides: list[str] = typer.Argument(None, help="Config overrides key=value (YAML values; dotted keys "
                                          "reach into dicts: model_kwargs.base=16; size=HxW; batch=N; "
                                          "data=PATH model=unet encoder=resnet34 weights=PATH name=RUN)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last.pt."),
    progress: bool = cu.progress_option(),
) -> None:
    """Train a segmentation model from a preset or YAML config (also under torchrun for DDP)."""
    from drivelab.seg.trainer import train_from_cli

    run = train_from_cli(config, list(overrides or []), resume=resume, progress=progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: once
        cu.result(f"run: {run}")


def evaluate(
    source: Path = typer.Argument(..., help="Run folder (uses best.pt), checkpoint, or a folder of "
                                  "prediction PNGs (what predict --out writes, or any tool's index PNGs)."),
    dataset: Path = typer.Argument(..., help="Labelled dataset root (any layout drivelab reads)."),
    protocol: str = typer.Option("drivelab", help="Whose convention the scores follow: drivelab, "
                                 "cityscapes, bdd100k or comma10k-baseline (docs/seg.md)."),
    split: str | None = typer.Option(None, help="Split to evaluate, or 'all' (default: val when it is the "
                                     "checkpoint's training data, else all)."),
    tta: bool = cu.tta_option(False, "Checkpoints: horizontal-flip test-time augmentation."),
    pred_ids: str | None = typer.Option(None, help="Prediction folders: the PNGs hold 'train' ids or "
                                        "Cityscapes 'label' ids (default: predict.json, else train; "
                                        "label for --protocol cityscapes)."),
    out: Path | None = cu.out_option(None, "Output folder (default <run>/eval/<dataset name>)."),
    device: str = cu.device_option(),
    batch: int = cu.batch_option(8),
    limit: int | None = typer.Option(None, help="Evaluate only the first N labelled images."),
    json_path: Path | None = cu.json_option(),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
    num_gpus: float = cu.num_gpus_option(),
    progress: bool = cu.progress_option(),
) -> None:
    """Score a checkpoint or a folder of predictions: mIoU, accuracy, CE, per-image table."""
    from drivelab.seg.evaluate import evaluate as run_eval

    m = run_eval(source, dataset, out, protocol=protocol, split=split, tta=tta or None,
                 pred_ids=pred_ids, device=device, batch=batch, limit=limit, progress=progress,
                 ray=cu.ray_options(ray, concurrency, num_gpus))
    cu.write_json_output(json_path, m)
    if "iou" not in m:  # an instance evaluation: a flat dict of AP numbers
        cu.result("  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
        return
    names = m["classes"]
    cu.table(f"{m['n_images']} images ({m['split']}), protocol {m['protocol']}"
             f"{', flip TTA' if m.get('tta') else ''}", ["class", "IoU", "accuracy"],
             [[c, m["iou"].get(c, float("nan")), m["acc"].get(c, float("nan"))] for c in names])
    line = f"mIoU {m['miou']:.4f}  pixel acc {m['pixel_acc']:.4f}  mean class acc {m['mean_acc']:.4f}"
    if "ce" in m:
        line += f"  CE per real pixel {m['ce']:.5f}"
    if "val_loss" in m:
        line += f"  comma10k-baseline val_loss {m['val_loss']:.5f}"
    if "iiou" in m:
        line += f"  iIoU {m['iiou']:.4f}  category mIoU {m['category_miou']:.4f}"
    cu.result(line)
    cu.info(f"written: {m['out_dir']}")


def compare(
    runs: list[Path] = typer.Argument(..., help="Run folders or checkpoints to compare."),
    data: Path | None = typer.Option(None, help="Evaluate every run on this dataset (default: the "
                                     "metrics stored at training time)."),
    out: Path | None = cu.out_option(None, "Folder for compare.html/compare.csv (default: "
                                     "<runs parent>/compare)."),
    device: str = cu.device_option(),
    tta: bool = cu.tta_option(False, "Flip test-time augmentation when evaluating."),
    images: int = typer.Option(3, help="Side-by-side prediction images in the report."),
) -> None:
    """Compare runs: parameters, FLOPs, metrics, speed and side-by-side predictions (HTML)."""
    from drivelab.seg.compare import compare as run_compare

    _, path = run_compare(list(runs), data, out, device=device, tta=tta, images=images)
    cu.result(f"report: {path}")


def predict(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt), run folder, or exported .onnx model."),
    inputs: list[str] = typer.Argument(..., help="Images, folders, globs (quote them) or videos "
                                                 "(mp4/mkv/mov/hevc/h264)."),
    out: Path = cu.out_option(Path("predictions"), "Folder for the outputs."),
    mask: bool = typer.Option(True, help="Write index masks as palette PNGs (masks/)."),
    color: bool = typer.Option(False, help="Write colour maps (color/)."),
    overlay: bool = typer.Option(True, help="Write overlays (overlay/ for images, NAME_overlay.mp4 for "
                                 "videos)."),
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
    score_thresh: float | None = typer.Option(None, help="Instance models: keep detections scoring at "
                                              "least this (default 0.5)."),
    batch: int = cu.batch_option(8, "Frames per forward pass."),
    device: str = cu.device_option(),
    backend: str = typer.Option("torch", help="torch or onnxruntime (exports the model on the fly unless "
                                "CHECKPOINT is .onnx)."),
    precision: str = typer.Option("auto", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16."),
    compile: bool = typer.Option(False, "--compile", help="Wrap the model in torch.compile."),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
    num_gpus: float = cu.num_gpus_option(),
    progress: bool = cu.progress_option(),
) -> None:
    """Segment images, folders, globs or videos and write masks, overlays, videos and stats."""
    from drivelab.seg.predict import PredictOptions
    from drivelab.seg.predict import predict as run_predict

    opts = PredictOptions(mask=mask, color=color, overlay=overlay, opacity=opacity, legend=legend,
                          stats=stats, side_by_side=side_by_side, gif=gif, save_frames=save_frames,
                          max_frames=max_frames, fps=fps, palette=palette, batch_size=batch,
                          device=device, backend=backend, precision=precision, compile=compile,
                          progress=progress, score_thresh=score_thresh,
                          ray=cu.ray_options(ray, concurrency, num_gpus))
    summary = run_predict(checkpoint, inputs, out, opts)
    cu.result(summary.line())
    for kind, paths in summary.outputs.items():
        shown = [str(p) for p in paths[:3]] + ([f"... ({len(paths)} files)"] if len(paths) > 3 else [])
        cu.info(f"  {kind}: {', '.join(shown)}")


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or run folder."),
    format: str = typer.Option("onnx", "--format", "-f", help="Export format (onnx)."),
    out: Path | None = cu.out_option(None, "Output file (default: beside the checkpoint, .onnx)."),
    size: str | None = cu.size_option(None, "Images are resized to HxW (default: the training size)."),
    opset: int = typer.Option(17, help="ONNX opset."),
    dynamo: bool = typer.Option(False, help="Use the torch.export-based exporter (slower to export)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Check onnxruntime against PyTorch "
                               "(max abs diff < 1e-3)."),
    int8: bool = typer.Option(False, "--int8", help="Also write a static int8 model (NAME.int8.onnx), "
                                                    "calibrated on --calibration."),
    calibration: list[str] | None = typer.Option(
        None, help="Images, folders, globs or videos to calibrate int8 on (repeatable)."),
) -> None:
    """Export a checkpoint to ONNX (dynamic batch), checked against PyTorch."""
    from drivelab.errors import DrivelabError
    from drivelab.seg.checkpoint import read_checkpoint
    from drivelab.seg.onnx import export_onnx

    if format != "onnx":
        raise DrivelabError(f"unknown export format {format!r}; supported: onnx")
    ckpt = read_checkpoint(checkpoint)
    target = out or Path(ckpt["path"]).with_suffix(".onnx")
    result = export_onnx(ckpt, target, size=cu.parse_size(size), opset=opset, dynamo=dynamo, check=check)
    cu.result(f"exported {result.summary()}")
    if int8:
        from drivelab.seg.inputs import sample_frames
        from drivelab.seg.onnx import quantize

        if not calibration:
            raise DrivelabError("--int8 needs --calibration images or a video")
        q = quantize(result.path, result.path.with_suffix(".int8.onnx"), sample_frames(calibration))
        cu.result(f"quantized {q.summary()}")


def overunder(
    results: Path = typer.Argument(..., help="COCO results json (from drivelab predict/evaluate or any "
                                   "model)."),
    dataset: Path = typer.Argument(..., help="COCO dataset (json file or folder) the results are for."),
    split: str | None = typer.Option("val", help="Dataset split (a single-split dataset is used as is)."),
    out: Path | None = cu.out_option(None, "Report folder (default: beside RESULTS)."),
    score_thresh: float = typer.Option(0.5, help="Ignore predictions scoring below this."),
    under_thresh: float = typer.Option(0.8, help="IoA(pred, GT) above which a prediction covers a GT "
                                       "object."),
    over_thresh: float = typer.Option(0.8, help="IoA(GT, pred) above which a prediction lies inside a GT."),
    worst: int = typer.Option(10, min=0, help="Draw this many worst images."),
    json_path: Path | None = cu.json_option(),
) -> None:
    """Over-/under-segmentation, AP and per-image metadata of a COCO results json."""
    from drivelab.seg.instance.report import overunder_report

    summary, metrics = overunder_report(results, dataset, out, split=split, score_thresh=score_thresh,
                                        under_thresh=under_thresh, over_thresh=over_thresh, worst=worst)
    cu.write_json_output(json_path, metrics)
    cu.result(summary)


def register(app: typer.Typer) -> None:
    for fn in (train, evaluate, compare, predict, export, overunder):
        app.command(fn.__name__, rich_help_panel=cu.SEG)(fn)
