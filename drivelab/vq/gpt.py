"""A GPT over commaVQ tokens, shaped to run comma's gpt2m world model and drivelab's own.

Each frame is fed as [BOS, 128 tokens row-major]; positions are learned over ``frames``
frames (gpt2m: 20 frames = 2580 positions, 24 layers, 16 heads, width 1024, MLP 4096, vocab
1025, BOS = 1024, untied lm_head without bias). The blocks are GPT-2's: pre-LayerNorm,
causal self-attention and a tanh-GELU MLP, all with biases.

drivelab's own world models can add *frame conditioning* (``cond=True``): every input
position also sees the tokens around its target position in the previous frame (3x3) and
the target position's token two frames back, embedded and projected into the residual
stream, and the logits get learned "copy" bonuses for the previous-frame and two-back
tokens at the target position; the left, up, up-left and up-right tokens of the frame itself
(already known in raster order) are conditioning slots too. That is how the ``prior`` codec's
predictor sees the past;
it lets a small model trained on one segment predict "the token stays" without having to
learn it through attention. gpt2m runs with ``cond=False``, exactly as published.

Loading comma's files (Hugging Face layout, Conv1D weights) is ``drivelab.vq.hf``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TOKENS_PER_FRAME = 128
FRAME_LEN = TOKENS_PER_FRAME + 1  # BOS + tokens
BOS = 1024
PAD = 1024  # conditioning slot with nothing in it (outside the frame, before the segment)
# conditioning slots: 0-8 the previous frame's 3x3 around the target (4 = same position),
# 9 the target position two frames back, 10-13 left, up, up-left, up-right in the frame itself
COND_SLOTS = 14
COPY_SLOTS = (4, 9, 10, 11)  # same position one and two frames back, left, up: copy bonuses


@dataclass
class GPTConfig:
    frames: int = 20
    vocab_size: int = 1025
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 1024
    n_inner: int | None = None  # MLP width; None = 4 * n_embd (GPT-2)
    tied: bool = False  # lm_head shares wte's weights (GPT-2) or not (gpt2m)
    ln_eps: float = 1e-5
    dropout: float = 0.0  # embeddings, attention probabilities, residual branches (training only)
    cond: bool = False  # frame conditioning (module docstring); drivelab world models only
    cond_width: int = 16
    token_dim: int = 0  # >0: one small token table shared by input, conditioning and output
    rollout: bool = False  # an input flag: the previous frame is real (0) or the model's own sample (1)

    @property
    def block_size(self) -> int:
        return self.frames * FRAME_LEN

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GPT config fields {sorted(unknown)}")
        return cls(**d)


GPT2M = GPTConfig()  # comma's published gpt2m


class LayerCache:
    """One layer's keys and values, preallocated for the whole block on first use."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def put(
        self, k: torch.Tensor, v: torch.Tensor, pos0: int, block: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, t, d = k.shape
        if self.k is None or self.k.shape[0] != b or self.k.dtype != k.dtype or self.k.device != k.device:
            self.k = k.new_empty(b, h, block, d)
            self.v = v.new_empty(b, h, block, d)
        self.k[:, :, pos0 : pos0 + t] = k
        self.v[:, :, pos0 : pos0 + t] = v
        return self.k[:, :, : pos0 + t], self.v[:, :, : pos0 + t]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")
        self.n_head = cfg.n_head
        self.block = cfg.block_size
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: LayerCache | None, pos0: int) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            k, v = cache.put(k, v, pos0, self.block)
        tk = k.shape[2]
        p = self.dropout if self.training else 0.0
        if t == tk:  # the whole sequence: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        elif t == 1:  # one new token sees everything before it
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:  # a chunk after cached keys: query i (absolute tk - t + i) sees keys up to itself
            mask = torch.ones(t, tk, dtype=torch.bool, device=x.device).tril(diagonal=tk - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_width)
        self.c_proj = nn.Linear(cfg.mlp_width, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.ln_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: LayerCache | None, pos0: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, pos0)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.token_dim and cfg.tied:
            raise ValueError("token_dim models share their token table already; tied must be false")
        self.cfg = cfg
        d_tok = cfg.token_dim or cfg.n_embd
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, d_tok),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.ln_eps),
            )
        )
        if cfg.token_dim:
            # factorised: tokens live in a token_dim table; projections in and out of the stream
            self.tok_in = nn.Linear(cfg.token_dim, cfg.n_embd, bias=False)
            self.lm_head = nn.Linear(cfg.n_embd, cfg.token_dim, bias=False)
            self.out_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        else:
            self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
            if cfg.tied:
                self.lm_head.weight = self.transformer.wte.weight
        if cfg.cond:
            width = cfg.token_dim or cfg.cond_width
            if not cfg.token_dim:
                self.cond_emb = nn.Embedding(PAD + 1, cfg.cond_width)
            self.cond_proj = nn.Linear(COND_SLOTS * width, cfg.n_embd)
            self.copy = nn.Parameter(torch.tensor([2.0, 0.5, 0.5, 0.5]))  # one per COPY_SLOTS
        if cfg.rollout:
            if not cfg.cond:
                raise ValueError("rollout needs cond: the flag says where the conditioning frames came from")
            # one embedding, shared copy bonuses: with per-flag bonuses the model learnt that its
            # own frames are not worth copying and rollouts churned (8-11% repeats, real 34%)
            self.rollout_emb = nn.Embedding(2, cfg.n_embd)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        caches: list[LayerCache] | None = None,
        pos0: int = 0,
        cond: torch.Tensor | None = None,
        sampled: bool | torch.Tensor = False,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for ``idx`` (B, T) at absolute positions pos0..pos0+T-1.

        ``caches`` (from ``new_caches``) keeps keys/values between calls, so a sequence can be
        fed in pieces; ``cond`` (B, T, 14) holds the conditioning tokens of every position's
        target (``cond_tokens``) and is required when the model was built with ``cond``.
        ``sampled`` (bool, or (B,) bools) tells a ``rollout`` model that the previous frame is its
        own sample (``imagine``) rather than a real frame (coding, scoring: the default)."""
        t = idx.shape[1]
        if pos0 + t > self.cfg.block_size:
            raise ValueError(f"sequence of {pos0 + t} exceeds block size {self.cfg.block_size}")
        pos = torch.arange(pos0, pos0 + t, device=idx.device)
        wte = self.transformer.wte
        tok = wte(idx)
        x = (self.tok_in(tok) if self.cfg.token_dim else tok) + self.transformer.wpe(pos)
        if self.cfg.cond:
            if cond is None:
                raise ValueError("this model conditions on the previous frames: pass cond")
            table = wte if self.cfg.token_dim else self.cond_emb
            x = x + self.cond_proj(table(cond).flatten(2))
        if self.cfg.rollout:
            flag = torch.as_tensor(sampled, device=idx.device).long().expand(idx.shape[0])
            x = x + self.rollout_emb(flag)[:, None, :]
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches is not None else None, pos0)
        logits = self.lm_head(self.transformer.ln_f(x))
        if self.cfg.token_dim:
            logits = logits @ wte.weight.T + self.out_bias
        if self.cfg.cond:
            tok = cond[..., list(COPY_SLOTS)]
            bonus = self.copy.to(logits.dtype) * (tok < PAD).to(logits.dtype)  # PAD slots get no bonus
            logits = logits.scatter_add(2, tok, bonus)  # one pass; equal tokens add up
        return logits

    def new_caches(self) -> list[LayerCache]:
        return [LayerCache() for _ in self.transformer.h]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def frames_to_sequence(frames: torch.Tensor) -> torch.Tensor:
    """(B, F, 128) tokens -> (B, F*129) with BOS before each frame."""
    b, f, _ = frames.shape
    bos = torch.full((b, f, 1), BOS, dtype=frames.dtype, device=frames.device)
    return torch.cat([bos, frames], dim=2).reshape(b, f * FRAME_LEN)


def _neighbour_tables() -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (128 = "outside", PAD) of each target's 3x3 previous-frame neighbours and
    of its left, up, up-left, up-right neighbours in its own frame (earlier in raster order)."""
    prev = np.full((TOKENS_PER_FRAME, 9), TOKENS_PER_FRAME, np.int64)
    cur = np.full((TOKENS_PER_FRAME, 4), TOKENS_PER_FRAME, np.int64)
    for k in range(TOKENS_PER_FRAME):
        r, c = divmod(k, 16)
        for n, (dr, dc) in enumerate((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)):
            if 0 <= r + dr < 8 and 0 <= c + dc < 16:
                prev[k, n] = (r + dr) * 16 + c + dc
        for n, (dr, dc) in enumerate(((0, -1), (-1, 0), (-1, -1), (-1, 1))):
            if 0 <= r + dr < 8 and 0 <= c + dc < 16:
                cur[k, n] = (r + dr) * 16 + c + dc
    return prev, cur


