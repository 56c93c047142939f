"""Evaluation: confusion-matrix metrics against torchmetrics on the same predictions, CE over real
labelled pixels only, per-image table, flip TTA, and `drivelab compare`. The reference predictions
here are computed independently from the documented model-input transform (cv2 area resize to the
training size, zero padding to /32, crop, half-pixel bilinear back)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from drivelab.data import open_dataset
from drivelab.seg.checkpoint import load_model
from drivelab.seg.config import load_config
from drivelab.seg.evaluate import evaluate
from drivelab.seg.metrics import SegMeter, confusion, scores
from drivelab.seg.trainer import train
from tests.seg.conftest import tiny_overrides


@pytest.fixture(scope="module")
def tiny_run(synth_comma10k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs")
    return train(load_config("synth", tiny_overrides(synth_comma10k, out, name="tiny", max_steps=6, lr=0.01)),
                 progress=False)


def test_scores_against_torchmetrics() -> None:
    g = torch.Generator().manual_seed(0)
    k = 6
    target = torch.randint(0, k, (4, 32, 48), generator=g)
    target[:, :5] = 255  # ignored rows
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target.clamp(max=k - 1),
                       torch.randint(0, k, target.shape, generator=g))
    s = scores(confusion(pred, target, k))
    jac = MulticlassJaccardIndex(k, average=None, ignore_index=255)(pred, target)
    np.testing.assert_allclose([s[f"iou_{i}"] for i in range(k)], jac.numpy(), rtol=1e-6)
    miou = MulticlassJaccardIndex(k, ignore_index=255)(pred, target)
    assert s["miou"] == pytest.approx(float(miou), rel=1e-6)
    assert s["pixel_acc"] == pytest.approx(
        float(MulticlassAccuracy(k, average="micro", ignore_index=255)(pred, target)), rel=1e-6)
    assert s["mean_acc"] == pytest.approx(
        float(MulticlassAccuracy(k, average="macro", ignore_index=255)(pred, target)), rel=1e-6)


def test_ce_counts_only_labelled_pixels() -> None:
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 2:] = 255  # e.g. padding
    meter = SegMeter(3)
    meter.update(logits, target)
    keep = target != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    assert meter.compute()["loss"] == pytest.approx(float(expected), rel=1e-6)
    assert meter.pixels == 8


def reference_logprobs(model: torch.nn.Module, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(K, H, W) log-probabilities, written out from the transform's description."""
    import cv2

    h, w = size
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    padded = np.zeros((ph, pw, 3), np.uint8)
    padded[:h, :w] = small
    x = torch.from_numpy(padded.transpose(2, 0, 1)).float()[None] / 255
    with torch.no_grad():
        logits = model(x)[:, :, :h, :w]
    full = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    return F.log_softmax(full, 1)[0]


def test_evaluate_matches_torchmetrics(tiny_run: Path, heldout_comma10k: Path) -> None:
    m = evaluate(tiny_run, heldout_comma10k, progress=False)
    out = tiny_run / "eval" / heldout_comma10k.name
    assert json.loads((out / "metrics.json").read_text())["miou"] == pytest.approx(m["miou"])
    table = pd.read_parquet(out / "per_image.parquet")
    reader = open_dataset(heldout_comma10k)
    assert m["split"] == "all" and list(table["name"]) == reader.names  # held-out set: every image
    assert {"name", "split", "loss", "pixel_acc", "miou", "iou_road", "iou_my car"} <= set(table)

    # The same predictions through torchmetrics.
    model, schema, ckpt = load_model(tiny_run)
    size = tuple(ckpt["config"]["size"])
    k = schema.num_classes
    jac, acc = MulticlassJaccardIndex(k, ignore_index=255, average=None), MulticlassAccuracy(
        k, average="micro", ignore_index=255)
    ce_sum, n = 0.0, 0
    for s in reader:
        logp = reference_logprobs(model, s.image, size)
        pred, target = logp.argmax(0), torch.from_numpy(s.mask.astype(np.int64))
        jac.update(pred, target)
        acc.update(pred, target)
        ce_sum += float(F.nll_loss(logp[None], target[None], ignore_index=255, reduction="sum"))
        n += int((target != 255).sum())
    per_class = jac.compute().numpy()
    present = [i for i in range(k) if np.isfinite(m["iou"][schema.names[i]])]
    np.testing.assert_allclose([m["iou"][schema.names[i]] for i in present], per_class[present], rtol=1e-5)
    assert m["miou"] == pytest.approx(float(np.mean(per_class[present])), rel=1e-5)
    assert m["pixel_acc"] == pytest.approx(float(acc.compute()), rel=1e-5)
    assert m["ce"] == pytest.approx(ce_sum / n, rel=1e-5)
    # Per-image losses weighted by pixels give back the dataset CE.
    assert float((table["loss"] * table["pixels"]).sum() / table["pixels"].sum()) == pytest.approx(m["ce"])


