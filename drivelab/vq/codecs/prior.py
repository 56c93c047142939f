"""The ``prior`` codec: a small neural predictor trained beforehand and adapted while coding.

The prior (``drivelab.vq.prior``, trained by ``drivelab vq train-prior``) gives every token a
distribution from its space-time neighbourhood. After each frame, encoder and decoder both take
one SGD step on that frame, so the model keeps learning the segment it is coding (as context
mixing does), starting from what it learnt offline.

Determinism: encoder and decoder run the same code path: per token a batch-1 float32 forward
pass on one CPU thread, a float64 softmax mixed with a uniform floor
``(1 - 1e-6) * p + 1e-6 / 1024``, constriction's ``Categorical(perfect=False)``; per frame the
same batch of 128 neighbourhoods for the SGD step, no dropout. The header records torch
version, thread count and learning rate; decoding on another torch version is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import constriction
import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq.container import sha256

FLOOR = 1e-6
THREADS = 1
LR = 0.1


def _code(model: Any, x: np.ndarray, lr: float, decoder: Any = None) -> np.ndarray:
    """Shared encoder/decoder loop: (F*128, 1024) probabilities when encoding; with ``decoder``
    it fills ``x`` (F, 128) token by token."""
    import torch
    import torch.nn.functional as F

    from drivelab.vq.prior import SLOTS, current_context, past_context

    torch.set_num_threads(THREADS)
    frames = x.shape[0]
    probs = np.empty((frames * 128, 1024)) if decoder is None else np.empty((1, 1024))
    family = constriction.stream.model.Categorical(perfect=False)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.eval()  # no dropout: the update must be the same on both sides
    positions = torch.arange(128)
    for t in range(frames):
        ctx = np.empty((128, SLOTS), np.int64)
        ctx[:, :10] = past_context(x, t)
        for j in range(128):
            ctx[j, 10:] = current_context(x[t], j)
            with torch.no_grad():
                logits = model(torch.from_numpy(ctx[j : j + 1]), positions[j : j + 1])[0]
            p = torch.softmax(logits.double(), dim=0).numpy()
            p = (1.0 - FLOOR) * p + FLOOR / 1024
            if decoder is None:
                probs[t * 128 + j] = p
            else:
                probs[0] = p
                x[t, j] = int(decoder.decode(family, probs)[0])
        target = torch.from_numpy(x[t].astype(np.int64))
        loss = F.cross_entropy(model(torch.from_numpy(ctx), positions), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probs


def encode(
    tokens: np.ndarray, model_path: str | Path | None = None, embed: bool = True, lr: float = LR, **_: Any
) -> tuple[bytes, dict[str, Any]]:
    import torch

    from drivelab.vq.prior import load_prior

    if model_path is None:
        raise DrivelabError("the prior codec needs --model (a checkpoint from `drivelab vq train-prior`)")
    path = Path(model_path)
    if not path.is_file():
        raise DrivelabError("model checkpoint not found", path)
    weights = path.read_bytes()
    model = load_prior(weights, path)
    probs = _code(model, tokens.astype(np.int64).copy(), lr)
    enc = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    enc.encode(tokens.reshape(-1).astype(np.int32), family, probs)
    data = enc.get_compressed().astype("<u4").tobytes()
    stored = weights if embed else b""
    extra = {
        "torch": torch.__version__,
        "threads": THREADS,
        "floor": FLOOR,
        "lr": lr,
        "weights_len": len(stored),
        "weights_sha256": sha256(weights),
        "model_path": None if embed else str(path),
    }
    return stored + data, extra


def decode(payload: bytes, extra: dict[str, Any], frames: int) -> np.ndarray:
    from drivelab.vq.codecs.weights import check_torch_version, split_weights
    from drivelab.vq.prior import load_prior

    check_torch_version(extra)
    weights, data = split_weights(payload, extra, lambda path: path.read_bytes())
    model = load_prior(weights)
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    x = np.zeros((frames, 128), dtype=np.int64)
    _code(model, x, float(extra["lr"]), decoder=dec)
    return x.astype(np.int16)
