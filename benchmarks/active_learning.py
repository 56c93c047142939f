"""Data-engine proof on synthetic driving scenes: active learning, pruning, label audit.

    python benchmarks/active_learning.py                        # everything, one process
    python benchmarks/active_learning.py --parts al --al-seeds 0 --json al0.json   # one piece
    python benchmarks/active_learning.py --merge al0.json al1.json al2.json prune.json audit.json
    python benchmarks/active_learning.py --quick                # the old 32x64 flat-colour toy

The parts (and the active-learning seeds) run as separate processes and ``--merge`` prints the one
report from their JSON files and draws the plots, so the study spreads over cores or sessions.

Data: ``drivelab.data.synth`` comma10k scenes (road, lane markings, undrivable, movable, my car) at
64x128, written in the comma10k layout and read back with ``open_dataset``. The rare condition is
the generator's ``night`` attribute: a night scene with probability 0.06 in the pool, so random
samples barely contain it; which images are night comes from the generator's ground truth
(synth.json). The test set (another seed) is half night: the deployment has to work at night too.

Model: the ``synth`` preset's network (smp U-Net, MobileNetV3-small x0.5 encoder, slim decoder,
0.54M parameters, random init), CE + dice, AdamW one-cycle 3e-3, batch 8, horizontal flips,
trained from scratch for a fixed number of steps in a compact in-memory loop (the run-folder
trainer's checkpointing and caching would dominate at this size). Selection, pruning, audit
scoring and the embedding are the library's own functions (what the CLI runs).

1. Active learning: a random labelled seed (20), then 4 rounds of select 20 -> "label" (ground
   truth) -> retrain from scratch, for random and each strategy of ``drivelab.engine.select``;
   test mIoU vs labels, mean over 3 seeds. Bar: the best strategy reaches random's full-budget
   mIoU with <= 60% of the labels.
2. Pruning: train on 100% of the pool, on the 50% ``drivelab.engine.prune`` keeps (clusters and
   losses from the 100% model), and on a random 50%, same steps. Bar: pruned 50% within 2 mIoU
   points of 100%, where random 50% loses more.
3. Audit: 10% of the masks of a labelled set get one injected error, a third of each kind:
     swap          a box of H/5.3 x W/6.4 pixels (12 x 20 at 64x128) centred in the largest
                   undrivable region is relabelled road (else: in the largest road region,
                   relabelled undrivable); at least 0.5% of the image must change
     car as road   the largest movable region (a car, truck or person; at least 0.15% of the
                   image) is relabelled road: a forgotten object
     snapped edge  a polygon tool's 2-px anti-aliased boundary, each blended colour (the mean of
                   the two classes' palette colours) snapped to the nearest palette colour:
                   where that is a third class the band takes it (road|car -> undrivable,
                   road|hood -> undrivable, car|hood -> undrivable, lane|car -> undrivable);
                   at least 0.4% of the image must change
   4-fold cross-fitting (each quarter is scored by a model trained on the other three, noisy
   masks and all), each image scored with the mean of its and its mirror's probabilities, as
   ``drivelab audit --tta`` (the default) does; the same rankings without the mirror follow.
   Side by side in the same run, on the same probabilities: cleanlab's softmin score
   (``cleanlab.segmentation.rank``), cleanlab's issue-pixel count (``method="num_pixel_issues"``),
   drivelab's region score alone and drivelab's ranking (regions + softmin). Precision among the
   top-ranked 10% (bar >= 0.8), AUROC, and recall per kind. ``--save-probs`` keeps the
   probabilities and ``--from-probs`` re-scores them without training.
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

from drivelab.engine.audit import overlay_suspects
from drivelab.engine.audit_scores import (
    ClassThresholds,
    combined_score,
    disagreement_regions,
    pair_mass,
    region_scores,
    self_confidence,
    softmin_score,
    suspect_pixels,
    typical_pair_mass,
)
from drivelab.engine.embed import SemanticEmbedder
from drivelab.engine.plot import bar_png, line_png
from drivelab.engine.prune import prune
from drivelab.engine.select import STRATEGIES, select_indices
from drivelab.schema import comma10k

SCHEMA = comma10k()
K = SCHEMA.num_classes
ROOT = Path(__file__).resolve().parents[1]
KINDS = ("swap", "car_as_road", "edge")


# --------------------------------------------------------------------------- data
def make_set(
    root: Path, n: int, seed: int, size: tuple[int, int], night: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` scenes from ``drivelab.data.synth`` (comma10k layout under ``root``), read back with
    ``open_dataset`` into arrays; ``night`` is the probability of a night scene, and which images
    came out at night is read from the generator's ground truth (synth.json)."""
    from drivelab.data import open_dataset
    from drivelab.data.synth import synth_dataset

    synth_dataset("comma10k", root, n=n, size=size, seed=seed, night=night)
    reader = open_dataset(root, format="comma10k")
    truth = json.loads((root / "synth.json").read_text())["samples"]
    images = np.stack([reader.load_image(item) for item in reader.items])
    masks = np.stack([reader.load_mask(item) for item in reader.items])
    return images, masks, np.array([truth[item.name]["night"] for item in reader.items])


