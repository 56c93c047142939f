"""``drivelab demo``: the main job end to end on a fresh machine, no data, no network.

synthesise a comma10k-layout set -> validate it -> train the default model on the CPU ->
evaluate on held-out synthetic scenes (another seed) -> export to ONNX (verified) -> run it
with onnxruntime on real footage (the shared commaVQ clip when present, else a synthetic clip)
-> one self-contained HTML report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from drivelab import cliutil as cu

CLIP = Path("shared") / "data" / "commavq" / "decoded_segment.mp4"


@dataclass
class DemoPlan:
    """Sizes of each stage; ``quick`` is the seconds-long version the tests run."""

    n: int = 400  # synthetic training images (names ending 9.png are the val split)
    n_heldout: int = 32  # held-out scenes from another seed, for the report's metrics
    size: tuple[int, int] = (128, 256)  # (H, W): the real clip is 256x128
    # Training steps (None: the preset's own). 700 steps of the synth preset take ~3 min on 2 free
    # cores and reach held-out mIoU ~0.85 (benchmarks/train_synth.py has the curve).
    max_steps: int | None = 700
    batch_size: int | None = None
    video_frames: int = 400  # 20 s of the 20 FPS clip
    overrides: dict = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoPlan:
        return cls(n=10, n_heldout=4, size=(64, 128), max_steps=2, batch_size=2, video_frames=8,
                   overrides={"workers": 0, "log_every": 1})


def find_clip(explicit: Path | None = None) -> Path | None:
    """The shared real clip: next to the repo (``../shared``) seen from the cwd or the package."""
    if explicit is not None:
        return explicit
    here = Path.cwd().resolve()
    pkg_repo = Path(__file__).resolve().parents[1]
    for base in (here, here.parent, pkg_repo.parent, *here.parents):
        cand = base / CLIP
        if cand.exists():
            return cand
    return None


def synthetic_clip(reader: Any, path: Path, frames: int, fps: int = 20) -> Path:
    """A clip panning slowly across synthetic scenes, for machines without the real footage."""
    import numpy as np

    from drivelab.video import write_video

    images = [reader[i].image for i in range(min(len(reader), 8))]
    per = max(1, frames // len(images))

    def gen():
        for im in images:
            for k in range(per):
                yield np.roll(im, -k * max(1, im.shape[1] // (4 * per)), axis=1)

    write_video(path, gen(), fps)
    return path


# --------------------------------------------------------------------------- stages
def _train_config(data: Path, runs: Path, plan: DemoPlan) -> Any:
    """The ``synth`` preset with the demo's data, output folder and step budget."""
    from drivelab.seg.config import load_config

    overrides: dict[str, Any] = {"data": str(data), "out": str(runs), "name": "demo",
                                 "size": list(plan.size), **plan.overrides}
    if plan.max_steps is not None:
        overrides["max_steps"] = plan.max_steps
    if plan.batch_size is not None:
        overrides["batch_size"] = plan.batch_size
    return load_config("synth", overrides)


def _evaluate(run: Path, heldout: Path) -> dict[str, float]:
    """Held-out metrics from ``drivelab.seg.evaluate`` (also written under ``<run>/eval/``), in
    drivelab's convention: mIoU, pixel accuracy, mean class accuracy, CE per real pixel, IoU per
    class."""
    from drivelab.seg.evaluate import evaluate

    m = evaluate(run, heldout, progress=False)
    flat = {k: m[k] for k in ("miou", "pixel_acc", "mean_acc", "ce", "n_images")}
    flat.update({f"iou {c}": v for c, v in m["iou"].items()})
    return flat


def _samples(predictor: Any, reader: Any, n: int = 6) -> list[tuple[str, Any]]:
    import numpy as np

    from drivelab.painter import Painter

    painter = Painter(predictor.schema, legend=False)
    items = []
    for i in range(min(n, len(reader))):
        s = reader[i]
        pred = predictor.predict(s.image)
        row = [s.image, painter.overlay(s.image, s.mask) if s.mask is not None else s.image,
               painter.overlay(s.image, pred)]
        items.append((f"{s.name}: image | ground truth | prediction", np.concatenate(row, axis=1)))
    return items