def test_evaluate_training_data_defaults_to_val_and_tta(tiny_run: Path, synth_comma10k: Path,
                                                          tmp_path: Path) -> None:
    m = evaluate(tiny_run, synth_comma10k, out_dir=tmp_path / "e", tta=True, progress=False)
    val = open_dataset(synth_comma10k).subset(split="val")
    assert m["split"] == "val" and m["n_images"] == len(val) and m["tta"] is True
    plain = evaluate(tiny_run, synth_comma10k, out_dir=tmp_path / "p", progress=False)
    assert plain["ce"] != m["ce"]  # flipping changes the averaged probabilities


def test_cli_evaluate_and_compare(tiny_run: Path, heldout_comma10k: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from drivelab.seg.cli import register

    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["evaluate", str(tiny_run / "best.pt"), str(heldout_comma10k),
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "mIoU" in res.output and (tmp_path / "ev" / "per_image.parquet").exists()

    res = CliRunner().invoke(app, ["compare", str(tiny_run), str(tiny_run / "best.pt"), "--data",
                                   str(heldout_comma10k), "--out", str(tmp_path / "cmp"), "--images", "2"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(table) == 2 and (table["GFLOPs"] > 0).all() and (table["params_M"] > 0).all()
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "GFLOPs" in page


def test_flop_count_of_a_known_conv() -> None:
    from drivelab.seg.compare import count_flops

    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, (64, 96)) == 2 * 3 * 8 * 9 * 64 * 96


def test_cityscapes29_real_sample(cityscapes_sample: Path, tmp_path: Path) -> None:
    """Train 1 step and evaluate on the real Cityscapes frame: 29 classes, labels at their own
    resolution, only labelled pixels counted (void labelIds map to 255)."""
    cfg = load_config("cityscapes29", {
        "data": str(cityscapes_sample), "train_split": "val", "size": [64, 128],
        "model_kwargs": {"base": 4, "depth": 2}, "batch_size": 1, "max_steps": 1, "workers": 0,
        "out": str(tmp_path), "augment": {}, "loss": "ce+dice"})
    run = train(cfg, progress=False)
    m = evaluate(run, cityscapes_sample, progress=False)
    assert m["split"] == "val" and len(m["classes"]) == 29
    table = pd.read_parquet(run / "eval" / cityscapes_sample.name / "per_image.parquet")
    mask = open_dataset(cityscapes_sample, classes="29")[0].mask
    assert table["loss"].iloc[0] == pytest.approx(m["ce"])
    assert table["pixels"].iloc[0] == int((mask != 255).sum()) < mask.size


def test_instance_checkpoints_go_to_the_instance_evaluator(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("drivelab.seg.instance.evaluate")
    from drivelab.errors import DrivelabError
    from drivelab.schema import comma10k
    from drivelab.seg.checkpoint import save_checkpoint

    calls = []

    def fake(checkpoint, dataset, out_dir, split=None):
        calls.append((Path(checkpoint["path"]), Path(dataset), out_dir, split))
        return {"mask_ap": 0.5}

    monkeypatch.setattr("drivelab.seg.instance.evaluate.evaluate_instances", fake)
    save_checkpoint(tmp_path / "inst.pt", torch.nn.Linear(1, 1), {"name": "maskrcnn"}, comma10k(),
                    task="instance")
    assert evaluate(tmp_path / "inst.pt", tmp_path / "coco", split="val") == {"mask_ap": 0.5}
    assert calls == [(tmp_path / "inst.pt", tmp_path / "coco", None, "val")]
    with pytest.raises(DrivelabError, match="does not take tta"):  # a semantic-only option
        evaluate(tmp_path / "inst.pt", tmp_path / "coco", tta=True)
