"""Load GPT weights as they are published: comma's Hugging Face files, comma's own .pt, drivelab's.

Accepted ``--model`` paths:

* a Hugging Face GPT-2 file, ``pytorch_model.bin`` or ``model.safetensors`` (or the folder
  holding it). Its Conv1D weights (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``,
  ``mlp.c_proj``) are stored (in, out) and are transposed into nn.Linear's (out, in); the
  ``attn.bias`` / ``attn.masked_bias`` causal-mask buffers are dropped; ``lm_head`` is its own
  matrix unless the config ties it. The config comes from the ``config.json`` beside the
  weights (``n_layer``, ``n_head``, ``n_embd``, ``n_inner``, ``n_positions``, ``vocab_size``,
  ``tie_word_embeddings``, ``layer_norm_epsilon``, ``activation_function``); without one it is
  comma's published gpt2m (24 layers, 16 heads, width 1024, 20 x 129 positions, vocab 1025,
  untied).
* comma's ``gpt2m.pt`` (``{"state_dict": ...}`` with nn.Linear weights and the names
  ``wt_embedding``, ``wp_embedding``, ``attn.layer_norm``, ``mlp.layer_norm``,
  ``layer_norm_f``, as comma's ``nanogpt/map_state_dict.py`` documents), gpt2m config.
* a drivelab checkpoint from ``drivelab vq train`` (fp16, config inside).

Anything else is a one-line ``DrivelabError`` naming the file and the first problem.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from drivelab.errors import DrivelabError
from drivelab.vq.gpt import FRAME_LEN, GPT, GPT2M, GPTConfig

WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_BUFFERS = (".attn.bias", ".attn.masked_bias")
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
_COMMA_PT = {  # comma's gpt2m.pt names -> GPT-2 names (nanogpt/map_state_dict.py)
    "wt_embedding": "wte",
    "wp_embedding": "wpe",
    "attn.layer_norm": "ln_1",
    "mlp.layer_norm": "ln_2",
    "layer_norm_f": "ln_f",
}


@dataclass
class Loaded:
    model: GPT
    sha256: str  # of the weights file's bytes
    layout: str  # "hf", "comma-pt" or "drivelab"
    path: Path | None  # the weights file (None when built from bytes)


def find_weights(path: str | Path) -> Path:
    """The weights file named by ``path``: the file itself, or the one weights file in a folder."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in WEIGHT_NAMES if (path / n).is_file()]
        if not found:
            raise DrivelabError(f"no {' or '.join(WEIGHT_NAMES)} in this folder", path)
        return found[0]  # safetensors first: it loads without unpickling
    if not path.is_file():
        raise DrivelabError("model weights not found", path)
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _read(blob: bytes, name: str, path: Path | None) -> Any:
    where = path or name
    if name.endswith(".safetensors") or blob[8:9] == b"{":  # safetensors: u64 length, then JSON
        try:
            from safetensors.torch import load

            return load(blob)
        except Exception as e:  # safetensors raises its own error types on damaged files
            raise DrivelabError(f"not a readable safetensors file ({e})", where) from None
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on a wrong or damaged file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DrivelabError(f"not a readable PyTorch weights file ({msg})", where) from None


def read_config_json(path: Path) -> dict[str, Any]:
    """The GPTConfig fields of a Hugging Face GPT-2 ``config.json``."""
    try:
        hf = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DrivelabError(f"unreadable config.json ({e})", path) from None
    if not isinstance(hf, dict):
        raise DrivelabError("config.json is not a JSON object", path)
    if hf.get("model_type", "gpt2") != "gpt2":
        raise DrivelabError(f"model_type {hf['model_type']!r} is not a GPT-2 model", path)
    act = hf.get("activation_function", "gelu_new")
    if act not in _TANH_GELU:
        raise DrivelabError(f"activation_function {act!r} unsupported (GPT-2's tanh GELU only)", path)
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if hf.get(flag):
            raise DrivelabError(f"{flag} is not supported", path)
    if hf.get("scale_attn_weights", True) is not True:
        raise DrivelabError("scale_attn_weights=false is not supported", path)
    try:
        n_pos = int(hf.get("n_positions", hf.get("n_ctx", GPT2M.block_size)))
        cfg = {
            "n_layer": int(hf.get("n_layer", 12)),
            "n_head": int(hf.get("n_head", 12)),
            "n_embd": int(hf.get("n_embd", 768)),
            "n_inner": int(hf["n_inner"]) if hf.get("n_inner") is not None else None,
            "vocab_size": int(hf.get("vocab_size", GPT2M.vocab_size)),
            "tied": bool(hf.get("tie_word_embeddings", True)),  # Hugging Face's default
            "ln_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
        }
    except (TypeError, ValueError) as e:
        raise DrivelabError(f"bad value in config.json ({e})", path) from None
    if n_pos % FRAME_LEN:
        raise DrivelabError(f"n_positions {n_pos} is not a whole number of {FRAME_LEN}-token frames", path)
    cfg["frames"] = n_pos // FRAME_LEN
    if cfg["vocab_size"] < 1025:
        raise DrivelabError(f"vocab_size {cfg['vocab_size']} < 1025 (1024 tokens + BOS)", path)
    return cfg


