"""CLI verbs of the data layer: validate, convert, synth (the shared option vocabulary of
``drivelab.cliutil``). ``register(app)`` adds them."""

from __future__ import annotations

from pathlib import Path

import typer

from drivelab import cliutil as cu
from drivelab.cliutil import parse_size


def _size_option(text: str | None) -> tuple[int, int] | str | None:
    return "native" if text == "native" else parse_size(text)


def validate(
    dataset: Path = typer.Argument(..., help="Dataset root in its native layout."),
    format: str = typer.Option(
        None, "--format", "-f", help="comma10k, cityscapes, bdd100k, coco or folder (default: detected)."
    ),
    profile: str = typer.Option(
        "default",
        "--profile",
        help="default (every rule, stricter ones say so) or comma10k-ci (exactly comma10k's pull-request "
        "CI verdict; comma10k datasets only).",
    ),
    hashes: Path = typer.Option(
        None, "--hashes", help="Reference image hashes (`sha1  name` lines or JSON): images must match "
        "(a git checkout is also checked against its own history)."
    ),
    write_hashes: Path = typer.Option(
        None, "--write-hashes", help="Write the images' sha1 hashes to this file (sha1sum format)."
    ),
    size: str = typer.Option(
        None,
        "--size",
        help="Required HxW of every image and mask, or 'native' for the format's own sizes "
        "(default: each folder's most common size; see docs/data.md).",
    ),
    limit: int = typer.Option(50, help="Show at most this many problems in the table (all are counted)."),
    json_out: Path = cu.json_option("Also write the report as JSON (ok, summary, problems, notes) to this "
                                    "file ('-' for stdout)."),
    progress: bool = cu.progress_option(),
) -> None:
    """Check masks and images: partners, sizes, channels, exact palette colours, ids, layout, COCO json."""
    from rich.table import Table

    from drivelab.data.validate import read_hashes, validate_dataset, write_hash_file

    reference = read_hashes(hashes) if hashes is not None else None
    report = validate_dataset(
        dataset,
        format,
        profile=profile,
        reference_hashes=reference,
        expected_size=_size_option(size),
        compute_hashes=write_hashes is not None,
        progress=progress,
    )
    err = cu.console()  # table and notes on stderr, the verdict line on stdout
    if report.problems:
        table = Table(title=report.summary(), show_lines=False)
        table.add_column("file", overflow="fold")
        table.add_column("problem")
        table.add_column("details", overflow="fold")
        for p in report.problems[:limit]:
            table.add_row(p.display_path(report.root), p.kind, p.message)
        err.print(table)
        if len(report.problems) > limit:
            err.print(f"... and {len(report.problems) - limit} more (use --limit)")
    for note in report.notes:
        err.print(f"note: {note}")
    if write_hashes is not None:
        write_hash_file(write_hashes, report.hashes)
        err.print(f"wrote {len(report.hashes)} image hashes to {write_hashes}")
    cu.write_json_output(json_out, report.to_dict())
    cu.result(report.summary())
    raise typer.Exit(0 if report.ok else 1)


def convert(
    src: Path = typer.Argument(..., help="Source dataset in any layout drivelab reads."),
    to: str = typer.Option(
        ..., "--to", help="index, comma10k, cityscapes-trainids or instance-png (see docs/data.md)."
    ),
    out: Path = typer.Argument(..., help="Output folder (for cityscapes-trainids it may be SRC itself)."),
    format: str = typer.Option(None, "--format", "-f", help="Source format (default: detected)."),
    copy: bool = typer.Option(False, "--copy", help="Copy images instead of hard-linking them."),
    progress: bool = cu.progress_option(),
) -> None:
    """Write a dataset as index masks or another layout (comma10k colours, Cityscapes trainIds, ...)."""
    from drivelab.data.convert import convert_dataset

    result = convert_dataset(src, to, out, format=format, link=not copy, progress=progress)
    cu.result(f"converted {result.count} samples from {src} to {to}: {result.out}")


def synth(
    format: str = typer.Argument(..., help="comma10k, cityscapes, bdd100k or coco (robot totes)."),
    out: Path = typer.Argument(..., help="Output folder (written in the format's native layout)."),
    n: int = typer.Option(100, "--n", "-n", help="Number of samples."),
    size: str = cu.size_option(None, "Image size HxW (default: the format's synth default)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; sample i depends only on (seed, i)."),
    split: str = typer.Option(None, "--split", help="Put every sample in one split, train or val (default: "
                              "every 5th is val; comma10k: names ending 9.png are val)."),
    night: float = typer.Option(None, "--night", help="Driving scenes: share of night scenes, 0..1 (a rare "
                                "domain for data-engine studies; synth.json lists them)."),
    progress: bool = cu.progress_option(),
) -> None:
    """Write a procedural dataset with exact labels in a native layout (driving scenes or totes)."""
    from drivelab.data.synth import synth_dataset

    options = {} if night is None else {"night": night}
    root = synth_dataset(format, out, n=n, size=parse_size(size), seed=seed, progress=progress, split=split,
                         **options)
    cu.result(f"wrote {n} synthetic {format} samples to {root}")


def register(app: typer.Typer) -> None:
    for fn in (synth, validate, convert):
        app.command(fn.__name__, rich_help_panel=cu.DATA)(fn)
