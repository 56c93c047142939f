"""Table-level drivers of ``drivelab select`` and ``drivelab prune``: read the table, apply the
strategy, write the lists and reports (the strategies themselves live in select.py / prune.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivelab.engine.prune import PruneResult, prune
from drivelab.engine.select import STRATEGIES, select_indices
from drivelab.engine.table import load_table, read_name_list, write_name_list
from drivelab.errors import DrivelabError

FEATURE_STRATEGIES = ("kcenter", "combined", "clusters", "uncovered")


def labelled_mask(table, labelled: str | Path | None) -> np.ndarray:  # noqa: ANN001 - EmbedTable
    """Which rows are already labelled: from a list file, else the table's ``labelled`` column."""
    if labelled is not None:
        names = set(read_name_list(labelled))
        return table.df["name"].astype(str).isin(names).to_numpy()
    if "labelled" in table.df.columns:
        return table.df["labelled"].fillna(False).astype(bool).to_numpy()
    return np.zeros(len(table), dtype=bool)


def run_select(
    pool: str | Path,
    budget: int,
    strategy: str,
    out: str | Path,
    *,
    labelled: str | Path | None = None,
    seed: int = 0,
    queue: bool = False,
    dataset: str | Path | None = None,
) -> list[str]:
    """Pick ``budget`` unlabelled images of a pool table; write the list (and queue them)."""
    if strategy not in STRATEGIES:
        raise DrivelabError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    table = load_table(pool)
    done = labelled_mask(table, labelled)
    finite = table.finite_rows()
    unlabelled = ~done
    if unlabelled.sum() == 0:
        raise DrivelabError(
            "the pool is empty: every image of the table is labelled (pass --labelled LIST to say "
            "which ones really are)",
            table.path,
        )
    usable = unlabelled & finite if strategy in FEATURE_STRATEGIES else unlabelled
    if strategy in FEATURE_STRATEGIES and (unlabelled & ~finite).any():
        from rich.console import Console

        Console(stderr=True).print(
            f"note: {int((unlabelled & ~finite).sum())} pool images have NaN/inf features "
            f"and cannot be chosen by {strategy}"
        )
    picked = select_indices(
        strategy,
        budget,
        np.flatnonzero(usable),
        features=table.features,
        labelled=np.flatnonzero(done & finite),
        entropy=table.column("entropy"),
        margin=table.column("margin"),
        loss=table.column("loss"),
        seed=seed,
    )
    names = table.name_array()[picked].tolist()  # one array, not a name list rebuilt per pick
    write_name_list(
        out,
        names,
        header=f"drivelab select --strategy {strategy} --budget {budget} "
        f"({int(unlabelled.sum())} in the pool), best first",
    )
    if queue:
        root = dataset or table.meta.get("dataset")
        if not root:
            raise DrivelabError("--queue needs --dataset (the table does not say which dataset it came from)")
        queue_for_labelling(root, names, strategy)
    return names


def queue_for_labelling(dataset: str | Path, names: list[str], strategy: str) -> int:
    """Queue names as ``unlabelled`` with a priority (first = highest); images someone already
    works on (any other status) are left alone."""
    from drivelab.label.store import ReviewStore

    store = ReviewStore(dataset)
    queued = 0
    for rank, name in enumerate(names):
        if store.status(name) != "unlabelled":
            continue
        store.set_status(
            name,
            "unlabelled",
            user="drivelab-select",
            priority=float(len(names) - rank),
            comment=f"drivelab select ({strategy}): pick {rank + 1} of {len(names)}",
        )
        queued += 1
    return queued


def run_prune(
    table_path: str | Path,
    keep: float,
    out: str | Path,
    *,
    method: str = "kmeans",
    k: int | None = None,
    protect: float = 0.25,
    by: str = "loss",
    seed: int = 0,
) -> PruneResult:
    """Prune a table to ``keep`` of its rows; writes kept.txt, dropped.txt, prune_report.csv, prune.json."""
    from drivelab.io import write_json, write_table

    if by not in ("loss", "entropy"):
        raise DrivelabError(f"--by must be loss or entropy, got {by!r}")
    table = load_table(table_path)
    values = table.column(by)
    notes = []
    if by == "loss" and not np.isfinite(values).any():
        values = table.column("entropy")
        notes.append("the table has no losses (unlabelled images): clusters are ranked by prediction entropy")
    result = prune(table.features, values, keep, method=method, k=k, protect=protect, seed=seed)
    result.notes[:0] = notes
    out = Path(out)
    names = table.name_array()
    write_name_list(
        out / "kept.txt", names[result.keep].tolist(), header=f"drivelab prune --keep {keep}: kept"
    )
    write_name_list(
        out / "dropped.txt", names[~result.keep].tolist(), header=f"drivelab prune --keep {keep}: dropped"
    )
    write_table(out / "prune_report.csv", result.report)
    per_image = table.df[["name"]].assign(cluster=result.clusters, distance=result.distance, kept=result.keep)
    write_table(out / "prune_samples.csv", per_image)
    write_json(
        out / "prune.json",
        {
            "keep": keep,
            "kept": int(result.keep.sum()),
            "total": len(result.keep),
            "kept_fraction": float(result.keep.mean()),
            "by": by,
            "clustering": method,
            "protect": protect,
            "notes": result.notes,
        },
    )
    return result
