"""A GPT over commaVQ tokens, nanoGPT style, shaped to load comma's gpt2m world model.

Each frame is fed as [BOS, 128 tokens row-major]; positions are learned over ``frames``
frames (gpt2m: 20 frames = 2580 positions, 24 layers, 16 heads, width 1024, vocab 1025,
BOS = 1024). ``load_hf_state_dict`` reads the Hugging Face GPT-2 layout, whose Conv1D
weights are stored transposed relative to nn.Linear.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

TOKENS_PER_FRAME = 128
BOS = 1024


@dataclass
class GPTConfig:
    frames: int = 20
    vocab_size: int = 1025
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 1024

    @property
    def block_size(self) -> int:
        return self.frames * (TOKENS_PER_FRAME + 1)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


GPT2M = GPTConfig()


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor, cache: list | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            # cache = [k, v] from earlier calls; new keys are appended in place
            if cache:
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        tk = k.shape[2]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        # causal: query i (absolute position tk - t + i) sees keys up to its own position
        mask = torch.ones(t, tk, dtype=torch.bool, device=x.device).tril(diagonal=tk - t)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: list | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor, caches: list[list] | None = None, pos0: int = 0) -> torch.Tensor:
        """Logits for ``idx`` (B, T) at absolute positions pos0..pos0+T-1, optionally with KV caches."""
        t = idx.shape[1]
        if pos0 + t > self.cfg.block_size:
            raise ValueError(f"sequence of {pos0 + t} exceeds block size {self.cfg.block_size}")
        pos = torch.arange(pos0, pos0 + t, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches is not None else None)
        return self.lm_head(self.transformer.ln_f(x))

    def new_caches(self) -> list[list]:
        return [[] for _ in self.transformer.h]


def frames_to_sequence(frames: torch.Tensor) -> torch.Tensor:
    """(B, F, 128) tokens -> (B, F*129) with BOS before each frame."""
    b, f, _ = frames.shape
    bos = torch.full((b, f, 1), BOS, dtype=frames.dtype, device=frames.device)
    return torch.cat([bos, frames], dim=2).reshape(b, f * (TOKENS_PER_FRAME + 1))


_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def load_hf_state_dict(model: GPT, state: dict[str, torch.Tensor]) -> None:
    """Load a Hugging Face GPT-2 ``pytorch_model.bin`` state dict (Conv1D weights transposed)."""
    own = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers, not parameters
        name = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
        if name not in own:
            raise KeyError(f"unexpected key {key}")
        if name.endswith(_CONV1D):
            value = value.t()
        if value.shape != own[name].shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {tuple(own[name].shape)}")
        out[name] = value
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    missing = set(own) - set(out)
    if missing:
        raise KeyError(f"missing keys: {sorted(missing)[:5]}")
    model.load_state_dict(out)
