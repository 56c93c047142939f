"""The gpt codec's batched, windowed coding: encoder and decoder agree bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.vq import api
from drivelab.vq.codecs import gpt as codec
from drivelab.vq.gpt import GPT, GPTConfig
from drivelab.vq.score import score
from drivelab.vq.tokens import Segment, npy_bytes
from drivelab.vq.train import save_checkpoint

runner = CliRunner()


def test_schedule_codes_every_frame_once_with_documented_context():
    wins = codec.schedule(1200, 20, 5)
    coded = [t for _, c0, c1 in wins for t in range(c0, c1)]
    assert coded == list(range(1200))
    assert wins[0] == (0, 0, 20) and wins[1] == (5, 20, 25)  # 15 context frames, 5 coded
    assert all(e - s == 20 for s, _, e in wins)  # every window holds 20 frames
    assert codec.schedule(7, 3, 2) == [(0, 0, 3), (2, 3, 5), (4, 5, 7)]
    assert codec.default_stride(20) == 5 and codec.default_stride(2) == 1


def test_frequencies_are_the_documented_integers():
    logits = torch.tensor([[0.0, 1.0, 2.0] + [-50.0] * 1021 + [3.0]])  # the BOS logit is ignored
    q = codec.frequencies(logits).numpy()[0]
    p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert q.dtype == np.int32 and q.shape == (1024,) and q.min() == 1
    assert np.array_equal(q[:3], np.floor(p * 2**23).astype(np.int64) + 1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("gptc")
    out = {}
    for name, cfg in {
        "plain": GPTConfig(frames=3, n_layer=1, n_head=2, n_embd=16),
        "cond": GPTConfig(frames=3, n_layer=1, n_head=2, n_embd=16, cond=True, cond_width=4),
    }.items():
        torch.manual_seed(1)
        save_checkpoint(d / f"{name}.pt", GPT(cfg))
        out[name] = d / f"{name}.pt"
    return out


@pytest.mark.parametrize("kind", ["plain", "cond"])
def test_batch_encode_decode_bit_exact(models, real_tokens, kind):
    x = real_tokens.reshape(-1, 128)
    segs = [x[0:5], x[20:27], x[40:44]]  # different lengths: rows are padded to 7 frames
    coded = codec.encode_batch(segs, model_path=models[kind], context=3, stride=2, embed=False, device="cpu")
    layouts = [e["batch"] for _, e in coded]
    assert [b["row"] for b in layouts] == [0, 1, 2] and {b["rows"] for b in layouts} == {3}
    assert {b["frames"] for b in layouts} == {7} and len({b["id"] for b in layouts}) == 1
    members = [(p, e, len(s)) for (p, e), s in zip(coded, segs, strict=True)]
    back = codec.decode_batch(members, model=models[kind], device="cpu")
    for got, want in zip(back, segs, strict=True):
        assert np.array_equal(got, want)
    # one member alone: the same batch shape with filler rows decodes to the same tokens
    alone = codec.decode(coded[1][0], coded[1][1], len(segs[1]), model=models[kind], device="cpu")
    assert np.array_equal(alone, segs[1])
    # the ideal code length that `vq score` reports matches what the range coder spent
    bits = score(codec.load_weights(models[kind], False).model, segs[1], 3, 2)["bits_per_token"]
    spent = len(coded[1][0]) * 8 / segs[1].size
    assert bits <= spent <= bits + 64 / segs[1].size  # range coder: at most two extra words


def test_decode_refuses_another_runtime(models, real_tokens):
    x = real_tokens.reshape(-1, 128)[:3]
    payload, extra = codec.encode(x, model_path=models["plain"], context=2, embed=False, device="cpu")
    bad = json.loads(json.dumps(extra))
    bad["runtime"]["torch"] = "0.0.1"
    with pytest.raises(DrivelabError, match="coded with torch 0.0.1"):
        codec.decode(payload, bad, 3, model=models["plain"])
    bad = json.loads(json.dumps(extra))
    bad["runtime"]["device"] = "cuda"
    with pytest.raises(DrivelabError, match="cuda"):
        codec.decode(payload, bad, 3, model=models["plain"], device="cpu")


def test_cli_batches_a_folder_and_restores_it(models, real_tokens, tmp_path):
    from drivelab.vq.cli import app

    x = real_tokens.reshape(-1, 128)
    src = tmp_path / "tokens"
    src.mkdir()
    raws = {}
    for i, (a, b) in enumerate([(0, 4), (10, 13), (30, 35)]):
        raw = npy_bytes(real_tokens[a:b])
        (src / f"s{i}.token.npy").write_bytes(raw)
        raws[f"s{i}.token.npy"] = raw
    out = tmp_path / "coded"
    model = str(models["cond"])
    r = runner.invoke(app, ["compress", str(src), "--codec", "gpt", "--model", model, "--no-embed",
                            "--context", "2", "--batch", "2", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.dlvq"))
    keys = [api.batch_key(f.read_bytes()) for f in files]
    assert len(files) == 3 and len(set(keys)) == 2  # batches of 2 and 1
    r = runner.invoke(app, ["decompress", str(out), "--out", str(tmp_path / "back")])
    assert isinstance(r.exception, DrivelabError) and "--model" in str(r.exception)
    r = runner.invoke(app, ["decompress", str(out), "--model", model, "--out", str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    for name, raw in raws.items():
        assert (tmp_path / "back" / name).read_bytes() == raw
    seg = Segment("x.npy", x[:2], npy_bytes(x[:2]))
    with pytest.raises(DrivelabError, match="--stride 3"):
        api.compress(seg, "gpt", model_path=models["cond"], context=2, stride=3)


def test_archive_stores_embedded_weights_once(models, real_tokens, tmp_path):
    """Several gpt batches in one archive: the weights are one shared blob, no file repeats them,
    the folder restores exactly, and a damaged blob is refused."""
    from drivelab.vq.cli import app

    src = tmp_path / "src"
    src.mkdir()
    raws = {}
    for i in range(4):
        raw = npy_bytes(real_tokens[5 * i : 5 * i + 3])
        (src / f"s{i}.token.npy").write_bytes(raw)
        raws[f"s{i}.token.npy"] = raw
    out = tmp_path / "coded"
    weights = models["plain"].read_bytes()
    r = runner.invoke(app, ["compress", str(src), "--codec", "gpt", "--model", str(models["plain"]),
                            "--context", "2", "--batch", "2", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    blobs = list((out / "shared").glob("*.bin"))
    assert [b.read_bytes() for b in blobs] == [weights]  # once, for two batches of two
    files = sorted(out.glob("*.dlvq"))
    assert len(files) == 4 and all(f.stat().st_size < len(weights) // 4 for f in files)
    assert len({api.batch_key(f.read_bytes()) for f in files}) == 2
    r = runner.invoke(app, ["decompress", str(out), "--out", str(tmp_path / "back")])  # no --model
    assert r.exit_code == 0, r.output
    for name, raw in raws.items():
        assert (tmp_path / "back" / name).read_bytes() == raw
    blob = bytearray(blobs[0].read_bytes())
    blob[len(blob) // 2] ^= 1
    blobs[0].write_bytes(bytes(blob))
    r = runner.invoke(app, ["decompress", str(out), "--out", str(tmp_path / "again")])
    assert isinstance(r.exception, DrivelabError) and "SHA-256" in str(r.exception)
    assert not list((tmp_path / "again").glob("*.npy"))


def test_gpt_submission_zip_holds_the_weights_once(models, real_tokens, tmp_path):
    import zipfile

    from drivelab.vq.archive import decompress_many
    from drivelab.vq.submission import write_submission

    segs = [Segment(f"s{i}.npy", real_tokens[4 * i : 4 * i + 2], npy_bytes(real_tokens[4 * i : 4 * i + 2]))
            for i in range(3)]
    zpath = tmp_path / "sub.zip"
    write_submission(zpath, segs, "gpt", options={"model_path": models["plain"], "context": 2, "batch": 2,
                                                  "embed": True, "device": "cpu"})
    zf = zipfile.ZipFile(zpath)
    shared = [n for n in zf.namelist() if n.startswith("data/shared/")]
    assert len(shared) == 1 and zf.read(shared[0]) == models["plain"].read_bytes()
    zf.extractall(tmp_path / "unzipped")
    names = decompress_many([tmp_path / "unzipped" / "data"], tmp_path / "back", device="cpu")
    assert sorted(names) == ["s0.npy", "s1.npy", "s2.npy"]
    for s in segs:
        assert (tmp_path / "back" / s.name).read_bytes() == s.raw
