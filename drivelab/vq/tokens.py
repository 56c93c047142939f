"""Reading and writing commaVQ token segments: .npy files, folders of them, and tar shards.

A segment is (frames, 8, 16) or (frames, 128) integers in 0..1023 (int16 in the dataset).
The codecs see one canonical form, (frames, 128) int16 C-order; everything else about the
file (its exact .npy header, dtype and byte order, Fortran or C order, 2-D or 3-D shape) is a
*layout* that ``rebuild`` turns back into the file's exact bytes. Reading proves that round
trip before anything is compressed, and refuses a file it cannot promise to restore.

Names are what a segment is restored under: a plain file name (no folder separators, no
``..``), so a stored name can never point outside the output folder. In a folder the name is
the file's own name; in a Hugging Face shard of the commaVQ dataset (``data-XXXX.tar.gz``
holding ``KEY.token.npy``, ``KEY.pose.npy``, ``KEY.json``) it is the json's ``file_name``,
the name comma's evaluator loads. Two segments with one name are an error.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes

VOCAB = 1024
TOKENS_PER_FRAME = 128
SUFFIX = ".npy"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
TOKEN_EXT = "token.npy"  # the dataset's member extension for tokens (poses are "pose.npy")


@dataclass
class Layout:
    """Everything besides the token values that the original .npy bytes depend on."""

    shape: tuple[int, ...]
    dtype: str  # numpy dtype string with byte order, e.g. "<i2", ">i8"
    fortran: bool
    header: bytes  # the file's exact .npy magic + header, up to the array data

    def to_json(self) -> dict:
        # the exact header is stored only when np.save would write a different one (it costs
        # ~260 bytes a segment)
        same = self.header == standard_header(self.shape, self.dtype, self.fortran)
        return {"shape": list(self.shape), "dtype": self.dtype, "fortran": self.fortran,
                "npy_header": None if same else self.header.hex()}

    @classmethod
    def from_json(cls, d: dict) -> Layout:
        shape, dtype, fortran = tuple(int(v) for v in d["shape"]), str(d["dtype"]), bool(d["fortran"])
        header = d.get("npy_header")
        return cls(shape, dtype, fortran,
                   standard_header(shape, dtype, fortran) if header is None else bytes.fromhex(header))


def standard_header(shape: tuple[int, ...], dtype: str, fortran: bool) -> bytes:
    """The .npy header np.save writes for an array of this shape, dtype and order."""
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, d)
    return buf.getvalue()


@dataclass
class Segment:
    name: str  # plain file name the segment is restored under, e.g. "abc_0.token.npy"
    tokens: np.ndarray  # as stored: (frames, 8, 16) or (frames, 128), original dtype and order
    raw: bytes  # the .npy file's bytes
    origin: str = ""  # where it was read from (file, or shard:member), for messages

    @property
    def flat(self) -> np.ndarray:
        """(frames, 128) int16 C-order: the codecs' canonical form."""
        return np.ascontiguousarray(self.tokens.reshape(-1, TOKENS_PER_FRAME), dtype=np.int16)


def check_name(name: str, where: str | Path | None = None) -> str:
    """A stored name must be a plain file name: restoring it can only write inside the output folder."""
    bad = (
        not name
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
        or any(ord(c) < 32 for c in name)
        or len(name.encode("utf-8", "surrogatepass")) > 255
    )
    if bad:
        raise DrivelabError(f"segment name {name!r} is not a plain file name (no folders, no '..')", where)
    return name


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
    return np.ascontiguousarray(tokens.reshape(-1, TOKENS_PER_FRAME), dtype=np.int16)


