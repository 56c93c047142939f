"""Data-engine proof on synthetic driving scenes: active learning, pruning, label audit.

    python benchmarks/active_learning.py            # full: 3 seeds, ~25 min on 2 busy CPU cores
    python benchmarks/active_learning.py --quick    # 1 seed, smaller pool, fewer steps (~4 min)
    python benchmarks/active_learning.py --parts al & python benchmarks/active_learning.py \
        --parts prune,audit                         # the parts in parallel, one core each

Data: ``drivelab.data.synth`` comma10k scenes (road, lane markings, undrivable, movable, my car)
rendered at 32x64, written in the comma10k layout and read back with ``open_dataset``. The
imbalance is the generator's ``night`` option: a night scene (dark, blue, lit tail lights) with
probability 0.06 in the pool, so a model trained on random samples barely sees it; which images
are night comes from the generator's ground truth (synth.json). The test set is half night (the
deployment has to work at night too).

1. Active learning: a random labelled seed (20), then 4 rounds of select 20 -> "label" (ground
   truth) -> retrain from scratch, for random and each strategy of ``drivelab.engine.select``;
   mIoU vs labels used, mean over seeds. Bar: the best strategy reaches random's full-budget
   mIoU with <= 60% of the labels.
2. Pruning: train on 100% of the pool, on the 50% ``drivelab.engine.prune`` keeps (clusters and
   losses from the 100% model), and on a random 50%, same number of steps.
3. Audit: 10% of the masks of a set get an injected error (a region's class swapped, a car left
   unlabelled, an anti-aliased edge snapped to the wrong class); 2-fold cross-fitting (train on
   one half, score the other) with ``drivelab.engine.audit``; precision among the top-ranked 10%.

Training is a compact in-memory loop around ``drivelab.seg.models.build_model`` (the run-folder
trainer's checkpointing and caching would dominate at this size); selection, pruning, audit
scoring and the embedding are the library's own functions. Plots go to docs/images/engine-*.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.data import open_dataset
from drivelab.data.synth import synth_dataset
from drivelab.engine.audit import (
    ClassThresholds,
    overlay_suspects,
    self_confidence,
    softmin_score,
    suspect_box,
    suspect_pixels,
)
from drivelab.engine.embed import SemanticEmbedder
from drivelab.engine.plot import bar_png, line_png
from drivelab.engine.prune import prune
from drivelab.engine.select import STRATEGIES, select_indices
from drivelab.schema import comma10k

SCHEMA = comma10k()
K = SCHEMA.num_classes
ROOT = Path(__file__).resolve().parents[1]
# --------------------------------------------------------------------------- data
def make_set(
    root: Path, n: int, seed: int, size: tuple[int, int], night: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` scenes from ``drivelab.data.synth`` (comma10k layout under ``root``), read back with
    ``open_dataset`` into arrays; ``night`` is the probability of a night scene, and which images
    came out at night is read from the generator's ground truth (synth.json)."""
    synth_dataset("comma10k", root, n=n, size=size, seed=seed, night=night)
    reader = open_dataset(root, format="comma10k")
    truth = json.loads((root / "synth.json").read_text())["samples"]
    images = np.stack([reader.load_image(item) for item in reader.items])
    masks = np.stack([reader.load_mask(item) for item in reader.items])
    return images, masks, np.array([truth[item.name]["night"] for item in reader.items])


# --------------------------------------------------------------------------- model
def train(images: np.ndarray, masks: np.ndarray, steps: int, seed: int, batch: int = 8) -> torch.nn.Module:
    from drivelab.seg.models import build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model("plain-unet", K, base=8, depth=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    y_all = torch.from_numpy(masks.astype(np.int64))
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), batch))
        x, y = x_all[idx], y_all[idx]
        if rng.random() < 0.5:
            x, y = x.flip(3), y.flip(2)
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def probs_of(model: torch.nn.Module, images: np.ndarray, chunk: int = 128) -> np.ndarray:
    out = []
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(images[i : i + chunk]).permute(0, 3, 1, 2).float().div_(255)
        out.append(torch.softmax(model(x), 1).numpy())
    return np.concatenate(out)


def miou(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray) -> float:
    pred = probs_of(model, images).argmax(1)
    conf = np.bincount(masks.ravel().astype(np.int64) * K + pred.ravel(), minlength=K * K).reshape(K, K)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


def embed_pool(model: torch.nn.Module, images: np.ndarray, masks: list) -> tuple[np.ndarray, dict]:
    """The library's embedder on in-memory arrays: features (N, C) + entropy/margin/loss columns."""
    emb = SemanticEmbedder(model, SCHEMA)
    feats, rows = [], []
    for i in range(0, len(images), 128):
        f, r, _ = emb(images[i : i + 128], masks[i : i + 128])
        feats.append(f)
        rows += r
    cols = {k: np.array([r[k] for r in rows], np.float64) for k in ("entropy", "margin", "loss")}
    return np.concatenate(feats), cols


