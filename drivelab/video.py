"""Video in and out with PyAV: read frames as RGB arrays, write H.264 MP4 and GIF previews.

Reading never raises on a damaged file once it is open: ``VideoReader`` yields the frames it
can decode and records where and why it stopped (``reader.stopped``), so a truncated dash-cam
clip still gets processed up to the damage. Writing goes through ``drivelab.io.atomic_write``,
so an interrupted encode never leaves half an MP4 behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import atomic_write, write_image

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".hevc", ".h265", ".265",
                  ".h264", ".264"}
# Raw elementary streams (e.g. comma's fcamera.hevc) carry no container, so name the demuxer.
RAW_FORMATS = {".hevc": "hevc", ".h265": "hevc", ".265": "hevc", ".h264": "h264", ".264": "h264"}
DEFAULT_RAW_FPS = Fraction(20)  # comma cameras record at 20 FPS; raw streams do not say


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int | None  # from the container header; None when unknown (raw streams)
    codec: str
    frames_estimated: bool = False  # frames derived from the header's duration, +-1

    @property
    def duration(self) -> float | None:
        return self.frames / float(self.fps) if self.frames else None


def _open(path: Path) -> Any:
    import av

    if not path.exists():
        raise DrivelabError("video not found", path)
    try:
        return av.open(str(path), format=RAW_FORMATS.get(path.suffix.lower()))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DrivelabError(f"cannot open video ({e})", path) from None


def _info(path: Path, container: Any, fps: float | None) -> VideoInfo:
    if not container.streams.video:
        raise DrivelabError("no video stream in file", path)
    stream = container.streams.video[0]
    rate = Fraction(fps).limit_denominator(1001) if fps else stream.average_rate or stream.guessed_rate
    if path.suffix.lower() in RAW_FORMATS and not fps:
        rate = DEFAULT_RAW_FPS
    rate = Fraction(rate or DEFAULT_RAW_FPS)
    frames = stream.frames or None
    if frames is None and container.duration and path.suffix.lower() not in RAW_FORMATS:
        # Matroska headers give a duration but no frame count.
        frames = round(container.duration / 1_000_000 * rate) or None
    return VideoInfo(path=path, width=stream.codec_context.width, height=stream.codec_context.height,
                     fps=rate, frames=frames, codec=stream.codec_context.name,
                     frames_estimated=not stream.frames)


def probe(path: str | Path, fps: float | None = None) -> VideoInfo:
    """Size, frame rate, frame count and codec of a video file."""
    path = Path(path)
    with _open(path) as container:
        return _info(path, container, fps)


class VideoReader:
    """Iterate a video's frames as (H, W, 3) uint8 RGB arrays.

    Decoding errors end the iteration instead of raising; ``stopped`` then says at which
    frame and why (also when the stream ends before the frame count in its header).
    """

    def __init__(self, path: str | Path, max_frames: int | None = None, fps: float | None = None) -> None:
        self.path = Path(path)
        self.max_frames = max_frames
        self._container = _open(self.path)
        try:
            self.info = _info(self.path, self._container, fps)
        except DrivelabError:
            self._container.close()
            raise
        self.frames_read = 0
        self.stopped: str | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads inside ffmpeg, outside the GIL
        try:
            for frame in self._container.decode(stream):
                if self.max_frames is not None and self.frames_read >= self.max_frames:
                    return
                yield frame.to_ndarray(format="rgb24")
                self.frames_read += 1
        except (av.FFmpegError, OSError, ValueError, EOFError) as e:
            t = self.frames_read / float(self.info.fps)
            self.stopped = f"decoding stopped at frame {self.frames_read} ({t:.2f} s): {e}"
            return
        expected = self.info.frames
        slack = 1 if self.info.frames_estimated else 0
        if self.max_frames is None and expected and self.frames_read < expected - slack:
            t = self.frames_read / float(self.info.fps)
            self.stopped = (f"stream ended at frame {self.frames_read} ({t:.2f} s) of {expected} "
                            "announced in its header (truncated file?)")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    """All (or the first ``max_frames``) frames of a video as RGB arrays."""
    with VideoReader(path, max_frames=max_frames) as reader:
        return list(reader)


class VideoWriter:
    """Encode RGB frames to an H.264 MP4 (yuv420p, plays in every browser), written atomically.

    Frame size is fixed by the first frame; odd sizes are padded by one pixel because yuv420p
    needs even dimensions.
    """

    def __init__(self, path: str | Path, fps: Fraction | float, crf: int = 23, preset: str = "veryfast",
                 codec: str = "libx264") -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf, self.preset, self.codec = crf, preset, codec
        self._cm = atomic_write(self.path)
        self._file = self._cm.__enter__()
        self._container: Any = None
        self._stream: Any = None
        self.frames_written = 0

    def _start(self, h: int, w: int) -> None:
        import av

        # No +faststart: it reopens the output by name, which an atomic temp file object has not.
        self._container = av.open(self._file, mode="w", format="mp4")
        self._stream = self._container.add_stream(self.codec, rate=self.fps)
        self._stream.width, self._stream.height = w + w % 2, h + h % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self.crf), "preset": self.preset}

    def write(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[:2]
        if self._container is None:
            self._start(h, w)
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file into place."""
        if self._file is None:
            return
        try:
            if self._container is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
                self._container.close()
        except BaseException as e:
            self._cm.__exit__(type(e), e, e.__traceback__)
            raise
        finally:
            self._file = None
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the partial file (nothing is left at ``path``)."""
        if self._file is None:
            return
        self._file = None
        err = RuntimeError("aborted")
        try:
            if self._container is not None:
                self._container.close()
        except Exception:
            pass
        try:
            self._cm.__exit__(RuntimeError, err, None)
        except RuntimeError:
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: Fraction | float, **kw: Any) -> int:
    """Encode an iterable of RGB frames to an H.264 MP4; returns the number of frames written."""
    with VideoWriter(path, fps, **kw) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames_written


def write_gif(path: str | Path, frames: list[np.ndarray], fps: float, max_width: int = 320) -> None:
    """A looping GIF preview, downscaled to ``max_width`` (GIFs are for glancing, not for pixels)."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames for the GIF")
    images = []
    for f in frames:
        img = Image.fromarray(f)
        if img.width > max_width:
            img = img.resize((max_width, max(1, round(img.height * max_width / img.width))), Image.BILINEAR)
        images.append(img.convert("P", palette=Image.ADAPTIVE, colors=255))
    write_image(path, images[0], save_all=True, append_images=images[1:], duration=round(1000 / fps),
                loop=0, optimize=False)
