"""CLI verbs of the data engine: embed, map, select, prune, audit. ``register(app)`` adds them."""

from __future__ import annotations

from pathlib import Path

import typer


def _print(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(msg)


def embed_cmd(
    run: Path = typer.Argument(..., help="Checkpoint (.pt) or run folder (best.pt is used)."),
    dataset: Path = typer.Argument(..., help="Dataset root in any layout drivelab reads."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (default: <run>/embed/<dataset name>)."
    ),
    batch_size: int = typer.Option(8, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    split: str = typer.Option(None, help="Only this split (default: every image)."),
    limit: int = typer.Option(None, help="Only the first N images (for a quick look)."),
    chunk: int = typer.Option(256, help="Rows per checkpointed chunk (what a resume keeps)."),
    preds: bool = typer.Option(True, help="Save predicted masks (used by the map's click-through)."),
    overwrite: bool = typer.Option(False, help="Replace an embedding of another model/dataset in --out."),
) -> None:
    """Per-image features, loss/IoU/uncertainty and metadata into a table (resumable)."""
    from drivelab.engine.embed import embed

    run_dir = run if run.is_dir() else run.parent
    out = out or run_dir / "embed" / dataset.resolve().name
    table = embed(
        run,
        dataset,
        out,
        batch_size=batch_size,
        device=device,
        split=split,
        limit=limit,
        chunk=chunk,
        save_preds=preds,
        overwrite=overwrite,
    )
    _print(f"table: {table}  features: {table.parent / 'features.npy'}")


def map_cmd(
    table: Path = typer.Argument(..., help="Table from `drivelab embed` (the file or its folder)."),
    out: Path = typer.Option(
        Path("map.html"), "--out", "-o", help="HTML page to write (PNG and CSV beside it)."
    ),
    projection: str = typer.Option("umap", help="umap, tsne or pca."),
    cluster: str = typer.Option("kmeans", help="kmeans or hdbscan."),
    k: int = typer.Option(None, help="k-means cluster count (default: sqrt(N/2), 2..20)."),
    color: str = typer.Option("loss", help="Column to colour by first (any numeric column or 'cluster')."),
    size: str = typer.Option("loss", help="Column that sizes the dots."),
    seed: int = typer.Option(0, help="Random seed of the projection and clustering."),
    thumbs: bool = typer.Option(
        True, help="Write hover thumbnails and click-through overlays (sheets beside the page)."
    ),
    density: bool = typer.Option(False, help="Add a hexbin density layer under the dots."),
    workers: int = typer.Option(2, help="Threads drawing thumbnails and writing side files."),
) -> None:
    """2-D map of the latent space (UMAP/t-SNE/PCA + clusters) as interactive HTML and PNG."""
    from drivelab.engine.map import build_map

    paths = build_map(
        table,
        out,
        projection=projection,
        clustering=cluster,
        k=k,
        color=color,
        size=size,
        seed=seed,
        thumbs=thumbs,
        density=density,
        workers=workers,
    )
    _print(f"map: {paths['html']}  png: {paths['png']}  clusters: {paths['clusters']}")


def select_cmd(
    pool: Path = typer.Argument(..., help="Table of the pool from `drivelab embed`."),
    budget: int = typer.Option(..., "--budget", "-n", help="How many images to choose."),
    strategy: str = typer.Option("combined", help="random, entropy, margin, kcenter or combined."),
    out: Path = typer.Option(
        Path("selected.txt"), "--out", "-o", help="List file to write (one name a line)."
    ),
    labelled: Path = typer.Option(
        None, help="List of names already labelled (default: the table's 'labelled' column)."
    ),
    seed: int = typer.Option(0, help="Random seed (random strategy, tie-breaks)."),
    queue: bool = typer.Option(
        False, help="Also queue the picks in the label store as unlabelled, by priority."
    ),
    dataset: Path = typer.Option(
        None, help="Dataset root of the label store (default: the table's dataset)."
    ),
) -> None:
    """Choose the next images to label (uncertainty, k-center diversity, both, or random)."""
    from drivelab.engine.run import run_select

    picked = run_select(
        pool, budget, strategy, out, labelled=labelled, seed=seed, queue=queue, dataset=dataset
    )
    _print(
        f"selected {len(picked)} images ({strategy}) -> {out}"
        + (" and queued in the label store" if queue else "")
    )


def prune_cmd(
    table: Path = typer.Argument(
        ..., help="Table of the dataset from `drivelab embed` (the file or its folder)."
    ),
    keep: float = typer.Option(..., "--keep", help="Fraction of images to keep, e.g. 0.5."),
    out: Path = typer.Option(
        Path("prune"), "--out", "-o", help="Folder for kept.txt, dropped.txt and the report."
    ),
    cluster: str = typer.Option("kmeans", help="kmeans or hdbscan."),
    k: int = typer.Option(None, help="k-means cluster count (default: sqrt(N/2), 2..20)."),
    protect: float = typer.Option(0.25, help="Share of clusters (highest mean loss) never pruned."),
    by: str = typer.Option("loss", help="Column that says where the model does well: loss or entropy."),
    seed: int = typer.Option(0, help="Random seed of the clustering."),
) -> None:
    """Drop the most typical images of clusters the model handles well; keep outliers and high-loss ones."""
    from drivelab.engine.run import run_prune

    result = run_prune(table, keep, out, method=cluster, k=k, protect=protect, by=by, seed=seed)
    for note in result.notes:
        _print(f"[yellow]note:[/yellow] {note}")
    _print(
        f"kept {int(result.keep.sum())} of {len(result.keep)} -> {out / 'kept.txt'} (report: "
        f"{out / 'prune_report.csv'})"
    )


def audit_cmd(
    run: Path = typer.Argument(..., help="Checkpoint (.pt) or run folder of a semantic model."),
    dataset: Path = typer.Argument(..., help="Labelled dataset to audit."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (default: <run>/audit/<dataset name>)."
    ),
    top: float = typer.Option(
        0.1, help="Fraction (<1) or count (>=1) of the ranking that gets suspect masks."
    ),
    push: int = typer.Option(
        0, help="Mark the N worst images needs_fix in the label store, with the region."
    ),
    split: str = typer.Option(None, help="Only this split (default: every labelled image)."),
    temperature: float = typer.Option(0.1, help="Soft-minimum temperature (smaller: closer to the minimum)."),
    rank: str = typer.Option(
        "regions", help="regions (region score + cleanlab's softmin) or softmin (cleanlab's score alone)."
    ),
    batch_size: int = typer.Option(8, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda ..."),
    limit: int = typer.Option(None, help="Only the first N labelled images."),
) -> None:
    """Rank labelled images by how much the model disagrees with their masks (label errors)."""
    from drivelab.engine.audit import audit

    run_dir = run if run.is_dir() else run.parent
    out = out or run_dir / "audit" / dataset.resolve().name
    df = audit(
        run,
        dataset,
        out,
        split=split,
        top=top,
        push=push,
        temperature=temperature,
        rank=rank,
        batch_size=batch_size,
        device=device,
        limit=limit,
    )
    head = df.head(min(5, len(df)))
    for row in head.itertuples():
        pair = row.region_pair or "-"
        _print(f"{row.rank:4d}  {row.score:.4f}  softmin {row.softmin:.4f}  {pair:28s} {row.name}")
    _print(
        f"ranking: {out / 'audit.csv'}  overlays: {out / 'overlays'}"
        + (f"; {min(push, len(df))} pushed as needs_fix" if push else "")
    )


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_cmd)
    app.command("map")(map_cmd)
    app.command("select")(select_cmd)
    app.command("prune")(prune_cmd)
    app.command("audit")(audit_cmd)
