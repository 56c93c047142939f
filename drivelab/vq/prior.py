"""A small frame-level predictor of commaVQ tokens, sized for what one segment can teach (training, torch).

Each token is predicted from its space-time neighbourhood: the 3x3 tokens around it in the
previous frame, the token at its position two frames back, and the four tokens of the current
frame already known in raster order (left, up, up-left, up-right). Every neighbour is embedded
with one shared token table plus a per-slot offset; an MLP maps the concatenation (and the
position) to an output vector scored against the same token table, plus learned "copy" bonuses
for the previous-frame, two-back, left and up tokens (a third of tokens repeat the previous
frame). About 43k parameters: trained on 270 frames, a 190k-parameter GPT over 3-frame windows
memorised its training frames and was worse than uniform on new ones; this one generalises.

Activations are ReLU so that the integer version the codecs run (``drivelab.vq.nprior``) is
exact integer arithmetic; ``network_blob`` quantises a checkpoint into that form.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes
from drivelab.vq.nprior import BACK2_SLOT, LEFT_SLOT, PAD, PREV_SLOT, SLOTS, UP_SLOT

KIND = "neighbour-prior"
CKPT_VERSION = 2  # 2: ReLU (version 1 used GELU, which has no exact integer form)


@dataclass
class PriorConfig:
    width: int = 16  # token embedding width
    hidden: int = 64
    dropout: float = 0.5
    input_drop: float = 0.3  # share of neighbour embeddings zeroed while training


class NeighbourPrior(nn.Module):
    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, h = cfg.width, cfg.hidden
        self.tokens = nn.Embedding(PAD + 1, d)
        self.slot = nn.Parameter(torch.zeros(SLOTS, d))
        self.pos = nn.Embedding(128, 32)
        self.mlp = nn.Sequential(
            nn.Linear(SLOTS * d + 32, h), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d),
        )
        self.bias = nn.Parameter(torch.zeros(PAD))
        self.copy = nn.Parameter(torch.tensor([3.0, 1.0, 1.0, 0.5]))

    def forward(self, ctx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(N, 14) neighbour tokens + (N,) positions -> (N, 1024) logits."""
        e = self.tokens(ctx) + self.slot
        if self.training and self.cfg.input_drop:
            e = e * (torch.rand(e.shape[0], SLOTS, 1) > self.cfg.input_drop)
        out = self.mlp(torch.cat([e.flatten(1), self.pos(pos)], 1))
        logits = out @ self.tokens.weight[:PAD].T + self.bias
        rows = torch.arange(len(ctx))
        for k, slot in enumerate((PREV_SLOT, BACK2_SLOT, LEFT_SLOT, UP_SLOT)):
            idx = ctx[:, slot]
            known = idx < PAD
            logits = logits.index_put((rows[known], idx[known]), self.copy[k].expand(int(known.sum())),
                                      accumulate=True)
        return logits


