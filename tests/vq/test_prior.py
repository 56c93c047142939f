"""The `prior` network: trained in torch, coded in integer arithmetic, shipped once, mixed with `context`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.vq import api, container, nprior
from drivelab.vq.archive import compress_to_folder, decompress_many
from drivelab.vq.cli import app
from drivelab.vq.prior import bits_per_token, contexts, load_prior, save_prior
from drivelab.vq.tokens import Segment, npy_bytes, read_all

REPO = Path(__file__).resolve().parents[2]


def _segment(tokens: np.ndarray, name: str = "seg.npy") -> Segment:
    tokens = np.asarray(tokens, dtype=np.int16)
    return Segment(name=name, tokens=tokens, raw=npy_bytes(tokens))


def test_contexts_are_causal_and_exact() -> None:
    x = np.arange(3 * 128).reshape(3, 128) % 1024
    ctx = contexts(x)
    assert ctx.shape == (3, 128, 14)
    assert (ctx[0, :, :10] == 1024).all()  # nothing before the first frame
    assert ctx[2, 17, 4] == x[1, 17] and ctx[2, 17, 9] == x[0, 17]  # previous frame, two back
    assert ctx[2, 17, 10] == x[2, 16] and ctx[2, 17, 11] == x[2, 1]  # left, up
    assert ctx[2, 16, 10] == 1024  # no left neighbour in the first column
    assert ctx[2, 0, 11] == 1024  # no row above in the first row


def test_training_beats_uniform_on_unseen_real_frames(real_tokens, prior_model) -> None:
    heldout = real_tokens.reshape(-1, 128)[40:60].astype(np.int64)
    assert bits_per_token(prior_model, heldout, first=2) < 9.0  # uniform over 1024 tokens is 10 bits


def test_integer_network_matches_the_float_one(real_tokens, prior_model, network_blob) -> None:
    """Per-token distributions of the integer network equal torch's softmax to ~1e-3."""
    x = real_tokens.reshape(-1, 128)[40:43].astype(np.int64)
    with torch.no_grad():
        ctx = torch.from_numpy(contexts(x).reshape(-1, 14))
        want = torch.softmax(prior_model(ctx, torch.arange(128).repeat(3)).double(), 1).numpy()
    w, off, cfg = nprior.load(network_blob)
    cum, acc = nprior.new_scratch(cfg)
    flat = x.reshape(-1).astype(np.int16)
    worst = 0.0
    for i in range(128, 3 * 128):
        nprior.probs(flat, i, w, off, cfg, cum, acc)
        got = np.diff(cum) / cum[-1]
        worst = max(worst, float(np.abs(got - want[i]).max()))
    assert worst < 2e-3


def test_network_is_stored_once_per_archive(tmp_path, real_tokens, network_blob) -> None:
    segs = [_segment(real_tokens[i * 10 : i * 10 + 10], f"s{i}.npy") for i in range(3)]
    w = compress_to_folder(segs, tmp_path / "arch", "prior", options={"model": network_blob})
    blobs = list((tmp_path / "arch" / "shared").iterdir())
    assert [b.name for b in blobs] == [f"{container.sha256(network_blob)}.bin"]
    for s in segs:
        size = (tmp_path / "arch" / f"{s.name}.dlvq").stat().st_size
        assert size < len(network_blob) / 4  # the segment references the network, does not hold it
    assert w.bytes == sum(p.stat().st_size for p in (tmp_path / "arch").rglob("*") if p.is_file())
    decompress_many([tmp_path / "arch"], tmp_path / "out")
    assert all((tmp_path / "out" / s.name).read_bytes() == s.raw for s in segs)


def test_external_network_checked_by_hash(tmp_path, real_tokens, network_blob, prior_model) -> None:
    seg = _segment(real_tokens[200:203])
    data = api.compress(seg, "prior", model=network_blob, inline=False)
    (tmp_path / "s.dlvq").write_bytes(data)
    with pytest.raises(DrivelabError, match="--model"):
        decompress_many([tmp_path / "s.dlvq"], tmp_path / "out")
    (tmp_path / "net.bin").write_bytes(network_blob)
    decompress_many([tmp_path / "s.dlvq"], tmp_path / "out", models=[tmp_path / "net.bin"])
    assert (tmp_path / "out" / "seg.npy").read_bytes() == seg.raw
    other = prior_model.__class__(prior_model.cfg)
    save_prior(tmp_path / "other.pt", other)
    with pytest.raises(DrivelabError, match="not in the archive|--model"):
        decompress_many([tmp_path / "s.dlvq"], tmp_path / "o2", models=[tmp_path / "other.pt"])
    with pytest.raises(DrivelabError, match="needs --model"):
        api.compress(seg, "prior")
    with pytest.raises(DrivelabError, match="cannot load"):
        load_prior(b"not a checkpoint")
    with pytest.raises(DrivelabError, match="cannot load the prior network"):
        nprior.load(network_blob[:-20])


def test_decoding_never_imports_torch(tmp_path, real_tokens, network_blob) -> None:
    seg = _segment(real_tokens[100:104])
    for codec in ("prior", "mix"):
        (tmp_path / f"{codec}.dlvq").write_bytes(api.compress(seg, codec, model=network_blob))
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from pathlib import Path\n"
        "from drivelab.vq import api\n"
        f"for c in ('prior', 'mix'):\n"
        f"    p = Path({str(tmp_path)!r}) / f'{{c}}.dlvq'\n"
        f"    assert api.decompress(p.read_bytes()).raw == Path({str(tmp_path)!r}, 'raw.npy').read_bytes()\n"
    )
    (tmp_path / "raw.npy").write_bytes(seg.raw)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_mixture_beats_both_of_its_parts(real_tokens, network_blob) -> None:
    """The network (trained on frames 0-39) and the context model, mixed while coding, on frames 40-99."""
    seg = _segment(real_tokens[40:100])
    sizes = {c: len(container.unpack(api.compress(seg, c, model=network_blob) if c != "context" else
                                     api.compress(seg, c))[1]) for c in ("prior", "context", "mix")}
    assert sizes["mix"] < 0.995 * min(sizes["prior"], sizes["context"]), sizes


def test_cli_train_prior_compress_decompress(real_tokens, tmp_path) -> None:
    src = tmp_path / "seg.npy"
    np.save(src, real_tokens[:12])
    runner = CliRunner()
    r = runner.invoke(app, ["train-prior", str(src), "--out", str(tmp_path / "p.pt"), "--steps", "20"])
    assert r.exit_code == 0, r.output
    assert "bits/token" in r.output
    for codec in ("prior", "mix"):
        out = tmp_path / f"{codec}.dlvq"
        r = runner.invoke(app, ["compress", str(src), "--codec", codec, "--model", str(tmp_path / "p.pt"),
                                "--out", str(out)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["decompress", str(out), "--out", str(tmp_path / codec)])
        assert r.exit_code == 0, r.output
        assert (tmp_path / codec / "seg.npy").read_bytes() == src.read_bytes()
    assert read_all([tmp_path / "prior"])[0].raw == src.read_bytes()
