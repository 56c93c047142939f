"""The one drivelab command line. Each pillar registers its own verbs; this file only
assembles them and turns DrivelabError into a one-line message."""

from __future__ import annotations

import sys

import typer

from drivelab.errors import DrivelabError

app = typer.Typer(
    name="drivelab",
    help="Driving-scene and robot perception data: datasets, labelling, segmentation, data engine, "
    "commaVQ tokens.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Pillar modules import only typer at module level; heavy imports happen inside commands,
    # so `drivelab --help` stays fast.
    from drivelab import demo
    from drivelab.data import cli as data_cli
    from drivelab.engine import cli as engine_cli
    from drivelab.label import cli as label_cli
    from drivelab.seg import cli as seg_cli
    from drivelab.seg import predict_cli
    from drivelab.seg.instance import cli as instance_cli
    from drivelab.vq.cli import app as vq_app

    demo.register(app)
    data_cli.register(app)
    seg_cli.register(app)
    predict_cli.register(app)
    instance_cli.register(app)
    label_cli.register(app)
    engine_cli.register(app)
    app.add_typer(vq_app, name="vq")


_register()


def run(typer_app: typer.Typer) -> None:
    """Run a typer app, printing DrivelabError as one line ``error: path: problem`` (exit 2)."""
    try:
        typer_app()
    except DrivelabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
