"""The one drivelab command line. Each pillar's ``cli`` module declares its verbs as module-level
functions and adds them with ``register(app)``; this file only assembles them. Shared option
names, output and errors live in ``drivelab.cliutil``."""

from __future__ import annotations

import typer

from drivelab.cliutil import run

app = typer.Typer(
    name="drivelab",
    help="Driving-scene and robot perception data: datasets, labelling, segmentation, data engine, "
    "commaVQ tokens. Every verb speaks the same options (--out, --device, --batch, --workers, "
    "--size HxW, --json; name=value works too).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Pillar modules import only typer at module level; heavy imports happen inside commands,
    # so `drivelab --help` does not import torch.
    from drivelab import demo
    from drivelab.data import cli as data_cli
    from drivelab.engine import cli as engine_cli
    from drivelab.label import cli as label_cli
    from drivelab.seg import cli as seg_cli
    from drivelab.vq import cli as vq_cli

    for pillar in (demo, data_cli, label_cli, seg_cli, engine_cli, vq_cli):
        pillar.register(app)


_register()


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
