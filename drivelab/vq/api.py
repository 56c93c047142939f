"""Compress and decompress one token segment to/from the drivelab vq container."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq import codecs, container
from drivelab.vq.tokens import Segment, npy_bytes, validate


def _npy_header(seg: Segment) -> str | None:
    """Hex of the original .npy header when ``np.save`` would write another one."""
    canonical = npy_bytes(seg.tokens)
    if canonical == seg.raw:
        return None
    data_len = seg.tokens.nbytes
    if seg.raw[-data_len:] != canonical[-data_len:]:
        msg = "unusual .npy layout (e.g. Fortran order); cannot promise byte-identity"
        raise DrivelabError(msg, seg.name)
    return seg.raw[:-data_len].hex()


def _pack(seg: Segment, codec: str, payload: bytes, extra: dict[str, Any], npy_header: str | None) -> bytes:
    header = container.Header(
        codec=codec,
        codec_version=codecs.VERSIONS[codec],
        shape=list(seg.tokens.shape),
        dtype=seg.tokens.dtype.str,
        sha256=container.sha256(seg.raw),
        npy_header=npy_header,
        extra={**extra, "name": seg.name},
    )
    return container.pack(header, payload)


def compress(seg: Segment, codec: str, **options: Any) -> bytes:
    """Segment -> container bytes (header + codec payload)."""
    flat = validate(seg.tokens, seg.name)
    npy_header = _npy_header(seg)
    encode, _ = codecs.get(codec)
    payload, extra = encode(flat, **options)
    return _pack(seg, codec, payload, extra, npy_header)


def compress_batch(segs: list[Segment], codec: str, progress: Any = None, **options: Any) -> list[bytes]:
    """Many segments -> container bytes each; the gpt codec codes them in one batch (its header
    records the batch layout), the others one by one."""
    if codec != "gpt":
        return [compress(s, codec, **options) for s in segs]
    from drivelab.vq.codecs.gpt import encode_batch

    flats = [validate(s.tokens, s.name) for s in segs]
    headers = [_npy_header(s) for s in segs]
    coded = encode_batch(flats, progress=progress, **options)
    return [_pack(s, codec, p, e, h) for s, (p, e), h in zip(segs, coded, headers, strict=True)]


def _header(data: bytes, path: str | Path | None) -> tuple[container.Header, bytes]:
    header, payload = container.unpack(data, path)
    if header.codec not in codecs.NAMES:
        raise DrivelabError(f"unknown codec {header.codec!r} in header", path)
    if header.codec_version != codecs.VERSIONS[header.codec]:
        raise DrivelabError(f"{header.codec} codec version {header.codec_version} is not supported", path)
    return header, payload


def _restore(header: container.Header, flat: np.ndarray, path: str | Path | None) -> Segment:
    try:
        tokens = np.asarray(flat).astype(np.dtype(header.dtype)).reshape(header.shape)
    except (TypeError, ValueError) as e:
        raise DrivelabError(f"corrupted header ({e})", path) from None
    raw = npy_bytes(tokens)
    if header.npy_header is not None:
        raw = bytes.fromhex(header.npy_header) + raw[-tokens.nbytes :]
    if container.sha256(raw) != header.sha256:
        raise DrivelabError("checksum mismatch: decoded tokens differ from the original", path)
    return Segment(name=str(header.extra.get("name", "segment.npy")), tokens=tokens, raw=raw)


@contextmanager
def _decoding(path: str | Path | None) -> Iterator[None]:
    """Turn any decoder failure into one line naming the file."""
    try:
        yield
    except DrivelabError as e:
        raise DrivelabError(str(e), path) from None
    except Exception as e:  # a corrupted payload can fail deep inside a decoder
        raise DrivelabError(f"corrupted payload, decoding failed ({type(e).__name__}: {e})", path) from None


def decompress(data: bytes, path: str | Path | None = None, progress: Any = None, **options: Any) -> Segment:
    """Container bytes -> Segment with the original .npy bytes; verifies the SHA-256.
    ``options`` go to the gpt codec (``model``: its external weights, ``device``)."""
    header, payload = _header(data, path)
    frames = int(header.shape[0])
    _, decode = codecs.get(header.codec)
    with _decoding(path):
        if header.codec == "context" and progress:
            flat = decode(payload, header.extra, frames, progress=progress)
        elif header.codec == "gpt":
            flat = decode(payload, header.extra, frames, **options)
        else:
            flat = decode(payload, header.extra, frames)
    return _restore(header, flat, path)


def batch_key(data: bytes, path: str | Path | None = None) -> str | None:
    """The gpt batch a file belongs to (files with one key decode together), else None."""
    header, _ = _header(data, path)
    batch = header.extra.get("batch") if header.codec == "gpt" else None
    return str(batch["id"]) if isinstance(batch, dict) and "id" in batch else None


def decompress_batch(
    items: list[tuple[bytes, str | Path | None]], progress: Any = None, **options: Any
) -> list[Segment]:
    """Members of one gpt batch (same ``batch_key``) -> Segments, decoded in one batch."""
    from drivelab.vq.codecs.gpt import decode_batch

    parsed = [(_header(d, p), p) for d, p in items]
    where = items[0][1] if len(items) == 1 else (Path(items[0][1]).parent if items[0][1] else None)
    with _decoding(where):
        flats = decode_batch([(pl, h.extra, int(h.shape[0])) for (h, pl), _ in parsed], progress=progress,
                             **options)
    return [_restore(h, f, p) for ((h, _), p), f in zip(parsed, flats, strict=True)]


def describe(data: bytes, path: str | Path | None = None) -> str:
    header, _ = container.unpack(data, path)
    return json.dumps(header.__dict__, indent=2)
