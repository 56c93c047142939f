"""The ``gpt`` codec: arithmetic coding with a GPT prior over tokens.

Determinism: encoder and decoder run the very same code path. For every frame the model
prefills the previous ``context`` frames plus BOS (batch 1), then goes token by token
through its KV cache (batch 1, one token per call); the encoder feeds the true token, the
decoder the one it just decoded. Logits are float32 on CPU with a fixed thread count; the
softmax is float64, mixed with a uniform floor ``(1 - 1e-6) * softmax + 1e-6 / 1024``, and
constriction's ``Categorical(perfect=False)`` turns that into integer frequencies. The
header records torch version, dtype and threads; decoding elsewhere is refused.

The prior is either a drivelab checkpoint stored inside the archive (fp16, so the archive
is self-contained) or an external checkpoint (e.g. comma's gpt2m) named by path and checked
by SHA-256.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import constriction
import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq.container import sha256

FLOOR = 1e-6
THREADS = 1


def _load_model(blob: bytes) -> Any:
    import torch

    from drivelab.vq.gpt import GPT, GPTConfig

    ckpt = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**ckpt["config"]))
    sd = {k: v.float() for k, v in ckpt["state_dict"].items()}
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied; not stored twice
    model.load_state_dict(sd)
    return model.eval()


def _distributions(
    model: Any, x: np.ndarray, context: int, decoder: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shared encoder/decoder loop. With ``decoder`` it fills ``x`` as it decodes."""
    import torch

    from drivelab.vq.gpt import BOS

    torch.set_num_threads(THREADS)
    frames = x.shape[0]
    probs = np.empty((frames * 128, 1024)) if decoder is None else np.empty((1, 1024))
    fam = constriction.stream.model.Categorical(perfect=False)
    with torch.inference_mode():
        for t in range(frames):
            lo = max(0, t - context)
            prev = torch.from_numpy(x[lo:t].astype(np.int64))
            seq = torch.cat([torch.cat([torch.tensor([BOS]), f]) for f in prev] + [torch.tensor([BOS])])
            caches = model.new_caches()
            logits = model(seq[None], caches, 0)[0, -1]
            pos = seq.numel()
            for j in range(128):
                p = torch.softmax(logits[:1024].double(), dim=0).numpy()
                p = (1.0 - FLOOR) * p + FLOOR / 1024
                if decoder is None:
                    probs[t * 128 + j] = p
                else:
                    probs[0] = p
                    x[t, j] = int(decoder.decode(fam, probs)[0])
                if j < 127:
                    logits = model(torch.tensor([[int(x[t, j])]]), caches, pos)[0, -1]
                    pos += 1
    return probs, x


def encode(
    tokens: np.ndarray, model_path: str | Path | None = None, context: int = 2, embed: bool = True, **_: Any
) -> tuple[bytes, dict[str, Any]]:
    import torch

    if model_path is None:
        raise DrivelabError("the gpt codec needs --model (a checkpoint from `drivelab vq train`)")
    path = Path(model_path)
    if not path.is_file():
        raise DrivelabError("model checkpoint not found", path)
    blob = path.read_bytes()
    model = _load_model(_half(blob))
    context = min(context, model.cfg.frames - 1)
    probs, _ = _distributions(model, tokens.astype(np.int64), context)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(
        tokens.reshape(-1).astype(np.int32), constriction.stream.model.Categorical(perfect=False), probs
    )
    data = enc.get_compressed().astype("<u4").tobytes()
    weights = _half(blob) if embed else b""
    extra = {
        "context": context,
        "torch": torch.__version__,
        "dtype": "float32",
        "threads": THREADS,
        "floor": FLOOR,
        "weights_len": len(weights),
        "weights_sha256": sha256(_half(blob)),
        "model_path": None if embed else str(path),
    }
    return weights + data, extra


def _half(blob: bytes) -> bytes:
    """Checkpoint -> canonical fp16 checkpoint bytes (what the archive stores and the coder uses)."""
    import torch

    ckpt = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    sd = {k: v.half() for k, v in ckpt["state_dict"].items() if k != "lm_head.weight"}
    buf = io.BytesIO()
    torch.save({"config": ckpt["config"], "state_dict": sd}, buf)
    return buf.getvalue()


def decode(payload: bytes, extra: dict[str, Any], frames: int) -> np.ndarray:
    from drivelab.vq.codecs.weights import check_torch_version, split_weights

    check_torch_version(extra)
    weights, data = split_weights(payload, extra, lambda path: _half(path.read_bytes()))
    model = _load_model(weights)
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    x = np.zeros((frames, 128), dtype=np.int64)
    _distributions(model, x, int(extra["context"]), decoder=dec)
    return x.astype(np.int16)