def past_context(x: np.ndarray, t: int) -> np.ndarray:
    """(128, 10) slots 0-9 for frame ``t`` of ``x`` (F, 128): previous frame's 3x3, two back."""
    prev = np.full((10, 18), PAD, np.int64)
    if t >= 1:
        prev[1:9, 1:17] = x[t - 1].reshape(8, 16)
    back2 = x[t - 2] if t >= 2 else np.full(128, PAD, np.int64)
    cols = [prev[1 + dr : 9 + dr, 1 + dc : 17 + dc].reshape(128) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    return np.stack([*cols, back2], 1)


def current_context(frame: np.ndarray, j: int) -> list[int]:
    """Slots 10-13 of token ``j``: left, up, up-left, up-right in the current frame (raster order)."""
    r, c = divmod(j, 16)

    def at(rr: int, cc: int) -> int:
        return int(frame[rr * 16 + cc]) if 0 <= rr and 0 <= cc < 16 else PAD

    return [at(r, c - 1), at(r - 1, c), at(r - 1, c - 1), at(r - 1, c + 1)]


def contexts(x: np.ndarray) -> np.ndarray:
    """(F, 128, 14) neighbourhoods of every token of ``x`` (F, 128) (training, online updates)."""
    out = np.empty((len(x), 128, SLOTS), np.int64)
    for t in range(len(x)):
        out[t, :, :10] = past_context(x, t)
        out[t, :, 10:] = [current_context(x[t], j) for j in range(128)]
    return out


def bits_per_token(model: NeighbourPrior, x: np.ndarray, first: int = 0) -> float:
    ctx = torch.from_numpy(contexts(x)[first:].reshape(-1, SLOTS))
    pos = torch.arange(128).repeat(len(x) - first)
    model.eval()
    with torch.no_grad():
        nats = F.cross_entropy(model(ctx, pos), torch.from_numpy(x[first:].reshape(-1).astype(np.int64)))
    return float(nats) / np.log(2)


def train_prior(
    segments: list[np.ndarray], cfg: PriorConfig | None = None, steps: int = 5000, batch_size: int = 512,
    lr: float = 2e-3, weight_decay: float = 0.5, val_frac: float = 0.1, seed: int = 0, log: Any = None,
) -> tuple[NeighbourPrior, float]:
    """Train on (F, 128) segments; the last ``val_frac`` of each segment picks the best weights.
    Returns the model and its validation bits/token."""
    torch.manual_seed(seed)
    cfg = cfg or PriorConfig()
    train_ctx, train_y, val = [], [], []
    for x in segments:
        x = x.astype(np.int64)
        cut = max(2, int(len(x) * (1 - val_frac)))
        ctx = contexts(x)
        train_ctx.append(ctx[1:cut].reshape(-1, SLOTS))  # frame 0 has no past: not representative
        train_y.append(x[1:cut].reshape(-1))
        if cut < len(x):
            val.append((ctx[cut:].reshape(-1, SLOTS), x[cut:].reshape(-1)))
    ctx_t = torch.from_numpy(np.concatenate(train_ctx))
    y_t = torch.from_numpy(np.concatenate(train_y))
    if not len(y_t):
        raise DrivelabError("not enough frames to train the prior (need at least 3 per segment)")
    pos_t = torch.arange(len(y_t)) % 128
    model = NeighbourPrior(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=weight_decay)

    def val_bits() -> float:
        if not val:
            return float("nan")
        model.eval()
        with torch.no_grad():
            total = sum(F.cross_entropy(model(torch.from_numpy(c), torch.arange(len(y)) % 128),
                                        torch.from_numpy(y), reduction="sum").item() for c, y in val)
        model.train()
        return total / sum(len(y) for _, y in val) / np.log(2)

    best, best_state = float("inf"), None
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        i = torch.randint(0, len(y_t), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(ctx_t[i], pos_t[i]), y_t[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 249 or step == steps - 1:
            bits = val_bits()
            if not val or bits < best:
                best, best_state = bits, {k: v.clone() for k, v in model.state_dict().items()}
            if log:
                log(step + 1, bits)
    model.load_state_dict(best_state)
    return model.eval(), float(best)


def prior_bytes(model: NeighbourPrior, meta: dict | None = None) -> bytes:
    """Canonical fp16 checkpoint bytes: what a checkpoint file and an archive hold."""
    sd = {k: v.detach().half() for k, v in model.state_dict().items()}
    meta = json.loads(json.dumps(meta or {}, default=float))  # plain types: loadable with weights_only
    buf = io.BytesIO()
    torch.save({"kind": KIND, "version": CKPT_VERSION, "config": asdict(model.cfg), "state_dict": sd,
                "meta": meta}, buf)
    return buf.getvalue()


def save_prior(path: str | Path, model: NeighbourPrior, meta: dict | None = None) -> None:
    write_bytes(path, prior_bytes(model, meta))


def load_prior(blob: bytes, path: str | Path | None = None) -> NeighbourPrior:
    """fp16 checkpoint bytes -> float32 model (the weights the coder runs are the fp16 ones)."""
    try:
        ckpt = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if ckpt.get("kind") != KIND:
            raise ValueError("not a prior checkpoint (make one with `drivelab vq train-prior`)")
        if ckpt.get("version") != CKPT_VERSION:
            raise ValueError(f"checkpoint version {ckpt.get('version')}: retrain with this drivelab")
        model = NeighbourPrior(PriorConfig(**ckpt["config"]))
        model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    except Exception as e:  # torch raises many kinds on a wrong or damaged file
        raise DrivelabError(f"cannot load the prior ({e})", path) from None
    return model.eval()


def network_blob(model: NeighbourPrior) -> bytes:
    """The integer network the codecs ship and run, from the fp16 weights a checkpoint holds."""
    from drivelab.vq import nprior

    sd = {k: v.detach().half().float().numpy() for k, v in model.state_dict().items()}
    return nprior.export(sd, asdict(model.cfg))