_PREV_IDX, _CUR_IDX = _neighbour_tables()


def _padded(frame: np.ndarray | None, b: int) -> np.ndarray:
    out = np.full((b, TOKENS_PER_FRAME + 1), PAD, np.int64)
    if frame is not None:
        out[:, :TOKENS_PER_FRAME] = np.asarray(frame).reshape(b, TOKENS_PER_FRAME)
    return out


def cond_rows(prev: np.ndarray | None, back2: np.ndarray | None, cur: np.ndarray, k: int) -> np.ndarray:
    """(B, 14) conditioning of the input position that predicts token ``k`` of a frame, for a
    batch: ``prev``/``back2`` are the (B, 128) frames before (None: before the segment), ``cur``
    the frame itself, of which only tokens before ``k`` are read. ``k`` = 128 (the position
    that predicts the next BOS) gets PAD everywhere."""
    b = len(cur)
    out = np.full((b, COND_SLOTS), PAD, np.int64)
    if k < TOKENS_PER_FRAME:
        out[:, :9] = _padded(prev, b)[:, _PREV_IDX[k]]
        if back2 is not None:
            out[:, 9] = np.asarray(back2).reshape(b, TOKENS_PER_FRAME)[:, k]
        out[:, 10:] = _padded(cur, b)[:, _CUR_IDX[k]]
    return out


