"""drivelab's instance model and the YOLO-seg peer, back to back on synthetic totes, on the CPU.

Same data (``--train`` synthetic totes for training, ``--val`` held-out totes of another seed,
``drivelab.data.synth`` "coco" at ``--size``), the same wall-clock training budget
(``--minutes`` each), the same torch thread count (``--threads``), data loading in the training
process for both (no loader workers), and the final weights of each scored by the same
pycocotools COCOeval call and the same over-/under-segmentation analysis
(``drivelab.seg.instance.evaluate.analyze``). Neither looks at the held-out totes while
training (no model selection on them).

drivelab trains the ``totes-synth`` preset through the shared trainer (``drivelab train``); the
number of steps is calibrated so its cosine schedule fits the budget, and ``max_minutes`` stops
it at the budget if the machine gets slower. The peer is ultralytics YOLO-seg built from its
yaml with random init (``--peer``, default yolo11n-seg), trained with ``model.train(time=...)``
(its own time-budgeted schedule) and its default augmentation; it runs only when ultralytics is
installed (AGPL: never a drivelab dependency), offline: network calls raise in its process.

Inference speed is end to end from a uint8 image to thresholded masks, boxes and scores, one
image per call, the best of ``--speed-passes`` passes over the held-out totes: once at the
settings the AP was measured with (score >= ``--conf``, at most 100 detections) and once at a
deployment threshold (score >= 0.25, ultralytics' predict default). Both sides are timed in
PyTorch and in onnxruntime: drivelab's ``backend onnxruntime`` (its network exported and
checked on the fly) and the peer's own ``export(format="onnx")`` run by its ONNX predictor,
each with one intra-op thread per ``--threads``; the onnxruntime pass's mask AP is scored too.

    python benchmarks/instance_synth.py [--minutes 8] [--train 256] [--val 32] [--size 128]
        [--threads 1] [--peer yolo11n-seg] [--which both|drivelab|peer] [--out DIR] [--json PATH]
        [--second-val 256] [--second-seed 3]
    python benchmarks/instance_synth.py --out DIR --rescore --second-seed 4   # kept weights, new totes

Both final models are also scored on a second, larger held-out set of another seed
(``--second-val`` totes, seed ``--second-seed``): 32 totes hold ~180 objects, so a count of 4 or
5 merges is within noise; 256 totes hold ~1,500. ``--rescore`` scores the weights a run kept in
``--out`` again (both sets and the speed rows) without training.

Each side runs in its own process (ultralytics changes process-wide OpenCV and torch settings).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEED_CONF = 0.25


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_sets(out: Path, n_train: int, n_val: int, size: int) -> tuple[Path, Path]:
    from drivelab.data.synth import synth_dataset

    train = out / "train"
    val = out / "val"
    if not (train / "synth.json").exists():
        synth_dataset("coco", train, n=n_train, size=(size, size), seed=1, split="train")
    if not (val / "synth.json").exists():
        synth_dataset("coco", val, n=n_val, size=(size, size), seed=2, split="val")
    return train, val


def second_set(out: Path, n: int, seed: int, size: int) -> Path | None:
    """The larger held-out set of another seed (``--second-val``), scored with the same weights."""
    from drivelab.data.synth import synth_dataset

    if n <= 0:
        return None
    root = out / f"val2_{n}_{seed}"
    if not (root / "synth.json").exists():
        synth_dataset("coco", root, n=n, size=(size, size), seed=seed, split="val")
    return root


def val_reader(val_root: Path):
    from drivelab.data import open_dataset
    from drivelab.seg.instance.evaluate import split_reader

    return split_reader(open_dataset(val_root), "val")[0]


def score(reader, results: list[dict]) -> dict:
    """The one scoring call both sides go through: COCOeval (mask and box) + over/under."""
    from drivelab.seg.instance.evaluate import analyze
    from drivelab.seg.instance.overunder import OverUnderOptions

    metrics, _, _ = analyze(reader, "val", results, OverUnderOptions())
    return metrics


def images_per_s(predict, images: list[np.ndarray], passes: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process) of
    ``predict(image)`` over ``images``, each the best of ``passes`` passes. On a shared machine
    the wall clock includes time other processes took; CPU seconds mostly do not."""
    predict(images[0])  # warm-up (allocations, lazy init)
    wall = cpu = float("inf")
    for _ in range(max(1, passes)):
        t0, c0 = time.perf_counter(), time.process_time()
        for im in images:
            predict(im)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return len(images) / wall, len(images) / cpu


