"""Loading GPT-2 weights in the Hugging Face layout (comma's gpt2m files) and comma's own .pt.

The reference below is written from the public GPT-2 description, not from drivelab's model:
token + learned position embeddings; per block x += attn(LN1(x)), x += mlp(LN2(x)) with
Conv1D projections (y = x @ W + b, W stored (in, out)), causal softmax attention scaled by
1/sqrt(head_dim), tanh-approximated GELU; final LayerNorm; logits = h @ lm_head.T (no bias),
lm_head being wte when tied. Random weights everywhere (LayerNorm gains and biases too), so a
dropped bias, a missed transpose or a tied head would show.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from drivelab.errors import DrivelabError
from drivelab.vq.hf import find_weights, load_model

FRAMES, LAYERS, HEADS, WIDTH, INNER, VOCAB = 2, 2, 2, 32, 48, 1025
POS = FRAMES * 129


def _hf_state(tied: bool, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    sd = {"transformer.wte.weight": r(VOCAB, WIDTH), "transformer.wpe.weight": r(POS, WIDTH)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        sd.update({
            p + "ln_1.weight": 1 + r(WIDTH, scale=0.1), p + "ln_1.bias": r(WIDTH, scale=0.1),
            p + "attn.c_attn.weight": r(WIDTH, 3 * WIDTH), p + "attn.c_attn.bias": r(3 * WIDTH, scale=0.1),
            p + "attn.c_proj.weight": r(WIDTH, WIDTH), p + "attn.c_proj.bias": r(WIDTH, scale=0.1),
            p + "ln_2.weight": 1 + r(WIDTH, scale=0.1), p + "ln_2.bias": r(WIDTH, scale=0.1),
            p + "mlp.c_fc.weight": r(WIDTH, INNER), p + "mlp.c_fc.bias": r(INNER, scale=0.1),
            p + "mlp.c_proj.weight": r(INNER, WIDTH), p + "mlp.c_proj.bias": r(WIDTH, scale=0.1),
            # GPT-2's causal-mask buffers, saved by older transformers versions
            p + "attn.bias": torch.tril(torch.ones(POS, POS)).view(1, 1, POS, POS),
            p + "attn.masked_bias": torch.tensor(-1e4),
        })
    sd["transformer.ln_f.weight"] = 1 + r(WIDTH, scale=0.1)
    sd["transformer.ln_f.bias"] = r(WIDTH, scale=0.1)
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if tied else r(VOCAB, WIDTH)
    return sd


def _config(tied: bool) -> dict:
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": LAYERS, "n_head": HEADS,
            "n_embd": WIDTH, "n_inner": INNER, "n_positions": POS, "n_ctx": POS, "vocab_size": VOCAB,
            "tie_word_embeddings": tied, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}


def _reference_logits(sd: dict[str, torch.Tensor], idx: torch.Tensor, tied: bool) -> torch.Tensor:
    sd = {k: v.double() for k, v in sd.items()}

    def ln(x, w, b):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w + b

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    t = idx.shape[0]
    h = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:t]
    d = WIDTH // HEADS
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        a = ln(h, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = a @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        heads = []
        for k in range(HEADS):
            q = qkv[:, k * d : (k + 1) * d]
            kk = qkv[:, WIDTH + k * d : WIDTH + (k + 1) * d]
            v = qkv[:, 2 * WIDTH + k * d : 2 * WIDTH + (k + 1) * d]
            att = (q @ kk.T) / math.sqrt(d)
            att = att.masked_fill(~causal, float("-inf")).softmax(-1)
            heads.append(att @ v)
        h = h + torch.cat(heads, 1) @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        m = ln(h, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = h + gelu(m @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]) @ sd[p + "mlp.c_proj.weight"] \
            + sd[p + "mlp.c_proj.bias"]
    h = ln(h, sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"])
    head = sd["transformer.wte.weight"] if tied else sd["lm_head.weight"]
    return h @ head.T


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_hf_layout_matches_reference_forward(tmp_path, tied, fmt):
    sd = _hf_state(tied, seed=1 + tied)
    (tmp_path / "config.json").write_text(json.dumps(_config(tied)))
    if fmt == "bin":
        torch.save(sd, tmp_path / "pytorch_model.bin")
    else:  # safetensors stores a tied head once, as transformers' save_pretrained does
        save_file({k: v.contiguous() for k, v in sd.items() if not (tied and k == "lm_head.weight")},
                  str(tmp_path / "model.safetensors"))
    loaded = load_model(tmp_path)  # the folder, as comma's HF repo is laid out
    assert loaded.layout == "hf" and loaded.model.cfg.tied == tied
    assert loaded.model.cfg.frames == FRAMES and loaded.model.cfg.mlp_width == INNER
    idx = torch.randint(0, VOCAB, (POS,), generator=torch.Generator().manual_seed(3))
    idx[::129] = 1024  # BOS where frames start
    got = loaded.model(idx[None])[0].double()
    ref = _reference_logits(sd, idx, tied)
    assert (got - ref).abs().max().item() < 1e-5
    assert ref.abs().max().item() > 1.0  # logits large enough for the tolerance to mean something


def test_untied_head_is_not_the_embedding(tmp_path):
    """The bug the issue found: an untied lm_head silently written into the tied embedding."""
    sd = _hf_state(False, seed=5)
    (tmp_path / "config.json").write_text(json.dumps(_config(False)))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    model = load_model(tmp_path / "pytorch_model.bin").model
    assert torch.equal(model.lm_head.weight, sd["lm_head.weight"])
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)


def test_hf_errors_are_one_line(tmp_path):
    sd = _hf_state(False, seed=7)
    cfg = _config(False)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    bad = dict(sd)
    del bad["lm_head.weight"]
    torch.save(bad, tmp_path / "pytorch_model.bin")
    with pytest.raises(DrivelabError, match="missing weights.*lm_head"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(DrivelabError, match=r"pytorch_model.bin: .*shape \(1025, 32\), config.json says"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    with pytest.raises(DrivelabError, match="activation_function"):
        load_model(tmp_path)
    (tmp_path / "config.json").unlink()  # no config: comma's gpt2m shapes are expected
    with pytest.raises(DrivelabError, match="missing weights.*gpt2m config was assumed"):
        load_model(tmp_path)
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint at all")
    with pytest.raises(DrivelabError, match="junk.bin: not a readable"):
        load_model(tmp_path / "junk.bin")
    torch.save({"something": 1}, tmp_path / "odd.pt")
    with pytest.raises(DrivelabError, match="not a GPT checkpoint"):
        load_model(tmp_path / "odd.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DrivelabError, match="no model.safetensors or pytorch_model.bin"):
        find_weights(empty)


def test_comma_pt_layout(tmp_path, monkeypatch):
    """comma's gpt2m.pt: {"state_dict"} with nn.Linear weights and nanogpt/map_state_dict.py's names."""
    import drivelab.vq.hf as hf

    small = hf.GPTConfig(frames=FRAMES, n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH, n_inner=INNER)
    monkeypatch.setattr(hf, "GPT2M", small)  # gpt2m's shapes, scaled down
    sd = _hf_state(False, seed=9)
    comma = {}
    for k, v in sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            v = v.t().contiguous()  # nn.Linear layout
        k = (k.replace(".wte.", ".wt_embedding.").replace(".wpe.", ".wp_embedding.")
             .replace(".ln_1.", ".attn.layer_norm.").replace(".ln_2.", ".mlp.layer_norm.")
             .replace(".ln_f.", ".layer_norm_f."))
        comma[k] = v
    torch.save({"state_dict": comma}, tmp_path / "gpt2m.pt")
    loaded = load_model(tmp_path / "gpt2m.pt")
    assert loaded.layout == "comma-pt"
    idx = torch.from_numpy(np.r_[1024, np.arange(40) * 7 % 1024])
    ref = _reference_logits(sd, idx, tied=False)
    assert (loaded.model(idx[None])[0].double() - ref).abs().max().item() < 1e-5


def test_tied_config_with_another_head_is_refused(tmp_path):
    sd = _hf_state(False, seed=11)  # a head of its own...
    (tmp_path / "config.json").write_text(json.dumps(_config(True)))  # ...but the config ties it
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(DrivelabError, match="ties lm_head to wte"):
        load_model(tmp_path)


def test_cli_codes_with_hf_files_and_checks_their_hash(tmp_path, real_tokens):
    """The issue's failure: `--codec gpt --model pytorch_model.bin` was a KeyError traceback."""
    from typer.testing import CliRunner

    from drivelab.vq.cli import app
    from drivelab.vq.tokens import npy_bytes

    hf = tmp_path / "gpt2m"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps(_config(False)))
    torch.save(_hf_state(False, seed=13), hf / "pytorch_model.bin")
    seg = tmp_path / "seg.npy"
    seg.write_bytes(npy_bytes(real_tokens[:3]))
    run = CliRunner().invoke
    coded = tmp_path / "seg.dlvq"
    r = run(app, ["compress", str(seg), "--codec", "gpt", "--model", str(hf / "pytorch_model.bin"),
                  "--no-embed", "--device", "cpu", "--out", str(coded)])
    assert r.exit_code == 0, r.output
    from dataclasses import asdict

    from drivelab.vq.container import read_header

    header, _ = read_header(coded.read_bytes(), coded)  # headers are deflated JSON
    text = json.dumps(asdict(header))
    assert str(hf) not in text and header.extra["model"]["layout"] == "hf"  # hash and config, no path
    r = run(app, ["decompress", str(coded), "--model", str(hf), "--out", str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "back" / "seg.npy").read_bytes() == seg.read_bytes()
    torch.save(_hf_state(False, seed=14), hf / "pytorch_model.bin")  # other weights, same name
    r = run(app, ["decompress", str(coded), "--model", str(hf), "--out", str(tmp_path / "b2")])
    assert isinstance(r.exception, DrivelabError) and "the archive was coded with" in str(r.exception)
