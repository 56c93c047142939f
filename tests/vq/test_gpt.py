from __future__ import annotations

import numpy as np
import pytest
import torch

from drivelab.errors import DrivelabError
from drivelab.vq import api
from drivelab.vq.gpt import GPT, GPTConfig, cond_rows, cond_tokens, frame_cond, frames_to_sequence
from drivelab.vq.tokens import Segment, npy_bytes
from drivelab.vq.train import TrainConfig, imagine, load_checkpoint, save_checkpoint, train

TINY = GPTConfig(frames=2, n_layer=1, n_head=2, n_embd=16, tied=True)
TINY_COND = GPTConfig(frames=2, n_layer=1, n_head=2, n_embd=16, cond=True, cond_width=4)


@pytest.mark.parametrize("cfg", [TINY, TINY_COND])
def test_kv_cache_matches_full_forward(cfg):
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    frames = torch.randint(0, 1024, (2, 2, 128))
    idx = frames_to_sequence(frames)[:, :200]
    cond = None
    if cfg.cond:
        cond = torch.from_numpy(np.stack([cond_tokens(f.numpy(), 0, 2)[:200] for f in frames]))
    full = model(idx, cond=cond)
    caches = model.new_caches()
    pieces = [model(idx[:, :150], caches, 0, None if cond is None else cond[:, :150])]
    pieces.append(model(idx[:, 150:153], caches, 150, None if cond is None else cond[:, 150:153]))  # a chunk
    for i in range(153, 200):  # then one token at a time
        pieces.append(model(idx[:, i : i + 1], caches, i, None if cond is None else cond[:, i : i + 1]))
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)


def test_cond_rows_read_only_earlier_tokens():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1024, (3, 128))
    full = frame_cond(x[1], x[0], x[2])
    for k in (0, 1, 15, 16, 17, 127):
        hidden = x[2].copy()
        hidden[k:] = 7  # the decoder does not know these yet
        assert np.array_equal(cond_rows(x[1:2], x[0:1], hidden[None], k)[0], full[k])
    r, c = divmod(40, 16)
    assert full[40, 4] == x[1, 40] and full[40, 9] == x[0, 40]  # same position, 1 and 2 frames back
    assert full[40, 10] == x[2, 39] and full[40, 11] == x[2, 40 - 16]  # left, up
    assert full[0, 10] == 1024 and full[0, 0] == 1024  # outside the frame: PAD
    assert (full[128] == 1024).all()


def test_gpt2m_shape():
    cfg = GPTConfig()
    assert cfg.block_size == 2580 and cfg.vocab_size == 1025 and cfg.mlp_width == 4096 and not cfg.tied


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, real_tokens):
    flat = real_tokens.reshape(-1, 128)
    model, rep = train([flat[:30]], [flat[29:36]], TINY, TrainConfig(steps=20, batch_size=4, eval_every=10))
    assert 0 < rep["val_bits_per_token"] < 11
    path = tmp_path_factory.mktemp("gpt") / "tiny.pt"
    save_checkpoint(path, model)
    return path


def test_gpt_codec_round_trip(tiny_ckpt, tmp_path, real_tokens):
    tokens = real_tokens[36:39]
    seg = Segment("g.npy", tokens, npy_bytes(tokens))
    data = api.compress(seg, "gpt", model_path=tiny_ckpt, context=2, stride=1, embed=True, device="cpu")
    assert api.decompress(data).raw == seg.raw
    ext = api.compress(seg, "gpt", model_path=tiny_ckpt, context=2, stride=1, embed=False, device="cpu")
    assert len(ext) < len(data) and str(tiny_ckpt.parent) not in ext.decode("latin-1")  # no path stored
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(tiny_ckpt.read_bytes())
    assert api.decompress(ext, model=moved).raw == seg.raw
    with pytest.raises(DrivelabError, match="pass them with --model"):
        api.decompress(ext)
    other = tmp_path / "other.pt"
    save_checkpoint(other, GPT(TINY))
    with pytest.raises(DrivelabError, match="the archive was coded with"):
        api.decompress(ext, model=other)
    with pytest.raises(DrivelabError, match="--model"):
        api.compress(seg, "gpt")
    with pytest.raises(DrivelabError, match="--context 5"):
        api.compress(seg, "gpt", model_path=tiny_ckpt, context=5)


def test_imagine_shapes(tiny_ckpt, real_tokens):
    out = imagine(load_checkpoint(tiny_ckpt), real_tokens.reshape(-1, 128)[:4], frames=2)
    assert out.shape == (2, 128) and out.min() >= 0 and out.max() < 1024
