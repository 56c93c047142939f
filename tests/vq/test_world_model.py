"""The world model: early stopping on held-out frames, `vq score`, and `vq imagine`'s repeat rates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.vq.cli import app
from drivelab.vq.codecs.gpt import load_weights
from drivelab.vq.gpt import GPT, frame_cond
from drivelab.vq.score import score
from drivelab.vq.tokens import npy_bytes
from drivelab.vq.train import (
    TrainConfig,
    Windows,
    evaluate_bits,
    imagine,
    own_previous_frames,
    repeat_rate,
    save_checkpoint,
    split_holdout,
    train,
    world_config,
)

runner = CliRunner()
# `drivelab vq train`'s model without dropout: regularisation pays off over 2,000 steps, not 300
SMALL = world_config(dropout=0.0)


def test_holdout_split_never_trains_on_held_out_frames():
    x = np.arange(100 * 128).reshape(100, 128)
    tr, va = split_holdout([x], frames=2, val_frac=0.1)
    assert len(tr[0]) == 90 and np.array_equal(va[0][0], x[89])  # one context frame before the tail
    assert not set(map(tuple, tr[0])) & set(map(tuple, x[90:]))


@pytest.fixture(scope="module")
def trained(real_tokens, tmp_path_factory):
    x = real_tokens.reshape(-1, 128).astype(np.int64)
    tr, va = split_holdout([x[:200]], SMALL.frames, 0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest on a shared CI machine
    try:
        # real frames only: what transfers to frames never seen (rollout training is tested below)
        tc = TrainConfig(steps=300, eval_every=50, patience=2, cond_drop=0.0, rollout_share=0.0)
        model, rep = train(tr, va, SMALL, tc)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("wm") / "wm.pt"
    save_checkpoint(path, model, rep)
    return model, rep, va, path


def test_training_keeps_the_best_held_out_weights(trained):
    model, rep, va, _ = trained
    assert rep["best_step"] <= rep["steps_run"] and rep["val_windows"] == 20
    # the returned weights are the ones that scored best on the held-out frames
    held = evaluate_bits(model, Windows(va, SMALL.frames, SMALL.cond))
    assert held == pytest.approx(rep["val_bits_per_token"], abs=1e-6)


def test_world_model_learns_what_transfers(trained, real_tokens):
    """300 CPU steps on frames 0-179 transfer to frames 200-259, never seen: far below uniform
    (10 bits) and 2 bits below the untrained model (its copy bonuses alone give ~9), repeats far
    cheaper than changes. (Frames 300+ are another stretch of road: see docs/vq.md.)"""
    _, _, _, path = trained
    x = real_tokens.reshape(-1, 128)
    torch.manual_seed(0)
    untrained = score(GPT(SMALL).eval(), x[200:260], 1, 1)["bits_per_token"]
    s = score(load_weights(path, False).model, x[200:260], 1, 1)
    assert s["bits_per_token"] < min(7.0, untrained - 2.0)
    assert s["bits_repeat"] < 0.5 * s["bits_change"]
    assert s["repeat_share"] == pytest.approx(repeat_rate(x[200:260]))


def test_score_cli_json(trained, real_tokens, tmp_path):
    _, _, _, path = trained
    seg = tmp_path / "seg.npy"
    seg.write_bytes(npy_bytes(real_tokens[:80]))
    out = tmp_path / "score.json"
    args = ["score", str(path), str(seg), "--frames", "40:80", "--json", str(out), "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    want = score(load_weights(path, False).model, real_tokens.reshape(-1, 128)[40:80], 1, 1)
    assert rep["bits_per_token"] == pytest.approx(want["bits_per_token"])
    assert f"{want['bits_per_token']:.4f} bits/token" in r.output
    r = runner.invoke(app, ["score", str(tmp_path / "nope.pt"), str(seg)])
    assert isinstance(r.exception, DrivelabError) and "not found" in str(r.exception)


def test_imagine_reports_repeat_rates(trained, real_tokens, tmp_path):
    _, _, _, path = trained
    seg = tmp_path / "seg.npy"
    seg.write_bytes(npy_bytes(real_tokens[:30]))
    rep = tmp_path / "imagine.json"
    args = ["imagine", str(seg), "--model", str(path), "-k", "3", "--out", str(tmp_path / "f.npy"),
            "--json", str(rep), "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    got = json.loads(rep.read_text())
    future = np.load(tmp_path / "f.npy").reshape(-1, 128)
    real = real_tokens.reshape(-1, 128)[:30]
    assert got["repeat_rate_real"] == pytest.approx(float((real[1:] == real[:-1]).mean()))
    chain = np.concatenate([real[-1:], future])
    assert got["repeat_rate_imagined"] == pytest.approx(float((chain[1:] == chain[:-1]).mean()))
    assert "points apart" in r.output


def test_rollout_training_feeds_the_model_its_own_previous_frame(real_tokens):
    """A share of the windows sees the model's own sample of the previous frame, flagged; the
    two-back token and the frame's own tokens stay real, and the 3x3 slots come from one frame."""
    x = real_tokens.reshape(-1, 128).astype(np.int64)[:12]
    data = Windows([x], 1, True)
    ids = list(range(len(data)))
    _, cond = data.batch(ids)
    torch.manual_seed(0)
    model = GPT(SMALL).eval()
    same, none = own_previous_frames(model, data, ids, cond, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same, cond) and not none.any()
    got, flags = own_previous_frames(model, data, ids, cond, 1.0, torch.Generator().manual_seed(0))
    assert flags.tolist() == [t >= 1 for _, t in data.index]  # frame 0 has no previous frame
    assert torch.equal(got[:, :, 9:], cond[:, :, 9:])
    changed = got[:, :128, :9] != cond[:, :128, :9]
    assert changed[flags].any() and not changed[~flags].any()
    for b, (_, t) in enumerate(data.index):
        if flags[b]:
            own = got[b, :128, 4].numpy()  # slot 4: the previous frame's token at the target
            want = frame_cond(own, x[t - 2] if t >= 2 else None, x[t])
            assert np.array_equal(got[b].numpy(), want)


