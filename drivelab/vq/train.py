"""Train the token GPT world model so that it generalises, and roll out futures.

One segment is 57k-150k tokens, far too few for a plain GPT: a 190k-parameter model over
3-frame windows memorised its frames and scored 10.6 bits/token on new ones (uniform is 10).
What makes it generalise (measured in docs/vq.md):

* frame conditioning (``GPTConfig.cond``): the previous frame's 3x3 neighbourhood and the
  two-back token at every target position, plus copy bonuses, as the ``prior`` codec sees them;
* early stopping on held-out frames (the last ``val_frac`` of every training segment, never
  trained on): the best weights by held-out bits/token are kept;
* dropout, AdamW weight decay and conditioning dropout (a share of the conditioning tokens is
  replaced by PAD while training, so the model cannot lean on one slot);
* small defaults: 2 layers, width 64, one 16-wide token table shared by input, conditioning
  and output (``token_dim``), 1-frame windows (earlier frames come in through the
  conditioning): the size one segment supports.

What keeps a rollout (``imagine``) moving: trained on real frames only, the model fed its own
samples drifted towards a still image (63% of tokens repeated, real drives 34%), because a
sampled frame repeats a little too much and the model reads repeats as "this scene is still".
So a share of the training windows (``rollout_share``) see the model's *own* sample of the
previous frame (scheduled sampling, every position drawn at once from one teacher-forced pass,
as in Duckworth et al. 2019), with an input flag saying so (``GPTConfig.rollout``, like the
noise-level input of GameNGen's noise augmentation). Coding and scoring set the flag to "real"
and ``imagine`` to "sampled" from its second frame on, so one model serves both.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes
from drivelab.vq.gpt import (
    BOS,
    COND_SLOTS,
    GPT,
    PAD,
    GPTConfig,
    cond_rows,
    cond_tokens,
    frame_cond,
    frames_to_sequence,
)


def world_config(**overrides: Any) -> GPTConfig:
    """The world model ``drivelab vq train`` builds by default (measured in docs/vq.md)."""
    cfg = dict(frames=1, n_layer=2, n_head=2, n_embd=64, token_dim=16, cond=True, dropout=0.3, rollout=True)
    return GPTConfig(**{**cfg, **overrides})


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 0.5
    cond_drop: float = 0.3  # share of conditioning tokens replaced by PAD while training
    val_frac: float = 0.1  # last share of each segment's frames, held out for early stopping
    reverse: bool = False  # augmentation: also train on every segment played backwards
    rollout_share: float = 0.5  # share of windows given the model's own previous frame (rollout models)
    eval_every: int = 250
    patience: int = 4  # evaluations without improvement before stopping
    seed: int = 0


class Windows:
    """Every window of ``frames`` frames of some segments; batches (tokens and conditioning) are
    cut on demand, so a folder of segments costs its tokens in memory, not its windows."""

    def __init__(self, segments: list[np.ndarray], frames: int, cond: bool) -> None:
        self.segments = [np.asarray(x, np.int64) for x in segments if len(x) >= frames]
        self.frames, self.with_cond = frames, cond
        self.index = [(k, s) for k, x in enumerate(self.segments) for s in range(len(x) - frames + 1)]

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, frames, 128) tokens and (B, frames * 129, 14) conditioning of windows ``ids``."""
        picked = [self.index[i] for i in ids]
        toks = np.stack([self.segments[k][s : s + self.frames] for k, s in picked])
        if not self.with_cond:
            return torch.from_numpy(toks), None
        conds = np.stack([cond_tokens(self.segments[k], s, self.frames) for k, s in picked])
        return torch.from_numpy(toks), torch.from_numpy(conds)


def _loss(
    model: GPT, frames: torch.Tensor, cond: torch.Tensor | None, reduction: str = "mean",
    sampled: torch.Tensor | bool = False,
) -> torch.Tensor:
    dev = model.transformer.wte.weight.device
    seq = frames_to_sequence(frames.to(dev))
    c = cond[:, :-1].to(dev) if cond is not None else None
    logits = model(seq[:, :-1], cond=c, sampled=sampled)
    targets = seq[:, 1:].clone()
    targets[targets == BOS] = -100  # BOS is given, never predicted
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)


def evaluate_bits(model: GPT, windows: Windows, batch_size: int = 16) -> float:
    """Mean bits per token over every token of every window (teacher forcing)."""
    was = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            f, c = windows.batch(list(range(i, min(i + batch_size, len(windows)))))
            total += _loss(model, f, c, "sum").item()
            n += f.numel()
    model.train(was)
    return total / max(n, 1) / math.log(2)


