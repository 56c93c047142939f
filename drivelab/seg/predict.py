"""``drivelab predict``: a checkpoint on images, folders, globs and videos, with pictures out.

Per image (flags pick which): index mask as a palette PNG (``masks/``), colour map
(``color/``), overlay with a class legend (``overlay/``), and one row of per-class pixel
shares in ``pixel_share.csv``. Per video: an H.264 overlay MP4 at the source frame rate,
optionally a side-by-side MP4 (frame | colour map) and a GIF preview, and a per-frame
pixel-share CSV.

Decode, inference and encode run in three threads joined by bounded queues, so reading
and writing files (PNG/JPEG/H.264 codecs release the GIL) overlap with the model.
"""

from __future__ import annotations

import glob as globlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import IMAGE_SUFFIXES, read_rgb, write_image, write_png, write_table
from drivelab.schema import ClassSchema, get_schema
from drivelab.video import VideoReader, VideoWriter, is_video, write_gif


@dataclass
class PredictOptions:
    """What ``predict`` writes and how it runs (the CLI flags map one to one)."""

    mask: bool = True  # index mask, palette PNG
    color: bool = False  # colour map PNG
    overlay: bool = True  # overlay JPEG for images / overlay MP4 for videos
    opacity: float = 0.5  # of the class colours in overlays
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
    device: str = "cpu"
    backend: str = "torch"  # torch | onnxruntime
    precision: str = "auto"
    compile: bool = False
    threads: int | None = None
    progress: bool = True


@dataclass
class PredictSummary:
    out: Path
    frames: int = 0  # images + video frames that went through the model
    images: int = 0
    videos: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    stopped: list[str] = field(default_factory=list)  # videos that ended early, and where
    outputs: dict[str, list[Path]] = field(default_factory=dict)  # kind -> files written

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, kind: str, path: Path) -> None:
        self.outputs.setdefault(kind, []).append(path)

    def line(self) -> str:
        parts = [f"{self.frames} frames ({self.images} images, {self.videos} videos) in "
                 f"{self.seconds:.1f} s, mean {self.fps:.1f} frames/s"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} unreadable skipped")
        if self.stopped:
            parts.append(f"{len(self.stopped)} videos ended early")
        return "; ".join(parts) + f"; outputs in {self.out}"


