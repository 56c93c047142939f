"""CLI verbs of the data engine: ``embed``, ``map``, ``select``, ``prune``, ``audit``. Thin: each
parses its options (the shared vocabulary of ``drivelab.cliutil``) and calls one function; heavy
imports happen inside the commands so ``drivelab --help`` stays fast."""

from __future__ import annotations

from pathlib import Path

import typer

from drivelab import cliutil as cu


def embed(
    run: Path = typer.Argument(..., help="Checkpoint (.pt) or run folder (best.pt is used)."),
    dataset: Path = typer.Argument(..., help="Dataset root in any layout drivelab reads."),
    out: Path | None = cu.out_option(None, "Output folder (default: <run>/embed/<dataset name>)."),
    batch: int = cu.batch_option(8),
    device: str = cu.device_option(),
    workers: int = cu.workers_option(2),
    split: str | None = typer.Option(None, help="Only this split (default: every image)."),
    limit: int | None = typer.Option(None, help="Only the first N images (for a quick look)."),
    chunk: int = typer.Option(256, help="Rows per checkpointed chunk (what a resume keeps)."),
    preds: bool = typer.Option(True, help="Save predicted masks (used by the map's click-through)."),
    overwrite: bool = typer.Option(False, help="Replace an embedding of another model/dataset in --out."),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
    num_gpus: float = cu.num_gpus_option(),
    progress: bool = cu.progress_option(),
) -> None:
    """Per-image features, loss/IoU/uncertainty and metadata into a table (resumable)."""
    from drivelab.engine.embed import embed as run_embed

    table = run_embed(run, dataset, out, batch=batch, device=device, split=split, limit=limit, chunk=chunk,
                      save_preds=preds, overwrite=overwrite, workers=workers,
                      ray=cu.ray_options(ray, concurrency, num_gpus), progress=progress)
    cu.result(f"table: {table}  features: {table.parent / 'features.npy'}")


def map(  # noqa: A001 - the verb's name
    table: Path = typer.Argument(..., help="Table from `drivelab embed` (the file or its folder)."),
    out: Path = cu.out_option(Path("map.html"), "HTML page to write (PNG and CSV beside it)."),
    projection: str = typer.Option("umap", help="umap, tsne or pca (pca for pools of 100k and more)."),
    cluster: str = typer.Option("kmeans", help="kmeans or hdbscan."),
    k: int | None = typer.Option(None, help="k-means cluster count (default: sqrt(N/2), 2..20)."),
    color: str = typer.Option("loss", help="Column to colour by first (any numeric column or 'cluster')."),
    dot_size: str = typer.Option("loss", "--dot-size", help="Column that sizes the dots."),
    seed: int = typer.Option(0, help="Random seed of the projection and clustering."),
    thumbs: bool = typer.Option(True, help="Write hover thumbnails and click-through overlays (sheets "
                                "beside the page)."),
    density: bool = typer.Option(False, help="Add a hexbin density layer under the dots."),
    workers: int = cu.workers_option(2, "Threads drawing thumbnails and writing side files."),
) -> None:
    """2-D map of the latent space (UMAP/t-SNE/PCA + clusters) as interactive HTML and PNG."""
    from drivelab.engine.map import build_map

    paths = build_map(table, out, projection=projection, clustering=cluster, k=k, color=color, size=dot_size,
                      seed=seed, thumbs=thumbs, density=density, workers=workers)
    cu.result(f"map: {paths['html']}  png: {paths['png']}  clusters: {paths['clusters']}")


def select(
    pool: Path = typer.Argument(..., help="Table of the pool from `drivelab embed`."),
    budget: int = typer.Option(..., "--budget", "-n", help="How many images to choose."),
    strategy: str = typer.Option("combined", help="random, entropy, margin, kcenter, combined, clusters "
                                 "or uncovered."),
    out: Path = cu.out_option(Path("selected.txt"), "List file to write (one name a line)."),
    labelled: Path | None = typer.Option(None, help="List of names already labelled (default: the table's "
                                         "'labelled' column)."),
    seed: int = typer.Option(0, help="Random seed (random strategy, tie-breaks)."),
    queue: bool = typer.Option(False, help="Also queue the picks in the label store as unlabelled, by "
                               "priority."),
    dataset: Path | None = typer.Option(None, help="Dataset root of the label store (default: the table's "
                                        "dataset)."),
) -> None:
    """Choose the next images to label (uncertainty, k-center diversity, both, or random)."""
    from drivelab.engine.run import run_select

    picked = run_select(pool, budget, strategy, out, labelled=labelled, seed=seed, queue=queue,
                        dataset=dataset)
    cu.result(f"selected {len(picked)} images ({strategy}) -> {out}"
              + (" and queued in the label store" if queue else ""))


