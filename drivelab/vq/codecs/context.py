"""The ``context`` codec: the adaptive context-mixing model of ``drivelab.vq.cm`` + its binary coder.

One numba call codes a whole segment, on both sides. Options:

* ``start``: a trained starting state (``drivelab vq train-context``; bytes or a file), shared
  by every segment of an archive and stored once (``extra["shared"]["start"]``);
* ``chain`` (solid archives): the model state carries on from the previous segment of the
  chain instead of starting fresh, the way zpaq learns across the files of one archive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq import cm
from drivelab.vq.store import SharedStore

SOLID = True
REQUIREMENTS = ("numpy", "numba")
SOURCES = ("drivelab/vq/cm.py", "drivelab/vq/nprior.py", "drivelab/vq/codecs/context.py")
FLAGS = cm.USE_CM


def start_blob(start: bytes | str | Path | None) -> bytes | None:
    if start is None or isinstance(start, bytes):
        return start
    path = Path(start)
    if not path.is_file():
        raise DrivelabError("starting-state file not found", path)
    blob = path.read_bytes()
    cm.load_state(blob, path)  # refuse a wrong file now, not after coding
    return blob


def _state(chain: Any, blob: bytes | None) -> tuple[np.ndarray, ...]:
    if chain is not None and chain.state is not None:
        return chain.state
    state = cm.load_state(blob) if blob is not None else cm.new_state()
    if chain is not None:
        chain.state = state
    return state


def _header(store: SharedStore | None, blob: bytes | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"model": cm.VERSION, "table_bits": cm.TABLE_BITS}
    if blob is not None:
        if store is None:
            raise DrivelabError("a starting state needs a shared store")
        extra["shared"] = {"start": store.put(blob)}
    return extra


def check_model(extra: dict[str, Any]) -> None:
    if extra.get("model") != cm.VERSION or extra.get("table_bits") != cm.TABLE_BITS:
        raise DrivelabError(
            f"written by context model {extra.get('model')}/{extra.get('table_bits')} bits, this drivelab "
            f"has {cm.VERSION}/{cm.TABLE_BITS}")


def start_of(extra: dict[str, Any], store: SharedStore | None) -> bytes | None:
    ref = extra.get("shared", {}).get("start")
    if ref is None:
        return None
    if store is None:
        raise DrivelabError("needs its starting state, which is not available")
    return store.get(ref, "context starting state")


def encode(tokens: np.ndarray, store: SharedStore | None = None, chain: Any = None,
           start: bytes | str | Path | None = None, **_: Any) -> tuple[bytes, dict[str, Any]]:
    blob = start_blob(start)
    x = np.ascontiguousarray(tokens.reshape(-1), dtype=np.int16)
    _, payload = cm.run(x, cm.ENCODE, FLAGS, _state(chain, blob))
    return payload, _header(store, blob)


def decode(payload: bytes, extra: dict[str, Any], frames: int, store: SharedStore | None = None,
           chain: Any = None) -> np.ndarray:
    check_model(extra)
    x = np.zeros(frames * cm.TOKENS_PER_FRAME, dtype=np.int16)
    cm.run(x, cm.DECODE, FLAGS, _state(chain, start_of(extra, store)), payload)
    return x.reshape(frames, cm.TOKENS_PER_FRAME)
