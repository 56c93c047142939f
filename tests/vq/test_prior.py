"""The `prior` codec: a small neighbourhood predictor trained offline and adapted while coding."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.vq import api, container
from drivelab.vq.cli import app
from drivelab.vq.prior import bits_per_token, contexts, load_prior, save_prior, train_prior
from drivelab.vq.tokens import Segment, npy_bytes


def _segment(tokens: np.ndarray, name: str = "seg.npy") -> Segment:
    tokens = np.asarray(tokens, dtype=np.int16)
    return Segment(name=name, tokens=tokens, raw=npy_bytes(tokens))


@pytest.fixture(scope="module")
def prior_path(real_tokens: np.ndarray, tmp_path_factory) -> Path:
    x = real_tokens.reshape(-1, 128)[:40].astype(np.int64)
    model, bits = train_prior([x], steps=300, val_frac=0.2)
    assert np.isfinite(bits)
    path = tmp_path_factory.mktemp("prior") / "prior.pt"
    save_prior(path, model, {"val_bits_per_token": bits})
    return path


def test_contexts_are_causal_and_exact() -> None:
    x = np.arange(3 * 128).reshape(3, 128) % 1024
    ctx = contexts(x)
    assert ctx.shape == (3, 128, 14)
    assert (ctx[0, :, :10] == 1024).all()  # nothing before the first frame
    assert ctx[2, 17, 4] == x[1, 17] and ctx[2, 17, 9] == x[0, 17]  # previous frame, two back
    assert ctx[2, 17, 10] == x[2, 16] and ctx[2, 17, 11] == x[2, 1]  # left, up
    assert ctx[2, 16, 10] == 1024  # no left neighbour in the first column
    assert ctx[2, 0, 11] == 1024  # no row above in the first row


def test_training_beats_uniform_on_unseen_real_frames(real_tokens: np.ndarray, prior_path: Path) -> None:
    model = load_prior(prior_path.read_bytes(), prior_path)
    heldout = real_tokens.reshape(-1, 128)[40:60].astype(np.int64)
    assert bits_per_token(model, heldout, first=2) < 9.0  # uniform over 1024 tokens is 10 bits


def test_round_trip_real_random_and_adversarial(real_tokens: np.ndarray, prior_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "real": real_tokens.reshape(-1, 128)[100:106],
        "random": rng.integers(0, 1024, (3, 128)),
        "zeros": np.zeros((2, 128), np.int64),
        "max": np.full((2, 8, 16), 1023),
    }
    for name, tokens in cases.items():
        seg = _segment(tokens, f"{name}.npy")
        data = api.compress(seg, "prior", model_path=prior_path)
        back = api.decompress(data)
        assert back.raw == seg.raw, name
        assert back.tokens.shape == seg.tokens.shape
    # the adapted model codes the repetitive case far below 10 bits/token
    zeros = api.compress(_segment(np.zeros((4, 128))), "prior", model_path=prior_path, embed=False)
    _, payload = container.unpack(zeros)
    assert len(payload) < 4 * 128 * 10 / 8 / 3


def test_external_weights_checked_and_corruption_refused(prior_path: Path, tmp_path: Path,
                                                          real_tokens: np.ndarray) -> None:
    seg = _segment(real_tokens.reshape(-1, 128)[200:203])
    data = api.compress(seg, "prior", model_path=prior_path, embed=False)
    assert api.decompress(data).raw == seg.raw
    other = tmp_path / "other.pt"
    save_prior(other, train_prior([real_tokens.reshape(-1, 128)[:8].astype(np.int64)], steps=2)[0])
    moved = data.replace(str(prior_path).encode(), str(other).encode())
    with pytest.raises(DrivelabError):
        api.decompress(moved)
    with pytest.raises(DrivelabError, match="needs --model"):
        api.compress(seg, "prior")
    with pytest.raises(DrivelabError):
        load_prior(b"not a checkpoint")


def test_cli_train_prior_compress_and_submission(real_tokens: np.ndarray, tmp_path: Path) -> None:
    src = tmp_path / "seg.npy"
    np.save(src, real_tokens[:12])
    runner = CliRunner()
    r = runner.invoke(app, ["train-prior", str(src), "--out", str(tmp_path / "p.pt"), "--steps", "20"])
    assert r.exit_code == 0, r.output
    assert "bits/token" in r.output
    out = tmp_path / "seg.dlvq"
    r = runner.invoke(app, ["compress", str(src), "--codec", "prior", "--model", str(tmp_path / "p.pt"),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["decompress", str(out), "--out", str(tmp_path / "restored")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "restored" / "seg.npy").read_bytes() == src.read_bytes()

    from drivelab.vq.submission import write_submission

    zpath = tmp_path / "sub.zip"
    write_submission(zpath, [("seg.npy", out.read_bytes())])
    names = set(zipfile.ZipFile(zpath).namelist())
    assert {"drivelab/vq/prior.py", "drivelab/vq/codecs/prior.py"} <= names  # shipped only when used