# The --quick toy: flat class colours plus noise, a night palette whose cues differ.
DAY = np.array([[90, 90, 90], [240, 240, 240], [60, 130, 60], [200, 40, 40], [30, 30, 40]], np.float32)
NIGHT = np.array([[70, 60, 90], [160, 150, 60], [15, 25, 20], [250, 210, 110], [50, 20, 20]], np.float32)


def toy_scene(rng: np.random.Generator, h: int, w: int, night: bool) -> tuple[np.ndarray, np.ndarray]:
    mask = np.full((h, w), 2, np.uint8)
    horizon = int(h * rng.uniform(0.3, 0.5))
    yy, xx = np.mgrid[0:h, 0:w]
    half = (yy - horizon) / max(1, h - horizon) * w * rng.uniform(0.45, 0.7)
    centre = w / 2 + rng.uniform(-0.15, 0.15) * w
    road = (yy >= horizon) & (np.abs(xx - centre) < half)
    mask[road] = 0
    for side in (-0.33, 0.33):
        mask[road & (np.abs(xx - (centre + side * half)) < 0.6 + 0.03 * half)] = 1
    for _ in range(rng.integers(1, 3)):
        cy, cx = int(rng.uniform(horizon + 3, h * 0.8)), int(rng.uniform(0.15, 0.85) * w)
        s = max(2, int((cy - horizon + 3) * 0.45))
        mask[max(0, cy - s) : cy, max(0, cx - s) : cx + s] = 3
    mask[int(h * rng.uniform(0.85, 0.92)) :] = 4
    image = (NIGHT if night else DAY)[mask] * rng.uniform(0.8, 1.2) + rng.normal(0, 10, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_toy_set(n: int, seed: int, size: tuple[int, int], night: float) -> tuple:
    rng = np.random.default_rng(seed)
    flags = np.zeros(n, bool)
    flags[rng.choice(n, int(round(night * n)), replace=False)] = True
    pairs = [toy_scene(rng, *size, bool(f)) for f in flags]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), flags


def data(args: argparse.Namespace, name: str, n: int, seed: int, night: float) -> tuple:
    if args.quick:
        return make_toy_set(n, seed, args.size, night)
    return make_set(args.data / name, n, seed, args.size, night)


# --------------------------------------------------------------------------- model
def build(args: argparse.Namespace) -> torch.nn.Module:
    from drivelab.seg.models import build_model

    if args.quick:  # the toy's tiny plain U-Net
        return build_model("plain-unet", K, base=8, depth=3)
    return build_model("unet", K, encoder="tu-mobilenetv3_small_050", decoder_channels=[64, 32, 16, 16, 8])