# --------------------------------------------------------------------------- 1. active learning
def active_learning(args: argparse.Namespace, pool: tuple, test: tuple) -> dict:
    images, masks, night = pool
    curves: dict[str, list[list[float]]] = {s: [] for s in STRATEGIES}
    night_picked: dict[str, list[int]] = {s: [] for s in STRATEGIES}
    for seed in range(args.seeds):
        rng = np.random.default_rng(100 + seed)
        seed_idx = rng.choice(len(images), args.seed_size, replace=False)
        m0 = train(images[seed_idx], masks[seed_idx], args.steps, seed)
        base = miou(m0, *test[:2])
        for strategy in STRATEGIES:
            labelled, model, curve = seed_idx.copy(), m0, [base]
            for r in range(args.rounds):
                t0 = time.time()
                known = set(labelled.tolist())
                feats, cols = embed_pool(
                    model, images, [masks[i] if i in known else None for i in range(len(images))]
                )
                cand = np.array([i for i in range(len(images)) if i not in known])
                picks = select_indices(
                    strategy,
                    args.batch,
                    cand,
                    features=feats,
                    labelled=labelled,
                    entropy=cols["entropy"],
                    margin=cols["margin"],
                    loss=cols["loss"],
                    seed=1000 * seed + r,
                )
                labelled = np.concatenate([labelled, picks])
                model = train(images[labelled], masks[labelled], args.steps, seed)
                curve.append(miou(model, *test[:2]))
                print(
                    f"  seed {seed} {strategy:9s} round {r + 1}: {len(labelled):4d} labels, "
                    f"{int(night[labelled].sum()):3d} night, mIoU {curve[-1]:.4f} ({time.time() - t0:.1f}s)",
                    flush=True,
                )
            curves[strategy].append(curve)
            night_picked[strategy].append(int(night[labelled].sum()))
    labels = [args.seed_size + r * args.batch for r in range(args.rounds + 1)]
    mean = {s: np.mean(c, axis=0) for s, c in curves.items()}
    std = {s: np.std(c, axis=0) for s, c in curves.items()}
    target = float(mean["random"][-1])
    needed = {s: labels_to_reach(labels, mean[s], target) for s in STRATEGIES}
    best = min((s for s in STRATEGIES if s != "random"), key=lambda s: needed[s] if needed[s] else 1e9)
    line_png(
        args.images / "engine-active-learning.png",
        [(s, np.array(labels), mean[s], std[s]) for s in STRATEGIES],
        title=f"Active learning on synthetic scenes with rare night (mean of {args.seeds} seeds)",
        xlabel="labelled images",
        ylabel="test mIoU (half day, half night)",
        hline=("random at full budget", target),
    )
    return {
        "labels": labels,
        "mean": {s: mean[s].tolist() for s in STRATEGIES},
        "std": {s: std[s].tolist() for s in STRATEGIES},
        "random_full": target,
        "labels_to_reach_random_full": needed,
        "best": best,
        "best_fraction_of_budget": (needed[best] / labels[-1]) if needed[best] else None,
        "night_labelled": {s: float(np.mean(v)) for s, v in night_picked.items()},
    }


def labels_to_reach(labels: list[int], curve: np.ndarray, target: float) -> float | None:
    """Labels at which a (linearly interpolated) mean curve first reaches ``target``."""
    for i, v in enumerate(curve):
        if v >= target:
            if i == 0:
                return float(labels[0])
            a, b = curve[i - 1], v
            return float(labels[i - 1] + (target - a) / (b - a) * (labels[i] - labels[i - 1]))
    return None


# --------------------------------------------------------------------------- 2. pruning
def pruning(args: argparse.Namespace, pool: tuple, test: tuple) -> dict:
    images, masks, night = pool
    res: dict[str, list[float]] = {"100%": [], "pruned 50%": [], "random 50%": []}
    kept_night = []
    for seed in range(args.prune_seeds):
        full = train(images, masks, args.prune_steps, seed)
        res["100%"].append(miou(full, *test[:2]))
        feats, cols = embed_pool(full, images, list(masks))
        kept = np.flatnonzero(prune(feats, cols["loss"], 0.5, seed=seed).keep)
        rand = np.random.default_rng(seed).choice(len(images), len(kept), replace=False)
        res["pruned 50%"].append(miou(train(images[kept], masks[kept], args.prune_steps, seed), *test[:2]))
        res["random 50%"].append(miou(train(images[rand], masks[rand], args.prune_steps, seed), *test[:2]))
        kept_night.append((int(night[kept].sum()), int(night[rand].sum()), int(night.sum())))
        print(
            f"  seed {seed} prune: "
            + ", ".join(f"{k} {v[-1]:.4f}" for k, v in res.items())
            + f"; night kept {kept_night[-1][0]} vs random {kept_night[-1][1]} of {kept_night[-1][2]}",
            flush=True,
        )
    names = list(res)
    bar_png(
        args.images / "engine-prune.png",
        names,
        np.array([np.mean(res[n]) for n in names]),
        np.array([np.std(res[n]) for n in names]),
        title="Training on a pruned half vs all vs a random half",
        ylabel="test mIoU",
    )
    return {
        "miou": {k: float(np.mean(v)) for k, v in res.items()},
        "std": {k: float(np.std(v)) for k, v in res.items()},
        "night_kept_pruned_random_total": kept_night,
    }


