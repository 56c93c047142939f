"""``drivelab predict``: a checkpoint on images, folders, globs and videos, with pictures out.

``predict`` hands a checkpoint to its task's predictor (the task map); this module is the
semantic one. Per image (flags pick which): index mask as a palette PNG (``masks/``), colour map
(``color/``), overlay with a class legend (``overlay/``), and one row of per-class pixel shares
in ``pixel_share.csv``; ``predict.json`` records the schema and that masks hold train ids, so
``drivelab evaluate`` can score the folder. Per video: an H.264 overlay MP4 at the source frame
rate, optionally a side-by-side MP4 (frame | colour map) and a GIF preview, and a per-frame
pixel-share CSV. Decoding, the model and encoding overlap in threads (``drivelab.seg.pipeline``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import read_rgb, write_image, write_json, write_png, write_table
from drivelab.painter import OPACITY, Painter
from drivelab.schema import ClassSchema, get_schema
from drivelab.seg.inputs import Inputs, resolve_inputs
from drivelab.seg.pipeline import OrderedWriter, PredictSummary, background, batches
from drivelab.video import VideoReader, VideoWriter, write_gif

PREDICTIONS_INFO = "predict.json"  # beside masks/: what the PNGs hold (see drivelab.seg.evaluate)


@dataclass
class PredictOptions:
    """What ``predict`` writes and how it runs (the CLI flags map one to one)."""

    mask: bool = True  # index mask, palette PNG
    color: bool = False  # colour map PNG
    overlay: bool = True  # overlay JPEG for images / overlay MP4 for videos
    opacity: float = OPACITY  # of the class colours in overlays
    legend: bool = True  # class legend drawn on overlays
    stats: bool = True  # per-class pixel share CSV
    side_by_side: bool = False  # videos: frame | colour map MP4
    gif: bool = False  # videos: GIF preview
    gif_frames: int = 80  # at most this many frames in the GIF (evenly subsampled)
    save_frames: bool = False  # videos: also write the per-image outputs for every frame
    batch_size: int = 8
    max_frames: int | None = None  # per video
    fps: float | None = None  # frame rate of raw .hevc/.h264 streams (they carry none)
    palette: str | None = None  # schema name to colour with; must match the checkpoint's classes
    device: str = "auto"
    backend: str = "torch"  # torch | onnxruntime
    precision: str = "auto"
    compile: bool = False
    threads: int | None = None
    progress: bool = True
    score_thresh: float | None = None  # instance models only
    ray: Any = None  # drivelab.cluster.RayOptions: run on a Ray cluster (same files as a local run)


def _warn(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {msg}", file=sys.stderr)


def pixel_share(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the image's pixels predicted as each class."""
    return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes] / mask.size


# --------------------------------------------------------------------------- pipeline
def check_palette(schema: ClassSchema, palette: str | None, source: str | Path) -> ClassSchema:
    """The schema to colour with: ``palette`` if it matches the checkpoint's classes, else an error."""
    if palette is None:
        return schema
    try:
        wanted = get_schema(palette)
    except ValueError as e:
        raise DrivelabError(str(e)) from None
    if wanted.num_classes != schema.num_classes or [n.lower() for n in wanted.names] != [
            n.lower() for n in schema.names]:
        raise DrivelabError(
            f"checkpoint predicts {schema.num_classes} classes ({', '.join(schema.names)}) but palette "
            f"{palette!r} has {wanted.num_classes} ({', '.join(wanted.names)})", source)
    return wanted


