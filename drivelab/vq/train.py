"""Train the token GPT on segments, report validation bits per token, and roll out futures."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivelab.io import write_bytes
from drivelab.vq.gpt import GPT, GPTConfig, frames_to_sequence


def _windows(segments: list[np.ndarray], frames: int) -> torch.Tensor:
    out = [s[i : i + frames] for s in segments for i in range(0, len(s) - frames + 1)]
    return torch.from_numpy(np.stack(out).astype(np.int64))


def _loss(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    seq = frames_to_sequence(batch)
    logits = model(seq[:, :-1])
    targets = seq[:, 1:].clone()
    targets[targets == 1024] = -100  # BOS is given, never predicted
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def evaluate_bits(model: GPT, windows: torch.Tensor, batch_size: int = 16) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            b = windows[i : i + batch_size]
            total += _loss(model, b).item() * len(b)
    model.train()
    return total / max(1, len(windows)) / math.log(2)


def train(
    train_segments: list[np.ndarray],
    val_segments: list[np.ndarray],
    cfg: GPTConfig,
    steps: int = 500,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    log: Callable[[int, float], Any] | None = None,
) -> tuple[GPT, float]:
    """Train on windows of ``cfg.frames`` frames; return the model and validation bits/token."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    data = _windows(train_segments, cfg.frames)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        for g in opt.param_groups:  # cosine decay
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = _loss(model, data[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log is not None:
            log(step, loss.item() / math.log(2))
    val = [s for s in val_segments if len(s) >= cfg.frames]
    bits = evaluate_bits(model, _windows(val, cfg.frames)) if val else float("nan")
    return model, bits


def save_checkpoint(path: str | Path, model: GPT, meta: dict[str, Any] | None = None) -> None:
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "state_dict": sd, "meta": meta or {}}, buf)
    write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> GPT:
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = GPT(GPTConfig(**ckpt["config"]))
    sd = {k: v.float() for k, v in ckpt["state_dict"].items()}
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    model.load_state_dict(sd)
    return model.eval()


@torch.no_grad()
def imagine(
    model: GPT, context: np.ndarray, frames: int, temperature: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Sample ``frames`` future frames after ``context`` (F, 128) tokens; returns (frames, 128)."""
    gen = torch.Generator().manual_seed(seed)
    hist = [torch.from_numpy(f.astype(np.int64)) for f in context[-(model.cfg.frames - 1) :]]
    out = []
    for _ in range(frames):
        hist = hist[-(model.cfg.frames - 1) :]
        seq = frames_to_sequence(torch.stack(hist)[None]) if hist else torch.empty(1, 0, dtype=torch.long)
        seq = torch.cat([seq, torch.tensor([[1024]])], dim=1)
        caches = model.new_caches()
        logits = model(seq, caches, 0)[0, -1]
        pos = seq.shape[1]
        frame = []
        for j in range(128):
            probs = torch.softmax(logits[:1024] / temperature, dim=0)
            tok = int(torch.multinomial(probs, 1, generator=gen))
            frame.append(tok)
            if j < 127:
                logits = model(torch.tensor([[tok]]), caches, pos)[0, -1]
                pos += 1
        hist.append(torch.tensor(frame))
        out.append(frame)
    return np.array(out, dtype=np.int16)
