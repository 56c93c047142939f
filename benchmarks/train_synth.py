"""Proof on synthetic data: train the default small model (the ``synth`` preset) on a synthetic
comma10k-layout set on the CPU and watch validation mIoU / CE on held-out scenes (another seed).

    python benchmarks/train_synth.py                 # the bar: mIoU >= 0.85 within 10 minutes
    python benchmarks/train_synth.py --steps 200 --n 100

Prints validation mIoU and CE over time (from the run's metrics.csv), the time the bar was
first reached, and the final full-resolution evaluation of best.pt (drivelab.seg.evaluate).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BAR = 0.85


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600, help="synthetic training images (names ending 9 are val)")
    ap.add_argument("--heldout", type=int, default=48, help="held-out scenes (seed 1) for validation")
    ap.add_argument("--size", type=int, nargs=2, default=None, help="H W (default: the synth preset's)")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps (0: the preset's epochs)")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget for training")
    ap.add_argument("--eval-every", type=int, default=50, help="steps between validations")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared 2-core machine a 2-thread OpenMP team stalls)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder)")
    ap.add_argument("overrides", nargs="*", help="extra config overrides key=value")
    args = ap.parse_args()

    import pandas as pd
    import torch

    from drivelab.data.synth import synth_dataset
    from drivelab.seg.config import load_config
    from drivelab.seg.evaluate import evaluate
    from drivelab.seg.trainer import train

    torch.set_num_threads(args.threads)
    work = args.out or Path(tempfile.mkdtemp(prefix="drivelab-train-synth-"))
    preset = load_config("synth")
    size = tuple(args.size or preset.size)
    t = time.perf_counter()
    data = synth_dataset("comma10k", work / "train", n=args.n, size=size, seed=0)
    heldout = synth_dataset("comma10k", work / "heldout", n=args.heldout, size=size, seed=1)
    print(f"synthesised {args.n} + {args.heldout} held-out images at {size[1]}x{size[0]} "
          f"in {time.perf_counter() - t:.1f}s -> {work}")

    overrides = {"data": str(data), "val_data": str(heldout), "val_split": "all",
                 "out": str(work / "runs"), "name": "synth", "size": list(size),
                 "eval_every": args.eval_every, "max_minutes": args.minutes}
    if args.steps:
        overrides["max_steps"] = args.steps
    cfg = load_config("synth", {**overrides, **_parse(args.overrides)})
    print(f"model {cfg.model} {cfg.encoder or ''} {cfg.model_kwargs}  batch {cfg.batch_size}  lr {cfg.lr}  "
          f"{cfg.schedule}  threads {torch.get_num_threads()}")
    t = time.perf_counter()
    run = train(cfg)
    wall = time.perf_counter() - t

    m = pd.read_csv(run / "metrics.csv")
    print("\nvalidation on held-out scenes (seed 1) during training")
    head = ("seconds", "step", "epoch", "train CE", "val CE", "val mIoU", "img/s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (8, 6, 6, 9, 8, 9, 7), strict=True)))
    for r in m.itertuples():
        print(f"{r.seconds:8.0f} {r.step:6d} {r.epoch:6.1f} {r.train_loss:9.4f} {r.loss:8.4f} {r.miou:9.4f} "
              f"{r.images_per_s:7.1f}")
    hit = m[m["miou"] >= BAR]
    reached = f"{hit['seconds'].iloc[0]:.0f} s (step {hit['step'].iloc[0]})" if len(hit) else "not reached"
    final = evaluate(run, heldout, progress=False)
    print(f"\ntraining wall time {wall:.0f} s; mIoU >= {BAR} first reached at: {reached}")
    print(f"best.pt on the held-out set at full resolution: mIoU {final['miou']:.4f}  pixel acc "
          f"{final['pixel_acc']:.4f}  CE/pixel {final['loss']:.4f}  ({final['n_images']} images)")
    print("per class IoU: " + "  ".join(f"{c} {final[f'iou_{c}']:.3f}" for c in final["classes"]))
    ok = final["miou"] >= BAR and len(hit) and hit["seconds"].iloc[0] <= 600
    print("PASS" if ok else "FAIL", f"(bar: mIoU >= {BAR} within 600 s of CPU)")


def _parse(items: list[str]) -> dict:
    from drivelab.seg.config import parse_overrides

    return parse_overrides(items)


if __name__ == "__main__":
    main()