def evaluate_side(args: argparse.Namespace, predict_at, to_results, val_root: Path) -> dict:
    """Both sides the same way: COCO results from ``predict_at(args.conf, "torch")`` on the
    held-out totes (and on the ``--second-val`` set when there is one), scored by ``score``; then
    the speed rows on the held-out totes, in PyTorch and in onnxruntime (each side's own ONNX
    export, one intra-op thread), whose mask AP is scored too. ``predict_at(conf, runtime)`` ->
    ``predict(image)``; ``to_results(prediction, image_id)`` -> COCO result dicts."""
    def scored(reader, images: list[np.ndarray], runtime: str = "torch") -> dict:
        predict, results = predict_at(args.conf, runtime), []
        for im, it in zip(images, reader.items, strict=True):
            results += to_results(predict(im), it.meta["image_id"])
        return score(reader, results)

    reader = val_reader(val_root)
    images = [reader.load_image(it) for it in reader.items]  # scored, then timed
    found = {"metrics": scored(reader, images), "metrics_ort": scored(reader, images, "onnxruntime")}
    second = second_set(args.out, args.second_val, args.second_seed, args.size)
    if second is not None:
        reader2 = val_reader(second)
        found["metrics_second"] = scored(reader2, [reader2.load_image(it) for it in reader2.items])
    for runtime, tag in (("torch", ""), ("onnxruntime", "_ort")):
        ips, ips_cpu = images_per_s(predict_at(args.conf, runtime), images, args.speed_passes)
        ips_deploy, ips_deploy_cpu = images_per_s(predict_at(SPEED_CONF, runtime), images, args.speed_passes)
        found |= {
            f"images_per_s{tag}": ips,
            f"images_per_s{tag}_deploy": ips_deploy,
            f"images_per_cpu_s{tag}": ips_cpu,
            f"images_per_cpu_s{tag}_deploy": ips_deploy_cpu,
        }
    return found


def rescored(args: argparse.Namespace, side: str, evaluated: dict) -> dict:
    """``--rescore``: the training rows of the kept run's side JSON with new scores."""
    kept = args.out / f"{side}.json"
    if not kept.exists():
        raise SystemExit(f"--rescore: {kept} is missing (run the benchmark with --out {args.out} first)")
    return {**json.loads(kept.read_text()), **evaluated}


# --------------------------------------------------------------------------- drivelab
def calibrate(task, cfg, schema, steps: int = 8) -> float:
    """Seconds per optimizer step on this CPU now: the mean of a few real training steps after
    the first (the mean, not the median: a shared machine's slow steps count too)."""
    import statistics

    import torch

    model = task.build_model(cfg, schema).train()
    train_ds, _ = task.datasets(cfg, tuple(cfg.size))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    b = cfg.batch_size
    for s in range(steps):
        batch = task.collate([train_ds[(i % len(train_ds), s)] for i in range(s * b, (s + 1) * b)])
        t0 = time.perf_counter()
        task.loss(model, batch, torch.device("cpu")).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return statistics.mean(times[1:])


