"""Mask R-CNN (MobileNetV3-FPN, slim heads) trained on synthetic totes on the CPU.

Prints mask/box AP and over-/under-segmentation counts on held-out totes (another seed) before
training (random weights) and after at most ``--minutes`` of training through the shared
trainer (``drivelab train totes-synth``). Usage:

    python benchmarks/instance_synth.py [--minutes 12] [--train 256] [--val 32] [--out /tmp/x]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_set(out: Path, n: int, size: tuple[int, int], seed: int, split: str) -> Path:
    from drivelab.data.synth import synth_dataset

    return synth_dataset("coco", out, n=n, size=size, seed=seed, split=split)


def calibrate(task, cfg, schema, steps: int = 4) -> float:
    """Seconds per optimizer step on this (shared) CPU: the median of a few real training steps."""
    import statistics

    import torch

    model = task.build_model(cfg, schema).train()
    train_ds, _ = task.datasets(cfg, tuple(cfg.size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    times = []
    for s in range(steps):
        batch = task.collate([train_ds[(i, s)] for i in range(s * cfg.batch_size, (s + 1) * cfg.batch_size)])
        t0 = time.perf_counter()
        task.loss(model, batch, torch.device("cpu")).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def row(label: str, m: dict) -> str:
    return (
        f"| {label} | {m['mask_ap']:.3f} | {m['mask_ap50']:.3f} | {m['mask_ap75']:.3f} | {m['box_ap']:.3f} | "
        f"{m['pred_instances']} | {m['under_instances']} / {m['under_images']} | "
        f"{m['over_instances']} / {m['over_images']} |"
    )


def main() -> None:
    import pandas as pd
    import torch

    from drivelab.data import open_dataset
    from drivelab.seg.config import load_config
    from drivelab.seg.instance.evaluate import evaluate_instances, evaluate_model, split_reader
    from drivelab.seg.tasks import get_task
    from drivelab.seg.trainer import train

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=13.0, help="training time budget (<= 15)")
    ap.add_argument("--train", type=int, default=256, help="training totes")
    ap.add_argument("--val", type=int, default=32, help="held-out totes")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="instance_synth_"))
    size = (args.size, args.size)
    train_root = make_set(out / "train", args.train, size, seed=1, split="train")
    val_root = make_set(out / "val", args.val, size, seed=2, split="val")
    val = open_dataset(val_root)
    val_one, _ = split_reader(val, "val")
    print(
        f"data: {len(open_dataset(train_root))} train totes, {len(val_one)} held-out totes at {size}; "
        f"out {out}"
    )

    base = ["data=" + str(train_root), "val_data=" + str(val_root), "out=" + str(out / "runs"), "name=bench"]
    cfg = load_config("totes-synth", base)
    task = get_task("instance")
    schema = task.schema(cfg)
    torch.manual_seed(0)
    untrained = task.build_model(cfg, schema)
    t0 = time.perf_counter()
    before, *_ = evaluate_model(untrained, val_one, schema.names, "cpu")
    print(f"evaluated the untrained model in {time.perf_counter() - t0:.1f} s")

    per_step = calibrate(task, cfg, schema)
    budget = min(args.minutes, 15.0) * 60
    steps = max(10, int(budget / (per_step * 1.2)))  # ~20% for the periodic validations
    print(f"calibration: {per_step:.2f} s/step -> max_steps={steps}")
    # max_minutes stops training at the budget even when the CPU gets slower than calibrated
    cfg = load_config("totes-synth", base + [f"max_steps={steps}", f"eval_every={max(1, steps // 3)}",
                                             f"max_minutes={budget / 60:.2f}"])
    t0 = time.perf_counter()
    run = train(cfg, progress=True)
    train_s = time.perf_counter() - t0
    after = evaluate_instances(run / "best.pt", val_root, out / "eval", split="val", progress=False)

    done = int(pd.read_csv(run / "metrics.csv")["step"].max())  # max_minutes may stop it early
    print(f"\ntrained {done} steps (batch {cfg.batch_size}) in {train_s / 60:.1f} min; run {run}")
    print(
        "\n| model | mask AP | AP50 | AP75 | box AP | predictions | under (preds / images) "
        "| over (objects / images) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(row("untrained", before))
    print(row(f"after {train_s / 60:.1f} min", after))
    print(f"\nGT objects: {after['gt_instances']} in {after['images']} totes; report: {out / 'eval'}")


if __name__ == "__main__":
    main()
