"""Fixtures: tiny synthetic tote sets and one instance run trained for two steps (shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivelab.data.synth import synth_dataset

SIZE = (96, 96)


@pytest.fixture(scope="module")
def tote_sets(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("totes")
    return (synth_dataset("coco", base / "train", n=4, size=SIZE, seed=0),
            synth_dataset("coco", base / "val", n=3, size=SIZE, seed=1))


def one_split(root: Path) -> tuple[str, Path, Path]:
    """(split, its annotation json, its image folder) of a tote set, whatever layout it has."""
    from drivelab.data import open_dataset

    reader = open_dataset(root)
    split = "val" if "val" in reader.splits else reader.splits[0]
    items = reader.subset(split=split).items
    return split, items[0].label_path, items[0].image_path.parent


def make_cli():
    """The drivelab verbs these tests use (train/evaluate, predict, overunder), registered exactly as
    drivelab.cli does, without importing the other pillars."""
    import typer

    from drivelab.seg import cli as seg_cli

    app = typer.Typer(pretty_exceptions_enable=False)
    seg_cli.register(app)
    return app


app = make_cli()


@pytest.fixture(scope="module")
def trained_run(tote_sets, tmp_path_factory) -> Path:
    """``drivelab train totes-synth`` for two steps through the shared trainer, via the CLI."""
    import torch
    from typer.testing import CliRunner

    torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin-wait each other
    train, val = tote_sets
    out = tmp_path_factory.mktemp("runs")
    res = CliRunner().invoke(
        app,
        [
            "train",
            "totes-synth",
            f"data={train}",
            f"val_data={val}",
            "max_steps=2",
            "batch_size=2",
            # two steps leave every score near the prior (0.01): keep them, so evaluate scores
            # real predictions
            "model_kwargs.score_thresh=0.001",
            f"size=[{SIZE[0]}, {SIZE[1]}]",
            f"out={out}",
            "name=tote",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out / "tote"
