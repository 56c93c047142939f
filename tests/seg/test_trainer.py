"""The trainer end to end on a tiny synthetic comma10k set: run folder, resume after a kill,
NaN guard, checks before training, two stages, EMA + accumulation, CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.seg.checkpoint import load_model, read_checkpoint, save_checkpoint
from drivelab.seg.config import load_config
from drivelab.seg.semantic import SemanticTask
from drivelab.seg.trainer import train
from tests.seg.conftest import SIZE, tiny_overrides


def _cli() -> typer.Typer:
    from drivelab.seg.cli import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_train_run_folder(synth_comma10k: Path, tmp_path: Path) -> None:
    over = tiny_overrides(synth_comma10k, tmp_path / "runs")
    args = ["train", "synth", *[f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in
                                over.items() if k not in ("data", "model")],
            f"data={synth_comma10k}", "model=plain-unet", "name=t", "--no-progress"]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    run = tmp_path / "runs" / "t"
    assert {"config.yaml", "metrics.csv", "last.pt", "best.pt", "tb"} <= {p.name for p in run.iterdir()}
    assert list((run / "tb").glob("events.out.tfevents.*"))
    saved = load_config(run)
    assert saved.max_steps == 4 and saved.model_kwargs == {"base": 4, "depth": 3}
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["step"]) == [2, 4]
    assert {"miou", "pixel_acc", "mean_acc", "loss", "train_loss", "images_per_s", "iou_road"} <= set(metrics)
    model, schema, ckpt = load_model(run)
    assert schema.name == "comma10k" and ckpt["config"]["size"] == list(SIZE) and ckpt["task"] == "semantic"
    best = metrics["miou"].max()
    assert read_checkpoint(run / "best.pt")["metrics"]["miou"] == pytest.approx(best)
    assert read_checkpoint(run / "last.pt")["step"] == 4
    # A second run with the same name gets its own folder.
    again = train(load_config("synth", {**over, "name": "t", "max_steps": 1}), progress=False)
    assert again.name == "t-2"


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted(synth_comma10k: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Augmentation, dropout, gradient accumulation, EMA and an epoch boundary (4 steps/epoch):
    # everything that carries state across steps.
    over = tiny_overrides(synth_comma10k, tmp_path / "runs", max_steps=6, accumulate=2, ema=0.9, save_every=1,
                          augment={"hflip": 0.5, "scale": [0.8, 1.2], "color": 0.2},
                          model_kwargs={"base": 4, "depth": 3, "dropout": 0.3})
    straight = train(load_config("synth", {**over, "name": "straight"}), progress=False)

    calls = {"n": 0}
    real_loss = SemanticTask.loss

    def dying_loss(self, model, batch, device):
        calls["n"] += 1
        if calls["n"] == 6:  # second micro-batch of step 3: last.pt holds step 2, mid-epoch
            raise Killed
        return real_loss(self, model, batch, device)

    monkeypatch.setattr(SemanticTask, "loss", dying_loss)
    cfg = load_config("synth", {**over, "name": "resumed"})
    with pytest.raises(Killed):
        train(cfg, progress=False)
    run = tmp_path / "runs" / "resumed"
    assert read_checkpoint(run / "last.pt")["step"] == 2
    monkeypatch.setattr(SemanticTask, "loss", real_loss)
    assert train(cfg, resume=True, progress=False) == run

    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(run / "last.pt")
    assert a["step"] == b["step"] == 6
    for key in ("model", "train_model"):
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=0, atol=1e-6, msg=f"{key}.{name}")
    ma, mb = pd.read_csv(straight / "metrics.csv"), pd.read_csv(run / "metrics.csv")
    assert list(mb["step"]) == [2, 4, 6]
    pd.testing.assert_series_equal(ma["miou"], mb["miou"], atol=1e-6)
    pd.testing.assert_series_equal(ma["loss"], mb["loss"], atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good(synth_comma10k: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_loss = SemanticTask.loss

    def nan_at_3(self, model, batch, device):
        calls["n"] += 1
        loss = real_loss(self, model, batch, device)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(SemanticTask, "loss", nan_at_3)
    cfg = load_config("synth", tiny_overrides(synth_comma10k, tmp_path / "runs", name="nan", save_every=1,
                                              eval_every=1, max_steps=5))
    with pytest.raises(DrivelabError, match="loss is nan at stage 1 step 3.*last good checkpoint.*step 2"):
        train(cfg, progress=False)
    ckpt = read_checkpoint(tmp_path / "runs" / "nan" / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_bad_input_fails_before_training(synth_comma10k: Path, tmp_path: Path) -> None:
    from drivelab.schema import cityscapes
    from drivelab.seg.models import build_model

    other = tmp_path / "city.pt"
    spec = {"name": "plain-unet", "num_classes": 19, "base": 4, "depth": 3}
    save_checkpoint(other, build_model(**spec), spec, cityscapes("19"))
    out = tmp_path / "runs"
    with pytest.raises(DrivelabError, match="class count mismatch.*19 classes"):
        train(load_config("synth", tiny_overrides(synth_comma10k, out, weights=str(other))), progress=False)
    with pytest.raises(DrivelabError, match="dataset not found"):
        train(load_config("synth", tiny_overrides(tmp_path / "nowhere", out)), progress=False)
    with pytest.raises(DrivelabError, match="no validation images in split 'valid'"):
        train(load_config("synth", tiny_overrides(synth_comma10k, out, val_split="valid")), progress=False)
    assert not out.exists() or not [p for p in out.iterdir() if p.name != "cache"]  # no run folder
    res = CliRunner().invoke(_cli(), ["train", "synth", "batch_sise=2"])
    assert res.exit_code != 0 and "batch_sise" in str(res.exception)


def test_two_stages_resume_between_stages_and_finetune(synth_comma10k: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    over = tiny_overrides(synth_comma10k, tmp_path / "runs", ema=0.5,
                          stages=[{"size": [32, 64], "max_steps": 2}, {"size": list(SIZE), "max_steps": 2}])
    run = train(load_config("synth", {**over, "name": "two"}), progress=False)
    first, final = read_checkpoint(run / "stage1_best.pt"), read_checkpoint(run / "best.pt")
    assert first["config"]["size"] == [32, 64] and final["config"]["size"] == list(SIZE)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["stage"]) == [0, 1] and list(metrics["step"]) == [2, 2]

    # Killed in the first step of stage 2, resumed: stage 2 starts again from stage 1's best.
    calls, real_loss = {"n": 0}, SemanticTask.loss

    def dying_loss(self, model, batch, device):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real_loss(self, model, batch, device)

    monkeypatch.setattr(SemanticTask, "loss", dying_loss)
    cfg = load_config("synth", {**over, "name": "two-killed"})
    with pytest.raises(Killed):
        train(cfg, progress=False)
    monkeypatch.setattr(SemanticTask, "loss", real_loss)
    resumed = train(cfg, resume=True, progress=False)
    a, b = read_checkpoint(run / "last.pt"), read_checkpoint(resumed / "last.pt")
    for name, t in a["model"].items():
        torch.testing.assert_close(b["model"][name], t, rtol=0, atol=1e-6)
    assert list(pd.read_csv(resumed / "metrics.csv")["stage"]) == [0, 1]
    # Fine-tuning from a drivelab checkpoint of the same classes loads its weights.
    ft = tiny_overrides(synth_comma10k, tmp_path / "runs", name="ft", max_steps=1,
                        weights=str(run / "best.pt"))
    again = train(load_config("synth", ft), progress=False)
    assert again.exists()
