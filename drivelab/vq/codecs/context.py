"""The ``context`` codec: the adaptive context-mixing model of ``drivelab.vq.cm`` + a range coder.

Encoding runs the model over the known tokens in one numba call, collects a 32-way
distribution per nibble and hands them all to constriction at once. Decoding alternates one
numba ``step`` and one constriction ``decode`` per nibble. Integer frequencies come from
constriction's ``Categorical(perfect=False)`` quantisation of the model's float64
probabilities, identically on both sides.
"""

from __future__ import annotations

from typing import Any

import constriction
import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq import cm


def _family() -> Any:
    return constriction.stream.model.Categorical(perfect=False)


def encode(tokens: np.ndarray, **_: Any) -> tuple[bytes, dict[str, Any]]:
    x = np.ascontiguousarray(tokens.reshape(-1), dtype=np.int16)
    n = x.size
    state = cm.new_state()
    probs = np.empty((2 * n, 32))
    syms = np.empty(2 * n, dtype=np.int32)
    cm.encode_all(x, *state, cm.PARAMS, probs, syms)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(syms, _family(), probs)
    return enc.get_compressed().astype("<u4").tobytes(), {"model": cm.VERSION, "table_bits": cm.TABLE_BITS}


def decode(payload: bytes, extra: dict[str, Any], frames: int, progress: Any = None) -> np.ndarray:
    if extra.get("model") != cm.VERSION or extra.get("table_bits") != cm.TABLE_BITS:
        raise DrivelabError(f"file was written by context model {extra}, this drivelab has {cm.VERSION}")
    if len(payload) % 4:
        raise DrivelabError("corrupted context payload (length not a multiple of 4)")
    n = frames * 128
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    fam = _family()
    x = np.zeros(n, dtype=np.int16)
    tab, cnt, mem, ctx, dense = cm.new_state()
    pr = np.empty((1, 32))
    row = pr[0]
    params = cm.PARAMS
    step = cm.step
    prev = -1
    for i in range(n):
        step(x, i, 0, prev, 0, tab, cnt, mem, ctx, dense, params, row)
        hi = int(dec.decode(fam, pr)[0])
        step(x, i, 1, hi, hi, tab, cnt, mem, ctx, dense, params, row)
        prev = int(dec.decode(fam, pr)[0])
        x[i] = hi * 32 + prev
        if progress is not None and i % 128 == 127:
            progress(128)
    return x.reshape(frames, 128)