@torch.no_grad()
def own_previous_frames(
    model: GPT, data: Windows, ids: list[int], cond: torch.Tensor, share: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """For a ``share`` of 1-frame windows ``ids`` (those with a previous frame), rebuild the
    conditioning ``cond`` (B, 129, 14) around the model's own sample of the previous frame: every
    position drawn at once from one teacher-forced pass over the real previous frame (its own
    conditioning real, eval mode, temperature 1). Returns the conditioning and the rollout flags."""
    picked = [data.index[i] for i in ids]
    draw = (torch.rand(len(ids), generator=gen) < share).tolist()
    rows = [b for b, (_, t) in enumerate(picked) if t >= 1 and draw[b]]
    flags = torch.zeros(len(ids), dtype=torch.bool)
    if not rows:
        return cond, flags
    windows = [(data.segments[picked[b][0]], picked[b][1]) for b in rows]
    dev = model.transformer.wte.weight.device
    prev = torch.from_numpy(np.stack([x[t - 1] for x, t in windows]))[:, None]
    prev_cond = torch.from_numpy(np.stack([cond_tokens(x, t - 1, 1)[:-1] for x, t in windows]))
    was = model.training
    model.eval()
    # input position j (BOS, then tokens 0..126) predicts token j of the previous frame
    logits = model(frames_to_sequence(prev.to(dev))[:, :-1], cond=prev_cond.to(dev))[..., :PAD]
    model.train(was)
    probs = torch.softmax(logits.float().cpu().reshape(-1, PAD), -1)
    own = torch.multinomial(probs, 1, generator=gen).reshape(len(rows), -1).numpy()
    cond = cond.clone()
    for i, b in enumerate(rows):
        x, t = windows[i]
        cond[b] = torch.from_numpy(frame_cond(own[i], x[t - 2] if t >= 2 else None, x[t]))
        flags[b] = True
    return cond, flags


def split_holdout(segments: list[np.ndarray], frames: int, val_frac: float) -> tuple[list, list]:
    """Training and held-out parts of each segment: the held-out tail starts ``frames - 1``
    frames early so its first window has full context (those frames are only context there)."""
    tr, va = [], []
    for s in segments:
        n_val = int(round(len(s) * val_frac))
        cut = len(s) - n_val
        if n_val < 1 or cut < frames:
            tr.append(s)
            continue
        tr.append(s[:cut])
        va.append(s[cut - frames + 1 :])
    return tr, va


def train(
    train_segments: list[np.ndarray],
    val_segments: list[np.ndarray],
    cfg: GPTConfig,
    tc: TrainConfig | None = None,
    log: Callable[[int, float, float | None], Any] | None = None,
    device: str = "cpu",
) -> tuple[GPT, dict[str, Any]]:
    """Train on windows of ``cfg.frames`` frames; keep the weights with the best held-out
    bits/token (``val_segments``; none: the last weights). Returns the model and a report."""
    tc = tc or TrainConfig()
    torch.manual_seed(tc.seed)
    segs = list(train_segments) + ([s[::-1] for s in train_segments] if tc.reverse else [])
    data = Windows(segs, cfg.frames, cfg.cond)
    if not len(data):
        raise DrivelabError(f"no training window of {cfg.frames} frames: segments are too short")
    val = Windows(val_segments, cfg.frames, cfg.cond)
    if cfg.rollout and tc.rollout_share == 0:
        # The flag is decided here, once: a model never shown its own frames gets no flag, so
        # ``imagine`` cannot feed it an embedding that was never trained.
        cfg = replace(cfg, rollout=False)
    if cfg.rollout and cfg.frames != 1:
        raise DrivelabError("training on the model's own previous frames needs 1-frame windows "
                            "(--frames 1, or --rollout-share 0)")
    model = GPT(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=tc.lr)
    gen = torch.Generator().manual_seed(tc.seed)
    warm = max(1, tc.steps // 20)
    best, best_state, best_step, bad = float("inf"), None, 0, 0
    last_train = float("nan")
    model.train()
    step = 0
    for step in range(1, tc.steps + 1):
        for g in opt.param_groups:  # linear warm-up, cosine decay
            g["lr"] = tc.lr * min(1.0, step / warm) * 0.5 * (1 + math.cos(math.pi * step / tc.steps))
        idx = torch.randint(len(data), (tc.batch_size,), generator=gen)
        frames, c = data.batch(idx.tolist())
        flags = torch.zeros(len(idx), dtype=torch.bool)
        if cfg.rollout:
            c, flags = own_previous_frames(model, data, idx.tolist(), c, tc.rollout_share, gen)
        if c is not None and tc.cond_drop:
            c = c.masked_fill(torch.rand(c.shape, generator=gen) < tc.cond_drop, PAD)
        loss = _loss(model, frames, c, sampled=flags)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last_train = loss.item() / math.log(2)
        if step % tc.eval_every == 0 or step == tc.steps:
            bits = evaluate_bits(model, val) if len(val) else None
            if log is not None:
                log(step, last_train, bits)
            if bits is None:
                continue
            if bits < best:
                best, best_step, bad = bits, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= tc.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.cpu()
    report = {
        "val_bits_per_token": best if best_state is not None else None,
        "best_step": best_step if best_state is not None else step,
        "steps_run": step,
        "train_bits_last": last_train,
        "train_windows": len(data),
        "val_windows": len(val),
    }
    return model.eval(), report


def checkpoint_bytes(model: GPT, meta: dict[str, Any] | None = None) -> bytes:
    """fp16 checkpoint: what the file holds, what an archive embeds and what the coder runs."""
    skip = "lm_head.weight" if model.cfg.tied else None  # tied: stored once, as wte
    sd = {k: v.detach().half() for k, v in model.state_dict().items() if k != skip}
    meta = json.loads(json.dumps(meta or {}, default=float))  # plain types: loadable with weights_only
    buf = io.BytesIO()
    torch.save({"kind": "drivelab-gpt", "config": model.cfg.to_dict(), "state_dict": sd, "meta": meta}, buf)
    return buf.getvalue()


def save_checkpoint(path: str | Path, model: GPT, meta: dict[str, Any] | None = None) -> None:
    write_bytes(path, checkpoint_bytes(model, meta))


def load_checkpoint(path: str | Path) -> GPT:
    """Any model file drivelab.vq.hf accepts (drivelab checkpoints, comma's gpt2m files)."""
    from drivelab.vq.hf import load_model

    return load_model(path).model


def repeat_rate(frames: np.ndarray, before: np.ndarray | None = None) -> float:
    """Share of tokens equal to the token at the same position in the previous frame."""
    x = np.asarray(frames).reshape(-1, 128)
    if before is not None:
        x = np.concatenate([np.asarray(before).reshape(-1, 128)[-1:], x])
    if len(x) < 2:
        return float("nan")
    return float((x[1:] == x[:-1]).mean())


def _row(x: np.ndarray, t: int, k: int) -> np.ndarray:
    """(1, 14) conditioning of the position predicting token ``k`` of frame ``t`` of ``x``."""
    prev = x[t - 1 : t] if t >= 1 else None
    back2 = x[t - 2 : t - 1] if t >= 2 else None
    return cond_rows(prev, back2, x[t : t + 1], k)


@torch.no_grad()
def imagine(
    model: GPT, context: np.ndarray, frames: int, temperature: float = 1.0, seed: int = 0,
    device: str = "cpu",
) -> np.ndarray:
    """Sample ``frames`` future frames after ``context`` (F, 128) tokens; returns (frames, 128).
    Each frame is sampled with up to ``cfg.frames - 1`` earlier frames in the window."""
    if temperature <= 0:
        raise DrivelabError("--temperature must be > 0")
    dev = torch.device(device)
    model = model.to(dev).eval()
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = np.asarray(context, np.int64).reshape(-1, 128)
    n0 = len(x)
    x = np.concatenate([x, np.zeros((frames, 128), np.int64)])
    caches = model.new_caches()
    cond = model.cfg.cond
    for t in range(n0, n0 + frames):
        s = max(0, t - (model.cfg.frames - 1))
        ctx = torch.from_numpy(x[s:t])[None].to(dev)
        seq = torch.cat([frames_to_sequence(ctx), torch.full((1, 1), BOS, device=dev)], 1)
        ct = None
        if cond:  # the frame's own rows are built as its tokens appear (cond_rows reads only j < k)
            past = cond_tokens(x, s, t - s) if t > s else np.empty((0, COND_SLOTS), np.int64)
            ct = torch.from_numpy(np.concatenate([past, _row(x, t, 0)]))[None].to(dev)
        own = t > n0  # the previous frame is one this rollout sampled
        logits = model(seq, caches, 0, ct, sampled=own)[0, -1]
        pos = seq.shape[1]
        for j in range(128):
            p = torch.softmax(logits[:1024].float() / temperature, dim=0)
            x[t, j] = int(torch.multinomial(p, 1, generator=gen))
            if j < 127:
                tok = torch.tensor([[x[t, j]]], device=dev)
                c = torch.from_numpy(_row(x, t, j + 1))[None].to(dev) if cond else None
                logits = model(tok, caches, pos, c, sampled=own)[0, -1]
                pos += 1
    return x[n0:].astype(np.int16)
