from __future__ import annotations

import pytest
import torch

from drivelab.errors import DrivelabError
from drivelab.vq import api
from drivelab.vq.gpt import GPT, GPTConfig, load_hf_state_dict
from drivelab.vq.tokens import Segment, npy_bytes
from drivelab.vq.train import imagine, load_checkpoint, save_checkpoint, train

TINY = GPTConfig(frames=2, n_layer=1, n_head=2, n_embd=16)


def test_hf_loader_transposes_conv1d():
    torch.manual_seed(0)
    ref = GPT(TINY)
    hf = {}
    for k, v in ref.state_dict().items():
        if k == "lm_head.weight":
            continue
        name = k.removeprefix("transformer.")
        conv = k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        hf[name] = v.t().clone() if conv else v.clone()
    hf["h.0.attn.bias"] = torch.ones(1, 1, 4, 4)  # GPT-2's mask buffer is ignored
    model = GPT(TINY)
    load_hf_state_dict(model, hf)
    idx = torch.randint(0, 1025, (1, 10))
    assert torch.equal(model(idx), ref(idx))
    bad = dict(hf)
    bad["h.0.mlp.c_fc.weight"] = bad["h.0.mlp.c_fc.weight"].t()  # not transposed: wrong shape
    with pytest.raises(ValueError):
        load_hf_state_dict(GPT(TINY), bad)


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 1025, (1, 12))
    full = model(idx)
    caches = model.new_caches()
    first = model(idx[:, :7], caches, 0)
    rest = [model(idx[:, i : i + 1], caches, i) for i in range(7, 12)]
    got = torch.cat([first] + rest, dim=1)
    assert torch.allclose(got, full, atol=1e-5)


def test_gpt2m_shape():
    cfg = GPTConfig()
    assert cfg.block_size == 2580 and cfg.vocab_size == 1025


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, real_tokens):
    flat = real_tokens.reshape(-1, 128)
    model, bits = train([flat[:30]], [flat[30:36]], TINY, steps=20, batch_size=4)
    assert 0 < bits < 11
    path = tmp_path_factory.mktemp("gpt") / "tiny.pt"
    save_checkpoint(path, model)
    return path


def test_gpt_codec_round_trip(tiny_ckpt, real_tokens):
    tokens = real_tokens[36:39]
    seg = Segment("g.npy", tokens, npy_bytes(tokens))
    for embed in (True, False):
        data = api.compress(seg, "gpt", model_path=tiny_ckpt, context=1, embed=embed)
        assert api.decompress(data).raw == seg.raw
    with pytest.raises(DrivelabError, match="--model"):
        api.compress(seg, "gpt")


def test_imagine_shapes(tiny_ckpt, real_tokens):
    out = imagine(load_checkpoint(tiny_ckpt), real_tokens.reshape(-1, 128)[:4], frames=2)
    assert out.shape == (2, 128) and out.min() >= 0 and out.max() < 1024
