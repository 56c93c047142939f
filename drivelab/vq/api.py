"""Compress and decompress one token segment to/from the drivelab vq container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq import codecs, container
from drivelab.vq.tokens import Segment, npy_bytes, validate


def compress(seg: Segment, codec: str, **options: Any) -> bytes:
    """Segment -> container bytes (header + codec payload)."""
    flat = validate(seg.tokens, seg.name)
    encode, _ = codecs.get(codec)
    payload, extra = encode(flat, **options)
    canonical = npy_bytes(seg.tokens)
    npy_header = None
    if canonical != seg.raw:
        data_len = seg.tokens.nbytes
        if seg.raw[-data_len:] != canonical[-data_len:]:
            raise DrivelabError(
                "unusual .npy layout (e.g. Fortran order); cannot promise byte-identity", seg.name
            )
        npy_header = seg.raw[:-data_len].hex()
    extra = {**extra, "name": seg.name}
    header = container.Header(
        codec=codec,
        codec_version=codecs.VERSIONS[codec],
        shape=list(seg.tokens.shape),
        dtype=seg.tokens.dtype.str,
        sha256=container.sha256(seg.raw),
        npy_header=npy_header,
        extra=extra,
    )
    return container.pack(header, payload)


def decompress(data: bytes, path: str | Path | None = None, progress: Any = None) -> Segment:
    """Container bytes -> Segment with the original .npy bytes; verifies the SHA-256."""
    header, payload = container.unpack(data, path)
    if header.codec not in codecs.NAMES:
        raise DrivelabError(f"unknown codec {header.codec!r} in header", path)
    if header.codec_version != codecs.VERSIONS[header.codec]:
        raise DrivelabError(f"{header.codec} codec version {header.codec_version} is not supported", path)
    frames = int(header.shape[0])
    _, decode = codecs.get(header.codec)
    try:
        kwargs = {"progress": progress} if header.codec == "context" and progress else {}
        flat = decode(payload, header.extra, frames, **kwargs)
    except DrivelabError as e:
        raise DrivelabError(str(e), path) from None
    except Exception as e:  # a corrupted payload can fail deep inside a decoder
        raise DrivelabError(f"corrupted payload, decoding failed ({type(e).__name__}: {e})", path) from None
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


def describe(data: bytes, path: str | Path | None = None) -> str:
    header, _ = container.unpack(data, path)
    return json.dumps(header.__dict__, indent=2)
