"""The ``mix`` codec: the ``prior`` network and the adaptive context model, mixed while coding.

The network knows driving (what it learnt offline, on many frames); the context model knows
this segment (and, in a solid chain or from a trained starting state, the segments before).
Per binary decision ``drivelab.vq.cm`` feeds the network's bit probability into the context
model's mixers, passes it through its own APM, and a final logistic mixer (weights by decision
depth and network confidence) learns online how much to trust each side. Encoder and decoder
run the same integer code, so the mixture adapts identically on both sides.

Options: ``model`` (the network, required), ``start`` (a context starting state), ``chain``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivelab.vq import cm, nprior
from drivelab.vq.codecs import context, prior
from drivelab.vq.store import SharedStore

SOLID = True
REQUIREMENTS = ("numpy", "numba")
SOURCES = (*prior.SOURCES, "drivelab/vq/codecs/mix.py")
FLAGS = cm.USE_CM | cm.USE_NN


def prepare(options: dict[str, Any]) -> dict[str, Any]:
    options["model"] = prior.network_blob(options.get("model"))
    options["start"] = context.start_blob(options.get("start"))
    return options


def encode(tokens: np.ndarray, store: SharedStore | None = None, chain: Any = None,
           model: bytes | str | Path | None = None, start: bytes | str | Path | None = None,
           **_: Any) -> tuple[bytes, dict[str, Any]]:
    net_blob = prior.network_blob(model)
    start_blob = context.start_blob(start)
    x = np.ascontiguousarray(tokens.reshape(-1), dtype=np.int16)
    _, payload = cm.run(x, cm.ENCODE, FLAGS, context._state(chain, start_blob), net=prior.network(net_blob))
    assert store is not None
    extra = context._header(store, start_blob)
    extra["network"] = nprior.VERSION
    extra.setdefault("shared", {})["network"] = store.put(net_blob)
    return payload, extra


def decode(payload: bytes, extra: dict[str, Any], frames: int, store: SharedStore | None = None,
           chain: Any = None) -> np.ndarray:
    context.check_model(extra)
    x = np.zeros(frames * cm.TOKENS_PER_FRAME, dtype=np.int16)
    state = context._state(chain, context.start_of(extra, store))
    cm.run(x, cm.DECODE, FLAGS, state, payload, net=prior.network(prior.network_of(extra, store)))
    return x.reshape(frames, cm.TOKENS_PER_FRAME)