class _Run:
    """State of one predict call: predictor, painter, outputs and the summary."""

    def __init__(self, predictor: Any, painter: Painter, out: Path, opts: PredictOptions) -> None:
        self.predictor, self.painter, self.out, self.opts = predictor, painter, out, opts
        self.summary = PredictSummary(out=out)
        self.k = painter.schema.num_classes
        self.bar: Any = None

    # -- per-image outputs (images, and video frames with save_frames) --
    def write_image_outputs(self, name: str, image: np.ndarray, mask: np.ndarray, root: Path) -> None:
        o = self.opts
        if o.mask:
            write_png(root / "masks" / f"{name}.png", mask, palette=self.painter.lut)
        if o.color:
            write_png(root / "color" / f"{name}.png", self.painter.color(mask))
        if o.overlay:
            from PIL import Image

            write_image(root / "overlay" / f"{name}.jpg", Image.fromarray(self.painter.overlay(image, mask)),
                        quality=90)

    def images(self, items: list[tuple[Path, str]]) -> None:
        rows: list[dict] = []

        def load() -> Iterator[tuple[str, Path, np.ndarray | None, str]]:
            for path, name in items:
                try:
                    yield name, path, read_rgb(path), ""
                except DrivelabError as e:
                    yield name, path, None, str(e)

        def write(job: tuple[str, np.ndarray, np.ndarray]) -> None:
            self.write_image_outputs(*job, root=self.out)

        writer = OrderedWriter(write, maxsize=4 * self.opts.batch_size)
        try:
            for batch in batches(background(load, 2 * self.opts.batch_size), self.opts.batch_size):
                good = []
                for name, path, img, err in batch:
                    if img is None:
                        _warn(f"skipping unreadable image {err}")
                        self.summary.skipped.append((str(path), err))
                    else:
                        good.append((name, img))
                masks = self.predictor.predict_batch([img for _, img in good]) if good else []
                for (name, img), mask in zip(good, masks, strict=True):
                    writer.put((name, img, mask))
                    if self.opts.stats:
                        rows.append({"name": name, **self._share_cols(mask)})
                self.summary.images += len(good)
                self.summary.frames += len(good)
                self.bar.update(len(batch))
        finally:
            writer.close()
        for kind in ("mask", "color", "overlay"):
            if getattr(self.opts, kind):
                folder = {"mask": "masks"}.get(kind, kind)
                self.summary.add(kind, self.out / folder)
        if self.opts.stats and rows:
            self._write_stats(self.out / "pixel_share.csv", rows)

    def _share_cols(self, mask: np.ndarray) -> dict[str, float]:
        share = pixel_share(mask, self.k)
        names = self.painter.schema.names
        return {f"share_{n}": round(float(s), 6) for n, s in zip(names, share, strict=True)}

    def _write_stats(self, path: Path, rows: list[dict]) -> None:
        import pandas as pd

        write_table(path, pd.DataFrame(rows))
        self.summary.add("stats", path)

    def video(self, path: Path) -> None:
        o = self.opts
        reader = VideoReader(path, max_frames=o.max_frames, fps=o.fps)  # opens now: errors before work
        info = reader.info
        stem = path.stem
        overlay_w = VideoWriter(self.out / f"{stem}_overlay.mp4", info.fps) if o.overlay else None
        sbs_w = VideoWriter(self.out / f"{stem}_side_by_side.mp4", info.fps) if o.side_by_side else None
        total = min(x for x in (info.frames, o.max_frames) if x) if (info.frames or o.max_frames) else None
        gif_every = max(1, -(-(total or o.gif_frames) // o.gif_frames))
        gif_frames: list[np.ndarray] = []
        rows: list[dict] = []
        frames_root = self.out / f"{stem}_frames"

        def encode(job: tuple[int, np.ndarray, np.ndarray]) -> None:
            i, frame, mask = job
            over = self.painter.overlay(frame, mask) if (overlay_w or o.gif) else None
            if overlay_w:
                overlay_w.write(over)
            if sbs_w:
                sbs_w.write(self.painter.side_by_side(frame, mask))
            if o.gif and i % gif_every == 0 and len(gif_frames) < o.gif_frames:
                gif_frames.append(over)
            if o.save_frames:
                self.write_image_outputs(f"{i:06d}", frame, mask, root=frames_root)
            if o.stats:
                rows.append({"frame": i, "time_s": round(i / float(info.fps), 4), **self._share_cols(mask)})

        writer = OrderedWriter(encode, maxsize=4 * o.batch_size)
        n = 0
        ok = False
        try:
            with reader:
                for batch in batches(background(lambda: iter(reader), 2 * o.batch_size), o.batch_size):
                    for frame, mask in zip(batch, self.predictor.predict_batch(batch), strict=True):
                        writer.put((n, frame, mask))
                        n += 1
                    self.bar.update(len(batch))
            writer.close()
            ok = True
        finally:
            if not ok:
                writer.close()
                for w in (overlay_w, sbs_w):
                    if w:
                        w.abort()
        self.summary.frames += n
        self.summary.videos += 1
        if reader.stopped:
            msg = f"{path}: {reader.stopped}; processed {n} frames"
            _warn(msg)
            self.summary.stopped.append(msg)
        if n == 0:
            for w in (overlay_w, sbs_w):
                if w:
                    w.abort()
            self.summary.skipped.append((str(path), reader.stopped or "no frames decoded"))
            return
        for kind, w in (("video", overlay_w), ("side_by_side", sbs_w)):
            if w:
                w.close()
                self.summary.add(kind, w.path)
        if o.gif and gif_frames:
            gif = self.out / f"{stem}_preview.gif"
            write_gif(gif, gif_frames, fps=min(float(info.fps), 10.0) if gif_every == 1
                      else float(info.fps) / gif_every)
            self.summary.add("gif", gif)
        if o.save_frames:
            self.summary.add("frames", frames_root)
        if o.stats and rows:
            self._write_stats(self.out / f"{stem}_pixel_share.csv", rows)


def _outputs_done(out: Path, name: str, opts: PredictOptions) -> bool:
    """Whether every per-image file this run writes for ``name`` exists already (files are written
    atomically, so existing means complete): what a resumed Ray run skips."""
    wanted = [out / "masks" / f"{name}.png"] if opts.mask else []
    wanted += [out / "color" / f"{name}.png"] if opts.color else []
    wanted += [out / "overlay" / f"{name}.jpg"] if opts.overlay else []
    return bool(wanted) and opts.mask and all(p.exists() for p in wanted)


class ImageWorker:
    """One Predictor writing the per-image outputs of chunks of images: the Ray actor of
    ``predict --ray`` (chunks of ``batch`` inputs, as the local loop batches them)."""

    def __init__(self, source: Any, opts: PredictOptions, out: str) -> None:
        from drivelab.seg.inference import Predictor

        predictor = Predictor(source, device=opts.device, backend=opts.backend, precision=opts.precision,
                              compile=opts.compile, threads=opts.threads)
        where = source if isinstance(source, (str, Path)) else None
        painter = Painter(check_palette(predictor.schema, opts.palette, where or "checkpoint"), opts.opacity,
                          opts.legend)
        self.run = _Run(predictor, painter, Path(out), opts)

    def __call__(self, chunk: list[tuple[str, str]]) -> list[dict]:
        from drivelab.io import read_label

        run, rows, todo = self.run, [], []
        for path, name in chunk:
            if _outputs_done(run.out, name, run.opts):
                rows.append({"name": name, "done": True, **run._share_cols(read_label(run.out / "masks" /
                                                                                        f"{name}.png"))})
                continue
            try:
                todo.append((name, read_rgb(path)))
                rows.append({"name": name})
            except DrivelabError as e:
                rows.append({"name": name, "error": str(e), "path": str(path)})
        masks = run.predictor.predict_batch([im for _, im in todo]) if todo else []
        by_name = {}
        for (name, image), mask in zip(todo, masks, strict=True):
            run.write_image_outputs(name, image, mask, root=run.out)
            by_name[name] = run._share_cols(mask)
        for r in rows:
            r.update(by_name.get(r["name"], {}))
        return rows


def _video_task(path: Path, source: Any, opts: PredictOptions, out: str) -> PredictSummary:
    """One video on a Ray worker: the local video pipeline with its own Predictor."""
    worker = ImageWorker(source, opts, out)
    worker.run.bar = _NoBar()
    worker.run.video(Path(path))
    return worker.run.summary


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass


def _predict_on_ray(source: Any, images: list[tuple[Path, str]], videos: list[Path], out: Path,
                    opts: PredictOptions, run: _Run) -> None:
    """``predict --ray``: images in chunks through an actor pool, videos one task each; the files
    and the pixel-share table are the local run's."""
    from drivelab.cluster import map_chunks, map_items

    summary = run.summary
    if images:
        chunks = [[(str(p), n) for p, n in images[i:i + opts.batch_size]]
                  for i in range(0, len(images), opts.batch_size)]
        results = map_chunks(ImageWorker, chunks, opts.ray, ctor_args=(source, opts, str(out)),
                             progress=opts.progress, desc="predict")
        rows = []
        for chunk_rows in results:
            for r in chunk_rows:
                if "error" in r:
                    _warn(f"skipping unreadable image {r['error']}")
                    summary.skipped.append((r["path"], r["error"]))
                    continue
                summary.images += 1
                summary.frames += 1
                rows.append({k: v for k, v in r.items() if k != "done"})
        for kind in ("mask", "color", "overlay"):
            if getattr(opts, kind):
                summary.add(kind, out / {"mask": "masks"}.get(kind, kind))
        if opts.stats and rows:
            run._write_stats(out / "pixel_share.csv", rows)
    for part in map_items(_video_task, videos, opts.ray, args=(source, opts, str(out)),
                          progress=opts.progress, desc="predict videos"):
        summary.frames += part.frames
        summary.videos += part.videos
        summary.skipped += part.skipped
        summary.stopped += part.stopped
        for kind, paths in part.outputs.items():
            summary.outputs.setdefault(kind, []).extend(paths)


def _options(options: PredictOptions | None, overrides: dict[str, Any]) -> PredictOptions:
    opts = options or PredictOptions()
    for k, v in overrides.items():
        if not hasattr(opts, k):
            raise TypeError(f"unknown predict option {k!r}")
        setattr(opts, k, v)
    if opts.batch_size < 1:
        raise DrivelabError(f"batch size must be >= 1, got {opts.batch_size}")
    return opts


def predict(source: str | Path | dict | Any, inputs: Inputs, out: str | Path,
            options: PredictOptions | None = None, **overrides: Any) -> PredictSummary:
    """Run a checkpoint (path, run folder, dict), an exported .onnx, or a ready ``Predictor`` on
    images/folders/globs/videos and write the outputs to ``out``.

    A checkpoint goes to its task's predictor (``drivelab.seg.tasks``) with the options that
    differ from their defaults; an option that task does not take is a one-line error."""
    from drivelab.seg.checkpoint import read_checkpoint
    from drivelab.seg.inference import Predictor
    from drivelab.seg.tasks import for_checkpoint

    opts = _options(options, overrides)
    if isinstance(source, Predictor) or (isinstance(source, (str, Path)) and Path(source).suffix == ".onnx"):
        return predict_semantic(source, inputs, out, opts)
    ckpt = read_checkpoint(source)
    # The task's predictor gets what the user changed; what it does not take is an error there.
    # (fields, not asdict: asdict would turn a RayOptions value into a dict)
    defaults = PredictOptions()
    changed = {f.name: getattr(opts, f.name) for f in fields(opts)
               if getattr(opts, f.name) != getattr(defaults, f.name) and f.name != "progress"}
    return for_checkpoint(ckpt).run_predict(ckpt, inputs, out, progress=opts.progress, **changed)


def predict_semantic(source: str | Path | dict | Any, inputs: Inputs, out: str | Path,
                     options: PredictOptions | None = None, **overrides: Any) -> PredictSummary:
    """The semantic predictor: see the module docstring for what it writes."""
    from tqdm import tqdm

    from drivelab.seg.inference import Predictor

    opts = _options(options, overrides)
    if opts.score_thresh is not None:
        raise DrivelabError("--score-thresh applies to instance models; this one is semantic")
    out = Path(out)
    # Everything that can be wrong with the request fails here, before any frame is touched.
    images, videos = resolve_inputs(inputs)
    predictor = source if isinstance(source, Predictor) else Predictor(
        source, device=opts.device, backend=opts.backend, precision=opts.precision, compile=opts.compile,
        threads=opts.threads)
    where = source if isinstance(source, (str, Path)) else (source.get("path") if isinstance(source, dict)
                                                            else None)
    if predictor.schema is None:
        raise DrivelabError("the model carries no class schema", where)
    schema = check_palette(predictor.schema, opts.palette, where or "checkpoint")
    painter = Painter(schema, opts.opacity, opts.legend)
    run = _Run(predictor, painter, out, opts)

    video_frames = []
    for v in videos:
        from drivelab.video import probe

        n = probe(v, fps=opts.fps).frames
        video_frames.append(min(n, opts.max_frames) if n and opts.max_frames else (n or opts.max_frames))
    total = None if any(f is None for f in video_frames) else len(images) + sum(video_frames)
    out.mkdir(parents=True, exist_ok=True)
    if images and opts.mask:
        write_json(out / PREDICTIONS_INFO, {"ids": "train", "schema": schema.to_dict(),
                                            "model_input": predictor.model_input.to_dict(),
                                            "source": str(where) if where else None})
    t0 = time.perf_counter()
    if opts.ray is not None:
        if isinstance(source, Predictor):
            raise DrivelabError("--ray ships a checkpoint or .onnx to its workers, not a Predictor object")
        _predict_on_ray(predictor.ckpt or source, images, videos, out, opts, run)
        run.summary.seconds = time.perf_counter() - t0
        return run.summary
    with tqdm(total=total, unit="frame", desc="predict", disable=not opts.progress, dynamic_ncols=True,
              file=sys.stderr) as bar:
        run.bar = bar
        if images:
            run.images(images)
        for v in videos:
            bar.set_description(f"predict {v.name}")
            run.video(v)
    run.summary.seconds = time.perf_counter() - t0
    return run.summary