def prune(
    table: Path = typer.Argument(..., help="Table of the dataset from `drivelab embed` (the file or its "
                                 "folder)."),
    keep: float = typer.Option(..., "--keep", help="Fraction of images to keep, e.g. 0.5."),
    out: Path = cu.out_option(Path("prune"), "Folder for kept.txt, dropped.txt and the report."),
    cluster: str = typer.Option("kmeans", help="kmeans or hdbscan."),
    k: int | None = typer.Option(None, help="k-means cluster count (default: sqrt(N/2), 2..20)."),
    protect: float = typer.Option(0.25, help="Share of clusters (highest mean loss) never pruned."),
    by: str = typer.Option("loss", help="Column that says where the model does well: loss or entropy."),
    seed: int = typer.Option(0, help="Random seed of the clustering."),
) -> None:
    """Drop the most typical images of clusters the model handles well; keep outliers and high-loss ones."""
    from drivelab.engine.run import run_prune

    result = run_prune(table, keep, out, method=cluster, k=k, protect=protect, by=by, seed=seed)
    for note in result.notes:
        cu.info(f"[yellow]note:[/yellow] {note}")
    cu.result(f"kept {int(result.keep.sum())} of {len(result.keep)} -> {out / 'kept.txt'} (report: "
              f"{out / 'prune_report.csv'})")


def audit(
    run: Path = typer.Argument(..., help="Checkpoint (.pt) or run folder of a semantic model."),
    dataset: Path = typer.Argument(..., help="Labelled dataset to audit."),
    out: Path | None = cu.out_option(None, "Output folder (default: <run>/audit/<dataset name>)."),
    top: float = typer.Option(0.1, help="Fraction (<1) or count (>=1) of the ranking that gets suspect "
                              "masks."),
    push: int = typer.Option(0, help="Mark the N worst images needs_fix in the label store, with the "
                             "region."),
    split: str | None = typer.Option(None, help="Only this split (default: every labelled image)."),
    temperature: float = typer.Option(0.1, help="Soft-minimum temperature (smaller: closer to the minimum)."),
    rank: str = typer.Option("regions", help="regions (region score + cleanlab's softmin) or softmin "
                             "(cleanlab's score alone)."),
    tta: bool = cu.tta_option(True, "Average the softmax of each image and its mirror (two passes; a "
                              "model's confident mistakes rarely survive the mirror, label errors do)."),
    batch: int = cu.batch_option(8),
    device: str = cu.device_option(),
    workers: int = cu.workers_option(2),
    limit: int | None = typer.Option(None, help="Only the first N labelled images."),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
    num_gpus: float = cu.num_gpus_option(),
    progress: bool = cu.progress_option(),
) -> None:
    """Rank labelled images by how much the model disagrees with their masks (label errors)."""
    from drivelab.engine.audit import audit as run_audit

    df = run_audit(run, dataset, out, split=split, top=top, push=push, temperature=temperature, rank=rank,
                   tta=tta, batch=batch, device=device, limit=limit, workers=workers,
                   ray=cu.ray_options(ray, concurrency, num_gpus), progress=progress)
    for row in df.head(min(5, len(df))).itertuples():
        cu.info(f"{row.rank:4d}  {row.score:.4f}  softmin {row.softmin:.4f}  {row.region_pair or '-':28s} "
                f"{row.name}")
    where = Path(df.attrs["out"])
    cu.result(f"ranking: {where / 'audit.csv'}  overlays: {where / 'overlays'}"
              + (f"; {min(push, len(df))} pushed as needs_fix" if push else ""))


def register(app: typer.Typer) -> None:
    for fn in (embed, map, select, prune, audit):
        app.command(fn.__name__, rich_help_panel=cu.ENGINE)(fn)
