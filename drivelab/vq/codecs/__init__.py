"""Codec registry. A codec turns (frames, 128) int16 tokens into a payload and back.

``encode(tokens, **options) -> (payload, extra)``; ``decode(payload, extra, frames) -> tokens``.
``extra`` goes into the file header and must hold everything decoding needs besides the payload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError

Encode = Callable[..., tuple[bytes, dict[str, Any]]]
Decode = Callable[[bytes, dict[str, Any], int], np.ndarray]

NAMES = ("lzma", "context", "gpt", "prior")
VERSIONS = {"lzma": 1, "context": 1, "gpt": 2, "prior": 1}


def get(name: str) -> tuple[Encode, Decode]:
    if name == "lzma":
        from drivelab.vq.codecs import lzma_codec as mod
    elif name == "context":
        from drivelab.vq.codecs import context as mod
    elif name == "gpt":
        from drivelab.vq.codecs import gpt as mod
    elif name == "prior":
        from drivelab.vq.codecs import prior as mod
    else:
        raise DrivelabError(f"unknown codec {name!r}; choose one of {', '.join(NAMES)}")
    return mod.encode, mod.decode
