"""Held-out bits per token of a GPT world model, under exactly the gpt codec's windows.

For every window of the codec's schedule (``codecs.gpt.schedule``) one teacher-forced forward
pass gives the logits of the window's coded frames; they become the codec's integer
frequencies (``codecs.gpt.frequencies``) and the score is the ideal code length
``-log2(q[token] / sum(q))`` averaged over tokens. The range coder spends within a few bytes
per segment of that, so this is what ``vq compress --codec gpt`` would spend, without its
token-by-token loop (it differs from the coded size only by fp rounding between a parallel
and a stepwise forward pass).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from drivelab.vq.codecs.gpt import frequencies, schedule
from drivelab.vq.gpt import FRAME_LEN, GPT, cond_tokens, frames_to_sequence


@torch.no_grad()
def score(
    model: GPT, tokens: np.ndarray, window: int, stride: int, device: str = "cpu", batch: int = 8
) -> dict[str, Any]:
    """Bits/token of ``tokens`` (F, 128): overall, on tokens that repeat the previous frame's
    token at their position, and on the ones that change."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    x = np.asarray(tokens, np.int64).reshape(-1, 128)
    cond_all = cond_tokens(x, 0, len(x)) if model.cfg.cond else None
    bits = np.zeros(x.shape)
    wins = schedule(len(x), window, stride)
    by_len: dict[int, list[tuple[int, int, int]]] = {}
    for w in wins:
        by_len.setdefault(w[2] - w[0], []).append(w)
    for group in by_len.values():
        for i in range(0, len(group), batch):
            part = group[i : i + batch]
            frames = torch.from_numpy(np.stack([x[s:e] for s, _, e in part])).to(dev)
            seq = frames_to_sequence(frames)[:, :-1]
            cond = None
            if cond_all is not None:
                cond = torch.from_numpy(
                    np.stack([cond_all[s * FRAME_LEN : e * FRAME_LEN - 1] for s, _, e in part])
                ).to(dev)
            logits = model(seq, cond=cond)
            for k, (s, c0, e) in enumerate(part):
                # input position (t - s) * 129 + j predicts token j of frame t
                rows = np.array([(t - s) * FRAME_LEN + j for t in range(c0, e) for j in range(128)])
                q = frequencies(logits[k, torch.from_numpy(rows).to(dev)]).double().cpu().numpy()
                tok = x[c0:e].reshape(-1)
                p = q[np.arange(len(tok)), tok] / q.sum(1)
                bits[c0:e] = -np.log2(p).reshape(e - c0, 128)
    same = np.zeros(x.shape, bool)
    same[1:] = x[1:] == x[:-1]
    changed = ~same
    changed[0] = False  # frame 0 has no previous frame: counted in the total only
    return {
        "bits_per_token": float(bits.mean()),
        "bits_repeat": float(bits[same].mean()) if same.any() else None,
        "bits_change": float(bits[changed].mean()) if changed.any() else None,
        "repeat_share": float(same[1:].mean()) if len(x) > 1 else None,
        "frames": len(x),
        "tokens": int(x.size),
        "window": window,
        "stride": stride,
        "rate": 10.0 / float(bits.mean()),
    }