def layout_of(raw: bytes, path: str | Path | None = None) -> Layout:
    """Parse the .npy header of ``raw`` (public numpy.lib.format readers, versions 1 and 2)."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    except (ValueError, OSError, EOFError) as e:
        raise DrivelabError(f"not a readable .npy file ({e})", path) from None
    return Layout(tuple(shape), np.dtype(dtype).str, bool(fortran), raw[: f.tell()])


def rebuild(flat: np.ndarray, layout: Layout) -> bytes:
    """Canonical tokens + layout -> the original .npy bytes."""
    arr = np.asarray(flat).reshape(layout.shape).astype(np.dtype(layout.dtype))
    return layout.header + arr.tobytes(order="F" if layout.fortran else "C")


def parse_npy(raw: bytes, name: str, path: str | Path | None = None) -> Segment:
    where = path or name
    layout = layout_of(raw, where)
    try:
        tokens = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DrivelabError(f"not a readable .npy file ({e})", where) from None
    flat = validate(tokens, where)
    # prove the round trip now: a file we cannot restore byte for byte is refused, not stored
    if rebuild(flat, layout) != raw:
        expected = len(layout.header) + tokens.nbytes
        why = (f"{len(raw) - expected} bytes after the array data" if len(raw) > expected
               else "its bytes do not match the array numpy reads from it")
        raise DrivelabError(f"cannot promise a byte-identical restore: {why}", where)
    return Segment(name=name, tokens=tokens, raw=raw, origin=str(where))


def npy_bytes(tokens: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, tokens, allow_pickle=False)
    return buf.getvalue()


def read_segment(path: str | Path) -> Segment:
    path = Path(path)
    if not path.is_file():
        raise DrivelabError("file not found", path)
    return parse_npy(path.read_bytes(), check_name(path.name, path), path)


def is_shard(path: Path) -> bool:
    return path.name.endswith(SHARD_SUFFIXES)


def _split_key(member: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the file name."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def iter_shard(src: Path) -> Iterator[Segment]:
    """Token segments of a tar shard, as the commaVQ Hugging Face dataset stores them.

    Members are grouped by key; ``KEY.token.npy`` is the segment, ``KEY.json``'s ``file_name``
    its name (the member's own file name when there is no json); poses are skipped. The shard is
    read once, front to back (a gzip stream cannot seek back cheaply), in its own order: the
    WebDataset convention keeps a key's files next to each other."""
    key: str | None = None
    parts: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(src, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = _split_key(member.name)
                if ext not in (TOKEN_EXT, "json"):
                    continue
                if k != key:
                    if key is not None:
                        yield from _shard_sample(src, parts)
                    key, parts = k, {}
                f = tar.extractfile(member)
                assert f is not None
                parts[ext] = (member.name, f.read())
            if key is not None:
                yield from _shard_sample(src, parts)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:  # gzip errors surface as OSError
        raise DrivelabError(f"unreadable tar shard ({e})", src) from None


def _shard_sample(src: Path, parts: dict[str, tuple[str, bytes]]) -> Iterator[Segment]:
    if TOKEN_EXT not in parts:
        return
    member, raw = parts[TOKEN_EXT]
    where = f"{src}:{member}"
    name = member.rpartition("/")[2]
    if "json" in parts:
        json_member, text = parts["json"]
        try:
            meta = json.loads(text)
        except ValueError as e:
            raise DrivelabError(f"unreadable json ({e})", f"{src}:{json_member}") from None
        if isinstance(meta, dict) and "file_name" in meta:
            name = str(meta["file_name"])
    yield parse_npy(raw, check_name(name, where), where)


def iter_segments(src: str | Path) -> Iterator[Segment]:
    """Segments in a .npy file, a tar shard, or a folder (recursively, sorted: .npy files other
    than ``*.pose.npy``, and tar shards read as shards)."""
    src = Path(src)
    if src.is_file() and src.suffix == SUFFIX:
        yield read_segment(src)
    elif src.is_file() and is_shard(src):
        yield from iter_shard(src)
    elif src.is_dir():
        files = sorted(
            p for p in src.rglob("*")
            if p.is_file() and ((p.suffix == SUFFIX and not p.name.endswith(".pose.npy")) or is_shard(p))
        )
        if not files:
            raise DrivelabError("no .npy token segments or tar shards in this folder", src)
        for p in files:
            yield from (iter_shard(p) if is_shard(p) else iter([read_segment(p)]))
    elif not src.exists():
        raise DrivelabError("not found", src)
    else:
        raise DrivelabError("expected a .npy segment, a folder of them, or a .tar shard", src)


def read_all(sources: Iterable[str | Path]) -> list[Segment]:
    """Every segment of several files, shards or folders, in order; one name twice is an error."""
    seen: dict[str, str] = {}
    out = []
    for src in sources:
        for seg in iter_segments(src):
            if seg.name in seen:
                raise DrivelabError(
                    f"two segments are named {seg.name!r} ({seen[seg.name]} and {seg.origin}); "
                    "names must be unique, they are what a segment is restored under", src)
            seen[seg.name] = seg.origin
            out.append(seg)
    return out


def write_segment(path: str | Path, seg: Segment) -> None:
    write_bytes(path, seg.raw)
