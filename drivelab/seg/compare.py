"""``drivelab compare RUN...``: one table of models (parameters, FLOPs, metrics, speed) and a few
side-by-side predictions, in the terminal (rich) and as a self-contained HTML page.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one image at the run's
training size (a multiply-add counts as 2 FLOPs). Speed is the median forward time of batch 1 on
the chosen device. Metrics come from ``drivelab.seg.evaluate`` on ``dataset`` when given, else from
the validation metrics stored in the run's best.pt.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivelab.errors import DrivelabError


def count_flops(model: torch.nn.Module, size: tuple[int, int], device: str | torch.device = "cpu") -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from drivelab.seg.transforms import ModelInput

    x = torch.rand(1, 3, *ModelInput(size).padded(*size), device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


@torch.no_grad()
def time_forward(model: torch.nn.Module, size: tuple[int, int], device: str | torch.device = "cpu",
                 repeats: int = 5) -> float:
    """Median milliseconds of one forward pass (batch 1, training size padded to 32)."""
    from drivelab.seg.transforms import ModelInput

    x = torch.rand(1, 3, *ModelInput(size).padded(*size), device=device)
    model(x)  # warm-up
    times = []
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model(x)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def describe_run(run: str | Path, dataset: str | Path | None, device: str = "auto", tta: bool = False,
                 repeats: int = 5) -> tuple[dict, Any]:
    """One table row for a run folder or checkpoint, and its Predictor."""
    from drivelab.seg.checkpoint import expect_task, read_checkpoint, training_size
    from drivelab.seg.inference import Predictor
    from drivelab.seg.models import count_parameters

    ckpt = read_checkpoint(run)
    expect_task(ckpt, "semantic", "compare")
    predictor = Predictor(ckpt, device=device, tta=tta, precision="fp32")
    model, device = predictor.model, predictor.device
    size = training_size(ckpt)
    spec = ckpt["model_spec"]
    row: dict[str, Any] = {
        "run": Path(ckpt["path"]).parent.name,
        "model": spec["name"] + (f" / {spec['encoder']}" if spec.get("encoder") else ""),
        "params_M": count_parameters(model) / 1e6,
        "size": f"{size[0]}x{size[1]}",
        "GFLOPs": count_flops(model, size, device) / 1e9,
        "ms_per_image": time_forward(model, size, device, repeats),
    }
    if dataset is not None:
        from drivelab.seg.tasks import for_checkpoint

        metrics = for_checkpoint(ckpt).run_evaluate(ckpt, dataset, None, tta=tta, device=str(device),
                                                    progress=False)
        row["source"] = f"{Path(dataset).name} ({metrics['split']}, {metrics['n_images']} images)"
    else:
        metrics = dict(ckpt.get("metrics") or {})
        metrics["ce"] = metrics.get("loss", float("nan"))  # the trainer's validation CE per real pixel
        row["source"] = "validation in training"
    for k in ("miou", "pixel_acc", "mean_acc", "ce"):
        row[k] = float(metrics.get(k, float("nan")))
    row["_ckpt"] = ckpt
    return row, predictor


def side_by_side(models: list[tuple[str, Any]], dataset: str | Path, n: int = 3,
                 split: str | None = None) -> list[tuple[str, np.ndarray]]:
    """Rows of image | ground truth | each model's prediction (colourised), for the report."""
    from drivelab.seg.semantic import open_reader

    reader = open_reader(dataset)
    val = reader.subset(split=split) if split and split in reader.splits else reader
    items = []
    for i in range(min(n, len(val))):
        s = val[i]
        tiles = [s.image]
        schema = models[0][1].schema
        if s.mask is not None:
            tiles.append(schema.colorize(s.mask))
        for _, predictor in models:
            tiles.append(predictor.schema.colorize(predictor.predict(s.image)))
        names = " | ".join(["image"] + (["ground truth"] if s.mask is not None else [])
                           + [m for m, _ in models])
        items.append((f"{s.name}: {names}", np.concatenate(tiles, axis=1)))
    return items


COLUMNS = ["run", "model", "params_M", "GFLOPs", "size", "ms_per_image", "miou", "pixel_acc", "mean_acc",
           "ce", "source"]


def compare(runs: list[str | Path], dataset: str | Path | None = None, out: str | Path | None = None,
            device: str = "auto", tta: bool = False, images: int = 3, show: bool = True
            ) -> tuple[list[dict], Path]:
    """Compare runs; writes ``<out>/compare.html`` (+ compare.csv) and returns (rows, html path)."""
    import pandas as pd

    from drivelab import report as rep
    from drivelab.io import write_table

    if not runs:
        raise DrivelabError("give at least one run folder or checkpoint")
    rows, models, first = [], [], None
    for run in runs:
        row, loaded = describe_run(run, dataset, device, tta)
        first = first or row.pop("_ckpt")
        row.pop("_ckpt", None)
        rows.append(row)
        models.append((row["run"], loaded))
    out = Path(out) if out is not None else Path(runs[0]).resolve().parent / "compare"
    table = [{c: r.get(c) for c in COLUMNS} for r in rows]
    write_table(out / "compare.csv", pd.DataFrame(table))
    page = rep.Report("drivelab compare", f"{len(rows)} runs" + (f" on {dataset}" if dataset else ""))
    page.section("Models", rep.metrics_table(table, COLUMNS),
                 rep.preformatted("GFLOPs: one image at the training size (FlopCounterMode, multiply-add "
                                  f"= 2); ms_per_image: median forward, batch 1, {device}; ce: mean "
                                  "cross-entropy per labelled pixel"))
    if dataset is not None:
        from drivelab.seg.checkpoint import default_split
        from drivelab.seg.semantic import open_reader

        source, split = dataset, default_split(open_reader(dataset).splits, dataset, first or {})
    else:
        source, split = _validation_data(first or {})
    if source:
        grid = side_by_side(models, source, images, split)
        page.section("Predictions", rep.image_grid(grid, columns=1, fmt="PNG"))
    path = page.write(out / "compare.html")
    if show:
        print_table(table)
    return rows, path


def _validation_data(ckpt: dict) -> tuple[str | None, str | None]:
    """The data a run validated on: its val_data, else the val split of its training data."""
    cfg = ckpt.get("config") or {}
    if cfg.get("val_data") and Path(cfg["val_data"]).exists():
        split = cfg.get("val_split")
        return cfg["val_data"], None if split == "all" else split
    if cfg.get("data") and Path(cfg["data"]).exists():
        return cfg["data"], cfg.get("val_split", "val")
    return None, None


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="drivelab compare")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c in ("run", "model", "size", "source") else "right")
    for r in rows:
        t.add_row(*[f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in COLUMNS])
    console = Console()
    if not console.is_terminal:  # piped or logged: don't squeeze the table into 80 columns
        console = Console(width=220)
    console.print(t)