def _to_ours(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """HF / comma names and Conv1D layout -> this GPT's names and nn.Linear layout."""
    out = {}
    for key, value in state.items():
        if key.endswith(_BUFFERS):
            continue  # causal-mask buffers, not parameters
        name = key
        if layout == "comma-pt":
            for old, new in _COMMA_PT.items():
                name = name.replace(f".{old}.", f".{new}.")
        if not name.startswith(("transformer.", "lm_head.")):
            name = f"transformer.{name}"  # GPT2Model saves without the LM wrapper's prefix
        if layout == "hf" and name.endswith(_CONV1D) and value.ndim == 2:
            value = value.t()
        out[name] = value
    return out


def _detect(obj: Any, where: Path | str) -> tuple[str, dict[str, torch.Tensor], dict | None]:
    """(layout, state dict, config dict or None) of what a weights file held."""
    legacy = (  # drivelab checkpoints written before the kind tag
        isinstance(obj, dict)
        and isinstance(obj.get("config"), dict)
        and "frames" in obj["config"]
        and isinstance(obj.get("state_dict"), dict)
        and "transformer.wte.weight" in obj["state_dict"]
    )
    if isinstance(obj, dict) and obj.get("kind") == "drivelab-gpt" or legacy:
        cfg = dict(obj["config"])
        if obj.get("kind") != "drivelab-gpt":
            cfg.setdefault("tied", True)  # checkpoints before the kind tag were always tied
        return "drivelab", obj["state_dict"], cfg
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return "comma-pt", obj["state_dict"], None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not any(".c_attn." in k for k in obj):
            raise DrivelabError("no GPT-2 attention weights (h.N.attn.c_attn) in this state dict", where)
        return "hf", obj, None
    raise DrivelabError("not a GPT checkpoint (expected a GPT-2 state dict or a drivelab checkpoint)", where)


def build(
    state: dict[str, torch.Tensor], cfg: GPTConfig, layout: str, where: Path | str | None = None
) -> GPT:
    """A float32 GPT with ``state`` loaded; every mismatch is a one-line DrivelabError."""
    try:
        model = GPT(cfg)
    except ValueError as e:
        raise DrivelabError(f"bad model config ({e})", where) from None
    own = model.state_dict()
    ours = _to_ours(state, layout) if layout != "drivelab" else dict(state)
    if cfg.tied:
        head = ours.pop("lm_head.weight", None)
        wte = ours.get("transformer.wte.weight")
        if head is not None and wte is not None and not torch.equal(head.float(), wte.float()):
            raise DrivelabError("the config ties lm_head to wte, but the file's lm_head differs", where)
    unexpected = sorted(set(ours) - set(own) - ({"lm_head.weight"} if cfg.tied else set()))
    if unexpected:
        raise DrivelabError(f"unexpected weights {unexpected[:3]} (is this a GPT-2 model?)", where)
    need = set(own) - ({"lm_head.weight"} if cfg.tied else set())
    missing = sorted(need - set(ours))
    if missing:
        hint = " (an untied model needs lm_head.weight)" if "lm_head.weight" in missing else ""
        raise DrivelabError(f"missing weights {missing[:3]}{hint}", where)
    for name in (n for n in own if n in need):  # in model order: the first mismatch is reported
        value = ours[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise DrivelabError(f"{name} is not a floating-point tensor", where)
        if tuple(value.shape) != tuple(own[name].shape):
            src = "config.json" if layout == "hf" else "the config"
            raise DrivelabError(
                f"{name} has shape {tuple(value.shape)}, {src} says {tuple(own[name].shape)}", where
            )
        ours[name] = value.float()
    if cfg.tied:
        ours["lm_head.weight"] = ours["transformer.wte.weight"]
    model.load_state_dict({k: ours[k] for k in own})
    return model.eval()


def config_of(path: Path, layout: str, cfg: dict | None) -> GPTConfig:
    if layout == "drivelab":
        raw = cfg or {}
    elif layout == "hf" and (path.parent / "config.json").is_file():
        raw = read_config_json(path.parent / "config.json")
    else:
        raw = GPT2M.to_dict()  # comma's published GPTConfig
    try:
        return GPTConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise DrivelabError(f"bad model config ({e})", path) from None


def load_model(path: str | Path) -> Loaded:
    """Any accepted ``--model`` path -> float32 GPT in eval mode, with its weights' SHA-256."""
    wpath = find_weights(path)
    blob = wpath.read_bytes()
    layout, state, cfg = _detect(_read(blob, wpath.name, wpath), wpath)
    try:
        model = build(state, config_of(wpath, layout, cfg), layout, wpath)
    except DrivelabError as e:
        if layout == "hf" and not (wpath.parent / "config.json").is_file():
            note = "no config.json beside it, so comma's gpt2m config was assumed"
            raise DrivelabError(f"{e} ({note})") from None
        raise
    return Loaded(model, hashlib.sha256(blob).hexdigest(), layout, wpath)


def model_from_bytes(blob: bytes, name: str, cfg: dict, layout: str, where: Path | str | None = None) -> GPT:
    """Rebuild a model from weights bytes and the config an archive recorded."""
    _, state, _ = _detect(_read(blob, name, None), where or name)
    try:
        config = GPTConfig.from_dict(cfg)
    except (TypeError, ValueError) as e:
        raise DrivelabError(f"bad model config in the archive ({e})", where) from None
    return build(state, config, layout, where)
