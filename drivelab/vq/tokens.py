"""Reading and writing commaVQ token segments: .npy files, folders of them, and tar shards.

A segment is (frames, 8, 16) or (frames, 128) integers in 0..1023 (int16 in the dataset).
Reading keeps the file's exact bytes so that writing back is byte-identical, whatever the
.npy header looked like.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes

VOCAB = 1024
TOKENS_PER_FRAME = 128
SUFFIX = ".npy"


@dataclass
class Segment:
    name: str  # file name relative to its folder/shard, e.g. "abc_0.token.npy"
    tokens: np.ndarray  # as stored: (frames, 8, 16) or (frames, 128), original dtype
    raw: bytes  # the .npy file's bytes

    @property
    def flat(self) -> np.ndarray:
        """(frames, 128) int16 view used by the codecs."""
        return self.tokens.reshape(-1, TOKENS_PER_FRAME).astype(np.int16)


def validate(tokens: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Check shape, dtype and range; return (frames, 128) int16. Refuse anything else."""
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu":
        raise DrivelabError(f"tokens must be integers, got dtype {tokens.dtype}", path)
    if not (tokens.ndim == 3 and tokens.shape[1:] == (8, 16)) and not (
        tokens.ndim == 2 and tokens.shape[1] == TOKENS_PER_FRAME
    ):
        raise DrivelabError(f"expected (frames, 8, 16) or (frames, 128) tokens, got {tokens.shape}", path)
    if tokens.shape[0] == 0:
        raise DrivelabError("segment has no frames", path)
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= VOCAB:
        raise DrivelabError(f"token values must be in 0..{VOCAB - 1}, found {lo}..{hi}", path)
    return tokens.reshape(-1, TOKENS_PER_FRAME).astype(np.int16)


def parse_npy(raw: bytes, name: str, path: str | Path | None = None) -> Segment:
    try:
        tokens = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DrivelabError(f"not a readable .npy file ({e})", path or name) from None
    validate(tokens, path or name)
    return Segment(name=name, tokens=tokens, raw=raw)


def npy_bytes(tokens: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, tokens, allow_pickle=False)
    return buf.getvalue()


def read_segment(path: str | Path) -> Segment:
    path = Path(path)
    if not path.is_file():
        raise DrivelabError("file not found", path)
    return parse_npy(path.read_bytes(), path.name, path)


def iter_segments(src: str | Path) -> Iterator[Segment]:
    """Segments in a .npy file, a folder (recursively, sorted), or a .tar/.tar.gz shard."""
    src = Path(src)
    if src.is_file() and src.suffix == SUFFIX:
        yield read_segment(src)
    elif src.is_file() and (src.name.endswith((".tar", ".tar.gz", ".tgz"))):
        try:
            with tarfile.open(src) as tar:
                for member in sorted(tar.getmembers(), key=lambda m: m.name):
                    if member.isfile() and member.name.endswith(".token.npy"):
                        f = tar.extractfile(member)
                        assert f is not None
                        yield parse_npy(f.read(), member.name, f"{src}:{member.name}")
        except tarfile.TarError as e:
            raise DrivelabError(f"unreadable tar shard ({e})", src) from None
    elif src.is_dir():
        files = sorted(p for p in src.rglob(f"*{SUFFIX}") if p.is_file())
        if not files:
            raise DrivelabError("no .npy token segments in this folder", src)
        for p in files:
            seg = read_segment(p)
            seg.name = p.relative_to(src).as_posix()
            yield seg
    elif not src.exists():
        raise DrivelabError("not found", src)
    else:
        raise DrivelabError("expected a .npy segment, a folder of them, or a .tar shard", src)


def write_segment(path: str | Path, seg: Segment) -> None:
    write_bytes(path, seg.raw)
