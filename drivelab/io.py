"""File helpers shared by every pillar: atomic writes and image reading/writing.

Every file drivelab writes goes through ``atomic_write``: write to a temp file in
the same folder, fsync, rename. A crash leaves either the old file or the new
one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


TEMP_SUFFIX = ".tmp"  # atomic_write's temp files: ``.<name>.<random>.tmp`` beside the target


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    """fsync a directory so a rename inside it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside ``path``; on success fsync it, give it the mode a plain ``open``
    would (0666 minus the umask; mkstemp's 0600 would lock other users of a shared dataset out),
    rename it over ``path`` and fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` through an atomic write (checkpoints are never half-written)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def write_table(path: str | Path, df: Any) -> None:
    """Write a pandas DataFrame atomically (Parquet for .parquet, else CSV)."""
    path = Path(path)
    buf = io.BytesIO()
    if path.suffix == ".parquet":
        df.to_parquet(buf, index=False)
    else:
        buf.write(df.to_csv(index=False).encode())
    write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- images
def open_image(path: str | Path) -> Any:
    """Open and fully decode an image, turning every failure into a one-line DrivelabError."""
    # Pillow is imported where images are read or written, not with the module: the vq decoder a
    # challenge zip ships imports drivelab.io for its atomic writes and must not need Pillow.
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise DrivelabError("file not found", path)
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DrivelabError(f"unreadable or truncated image ({e})", path) from None
    return img


def read_rgb(path: str | Path) -> np.ndarray:
    """Image file -> (H, W, 3) uint8 RGB (greyscale/palette/RGBA are converted)."""
    return np.asarray(open_image(path).convert("RGB"))


def read_label(path: str | Path) -> np.ndarray:
    """Single-channel label PNG (ids, palette indices, or 16-bit instance ids) -> (H, W) array.

    Palette PNGs return their indices, not colours; 16/32-bit PNGs keep their range.
    """
    img = open_image(path)
    if img.mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int32)
    raise DrivelabError(f"expected a single-channel label image, got mode {img.mode}", path)


def write_png(path: str | Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write an array as PNG atomically.

    (H, W) uint8 with ``palette`` -> palette-mode PNG (any viewer shows colours, readers get
    indices); (H, W) uint8 -> greyscale; (H, W) int32/uint16 -> 16-bit; (H, W, 3) -> RGB.
    """
    from PIL import Image

    array = np.asarray(array)
    if array.ndim == 2 and array.dtype != np.uint8:
        if array.max(initial=0) > 65535 or array.min(initial=0) < 0:
            raise ValueError("label values must fit in 16 bits")
        img = Image.fromarray(array.astype(np.uint16))
    else:
        img = Image.fromarray(array.astype(np.uint8))
    if palette is not None:
        if img.mode != "L":
            raise ValueError("a palette PNG needs a (H, W) uint8 index array")
        img.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    write_image(path, img)


def write_image(path: str | Path, img: Any, **save_kwargs: Any) -> None:
    """Save a PIL image atomically; the format comes from the suffix."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix.lstrip(".").upper())
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kwargs)
    write_bytes(path, buf.getvalue())


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DrivelabError("folder not found", folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def jsonable(d: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (metrics.json is strict JSON)."""
    if isinstance(d, dict):
        return {str(k): jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [jsonable(v) for v in d]
    if isinstance(d, (float, np.floating)):
        return float(d) if np.isfinite(d) else None
    if isinstance(d, np.integer):
        return int(d)
    return d
