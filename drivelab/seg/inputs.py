"""What a user points a model at: image files, folders, globs and videos, resolved once for
``predict`` (semantic and instance), ``export --int8`` calibration and anything else that runs a
model on files. Output names keep the sub-folders below the folder or glob base, so
``predict data/imgs/**/*.png`` writes ``masks/<sub>/<stem>.png``."""

from __future__ import annotations

import glob as globlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import IMAGE_SUFFIXES, read_rgb
from drivelab.video import VideoReader, is_video

Inputs = str | Path | Sequence[str | Path]


def resolve_inputs(inputs: Inputs) -> tuple[list[tuple[Path, str]], list[Path]]:
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


def sample_frames(inputs: Inputs, limit: int = 32, video_every: int = 20) -> list[np.ndarray]:
    """Up to ``limit`` RGB frames from images/folders/globs/videos, evenly spread over the images
    and every ``video_every``-th video frame (what int8 calibration looks at)."""
    images, videos = resolve_inputs(inputs)
    frames: list[np.ndarray] = []
    step = max(1, len(images) // limit)
    frames += [read_rgb(p) for p, _ in images[::step][:limit]]
    for v in videos:
        with VideoReader(v, max_frames=video_every * limit) as reader:
            frames += [f for i, f in enumerate(reader) if i % video_every == 0]
    return frames[:limit]