def run_drivelab(args: argparse.Namespace, train_root: Path, val_root: Path, out: Path) -> dict:
    import pandas as pd
    import torch

    from drivelab.seg.config import load_config
    from drivelab.seg.instance.evaluate import load_instance_model
    from drivelab.seg.instance.infer import predict_images, to_coco_results
    from drivelab.seg.instance.model import count_parameters
    from drivelab.seg.tasks import get_task
    from drivelab.seg.trainer import train

    torch.set_num_threads(args.threads)
    run = out / "runs" / "drivelab"
    if not args.rescore:
        base = [f"data={train_root}", f"val_data={val_root}", f"out={out / 'runs'}", "name=drivelab",
                f"size=[{args.size}, {args.size}]", *args.override]
        cfg = load_config(args.preset, base)
        task = get_task("instance")
        schema = task.schema(cfg)
        per_step = calibrate(task, cfg, schema)
        budget = args.minutes * 60
        # ~3% for data loading and the final validation, which the calibration does not see
        steps = max(10, int(budget / (per_step * 1.03)))
        log(f"drivelab: calibration {per_step:.3f} s/step -> max_steps={steps}")
        cfg = load_config(args.preset, base + [f"max_steps={steps}", f"eval_every={steps}",
                                               f"max_minutes={args.minutes:.3f}"])
        t0 = time.perf_counter()
        run = train(cfg, progress=not args.no_progress)
        train_s = time.perf_counter() - t0
        done = int(pd.read_csv(run / "metrics.csv")["step"].max())

    model, schema, ckpt = load_instance_model(run / "last.pt")

    def predict_at(conf: float, runtime: str):
        model.score_thresh, model.backend = conf, runtime
        return lambda im: predict_images(model, [im])[0]

    def to_results(pred, image_id: int) -> list[dict]:
        return to_coco_results(pred, image_id, model.category_ids)

    evaluated = evaluate_side(args, predict_at, to_results, val_root)
    if args.rescore:
        return rescored(args, "drivelab", evaluated)
    spec = ckpt["model_spec"]
    return {
        "name": f"drivelab {spec['name']} {spec['backbone']}",
        "params": count_parameters(model),
        "train_s": train_s,
        "steps": done,
        "images_seen": done * cfg.batch_size,
        **evaluated,
    }


# --------------------------------------------------------------------------- peer
def offline_guard() -> None:
    """Make any network use in this process an error (the peer must not fetch fonts or weights)."""
    import socket

    def refuse(*a, **k):
        raise RuntimeError(f"network call blocked in the benchmark: {a[:2]}")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.getaddrinfo = refuse  # type: ignore[assignment]


