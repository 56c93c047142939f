"""CLI verbs of this pillar: ``train``, ``evaluate``, ``compare``. ``register(app)`` adds them to the
main drivelab app; heavy imports happen inside the commands."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": False})
    def train(
        config: str = typer.Argument(..., help="Preset name (comma10k, cityscapes19, cityscapes29, "
                                     "bdd100k, synth; instance: armbench, totes-synth), a YAML config file, "
                                     "or a run folder (with --resume)."),
        overrides: list[str] = typer.Argument(None, help="Config overrides key=value (YAML values; dotted "
                                              "keys reach into dicts: model_kwargs.base=16)."),
        data: str | None = typer.Option(None, help="Dataset root (same as data=PATH)."),
        model: str | None = typer.Option(None, help="Architecture: plain-unet or any smp one (unet, fpn, "
                                                    "deeplabv3plus, segformer ...)."),
        encoder: str | None = typer.Option(None, help="smp encoder (efficientnet-b4, resnet34, mit_b3, "
                                                      "tu-<timm model>)."),
        weights: str | None = typer.Option(None, help="Initial weights: a .pth state dict, a drivelab "
                                                      "checkpoint, or 'imagenet' (downloads)."),
        name: str | None = typer.Option(None, help="Run folder name under out/."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run from its last.pt."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    ) -> None:
        """Train a segmentation model from a preset or YAML config (also under torchrun for DDP)."""
        from drivelab.seg.config import load_config, parse_overrides
        from drivelab.seg.trainer import train as run_training

        values = parse_overrides(list(overrides or []))
        for key, value in (("data", data), ("model", model), ("encoder", encoder), ("weights", weights),
                           ("name", name)):
            if value is not None:
                values[key] = value
        source = Path(config)
        if source.is_dir() and (source / "config.yaml").exists():
            # A run folder: its own config, and its location (so --resume finds last.pt).
            values.setdefault("out", str(source.resolve().parent))
            values.setdefault("name", source.resolve().name)
        cfg = load_config(config, values)
        run = run_training(cfg, resume=resume, progress=progress)
        if os.environ.get("RANK", "0") == "0":  # under torchrun: once
            typer.echo(f"run: {run}")

    @app.command()
    def evaluate(
        checkpoint: Path = typer.Argument(..., help="Run folder (uses best.pt) or checkpoint file."),
        dataset: Path = typer.Argument(..., help="Labelled dataset root (any layout drivelab reads)."),
        split: str | None = typer.Option(None, help="Split to evaluate, or 'all' (default: val when it is "
                                                    "the training data, else all)."),
        tta: bool = typer.Option(False, "--tta", help="Horizontal-flip test-time augmentation."),
        out: Path | None = typer.Option(None, help="Output folder (default <run>/eval/<dataset name>)."),
        device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
        limit: int | None = typer.Option(None, help="Evaluate only the first N images."),
    ) -> None:
        """Evaluate a checkpoint on a dataset: mIoU, accuracy, CE per pixel, per-image table."""
        from drivelab.seg.checkpoint import read_checkpoint

        if read_checkpoint(checkpoint).get("task", "semantic") == "instance":
            from drivelab.seg.instance.evaluate import evaluate_instances

            result = evaluate_instances(checkpoint, dataset, out, split=split)
            typer.echo(result if not isinstance(result, dict) else
                       "  ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)))
            return
        from rich.console import Console
        from rich.table import Table

        from drivelab.seg.evaluate import evaluate as run_eval

        m = run_eval(checkpoint, dataset, out, split=split, tta=tta, device=device, limit=limit)
        t = Table(title=f"{m['n_images']} images ({m['split']}){' flip TTA' if tta else ''}")
        t.add_column("class")
        t.add_column("IoU", justify="right")
        t.add_column("accuracy", justify="right")
        for c in m["classes"]:
            t.add_row(c, f"{m[f'iou_{c}']:.4f}", f"{m[f'acc_{c}']:.4f}")
        console = Console()
        console.print(t)
        console.print(f"mIoU {m['miou']:.4f}  pixel acc {m['pixel_acc']:.4f}  "
                      f"mean class acc {m['mean_acc']:.4f}  CE/pixel {m['loss']:.5f}")
        typer.echo(f"written: {m['out_dir']}")

    @app.command()
    def compare(
        runs: list[Path] = typer.Argument(..., help="Run folders or checkpoints to compare."),
        data: Path | None = typer.Option(None, help="Evaluate every run on this dataset (default: the "
                                         "metrics stored at training time)."),
        out: Path | None = typer.Option(None, help="Folder for compare.html/compare.csv (default: "
                                                   "<runs parent>/compare)."),
        device: str = typer.Option("cpu", help="Device for evaluation and timing."),
        tta: bool = typer.Option(False, "--tta", help="Flip test-time augmentation when evaluating."),
        images: int = typer.Option(3, help="Side-by-side prediction images in the report."),
    ) -> None:
        """Compare runs: parameters, FLOPs, metrics, speed and side-by-side predictions (HTML)."""
        from drivelab.seg.compare import compare as run_compare

        _, path = run_compare(list(runs), data, out, device=device, tta=tta, images=images)
        typer.echo(f"report: {path}")


def main() -> None:
    """Entry point of ``python -m drivelab.seg.cli`` (this pillar's verbs alone, e.g. under torchrun)."""
    from drivelab.cli import run

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
    register(app)
    run(app)


if __name__ == "__main__":
    main()