# --------------------------------------------------------------------------- 3. audit
def corrupt(mask: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray | None:
    """Inject one label error; None when this mask offers no place for it."""
    from scipy import ndimage

    m = mask.copy()
    if kind == "swap":  # a region's class swapped: a connected undrivable/road chunk gets the other class
        for cls, to in ((2, 0), (0, 2)):
            lab, n = ndimage.label(m == cls)
            if n:
                sizes = np.bincount(lab.ravel())[1:]
                j = int(np.argmax(sizes)) + 1
                ys, xs = np.nonzero(lab == j)
                # a box-shaped bite of the region, not all of it
                cy, cx = ys[len(ys) // 2], xs[len(xs) // 2]
                box = (
                    (lab == j)
                    & (np.abs(np.arange(m.shape[0])[:, None] - cy) < 6)
                    & (np.abs(np.arange(m.shape[1])[None] - cx) < 10)
                )
                if box.sum() >= 40:
                    m[box] = to
                    return m
        return None
    if kind == "unlabelled_car":  # a car left as road/background
        lab, n = ndimage.label(m == 3)
        if not n:
            return None
        sizes = np.bincount(lab.ravel())[1:]
        j = int(np.argmax(sizes)) + 1
        if sizes[j - 1] < 12:
            return None
        m[lab == j] = 0
        return m
    # anti-aliased edge: a polygon tool's blended edge colour snapped to the nearest palette colour
    pal = SCHEMA.palette.astype(np.float32)
    edge = np.zeros_like(m, dtype=bool)
    out = m.copy()
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = np.roll(m, (dy, dx), axis=(0, 1))
        diff = nb != m
        blend = (pal[m] + pal[nb]) / 2
        snapped = np.argmin(((blend[..., None, :] - pal[None, None]) ** 2).sum(-1), axis=-1)
        hit = diff & (snapped != m) & (snapped != nb)
        out[hit] = snapped[hit]
        edge |= hit
    grown = ndimage.binary_dilation(edge, iterations=1) & (out == m)
    # widen the band by a pixel, as a 2-px anti-aliasing ramp would
    if grown.any():
        src = ndimage.grey_dilation(np.where(edge, out, 0), size=3)
        out[grown & (src > 0)] = src[grown & (src > 0)]
    return out if (out != m).sum() >= 30 else None


def audit_bench(args: argparse.Namespace) -> dict:
    images, masks, _ = make_set(args.data / "audit", args.audit_n, 7, args.size, night=0.0)
    rng = np.random.default_rng(7)
    noisy = masks.copy()
    kinds = ["swap", "unlabelled_car", "edge"]
    target = int(round(0.1 * len(images)))
    corrupted: dict[int, str] = {}
    for i in rng.permutation(len(images)):
        if len(corrupted) == target:
            break
        kind = kinds[len(corrupted) % 3]
        m = corrupt(masks[i], kind, rng)
        if m is not None:
            noisy[i], corrupted[int(i)] = m, kind
    folds = np.arange(len(images)) % 2
    scores = np.zeros(len(images))
    thresholds = ClassThresholds(K)
    all_probs = np.zeros((len(images), K, *args.size), np.float32)
    for f in (0, 1):  # cross-fitting: the model never saw the masks it scores
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        model = train(images[tr], noisy[tr], args.audit_steps, f)
        all_probs[te] = probs_of(model, images[te])
    for i in range(len(images)):
        conf = self_confidence(all_probs[i], noisy[i])
        thresholds.update(conf, noisy[i])
        scores[i] = softmin_score(conf)
    order = np.argsort(scores, kind="stable")
    top = order[:target]
    hits = [int(i) in corrupted for i in top]
    by_kind = {k: sum(1 for i in top if corrupted.get(int(i)) == k) for k in kinds}
    n_kind = {k: sum(1 for v in corrupted.values() if v == k) for k in kinds}
    # an example overlay of the worst-ranked image
    from drivelab.io import write_image

    strips = []
    for i in top[:3]:
        sus = suspect_pixels(all_probs[i], noisy[i], thresholds.values)
        strip = overlay_suspects(images[i], SCHEMA.colorize(noisy[i]), sus, suspect_box(sus))
        strips.append(np.kron(strip, np.ones((4, 4, 1), np.uint8)))
    from PIL import Image

    write_image(args.images / "engine-audit.png", Image.fromarray(np.concatenate(strips, axis=0)))
    return {
        "n": len(images),
        "corrupted": len(corrupted),
        "top": target,
        "precision_at_top10pct": float(np.mean(hits)),
        "found_by_kind": by_kind,
        "injected_by_kind": n_kind,
    }


# --------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, smaller pool, fewer steps")
    p.add_argument("--parts", default="al,prune,audit", help="comma list of al, prune, audit")
    p.add_argument("--images", type=Path, default=ROOT / "docs" / "images", help="where the plots go")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--seeds", type=int, default=None, help="active-learning seeds (default 3; quick 1)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (1000; quick 400)")
    p.add_argument(
        "--data", type=Path, default=None, help="where the synthetic sets go (default: a temp folder)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    args.size = (32, 64)
    seeds = args.seeds or (1 if q else 3)
    args.seeds, args.prune_seeds = seeds, min(seeds, 2)
    args.pool_n, args.test_n = (300, 100) if q else (600, 200)
    args.night = 0.06  # probability of a night scene in the pool: the rare condition
    args.seed_size, args.batch, args.rounds = 20, 20, 4
    steps = args.steps or (400 if q else 1000)
    args.steps, args.prune_steps, args.audit_steps = steps, steps, steps
    args.audit_n = 200 if q else 300
    args.images.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="drivelab-al-") as tmp:
        args.data = args.data or Path(tmp)
        run(args, parts)


def run(args: argparse.Namespace, parts: set[str]) -> None:
    t0 = time.time()
    pool = make_set(args.data / "pool", args.pool_n, 1, args.size, night=args.night)
    ti, tm, tn = make_set(args.data / "test", args.test_n, 2, args.size, night=0.5)
    print(f"synthesised pool {args.pool_n}, test {args.test_n} in {time.time() - t0:.0f}s", flush=True)
    results: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if "al" in parts:
        print(
            f"active learning: pool {args.pool_n} ({int(pool[2].sum())} night), "
            f"test {args.test_n} (half night)"
        )
        results["active_learning"] = active_learning(args, pool, (ti, tm, tn))
    if "prune" in parts:
        print("pruning")
        results["prune"] = pruning(args, pool, (ti, tm, tn))
    if "audit" in parts:
        print("audit")
        results["audit"] = audit_bench(args)
    results["seconds"] = time.time() - t0
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    if "active_learning" in r:
        al = r["active_learning"]
        print("\nlabels      " + "".join(f"{n:>9d}" for n in al["labels"]) + "   night labelled")
        for s, curve in al["mean"].items():
            print(f"{s:10s}  " + "".join(f"{v:9.4f}" for v in curve) + f"   {al['night_labelled'][s]:.1f}")
        print(f"random at full budget: {al['random_full']:.4f}")
        for s, n in al["labels_to_reach_random_full"].items():
            print(
                f"  {s:10s} reaches it with "
                + (f"{n:.0f} labels ({n / al['labels'][-1]:.0%} of the budget)" if n else "- (never)")
            )
        frac = al["best_fraction_of_budget"]
        print(
            f"bar (best <= 60% of the budget): {al['best']} "
            + (f"{frac:.0%}" if frac else "never")
            + (" PASS" if frac and frac <= 0.6 else " MISS")
        )
    if "prune" in r:
        pr = r["prune"]
        print("\nprune: " + ", ".join(f"{k} {v:.4f}+-{pr['std'][k]:.4f}" for k, v in pr["miou"].items()))
        gap = pr["miou"]["100%"] - pr["miou"]["pruned 50%"]
        print(
            f"  pruned 50% is {gap * 100:.2f} points below 100% (bar <= 2), random 50% is "
            f"{(pr['miou']['100%'] - pr['miou']['random 50%']) * 100:.2f} below"
        )
    if "audit" in r:
        a = r["audit"]
        print(
            f"\naudit: {a['corrupted']} of {a['n']} masks corrupted; precision in the top {a['top']}: "
            f"{a['precision_at_top10pct']:.2f} (bar >= 0.8); found by kind {a['found_by_kind']} of "
            f"{a['injected_by_kind']}"
        )
    print(f"\ntotal {r['seconds']:.0f}s")


if __name__ == "__main__":
    main()
