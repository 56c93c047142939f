"""The compressed-segment format shared by every codec (``.dlvq``).

    b"DLVQ" | u8 format version | u32 header length | u32 header CRC-32 | header
            | inline shared blobs | payload

The header is JSON without its default-valued fields, raw-deflated against a preset dictionary
of typical header text (~130 bytes instead of ~350: it is paid once per segment).

The header records the segment's name, the codec and its version, the layout that rebuilds
the original .npy bytes (shape, dtype, order, exact .npy header), the SHA-256 of those bytes,
the length and CRC-32 of the payload, the shared state the codec needs (``shared``: SHA-256
references, resolved in the archive's store or in the blobs stored inline in this file) and
whatever else the codec needs (``extra``). The header has its own CRC-32, so a damaged name
or shape is refused instead of restoring under a wrong name. Decoding checks every length
and checksum and refuses a truncated or corrupted file with a one-line DrivelabError.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError

MAGIC = b"DLVQ"
FORMAT_VERSION = 2
_FIXED = struct.Struct("<4sBII")


@dataclass
class Header:
    codec: str
    codec_version: int
    name: str
    layout: dict[str, Any]  # tokens.Layout.to_json()
    sha256: str  # of the original .npy bytes
    payload_len: int = 0
    payload_crc32: int = 0
    shared: list[str] = field(default_factory=list)  # SHA-256 refs of the shared state it needs
    inline: list[list[Any]] = field(default_factory=list)  # [sha256, length] of blobs stored here
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.layout["shape"][0])


# deflate's preset dictionary: the text a header usually holds (changing it changes the format)
_ZDICT = (b'{"codec":"context","codec_version":3,"extra":{"model":3,"table_bits":21,"network":1,"shared":'
          b'{"start":"","network":""},"solid":[0,0]},"inline":[["",0]],"layout":{"dtype":"<i2","fortran":'
          b'true,"npy_header":"","shape":[1200,8,16]},"name":".token.npy","payload_crc32":0,"payload_len":0,'
          b'"sha256":"","shared":[""]}')
_DEFAULTS = {"payload_len": 0, "payload_crc32": 0, "shared": [], "inline": [], "extra": {}}
_LAYOUT_DEFAULTS = {"fortran": False, "npy_header": None}


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    return c.compress(data) + c.flush()


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15, _ZDICT)
    out = d.decompress(data) + d.flush()
    if not d.eof or d.unused_data:
        raise ValueError("header is not one complete deflate stream")
    return out


def _compact(header: Header) -> dict[str, Any]:
    d = {k: v for k, v in asdict(header).items() if _DEFAULTS.get(k, object()) != v}
    d["layout"] = {k: v for k, v in header.layout.items() if _LAYOUT_DEFAULTS.get(k, object()) != v}
    return d


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(header: Header, payload: bytes, inline: dict[str, bytes] | None = None) -> bytes:
    """Header + payload (+ shared blobs stored in this file, for a self-contained segment)."""
    inline = inline or {}
    header.inline = [[ref, len(inline[ref])] for ref in sorted(inline)]
    header.payload_len = len(payload)
    header.payload_crc32 = zlib.crc32(payload)
    meta = _deflate(json.dumps(_compact(header), separators=(",", ":"), sort_keys=True).encode())
    blobs = b"".join(inline[ref] for ref in sorted(inline))
    return _FIXED.pack(MAGIC, FORMAT_VERSION, len(meta), zlib.crc32(meta)) + meta + blobs + payload


def read_header(data: bytes, path: str | Path | None = None) -> tuple[Header, int]:
    """The checked header and the offset where the inline blobs start."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise DrivelabError("not a drivelab vq file (bad magic)", path)
    if len(data) < _FIXED.size:
        raise DrivelabError("truncated file (header incomplete)", path)
    _, version, meta_len, meta_crc = _FIXED.unpack_from(data)
    if version != FORMAT_VERSION:
        raise DrivelabError(f"unsupported vq file format version {version} (this drivelab reads "
                            f"{FORMAT_VERSION})", path)
    end = _FIXED.size + meta_len
    if len(data) < end:
        raise DrivelabError("truncated file (header incomplete)", path)
    meta = data[_FIXED.size : end]
    if zlib.crc32(meta) != meta_crc:
        raise DrivelabError("corrupted header (CRC-32 mismatch)", path)
    try:
        fields = json.loads(_inflate(meta))
        fields["layout"] = {**_LAYOUT_DEFAULTS, **fields["layout"]}
        header = Header(**{**_DEFAULTS, **fields})
    except (ValueError, TypeError, KeyError, zlib.error) as e:
        raise DrivelabError(f"corrupted header ({e})", path) from None
    return header, end


def unpack(data: bytes, path: str | Path | None = None) -> tuple[Header, bytes, dict[str, bytes]]:
    """(header, payload, inline blobs by SHA-256), every length and checksum verified."""
    header, off = read_header(data, path)
    inline = {}
    for ref, n in header.inline:
        blob = data[off : off + int(n)]
        if len(blob) < int(n):
            raise DrivelabError("truncated file (inline shared state incomplete)", path)
        if sha256(blob) != ref:
            raise DrivelabError("corrupted inline shared state (SHA-256 mismatch)", path)
        inline[ref] = blob
        off += int(n)
    payload = data[off:]
    if len(payload) < header.payload_len:
        raise DrivelabError(f"truncated file: payload has {len(payload)} of {header.payload_len} bytes", path)
    if len(payload) > header.payload_len:
        raise DrivelabError("trailing bytes after the payload", path)
    if zlib.crc32(payload) != header.payload_crc32:
        raise DrivelabError("corrupted payload (CRC-32 mismatch)", path)
    return header, payload, inline
