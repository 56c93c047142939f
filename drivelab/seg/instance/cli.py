"""CLI verbs of instance segmentation. ``register(app)`` adds them to the main drivelab app.

``drivelab overunder RESULTS.json DATASET``: mask/box AP, over-/under-segmentation and per-image
metadata for any COCO results json (ours from ``predict``/``evaluate``, or another model's)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def overunder(
        results: Path = typer.Argument(
            ..., help="COCO results json (from drivelab predict/evaluate or any model)."
        ),
        dataset: Path = typer.Argument(..., help="COCO dataset (json file or folder) the results are for."),
        split: str | None = typer.Option("val", help="Dataset split (a single-split dataset is used as is)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Report folder (default: beside RESULTS)."),
        score_thresh: float = typer.Option(0.5, help="Ignore predictions scoring below this."),
        under_thresh: float = typer.Option(
            0.8, help="IoA(pred, GT) above which a prediction covers a GT object."
        ),
        over_thresh: float = typer.Option(
            0.8, help="IoA(GT, pred) above which a prediction lies inside a GT."
        ),
        worst: int = typer.Option(10, min=0, help="Draw this many worst images."),
    ) -> None:
        """Over-/under-segmentation, AP and per-image metadata of a COCO results json."""
        from drivelab.seg.instance.report import overunder_report

        summary = overunder_report(
            results,
            dataset,
            out,
            split=split,
            score_thresh=score_thresh,
            under_thresh=under_thresh,
            over_thresh=over_thresh,
            worst=worst,
        )
        typer.echo(summary)