def frame_cond(prev: np.ndarray | None, back2: np.ndarray | None, cur: np.ndarray) -> np.ndarray:
    """(129, 14) conditioning of one frame's 129 input positions: position k (BOS, then tokens)
    predicts token k, so it sees the 3x3 tokens around k in the previous frame, token k two
    frames back, and k's left, up, up-left and up-right neighbours in the frame itself (all
    earlier in raster order); the last position predicts the next BOS and sees PAD only."""
    out = np.full((FRAME_LEN, COND_SLOTS), PAD, np.int64)
    out[:TOKENS_PER_FRAME, :9] = _padded(prev, 1)[0][_PREV_IDX]
    if back2 is not None:
        out[:TOKENS_PER_FRAME, 9] = np.asarray(back2).reshape(TOKENS_PER_FRAME)
    out[:TOKENS_PER_FRAME, 10:] = _padded(cur, 1)[0][_CUR_IDX]
    return out


def cond_tokens(x: np.ndarray, first: int, frames: int) -> np.ndarray:
    """(frames*129, 14) conditioning for frames first..first+frames-1 of segment ``x`` (F, 128);
    the previous frames come from the segment itself (PAD before frame 0)."""
    rows = []
    for t in range(first, first + frames):
        prev = x[t - 1] if t >= 1 else None
        back2 = x[t - 2] if t >= 2 else None
        rows.append(frame_cond(prev, back2, x[t]))
    return np.concatenate(rows)