def coco_to_yolo(src: Path, split: str, dst: Path) -> None:
    """A COCO split (polygons or RLE) -> YOLO-seg labels: each object's outer contours, several
    parts joined with ultralytics' own ``merge_multi_segment`` (how its converter joins them)."""
    import cv2
    from pycocotools import mask as mask_utils
    from ultralytics.data.converter import merge_multi_segment

    data = json.loads((src / "annotations" / f"{split}.json").read_text())
    (dst / "images" / split).mkdir(parents=True, exist_ok=True)
    (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a)
    for im in data["images"]:
        h, w = im["height"], im["width"]
        link = dst / "images" / split / im["file_name"]
        if not link.exists():
            link.symlink_to((src / "images" / im["file_name"]).resolve())
        lines = []
        for a in by_image.get(im["id"], []):
            seg = a["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
            m = mask_utils.decode(rle)
            parts = [c.reshape(-1) for c in cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
                     if len(c) >= 3]
            if not parts:
                continue
            pts = (np.concatenate(merge_multi_segment([p.tolist() for p in parts]), 0) if len(parts) > 1
                   else parts[0].reshape(-1, 2))
            pts = pts / np.array([w, h], np.float64)
            lines.append(f"{a['category_id'] - 1} " + " ".join(f"{v:.6f}" for v in pts.reshape(-1)))
        (dst / "labels" / split / (Path(im["file_name"]).stem + ".txt")).write_text("\n".join(lines) + "\n")


def run_peer(args: argparse.Namespace, train_root: Path, val_root: Path, out: Path) -> dict:
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(out / "yolo_config")
    offline_guard()
    import torch

    torch.set_num_threads(args.threads)
    import ultralytics
    import ultralytics.utils.torch_utils as yolo_torch
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    from drivelab.seg.instance.infer import encode_masks

    SETTINGS.update({"sync": False})  # no analytics
    yolo_torch.NUM_THREADS = args.threads  # ultralytics resets torch threads to its own count on CPU
    root = out / "yolo"
    coco_to_yolo(train_root, "train", root)
    coco_to_yolo(val_root, "val", root)
    names = json.loads((train_root / "annotations" / "train.json").read_text())["categories"]
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n"
        + "".join(f"  {c['id'] - 1}: {c['name']}\n" for c in names)
    )
    weights = out / "yolo_runs" / "peer" / "weights" / "last.pt"
    if not args.rescore:
        model = YOLO(f"{args.peer}.yaml")  # architecture only: random init, nothing downloaded
        t0 = time.perf_counter()
        model.train(data=str(root / "data.yaml"), imgsz=args.size, time=args.minutes / 60, epochs=1000,
                    batch=16, workers=0, device="cpu", pretrained=False, amp=False, plots=False, val=False,
                    project=str(out / "yolo_runs"), name="peer", exist_ok=True, verbose=False, seed=0)
        train_s = time.perf_counter() - t0
        trainer = model.trainer
        weights = Path(trainer.last)
    peer = YOLO(str(weights))
    cat_ids = [c["id"] for c in names]

    onnx_peer = []  # the peer's own ONNX export, made the first time it is asked for

    def onnx_model():
        if not onnx_peer:
            import onnxruntime as ort

            path = peer.export(format="onnx", imgsz=args.size, simplify=False, dynamic=False, device="cpu")
            m = YOLO(path, task="segment")
            blank = np.zeros((args.size, args.size, 3), np.uint8)
            m.predict(blank, imgsz=args.size, device="cpu", verbose=False)  # builds its predictor
            # ultralytics' session uses every core; give it the thread count drivelab's gets
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            cpu = ["CPUExecutionProvider"]
            m.predictor.model.backend.session = ort.InferenceSession(path, so, providers=cpu)
            onnx_peer.append(m)
        return onnx_peer[0]

    def predict_at(conf: float, runtime: str):
        model = peer if runtime == "torch" else onnx_model()

        def predict(im: np.ndarray):
            r = model.predict(im[..., ::-1], imgsz=args.size, conf=conf, iou=0.7, max_det=100,
                              retina_masks=True, device="cpu", verbose=False)[0]
            if r.masks is None:
                masks = np.zeros((0, *im.shape[:2]), bool)
            else:
                masks = r.masks.data.numpy() > 0.5
            return masks, r.boxes.xyxy.numpy(), r.boxes.cls.numpy().astype(int), r.boxes.conf.numpy()
        return predict

    def to_results(pred, image_id: int) -> list[dict]:
        masks, boxes, cls, conf = pred
        results = []
        for rle, b, c, s in zip(encode_masks(masks), boxes, cls, conf, strict=True):
            x1, y1, x2, y2 = (float(v) for v in b)
            results.append({"image_id": int(image_id), "category_id": int(cat_ids[c]), "segmentation": rle,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
        return results

    evaluated = evaluate_side(args, predict_at, to_results, val_root)
    if args.rescore:
        return rescored(args, "peer", evaluated)
    epochs = int(trainer.epoch) + 1
    return {
        "name": f"ultralytics {ultralytics.__version__} {args.peer} (yaml, random init)",
        "params": sum(p.numel() for p in peer.model.parameters()),
        "train_s": train_s,
        "steps": epochs * len(trainer.train_loader),
        "images_seen": epochs * len(trainer.train_loader) * 16,
        **evaluated,
    }


# --------------------------------------------------------------------------- table
ROWS = [
    ("mask AP", lambda r: r["metrics"]["mask_ap"], "{:.3f}", "max"),
    ("mask AP50", lambda r: r["metrics"]["mask_ap50"], "{:.3f}", "max"),
    ("mask AP75", lambda r: r["metrics"]["mask_ap75"], "{:.3f}", "max"),
    ("box AP", lambda r: r["metrics"]["box_ap"], "{:.3f}", "max"),
    ("predictions (score >= 0.5)", lambda r: r["metrics"]["pred_instances"], "{}", None),
    ("under-segmenting predictions", lambda r: r["metrics"]["under_instances"], "{}", "min"),
    ("  in images", lambda r: r["metrics"]["under_images"], "{}", "min"),
    ("over-segmented objects", lambda r: r["metrics"]["over_instances"], "{}", "min"),
    ("  in images", lambda r: r["metrics"]["over_images"], "{}", "min"),
    ("CPU images/s, PyTorch (AP settings)", lambda r: r["images_per_s"], "{:.1f}", "max"),
    (f"CPU images/s, PyTorch (score >= {SPEED_CONF})", lambda r: r["images_per_s_deploy"], "{:.1f}", "max"),
    ("images per CPU second, PyTorch (AP settings)", lambda r: r["images_per_cpu_s"], "{:.1f}", "max"),
    (f"images per CPU second, PyTorch (score >= {SPEED_CONF})", lambda r: r["images_per_cpu_s_deploy"],
     "{:.1f}", "max"),
    ("CPU images/s, onnxruntime (AP settings)", lambda r: r["images_per_s_ort"], "{:.1f}", "max"),
    (f"CPU images/s, onnxruntime (score >= {SPEED_CONF})", lambda r: r["images_per_s_ort_deploy"], "{:.1f}",
     "max"),
    ("  onnxruntime: mask AP", lambda r: r["metrics_ort"]["mask_ap"], "{:.3f}", "max"),
    ("parameters", lambda r: r["params"] / 1e6, "{:.2f}M", None),
    ("training minutes", lambda r: r["train_s"] / 60, "{:.1f}", None),
    ("training images seen", lambda r: r["images_seen"], "{}", None),
]


# The same weights on the --second-val set (shown when every side has it).
SECOND_ROWS = [
    ("second held-out set: mask AP", lambda r: r["metrics_second"]["mask_ap"], "{:.3f}", "max"),
    ("  box AP", lambda r: r["metrics_second"]["box_ap"], "{:.3f}", "max"),
    ("  predictions (score >= 0.5)", lambda r: r["metrics_second"]["pred_instances"], "{}", None),
    ("  under-segmenting predictions", lambda r: r["metrics_second"]["under_instances"], "{}", "min"),
    ("  over-segmented objects", lambda r: r["metrics_second"]["over_instances"], "{}", "min"),
]


def table(sides: dict) -> str:
    keys = list(sides)
    lines = ["| | " + " | ".join(sides[k]["name"] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    speed = next(i for i, row in enumerate(ROWS) if row[0].startswith("CPU"))
    both = all("metrics_second" in v for v in sides.values())
    rows = ROWS[:speed] + (SECOND_ROWS if both else []) + ROWS[speed:]
    for label, get, fmt, _ in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(get(sides[k])) for k in keys) + " |")
    return "\n".join(lines)


def verdict(sides: dict) -> list[str]:
    if set(sides) != {"drivelab", "peer"}:
        return []
    d, p = sides["drivelab"], sides["peer"]
    dm, pm = d["metrics"], p["metrics"]
    out = []
    checks = [
        ("mask AP", dm["mask_ap"], pm["mask_ap"], True),
        ("CPU images/s, PyTorch (AP settings)", d["images_per_s"], p["images_per_s"], True),
        (f"CPU images/s, PyTorch (score >= {SPEED_CONF})", d["images_per_s_deploy"], p["images_per_s_deploy"],
         True),
        ("images per CPU second, PyTorch (AP settings)", d["images_per_cpu_s"], p["images_per_cpu_s"], True),
        ("CPU images/s, onnxruntime (AP settings)", d["images_per_s_ort"], p["images_per_s_ort"], True),
        (f"CPU images/s, onnxruntime (score >= {SPEED_CONF})", d["images_per_s_ort_deploy"],
         p["images_per_s_ort_deploy"], True),
        ("onnxruntime: mask AP", d["metrics_ort"]["mask_ap"], p["metrics_ort"]["mask_ap"], True),
        ("under-segmenting predictions", dm["under_instances"], pm["under_instances"], False),
        ("over-segmented objects", dm["over_instances"], pm["over_instances"], False),
    ]
    if "metrics_second" in d and "metrics_second" in p:
        d2, p2 = d["metrics_second"], p["metrics_second"]
        checks += [
            ("second set: mask AP", d2["mask_ap"], p2["mask_ap"], True),
            ("second set: under-segmenting predictions", d2["under_instances"], p2["under_instances"], False),
            ("second set: over-segmented objects", d2["over_instances"], p2["over_instances"], False),
        ]
    for name, a, b, larger in checks:
        ok = a >= b if larger else a <= b
        out.append(f"{name}: drivelab {a:.4g} vs peer {b:.4g}: {'met' if ok else 'MISSED'}"
                   + ("" if ok else f" by {abs(a - b):.3g}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget of each side")
    ap.add_argument("--train", type=int, default=256, help="training totes")
    ap.add_argument("--val", type=int, default=32, help="held-out totes")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    ap.add_argument("--conf", type=float, default=0.001, help="score threshold of the AP pass (both sides)")
    ap.add_argument("--speed-passes", type=int, default=3)
    ap.add_argument("--preset", default="totes-synth", help="drivelab training preset")
    ap.add_argument("--override", nargs="*", default=[], help="drivelab config overrides key=value")
    ap.add_argument("--peer", default="yolo11n-seg", help="ultralytics model yaml (without .yaml)")
    ap.add_argument("--which", choices=("both", "drivelab", "peer"), default="both")
    ap.add_argument("--out", "-o", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--side-json", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--second-val", type=int, default=256,
                    help="totes in a second, larger held-out set of another seed (0: none)")
    ap.add_argument("--second-seed", type=int, default=3, help="seed of the second held-out set")
    ap.add_argument("--rescore", action="store_true",
                    help="score the weights an earlier run kept in --out again (no training)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.rescore and not args.out:
        ap.error("--rescore needs --out: the folder of the run whose weights are scored again")
    out = args.out or Path(tempfile.mkdtemp(prefix="instance_synth_"))
    train_root, val_root = make_sets(out, args.train, args.val, args.size)

    if args.side_json:  # a child process: one side, result to --side-json
        from drivelab.io import write_json

        run = run_drivelab if args.which == "drivelab" else run_peer
        write_json(args.side_json, run(args, train_root, val_root, out))
        return

    wanted = ["drivelab", "peer"] if args.which == "both" else [args.which]
    if "peer" in wanted:
        import importlib.util

        if importlib.util.find_spec("ultralytics") is None:
            log("ultralytics is not installed: the peer row is skipped (pip install ultralytics)")
            wanted.remove("peer")
    load = os.getloadavg()
    log(f"data: {args.train} train / {args.val} held-out totes at {args.size}x{args.size}; out {out}; "
        f"load average before: {load[0]:.2f}")
    sides = {}
    for side in wanted:
        side_json = out / f"{side}.json"
        cmd = [sys.executable, __file__, "--which", side, "--side-json", str(side_json), "--out", str(out),
               "--minutes", str(args.minutes), "--train", str(args.train), "--val", str(args.val),
               "--size", str(args.size), "--threads", str(args.threads), "--conf", str(args.conf),
               "--speed-passes", str(args.speed_passes), "--preset", args.preset, "--peer", args.peer,
               "--second-val", str(args.second_val), "--second-seed", str(args.second_seed)]
        if args.rescore:
            cmd.append("--rescore")
        if args.override:
            cmd += ["--override", *args.override]
        if args.no_progress:
            cmd.append("--no-progress")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        log(f"--- {side}")
        # the child's output (ultralytics logs to stdout) goes to stderr: stdout is the table
        subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
        sides[side] = json.loads(side_json.read_text())
        sides[side]["load_after"] = os.getloadavg()[0]
    print(table(sides))
    for line in verdict(sides):
        print(line)
    after = ", ".join(f"{k} {v['load_after']:.2f}" for k, v in sides.items())
    print(f"load average (1 min) before: {load[0]:.2f}, after each side: {after}; "
          f"{os.cpu_count()} CPUs; GPU row: not measured (CPU benchmark)")
    if args.json:
        from drivelab.io import write_json

        write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "sides": sides})


if __name__ == "__main__":
    main()
