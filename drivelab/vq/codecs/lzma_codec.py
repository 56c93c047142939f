"""The challenge baseline: tokens as int16, transposed so each position's history is contiguous, then lzma."""

from __future__ import annotations

import lzma
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError

REQUIREMENTS = ("numpy",)
SOURCES = ("drivelab/vq/codecs/lzma_codec.py",)


def encode(tokens: np.ndarray, **_: Any) -> tuple[bytes, dict[str, Any]]:
    return lzma.compress(tokens.astype(np.int16).T.copy().tobytes()), {}


def decode(payload: bytes, extra: dict[str, Any], frames: int) -> np.ndarray:
    try:
        raw = lzma.decompress(payload)
    except lzma.LZMAError as e:
        raise DrivelabError(f"corrupted lzma payload ({e})") from None
    arr = np.frombuffer(raw, dtype=np.int16)
    if arr.size != frames * 128:
        raise DrivelabError("lzma payload does not match the header's shape")
    return arr.reshape(128, frames).T.copy()