def test_training_samples_previous_frames_only_for_rollout_models(monkeypatch, real_tokens):
    import drivelab.vq.train as world

    x = real_tokens.reshape(-1, 128).astype(np.int64)[:30]
    calls: list[tuple[float, int]] = []
    own = world.own_previous_frames

    def spy(model, data, ids, cond, share, gen):
        out = own(model, data, ids, cond, share, gen)
        calls.append((share, int(out[1].sum())))
        return out

    monkeypatch.setattr(world, "own_previous_frames", spy)
    train([x], [], SMALL, TrainConfig(steps=5, rollout_share=0.5))
    assert len(calls) == 5 and {s for s, _ in calls} == {0.5} and sum(n for _, n in calls) > 0
    calls.clear()
    # Share 0 on a rollout config: no sampling and no flag left untrained in the model.
    model, _ = train([x], [], SMALL, TrainConfig(steps=5, rollout_share=0.0))
    assert SMALL.rollout and not model.cfg.rollout and not hasattr(model, "rollout_emb")
    train([x], [], world_config(rollout=False), TrainConfig(steps=5))
    assert not calls
    with pytest.raises(DrivelabError, match="1-frame windows"):
        train([x], [], world_config(frames=2), TrainConfig(steps=1))


def test_imagine_flags_the_frames_it_sampled(real_tokens):
    """The first imagined frame follows a real frame (flag off, as when coding); every later one
    follows a sampled frame (flag on)."""
    torch.manual_seed(0)
    model = GPT(SMALL).eval()
    seen: list[bool] = []
    forward = model.forward

    def spy(*args, **kwargs):
        seen.append(bool(kwargs.get("sampled", False)))
        return forward(*args, **kwargs)

    model.forward = spy
    imagine(model, real_tokens.reshape(-1, 128)[:3], frames=2)
    assert seen == [False] * 128 + [True] * 128
    seq = torch.full((1, 1), 1024)
    cond = torch.full((1, 1, 14), 1024)
    assert not torch.equal(forward(seq, cond=cond), forward(seq, cond=cond, sampled=True))


def test_train_cli_rollout_share(real_tokens, tmp_path):
    seg = tmp_path / "seg.npy"
    seg.write_bytes(npy_bytes(real_tokens[:24]))
    base = ["train", str(seg), "--steps", "2", "--eval-every", "1", "--device", "cpu"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "a.pt")])
    assert r.exit_code == 0, r.output
    assert load_weights(tmp_path / "a.pt", False).model.cfg.rollout  # the default trains rollouts
    r = runner.invoke(app, [*base, "--frames", "2", "--out", str(tmp_path / "b.pt")])
    assert isinstance(r.exception, DrivelabError) and "--rollout-share 0" in str(r.exception)
    r = runner.invoke(app, [*base, "--frames", "2", "--rollout-share", "0", "--out", str(tmp_path / "c.pt")])
    assert r.exit_code == 0, r.output
    assert not load_weights(tmp_path / "c.pt", False).model.cfg.rollout
    r = runner.invoke(app, [*base, "--rollout-share", "1.5", "--out", str(tmp_path / "d.pt")])
    assert isinstance(r.exception, DrivelabError) and "--rollout-share" in str(r.exception)