def train(
    args: argparse.Namespace, images: np.ndarray, masks: np.ndarray, steps: int, seed: int
) -> torch.nn.Module:
    from segmentation_models_pytorch.losses import DiceLoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build(args)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    dice = DiceLoss(mode="multiclass", ignore_index=255, from_logits=True)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    y_all = torch.from_numpy(masks.astype(np.int64))
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), 8))
        x, y = x_all[idx], y_all[idx]
        if rng.random() < 0.5:
            x, y = x.flip(3), y.flip(2)
        logits = model(x)
        loss = F.cross_entropy(logits, y, ignore_index=255) + (0 if args.quick else dice(logits, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def probs_of(model: torch.nn.Module, images: np.ndarray, chunk: int = 64) -> np.ndarray:
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
    for i in range(0, len(images), 64):
        f, r, _ = emb(images[i : i + 64], masks[i : i + 64])
        feats.append(f)
        rows += r
    cols = {k: np.array([r[k] for r in rows], np.float64) for k in ("entropy", "margin", "loss")}
    return np.concatenate(feats), cols


# --------------------------------------------------------------------------- 1. active learning
def active_learning(args: argparse.Namespace, pool: tuple, test: tuple) -> dict:
    """Per seed: the mIoU curve and night images labelled of every strategy (merged later)."""
    images, masks, night = pool
    seeds: dict[str, dict] = {}
    for seed in args.al_seeds:
        rng = np.random.default_rng(100 + seed)
        seed_idx = rng.choice(len(images), args.seed_size, replace=False)
        t0 = time.time()
        m0 = train(args, images[seed_idx], masks[seed_idx], args.steps, seed)
        base = miou(m0, *test[:2])
        print(
            f"  seed {seed}: {args.seed_size} random labels, mIoU {base:.4f} ({time.time() - t0:.0f}s)",
            flush=True,
        )
        out = {}
        for strategy in args.strategies:
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
                model = train(args, images[labelled], masks[labelled], args.steps, seed)
                curve.append(miou(model, *test[:2]))
                print(
                    f"  seed {seed} {strategy:9s} round {r + 1}: {len(labelled):4d} labels, "
                    f"{int(night[labelled].sum()):3d} night, mIoU {curve[-1]:.4f} ({time.time() - t0:.0f}s)",
                    flush=True,
                )
            out[strategy] = {"curve": curve, "night": int(night[labelled].sum())}
        seeds[str(seed)] = out
    return {
        "labels": [args.seed_size + r * args.batch for r in range(args.rounds + 1)],
        "seeds": seeds,
        "pool_night": int(night.sum()),
        "pool": len(images),
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


def summarise_al(al: dict) -> dict:
    labels = al["labels"]
    ran = [s for s in STRATEGIES if all(s in v for v in al["seeds"].values())]
    curves = {s: np.array([al["seeds"][k][s]["curve"] for k in al["seeds"]]) for s in ran}
    mean = {s: c.mean(0) for s, c in curves.items()}
    std = {s: c.std(0) for s, c in curves.items()}
    target = float(mean["random"][-1])
    needed = {s: labels_to_reach(labels, mean[s], target) for s in ran}
    best = min((s for s in ran if s != "random"), key=lambda s: needed[s] if needed[s] else 1e9)
    return {
        "labels": labels,
        "n_seeds": len(al["seeds"]),
        "mean": {s: mean[s].tolist() for s in ran},
        "std": {s: std[s].tolist() for s in ran},
        "random_full": target,
        "labels_to_reach_random_full": needed,
        "best": best,
        "best_fraction_of_budget": (needed[best] / labels[-1]) if needed[best] else None,
        "night_labelled": {
            s: float(np.mean([al["seeds"][k][s]["night"] for k in al["seeds"]])) for s in ran
        },
        "pool_night": al["pool_night"],
        "pool": al["pool"],
    }


# --------------------------------------------------------------------------- 2. pruning
def pruning(args: argparse.Namespace, pool: tuple, test: tuple) -> dict:
    images, masks, night = pool
    res: dict[str, list[float]] = {"100%": [], "pruned 50%": [], "random 50%": []}
    kept_night = []
    for seed in range(args.prune_seeds):
        t0 = time.time()
        full = train(args, images, masks, args.prune_steps, seed)
        res["100%"].append(miou(full, *test[:2]))
        feats, cols = embed_pool(full, images, list(masks))
        kept = np.flatnonzero(prune(feats, cols["loss"], 0.5, seed=seed).keep)
        rand = np.random.default_rng(seed).choice(len(images), len(kept), replace=False)
        res["pruned 50%"].append(
            miou(train(args, images[kept], masks[kept], args.prune_steps, seed), *test[:2])
        )
        res["random 50%"].append(
            miou(train(args, images[rand], masks[rand], args.prune_steps, seed), *test[:2])
        )
        kept_night.append((int(night[kept].sum()), int(night[rand].sum()), int(night.sum())))
        print(
            f"  seed {seed} prune: "
            + ", ".join(f"{k} {v[-1]:.4f}" for k, v in res.items())
            + f"; night kept {kept_night[-1][0]} vs random {kept_night[-1][1]} of {kept_night[-1][2]}"
            + f" ({time.time() - t0:.0f}s)",
            flush=True,
        )
    return {"per_seed": res, "night_kept_pruned_random_total": kept_night}


# --------------------------------------------------------------------------- 3. audit
def corrupt(mask: np.ndarray, kind: str) -> np.ndarray | None:
    """Inject one label error of ``kind`` (see the module docstring); None when the mask has no
    place for it."""
    from scipy import ndimage

    h, w = mask.shape
    m = mask.copy()
    if kind == "swap":
        yy, xx = np.arange(h)[:, None], np.arange(w)[None]
        for cls, to in ((2, 0), (0, 2)):
            lab, n = ndimage.label(m == cls)
            if not n:
                continue
            j = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
            ys, xs = np.nonzero(lab == j)
            cy, cx = ys[len(ys) // 2], xs[len(xs) // 2]
            box = (lab == j) & (np.abs(yy - cy) < h / 10.67) & (np.abs(xx - cx) < w / 12.8)
            if box.sum() >= 0.005 * h * w:
                m[box] = to
                return m
        return None
    if kind == "car_as_road":
        lab, n = ndimage.label(m == 3)
        if not n:
            return None
        sizes = np.bincount(lab.ravel())[1:]
        j = int(np.argmax(sizes)) + 1
        if sizes[j - 1] < 0.0015 * h * w:
            return None
        m[lab == j] = 0
        return m
    pal = SCHEMA.palette.astype(np.float32)
    edge = np.zeros_like(m, dtype=bool)
    out = m.copy()
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = np.roll(m, (dy, dx), axis=(0, 1))
        blend = (pal[m] + pal[nb]) / 2
        snapped = np.argmin(((blend[..., None, :] - pal[None, None]) ** 2).sum(-1), axis=-1)
        hit = (nb != m) & (snapped != m) & (snapped != nb)
        out[hit] = snapped[hit]
        edge |= hit
    # the second pixel of the 2-px ramp: grow the band by one pixel into the unchanged side
    grown = ndimage.binary_dilation(edge, iterations=1) & (out == m)
    if grown.any():
        src = ndimage.grey_dilation(np.where(edge, out, 0), size=3)
        out[grown & (src > 0)] = src[grown & (src > 0)]
    return out if (out != m).sum() >= 0.004 * h * w else None


def inject(masks: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, dict[int, str]]:
    rng = np.random.default_rng(seed)
    noisy, corrupted = masks.copy(), {}
    target = int(round(rate * len(masks)))
    for i in rng.permutation(len(masks)):
        if len(corrupted) == target:
            break
        kind = KINDS[len(corrupted) % 3]
        m = corrupt(masks[i], kind)
        if m is not None:
            noisy[i], corrupted[int(i)] = m, kind
    return noisy, corrupted


def audit_probabilities(args: argparse.Namespace) -> dict:
    """The cross-fitted probabilities of the audit set, plain and mirrored: trained here, or read
    back from a ``--save-probs`` file (``--from-probs``: re-score a run without retraining)."""
    if args.from_probs:
        d = np.load(args.from_probs)
        kinds = d["kinds"]
        return {
            "images": d["images"],
            "masks": d["masks"],
            "noisy": d["noisy"],
            "corrupted": {int(i): str(kinds[i]) for i in np.flatnonzero(kinds != "")},
            "probs": d["probs"].astype(np.float32),
            "flipped": d["flipped"].astype(np.float32),
            "fold_miou": [float(v) for v in d["fold_miou"]],
            "folds": int(d["folds"]),
        }
    images, masks, _ = data(args, f"audit{args.audit_seed}", args.audit_n, args.audit_seed, night=0.0)
    noisy, corrupted = inject(masks, 0.1, args.audit_seed)
    n = len(images)
    folds = np.arange(n) % args.audit_folds
    probs = np.zeros((n, K, *args.size), np.float32)
    flipped = np.zeros_like(probs)  # the mirrored pass, flipped back: what `audit --tta` averages in
    fold_miou = []
    for f in range(args.audit_folds):  # cross-fitting: no model scores a mask it was trained on
        t0 = time.time()
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        model = train(args, images[tr], noisy[tr], args.audit_steps, f)
        probs[te] = probs_of(model, images[te])
        flipped[te] = probs_of(model, images[te][:, :, ::-1].copy())[..., ::-1]
        fold_miou.append(miou(model, images[te], masks[te]))
        print(
            f"  fold {f}: trained on {len(tr)}, mIoU {fold_miou[-1]:.4f} on the other half "
            f"({time.time() - t0:.0f}s)",
            flush=True,
        )
    out = {"images": images, "masks": masks, "noisy": noisy, "corrupted": corrupted, "probs": probs,
           "flipped": flipped, "fold_miou": fold_miou, "folds": args.audit_folds}
    if args.save_probs:
        kinds = np.array([corrupted.get(i, "") for i in range(n)])
        np.savez(args.save_probs, images=images, masks=masks, noisy=noisy, kinds=kinds,
                 probs=probs.astype(np.float16), flipped=flipped.astype(np.float16),
                 fold_miou=np.array(fold_miou), folds=args.audit_folds)
    return out


def audit_rankings(probs: np.ndarray, noisy: np.ndarray, corrupted: dict[int, str]) -> tuple[dict, tuple]:
    """Every ranking on the same probabilities: drivelab's (exactly what `drivelab audit`
    computes) and cleanlab's own calls. Returns the rows and what the figure needs."""
    from cleanlab.segmentation.rank import get_label_quality_scores
    from sklearn.metrics import roc_auc_score

    n = len(probs)
    thresholds = ClassThresholds(K)
    softmin = np.zeros(n)
    for i in range(n):
        thresholds.update(self_confidence(probs[i], noisy[i]), noisy[i])
        softmin[i] = softmin_score(probs[i], noisy[i])
    t = thresholds.values
    regions = [disagreement_regions(probs[i], noisy[i], t) for i in range(n)]
    masses = np.stack([pair_mass(r, K) for r in regions])
    region, _ = region_scores(masses, typical_pair_mass(masses))
    ranking = combined_score(softmin, region)
    cl_softmin, _ = get_label_quality_scores(noisy, probs, method="softmin", verbose=False)
    cl_pixels, _ = get_label_quality_scores(noisy, probs, method="num_pixel_issues", verbose=False)
    truth = np.array([i in corrupted for i in range(n)])
    top = int(truth.sum())
    rows = {}
    for name, score in (
        ("cleanlab softmin", cl_softmin),
        ("cleanlab issue pixels", cl_pixels),
        ("drivelab regions only", -region),
        ("drivelab audit (regions + softmin)", ranking),
    ):
        order = np.argsort(score, kind="stable")[:top]
        rows[name] = {
            "precision_at_10pct": float(truth[order].mean()),
            "auroc": float(roc_auc_score(truth, -score)),
            "found_by_kind": {k: int(sum(corrupted.get(int(i)) == k for i in order)) for k in KINDS},
        }
    return rows, (ranking, regions, t, float(np.abs(softmin - cl_softmin).max()))


def audit_bench(args: argparse.Namespace) -> dict:
    from PIL import Image

    from drivelab.io import write_image

    p = audit_probabilities(args)
    images, noisy, corrupted = p["images"], p["noisy"], p["corrupted"]
    tta = (p["probs"] + p["flipped"]) / 2
    rows, (ranking, regions, t, equal) = audit_rankings(tta, noisy, corrupted)
    plain_rows, _ = audit_rankings(p["probs"], noisy, corrupted)
    # the worst three by drivelab's ranking: label blend | suspect pixels and the worst region's box
    strips = []
    for i in np.argsort(ranking, kind="stable")[:3]:
        sus = suspect_pixels(tta[i], noisy[i], t)
        box = regions[i][0].box if regions[i] else None
        strip = overlay_suspects(images[i], SCHEMA.colorize(noisy[i]), sus, box)
        strips.append(np.kron(strip, np.ones((3, 3, 1), np.uint8)))
    if not args.quick:
        write_image(args.images / "engine-audit.png", Image.fromarray(np.concatenate(strips, axis=0)))
    return {
        "n": len(images),
        "folds": p["folds"],
        "corrupted": len(corrupted),
        "injected_by_kind": {k: sum(1 for v in corrupted.values() if v == k) for k in KINDS},
        "fold_miou": p["fold_miou"],
        "softmin_equals_cleanlab": equal,
        "rows": rows,
        "rows_without_tta": plain_rows,
    }


# --------------------------------------------------------------------------- report
def report(r: dict, args: argparse.Namespace) -> None:
    if "active_learning" in r:
        al = summarise_al(r["active_learning"])
        print(
            f"\nactive learning: pool {al['pool']} ({al['pool_night']} night), mean of {al['n_seeds']} seeds"
        )
        print("labels      " + "".join(f"{n:>9d}" for n in al["labels"]) + "   night labelled")
        for s, curve in al["mean"].items():
            print(f"{s:10s}  " + "".join(f"{v:9.4f}" for v in curve) + f"   {al['night_labelled'][s]:.1f}")
        print(
            "std         " + "".join(f"{v:9.4f}" for v in al["std"]["random"]) + "   (random, across seeds)"
        )
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
            + (" MET" if frac and frac <= 0.6 else " MISSED")
        )
        if args.images:
            line_png(
                args.images / "engine-active-learning.png",
                [
                    (s, np.array(al["labels"]), np.array(al["mean"][s]), np.array(al["std"][s]))
                    for s in al["mean"]
                ],
                title=f"Active learning on synth scenes, rare night (mean of {al['n_seeds']} seeds)",
                xlabel="labelled images",
                ylabel="test mIoU (half day, half night)",
                hline=("random at full budget", al["random_full"]),
            )
    if "prune" in r:
        pr = r["prune"]["per_seed"]
        mean = {k: float(np.mean(v)) for k, v in pr.items()}
        std = {k: float(np.std(v)) for k, v in pr.items()}
        print("\nprune: " + ", ".join(f"{k} {mean[k]:.4f}+-{std[k]:.4f}" for k in pr))
        gap, gap_r = (mean["100%"] - mean["pruned 50%"]) * 100, (mean["100%"] - mean["random 50%"]) * 100
        ok = gap <= 2 and gap_r > gap
        print(
            f"  pruned 50% is {gap:.2f} points below 100% (bar <= 2), random 50% is {gap_r:.2f} below"
            + (" MET" if ok else " MISSED")
        )
        print(f"  night kept (pruned, random, pool): {r['prune']['night_kept_pruned_random_total']}")
        if args.images:
            names = list(pr)
            bar_png(
                args.images / "engine-prune.png",
                names,
                np.array([mean[k] for k in names]),
                np.array([std[k] for k in names]),
                title="Training on a pruned half vs all vs a random half",
                ylabel="test mIoU",
            )
    if "audit" in r:
        a = r["audit"]
        print(
            f"\naudit: {a['corrupted']} of {a['n']} masks corrupted {a['injected_by_kind']}; "
            f"{a.get('folds', 2)}-fold "
            "cross-fitted models' "
            f"mIoU {', '.join(f'{v:.3f}' for v in a['fold_miou'])}; drivelab's softmin = cleanlab's to "
            f"{a['softmin_equals_cleanlab']:.1e}"
        )
        for title, key in (("with --tta (the audit default)", "rows"), ("without --tta", "rows_without_tta")):
            if key not in a:
                continue
            print(f"{'ranking, ' + title:46s} {'precision@10%':>14s} {'AUROC':>7s}   found by kind")
            for name, row in a[key].items():
                print(
                    f"{name:46s} {row['precision_at_10pct']:14.3f} {row['auroc']:7.3f}   "
                    f"{row['found_by_kind']}"
                )
        p = a["rows"]["drivelab audit (regions + softmin)"]["precision_at_10pct"]
        print(f"bar (precision@10% >= 0.8): {p:.3f}" + (" MET" if p >= 0.8 else " MISSED"))
    if "seconds" in r:
        print(f"\nthis process: {r['seconds']:.0f}s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the old 32x64 flat-colour toy (1 seed, minutes)")
    p.add_argument("--parts", default="al,prune,audit", help="comma list of al, prune, audit")
    p.add_argument(
        "--al-seeds", default=None, help="active-learning seeds to run, e.g. 0 or 0,1,2 (default 0,1,2)"
    )
    p.add_argument("--steps", type=int, default=None, help="training steps per active-learning model (600)")
    p.add_argument("--batch", type=int, default=20, help="labels bought per active-learning round (20)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma list; random is always run")
    p.add_argument("--prune-steps", type=int, default=None, help="training steps per pruning model (1000)")
    p.add_argument("--audit-steps", type=int, default=None, help="training steps per audit fold (3000)")
    p.add_argument("--audit-n", type=int, default=None, help="masks in the audit set (600)")
    p.add_argument("--audit-seed", type=int, default=8, help="seed of the audit set and its errors")
    p.add_argument("--audit-folds", type=int, default=4, help="cross-fitting folds of the audit (4)")
    p.add_argument("--save-probs", type=Path, default=None, help="save the audit's probabilities (.npz)")
    p.add_argument(
        "--from-probs", type=Path, default=None, help="re-score a --save-probs file (no training)"
    )
    p.add_argument("--images", type=Path, default=ROOT / "docs" / "images", help="where the plots go")
    p.add_argument("--json", type=Path, default=None, help="write this process's results here")
    p.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="report (and plot) from these JSON files"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.add_argument(
        "--data", type=Path, default=None, help="where the synthetic sets go (default: a temp folder)"
    )
    args = p.parse_args()
    if args.merge:
        merged: dict = {}
        for path in args.merge:
            part = json.loads(path.read_text())
            if "active_learning" in part and "active_learning" in merged:
                merged["active_learning"]["seeds"].update(part["active_learning"]["seeds"])
                part = {k: v for k, v in part.items() if k != "active_learning"}
            merged.update({k: v for k, v in part.items() if k not in ("seconds", "config")})
        report(merged, args)
        return
    torch.set_num_threads(args.threads)
    q = args.quick
    args.size = (32, 64) if q else (64, 128)
    args.al_seeds = [int(s) for s in (args.al_seeds or ("0" if q else "0,1,2")).split(",")]
    args.prune_seeds = 1 if q else 2
    args.pool_n, args.test_n = (300, 100) if q else (600, 200)
    args.night = 0.06  # probability of a night scene in the pool: the rare condition
    args.seed_size = 20
    if args.batch < 1 or 80 % args.batch:
        p.error("--batch must divide the 80 labels bought after the seed")
    args.rounds = 80 // args.batch  # a budget of 100 labels however they are bought
    chosen = [s for s in args.strategies.split(",") if s in STRATEGIES and s != "random"]
    args.strategies = ["random", *chosen]
    args.steps = args.steps or (120 if q else 600)
    args.prune_steps = args.prune_steps or (120 if q else 1000)
    args.audit_steps = args.audit_steps or (200 if q else 3000)
    args.audit_n = args.audit_n or (200 if q else 600)
    if q:
        args.images = None  # the toy never overwrites the documented plots
    else:
        args.images.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="drivelab-al-") as tmp:
        args.data = args.data or Path(tmp)
        run(args, parts)


def run(args: argparse.Namespace, parts: set[str]) -> None:
    t0 = time.time()
    results: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if parts & {"al", "prune"}:
        pool = data(args, "pool", args.pool_n, 1, args.night)
        test = data(args, "test", args.test_n, 2, 0.5)
        print(
            f"pool {args.pool_n} ({int(pool[2].sum())} night), "
            f"test {args.test_n} ({int(test[2].sum())} night) "
            f"at {args.size[0]}x{args.size[1]} in {time.time() - t0:.0f}s",
            flush=True,
        )
        if "al" in parts:
            print(f"active learning, seeds {args.al_seeds}, {args.steps} steps per model")
            results["active_learning"] = active_learning(args, pool, test)
        if "prune" in parts:
            print(f"pruning, {args.prune_seeds} seeds, {args.prune_steps} steps per model")
            results["prune"] = pruning(args, pool, test)
    if "audit" in parts:
        print(f"audit, {args.audit_n} masks, {args.audit_steps} steps per fold")
        results["audit"] = audit_bench(args)
    results["seconds"] = time.time() - t0
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