def _warn(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- inputs
def resolve_inputs(inputs: str | Path | Sequence[str | Path]) -> tuple[list[tuple[Path, str]], list[Path]]:
    """Images (path, output name) and videos named by a file, folder, glob, or a list of them."""
    specs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    images: list[tuple[Path, str]] = []
    videos: list[Path] = []
    for spec in specs:
        s = str(spec)
        if any(c in s for c in "*?[") and not Path(s).exists():
            files = sorted(Path(p) for p in globlib.glob(s, recursive=True) if Path(p).is_file())
            if not files:
                raise DrivelabError("glob matches no files", s)
            base = _glob_base(s)
        elif Path(s).is_dir():
            base = Path(s)
            files = sorted(p for p in base.rglob("*") if p.is_file()
                           and (p.suffix.lower() in IMAGE_SUFFIXES or is_video(p)))
            if not files:
                raise DrivelabError("no images or videos in folder", s)
        elif Path(s).is_file():
            files, base = [Path(s)], Path(s).parent
        else:
            raise DrivelabError("input not found", s)
        for p in files:
            if is_video(p):
                videos.append(p)
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                images.append((p, str(p.relative_to(base).with_suffix(""))))
            elif len(files) == 1:
                raise DrivelabError("not an image or video (by its extension)", p)
    return images, videos


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: output names keep what follows."""
    fixed = list(_takewhile_plain(Path(pattern).parts))
    return Path(*fixed) if fixed else Path(".")


def _takewhile_plain(parts: Iterable[str]) -> Iterator[str]:
    parts = list(parts)
    for p in parts[:-1]:
        if any(c in p for c in "*?["):
            return
        yield p


# --------------------------------------------------------------------------- drawing
class Painter:
    """Colour maps, overlays with a legend, and side-by-side frames for one class schema."""

    def __init__(self, schema: ClassSchema, opacity: float = 0.5, legend: bool = True) -> None:
        if not 0.0 <= opacity <= 1.0:
            raise DrivelabError(f"opacity must be between 0 and 1, got {opacity}")
        self.schema = schema
        self.lut = schema.palette_256()
        self.opacity = opacity
        self.legend = legend
        self._legend_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def color(self, mask: np.ndarray) -> np.ndarray:
        return self.lut[mask]

    def overlay(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # Integer blend: ~3x faster than float on big frames, and exact enough for pictures.
        a = int(round(self.opacity * 256))
        out = ((image.astype(np.uint16) * (256 - a) + self.lut[mask].astype(np.uint16) * a) >> 8)
        out = out.astype(np.uint8)
        if self.legend:
            self._draw_legend(out)
        return out

    def side_by_side(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.concatenate([image, self.color(mask)], axis=1)

    def legend_image(self, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, alpha) patch listing every class with its colour, scaled to the frame height."""
        if height in self._legend_cache:
            return self._legend_cache[height]
        from PIL import Image, ImageDraw, ImageFont

        px = max(8, round(height / 30))
        try:
            font = ImageFont.load_default(size=px)
        except TypeError:  # Pillow < 10.1: fixed bitmap font
            font = ImageFont.load_default()
        names = self.schema.names
        pad, box = max(2, px // 4), px
        w = pad * 3 + box + max(int(font.getlength(n)) for n in names)
        h = pad + len(names) * (box + pad)
        img = Image.new("RGBA", (w, h), (0, 0, 0, 150))
        draw = ImageDraw.Draw(img)
        for i, (name, c) in enumerate(zip(names, self.schema.palette, strict=True)):
            y = pad + i * (box + pad)
            draw.rectangle([pad, y, pad + box - 1, y + box - 1], fill=tuple(int(v) for v in c) + (255,))
            draw.text((pad * 2 + box, y + box / 2), name, fill=(255, 255, 255, 255), font=font, anchor="lm")
        arr = np.asarray(img)
        patch = (arr[..., :3], arr[..., 3:].astype(np.uint16))
        self._legend_cache[height] = patch
        return patch

    def _draw_legend(self, frame: np.ndarray) -> None:
        rgb, alpha = self.legend_image(frame.shape[0])
        h, w = min(rgb.shape[0], frame.shape[0]), min(rgb.shape[1], frame.shape[1])
        m = 2
        region = frame[m:m + h, m:m + w]
        h, w = region.shape[:2]
        a = alpha[:h, :w]
        region[:] = ((rgb[:h, :w] * a + region * (255 - a)) // 255).astype(np.uint8)


def pixel_share(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the image's pixels predicted as each class."""
    return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes] / mask.size


# --------------------------------------------------------------------------- threads
_DONE = object()


def _background(produce: Callable[[], Iterator[Any]], maxsize: int) -> Iterator[Any]:
    """Run a generator in a thread and yield its items here; its exception re-raises here."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    error: list[BaseException] = []

    def run() -> None:
        try:
            for item in produce():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer
            error.append(e)
        finally:
            q.put(_DONE)

    t = threading.Thread(target=run, daemon=True, name="drivelab-decode")
    t.start()
    try:
        while (item := q.get()) is not _DONE:
            yield item
        if error:
            raise error[0]
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


class _Writer:
    """One background thread that applies ``fn`` to items in order (encoders are stateful)."""

    def __init__(self, fn: Callable[[Any], None], maxsize: int) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="drivelab-encode")
        self._fn = fn
        self._pending: queue.Queue[Future] = queue.Queue()
        self._slots = threading.BoundedSemaphore(maxsize)

    def put(self, item: Any) -> None:
        self._slots.acquire()  # backpressure: never more than maxsize frames in flight
        fut = self._pool.submit(self._fn, item)
        fut.add_done_callback(lambda _: self._slots.release())
        self._pending.put(fut)
        self._raise_finished()

    def _raise_finished(self) -> None:
        while not self._pending.empty() and self._pending.queue[0].done():
            self._pending.get().result()

    def close(self) -> None:
        try:
            while not self._pending.empty():
                self._pending.get().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _batches(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


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

        writer = _Writer(write, maxsize=4 * self.opts.batch_size)
        try:
            for batch in _batches(_background(load, 2 * self.opts.batch_size), self.opts.batch_size):
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

        writer = _Writer(encode, maxsize=4 * o.batch_size)
        n = 0
        ok = False
        try:
            with reader:
                for batch in _batches(_background(lambda: iter(reader), 2 * o.batch_size), o.batch_size):
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


def predict(checkpoint: str | Path | dict | Any, inputs: str | Path | Sequence[str | Path], out: str | Path,
            options: PredictOptions | None = None, **overrides: Any) -> Any:
    """Run a checkpoint (path, run folder, dict), an exported .onnx, or a ready ``Predictor`` on
    images/folders/globs/videos; write outputs to ``out``.

    Returns a ``PredictSummary`` (instance checkpoints are handed to
    ``drivelab.seg.instance.predict.predict_instances`` and return what it returns).
    """
    from tqdm import tqdm

    from drivelab.seg.checkpoint import read_checkpoint
    from drivelab.seg.inference import Predictor

    opts = options or PredictOptions()
    for k, v in overrides.items():
        if not hasattr(opts, k):
            raise TypeError(f"unknown predict option {k!r}")
        setattr(opts, k, v)
    if opts.batch_size < 1:
        raise DrivelabError(f"batch size must be >= 1, got {opts.batch_size}")
    out = Path(out)
    source: Any = checkpoint
    if isinstance(checkpoint, Predictor):
        pass
    elif not (isinstance(checkpoint, (str, Path)) and Path(checkpoint).suffix == ".onnx"):
        source = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
        if source.get("task", "semantic") == "instance":
            from drivelab.seg.instance.predict import predict_instances

            return predict_instances(checkpoint, inputs, out, **asdict(opts))

    # Everything that can be wrong with the request fails here, before any frame is touched.
    images, videos = resolve_inputs(inputs)
    predictor = source if isinstance(source, Predictor) else Predictor(
        source, device=opts.device, backend=opts.backend, precision=opts.precision, compile=opts.compile,
        threads=opts.threads)
    where = checkpoint if isinstance(checkpoint, (str, Path)) else None
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
    t0 = time.perf_counter()
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
