"""The ``prior`` codec: the trained neighbourhood network alone, in integer arithmetic.

Each token's distribution comes from ``drivelab.vq.nprior`` (the network of ``drivelab vq
train-prior``, quantised once by the encoder); its bit probabilities go straight to the binary
coder of ``drivelab.vq.cm``. The network is shared state: stored once per archive
(``extra["shared"]["network"]``). Decoding needs numpy and numba only, on any x86-64 CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq import cm, nprior
from drivelab.vq.store import SharedStore

REQUIREMENTS = ("numpy", "numba")
SOURCES = ("drivelab/vq/cm.py", "drivelab/vq/nprior.py", "drivelab/vq/codecs/context.py",
           "drivelab/vq/codecs/prior.py")
FLAGS = cm.USE_NN
_LOADED: dict[str, tuple[np.ndarray, ...]] = {}  # network tables by SHA-256, built once per process


def network_blob(model: bytes | str | Path | None) -> bytes:
    """An exported integer network from bytes, an exported file, or a `train-prior` checkpoint."""
    if model is None:
        raise DrivelabError("this codec needs --model (a checkpoint from `drivelab vq train-prior`)")
    if isinstance(model, bytes):
        blob, path = model, None
    else:
        path = Path(model)
        if not path.is_file():
            raise DrivelabError("model checkpoint not found", path)
        blob = path.read_bytes()
    if blob[:4] == nprior.MAGIC:
        nprior.load(blob, path)  # refuse a damaged file now
        return blob
    from drivelab.vq.prior import load_prior  # torch: encoder side only
    from drivelab.vq.prior import network_blob as export

    return export(load_prior(blob, path))


def prepare(options: dict[str, Any]) -> dict[str, Any]:
    options["model"] = network_blob(options.get("model"))
    return options


def network(blob: bytes) -> tuple[np.ndarray, ...]:
    """(w, off, cfg, cum, acc) for ``cm.code``."""
    from drivelab.vq.container import sha256

    ref = sha256(blob)
    if ref not in _LOADED:
        w, off, cfg = nprior.load(blob)
        _LOADED.clear()  # one network at a time is what a codec run needs
        _LOADED[ref] = (w, off, cfg)
    w, off, cfg = _LOADED[ref]
    return (w, off, cfg, *nprior.new_scratch(cfg))


def network_of(extra: dict[str, Any], store: SharedStore | None) -> bytes:
    ref = extra.get("shared", {}).get("network")
    if ref is None or store is None:
        raise DrivelabError("header names no prior network")
    return store.get(ref, "prior network")


def encode(tokens: np.ndarray, store: SharedStore | None = None, model: bytes | str | Path | None = None,
           **_: Any) -> tuple[bytes, dict[str, Any]]:
    blob = network_blob(model)
    x = np.ascontiguousarray(tokens.reshape(-1), dtype=np.int16)
    _, payload = cm.run(x, cm.ENCODE, FLAGS, cm.new_state(5), net=network(blob))
    assert store is not None
    return payload, {"network": nprior.VERSION, "shared": {"network": store.put(blob)}}


def decode(payload: bytes, extra: dict[str, Any], frames: int,
           store: SharedStore | None = None) -> np.ndarray:
    if extra.get("network") != nprior.VERSION:
        raise DrivelabError(f"prior network format {extra.get('network')} is not supported")
    x = np.zeros(frames * cm.TOKENS_PER_FRAME, dtype=np.int16)
    cm.run(x, cm.DECODE, FLAGS, cm.new_state(5), payload, net=network(network_of(extra, store)))
    return x.reshape(frames, cm.TOKENS_PER_FRAME)
