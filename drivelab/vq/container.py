"""The compressed-file format shared by every codec.

    b"DLVQ" | u8 format version | u32 header length | header (JSON) | payload

The header records the codec and its version, the tokens' shape and dtype, the length and
CRC-32 of the payload, the SHA-256 of the original .npy bytes, and whatever the codec needs to
rebuild its model (e.g. the torch version and dtype it decodes on). The original .npy header
is stored only when ``np.save`` would not reproduce it. Decoding checks every length and
checksum and refuses a truncated or corrupted file with a one-line DrivelabError.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError

MAGIC = b"DLVQ"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<4sBI")


@dataclass
class Header:
    codec: str
    codec_version: int
    shape: list[int]
    dtype: str
    sha256: str
    payload_len: int = 0
    payload_crc32: int = 0
    npy_header: str | None = None  # hex of the original .npy header when np.save differs
    extra: dict[str, Any] = field(default_factory=dict)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(header: Header, payload: bytes) -> bytes:
    header.payload_len = len(payload)
    header.payload_crc32 = zlib.crc32(payload)
    meta = json.dumps(header.__dict__, separators=(",", ":"), sort_keys=True).encode()
    return _FIXED.pack(MAGIC, FORMAT_VERSION, len(meta)) + meta + payload


def unpack(data: bytes, path: str | Path | None = None) -> tuple[Header, bytes]:
    if len(data) < _FIXED.size or data[:4] != MAGIC:
        raise DrivelabError("not a drivelab vq file (bad magic)", path)
    _, version, meta_len = _FIXED.unpack_from(data)
    if version != FORMAT_VERSION:
        raise DrivelabError(f"unsupported vq file format version {version}", path)
    end = _FIXED.size + meta_len
    if len(data) < end:
        raise DrivelabError("truncated file (header incomplete)", path)
    try:
        fields = json.loads(data[_FIXED.size : end])
        header = Header(**fields)
    except (ValueError, TypeError) as e:
        raise DrivelabError(f"corrupted header ({e})", path) from None
    payload = data[end:]
    if len(payload) < header.payload_len:
        raise DrivelabError(f"truncated file: payload has {len(payload)} of {header.payload_len} bytes", path)
    if len(payload) > header.payload_len:
        raise DrivelabError("trailing bytes after the payload", path)
    if zlib.crc32(payload) != header.payload_crc32:
        raise DrivelabError("corrupted payload (CRC-32 mismatch)", path)
    return header, payload