def run_demo(out: Path, plan: DemoPlan, clip: Path | None = None, echo: Any = print) -> Path:
    """Run every stage; returns the path of the HTML report."""
    import pandas as pd

    from drivelab import report as rep
    from drivelab.data import open_dataset
    from drivelab.data.synth import synth_dataset
    from drivelab.data.validate import validate_dataset
    from drivelab.errors import DrivelabError
    from drivelab.seg.inference import Predictor
    from drivelab.seg.onnx import export_onnx
    from drivelab.seg.predict import predict
    from drivelab.seg.trainer import train

    out = Path(out)
    timings: dict[str, float] = {}

    def stage(name: str) -> Any:
        class _T:
            def __enter__(self) -> None:
                echo(f"[demo] {name} ...")
                self.t = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                timings[name] = time.perf_counter() - self.t

        return _T()

    with stage("synthesise"):
        data = synth_dataset("comma10k", out / "data" / "comma10k", n=plan.n, size=plan.size, seed=0)
        heldout = synth_dataset("comma10k", out / "data" / "heldout", n=plan.n_heldout, size=plan.size,
                                seed=1)
    with stage("validate"):
        check = validate_dataset(data)
        echo(f"synthetic comma10k set: {data} ({plan.n} images); validate: {check.summary()}")
        if not check.ok:
            raise DrivelabError(f"the synthetic set does not validate: {check.summary()}", data)
    with stage("train"):
        run = Path(train(_train_config(data, out / "runs", plan)))
    ckpt = run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"
    predictor = Predictor(ckpt)
    reader = open_dataset(heldout)
    with stage("evaluate"):
        metrics = _evaluate(run, heldout)
    with stage("export"):
        exported = export_onnx(ckpt, out / "model.onnx")
        echo(f"exported {exported.summary()}")
    with stage("predict video"):
        clip = find_clip(clip)
        source = "real footage (commaVQ clip)" if clip else "synthetic clip (shared clip not found)"
        if clip is None:
            clip = synthetic_clip(reader, out / "synthetic_clip.mp4", plan.video_frames)
        summary = predict(exported.path, clip, out / "predict", max_frames=plan.video_frames,
                          side_by_side=True, progress=True)
        echo(summary.line())

    with stage("report"):
        r = rep.Report("drivelab demo", f"synthetic comma10k -> train -> evaluate -> {source}")
        stages = [{"stage": k, "seconds": f"{v:.1f}"} for k, v in timings.items()]
        r.section("Stages", rep.metrics_table(stages))
        r.section("Dataset", rep.preformatted(f"{data}: {plan.n} images {plan.size[1]}x{plan.size[0]}, "
                                              f"validate: {check.summary()}\nheld-out (seed 1): {heldout}"))
        r.section("Held-out metrics", rep.metrics_table(metrics))
        if (run / "metrics.csv").exists():
            cols = pd.read_csv(run / "metrics.csv", nrows=0).columns
            wanted = ["train_loss", "loss", "miou", "pixel_acc", *[c for c in cols if c.startswith("iou_")]]
            r.section("Training curves (val = the training set's 9.png split)",
                      r.curves(run / "metrics.csv", x="step", columns=[c for c in wanted if c in cols]))
        r.section("Held-out samples", rep.image_grid(_samples(predictor, reader), columns=1, fmt="PNG"))
        videos = [rep.video(p, f"{source}: overlay") for p in summary.outputs.get("video", [])]
        videos += [rep.video(p, "frame | prediction") for p in summary.outputs.get("side_by_side", [])]
        r.section("Video", *videos, rep.preformatted(f"{clip}\n{summary.line()}\nONNX (onnxruntime): "
                                                     f"{exported.summary()}"))
        stats = summary.outputs.get("stats", [])
        if stats:
            share = pd.read_csv(stats[0]).filter(like="share_").mean()
            r.section("Mean pixel share on the clip",
                      rep.metrics_table({k.removeprefix("share_"): float(v) for k, v in share.items()}))
        path = r.write(out / "report.html")
    return path


def demo(
    out: Path = cu.out_option(Path("drivelab-demo"), "Folder for everything the demo writes."),
    quick: bool = typer.Option(False, "--quick", help="A seconds-long run (tiny set, 2 training steps)."),
    n: int | None = typer.Option(None, help="Number of synthetic training images."),
    steps: int | None = typer.Option(None, help="Training steps (default: ~3 minutes on 2 CPU cores)."),
    video: Path | None = typer.Option(None, help="Video to run the model on (default: the shared "
                                                 "commaVQ clip when found, else a synthetic clip)."),
    frames: int | None = typer.Option(None, help="Frames of the video to process."),
) -> None:
    """Run the whole loop on synthetic data: synthesise, validate, train, evaluate, predict, report."""
    plan = DemoPlan.quick() if quick else DemoPlan()
    if n is not None:
        plan.n = n
    if steps is not None:
        plan.max_steps = steps
    if frames is not None:
        plan.video_frames = frames
    path = run_demo(out, plan, clip=video, echo=cu.info)
    cu.result(f"report: {path.resolve()}")


def register(app: typer.Typer) -> None:
    app.command("demo", rich_help_panel=cu.START)(demo)
