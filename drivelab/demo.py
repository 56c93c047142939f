"""``drivelab demo``: the main job end to end on built-in defaults, no data, no network."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("drivelab-demo"), help="Folder for everything the demo writes."),
        n: int = typer.Option(24, help="Number of synthetic images."),
    ) -> None:
        """Run the whole loop on synthetic data: synthesise, validate (more stages as they land)."""
        from drivelab.data.synth import synth_dataset
        from drivelab.data.validate import validate_dataset

        data = out / "comma10k"
        synth_dataset("comma10k", data, n=n, size=(128, 256), seed=0)
        report = validate_dataset(data)
        typer.echo(f"synthetic comma10k set: {data} ({n} images); validate: {report.summary()}")
        if not report.ok:
            raise typer.Exit(1)
