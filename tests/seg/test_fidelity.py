"""Results the field can trust: one model-input path (torch, ONNX, evaluate, predict, training agree
at sizes that are not multiples of 32), range-checked confusion, prediction folders, and each
protocol against its referee (cityscapesscripts, the BDD100K toolkit, comma10k-baseline's loop)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drivelab.data import open_dataset
from drivelab.data.synth import synth_dataset
from drivelab.errors import DrivelabError
from drivelab.io import read_label, write_png
from drivelab.seg.config import load_config
from drivelab.seg.evaluate import evaluate
from drivelab.seg.inference import Predictor
from drivelab.seg.metrics import PredictionRangeError, confusion, scores
from drivelab.seg.trainer import train
from tests.seg.conftest import tiny_overrides

TRAIN_SIZE = (100, 150)  # not a multiple of 32: padding and cropping matter
IMAGE_SIZE = (200, 300)


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small U-Net trained at 100x150 on 200x300 synthetic comma10k scenes."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("odd")
    data = synth_dataset("comma10k", root / "data", n=20, size=IMAGE_SIZE, seed=3)
    over = tiny_overrides(data, root / "runs", name="odd", size=list(TRAIN_SIZE), max_steps=40,
                          eval_every=40, lr=3e-3, batch_size=4, model_kwargs={"base": 8, "depth": 3})
    return train(load_config("synth", over), progress=False), data


def reference_logits(model: torch.nn.Module, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The documented transform, written out independently: cv2 area resize, zero pad to /32,
    model, crop, half-pixel bilinear to the image size."""
    h, w = size
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    padded = np.zeros((-(-h // 32) * 32, -(-w // 32) * 32, 3), np.uint8)
    padded[:h, :w] = small
    x = torch.from_numpy(padded.transpose(2, 0, 1)).float()[None] / 255
    with torch.no_grad():
        logits = model(x)[:, :, :h, :w]
    return F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)[0]


def test_every_path_feeds_the_model_the_same_way(odd_run: tuple[Path, Path], tmp_path: Path) -> None:
    from drivelab.seg.dataset import SegDataset
    from drivelab.seg.onnx import export_onnx, metadata
    from drivelab.seg.transforms import eval_batch

    run, data = odd_run
    reader = open_dataset(data)
    images = [reader[i].image for i in range(len(reader))]
    assert images[0].shape[:2] == IMAGE_SIZE
    torch_pred = Predictor(run / "best.pt", device="cpu")
    exported = export_onnx(run / "best.pt", tmp_path / "m.onnx")
    assert json.loads(metadata(exported.path)["drivelab_input"])["size"] == list(TRAIN_SIZE)
    onnx_pred = Predictor(exported.path)
    assert onnx_pred.size == TRAIN_SIZE and exported.size == (128, 160)

    a = np.stack(torch_pred.predict_batch(images))
    b = np.stack(onnx_pred.predict_batch(images))
    ref = np.stack([reference_logits(torch_pred.model, im, TRAIN_SIZE).argmax(0).numpy() for im in images])
    assert (a == b).mean() >= 0.999, f"torch vs ONNX agree on {(a == b).mean():.5f}"
    assert (a == ref).mean() >= 0.999, f"Predictor vs the documented transform: {(a == ref).mean():.5f}"
    # The model classifies more than one class (a test of agreement on a constant map proves little).
    assert len(np.unique(a)) >= 3

    # Training saw its images exactly as inference prepares them (the val view: no augmentation).
    ds = SegDataset(reader, TRAIN_SIZE)
    x, _ = eval_batch([images[0]], torch_pred.model_input)
    np.testing.assert_array_equal(ds[0][0].numpy(), np.round(x[0] * 255).astype(np.uint8))


def test_predict_masks_score_what_evaluate_scores(odd_run: tuple[Path, Path], tmp_path: Path) -> None:
    from drivelab.seg.predict import predict

    run, data = odd_run
    direct = evaluate(run, data, tmp_path / "direct", split="all", device="cpu", progress=False)
    predict(run, data / "imgs", tmp_path / "pred", overlay=False, stats=False, device="cpu", progress=False)
    assert json.loads((tmp_path / "pred" / "predict.json").read_text())["ids"] == "train"
    scored = evaluate(tmp_path / "pred", data, tmp_path / "scored", split="all", progress=False)
    assert scored["n_images"] == direct["n_images"] == 20
    assert scored["miou"] == pytest.approx(direct["miou"], abs=1e-6)
    assert scored["pixel_acc"] == pytest.approx(direct["pixel_acc"], abs=1e-6)
    for c, v in direct["iou"].items():
        assert scored["iou"][c] == pytest.approx(v, abs=1e-6, nan_ok=True)
    assert "ce" in direct and "ce" not in scored  # no logits in PNGs
    # The masks folder alone works too.
    again = evaluate(tmp_path / "pred" / "masks", data, tmp_path / "again", split="all", progress=False)
    assert again["miou"] == pytest.approx(direct["miou"], abs=1e-6)


def test_confusion_counts_void_and_refuses_other_classes() -> None:
    conf = confusion(torch.tensor([255, 1]), torch.tensor([0, 1]), 19)
    assert conf.shape == (19, 20) and conf[0, 19] == 1 and conf[1, 1] == 1 and conf.sum() == 2
    s = scores(conf)
    assert s["iou_0"] == 0.0 and s["iou_1"] == 1.0 and s["pixel_acc"] == 0.5  # void is wrong, not skipped
    mixed = confusion(torch.tensor([255, 3, 2, 1]), torch.tensor([0, 3, 2, 255]), 19)
    assert mixed.sum() == 3  # an ignored label pixel never counts
    with pytest.raises(PredictionRangeError, match="value 19"):
        confusion(torch.tensor([19, 1, 4]), torch.tensor([0, 1, 2]), 19)
    with pytest.raises(ValueError, match="label holds value 7"):
        confusion(torch.tensor([0]), torch.tensor([7]), 5)


def _write_predictions(reader, folder: Path, name_of, noise: float = 0.2, seed: int = 0,
                       void: float = 0.0, classes: int | None = None) -> dict[str, np.ndarray]:
    """GT masks with a share of pixels replaced by random classes (and some void)."""
    rng = np.random.default_rng(seed)
    k = classes or reader.schema.num_classes
    out = {}
    for it in reader.items:
        gt = reader.load_mask(it)
        pred = np.where(gt == 255, rng.integers(0, k, gt.shape), gt).astype(np.uint8)
        flip = rng.random(gt.shape) < noise
        pred[flip] = rng.integers(0, k, int(flip.sum()))
        pred[rng.random(gt.shape) < void] = 255
        write_png(folder / name_of(it), pred)
        out[it.name] = pred
    return out


@pytest.fixture(scope="module")
def small_comma10k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_dataset("comma10k", tmp_path_factory.mktemp("c10k") / "c", n=6, size=(64, 96), seed=5)


def test_prediction_folder_names_and_errors(small_comma10k: Path, tmp_path: Path) -> None:
    reader = open_dataset(small_comma10k)
    flat = tmp_path / "flat"
    preds = _write_predictions(reader, flat, lambda it: Path(it.name).stem + ".png")
    m = evaluate(flat, small_comma10k, split="all", progress=False)
    conf = sum(confusion(torch.from_numpy(preds[it.name]), torch.from_numpy(reader.load_mask(it)), 5)
               for it in reader.items)
    assert m["miou"] == pytest.approx(scores(conf)["miou"]) and m["n_images"] == 6
    assert (flat / "eval" / small_comma10k.name / "metrics.json").exists()
    # Sub-folders as in the dataset: imgs/<name>.png
    nested = tmp_path / "nested"
    _write_predictions(reader, nested, lambda it: Path("imgs") / (Path(it.name).stem + ".png"))
    assert evaluate(nested, small_comma10k, split="all", progress=False)["miou"] == pytest.approx(m["miou"])

    first = reader.items[0]
    (flat / (Path(first.name).stem + ".png")).rename(tmp_path / "aside.png")
    with pytest.raises(DrivelabError, match="no prediction for this labelled image") as e:
        evaluate(flat, small_comma10k, split="all", progress=False)
    assert first.name in str(e.value)
    (tmp_path / "aside.png").rename(flat / (Path(first.name).stem + ".png"))
    write_png(flat / "stray.png", np.zeros((64, 96), np.uint8))
    with pytest.raises(DrivelabError, match="matches no labelled image") as e:
        evaluate(flat, small_comma10k, split="all", progress=False)
    assert "stray.png" in str(e.value)
    (flat / "stray.png").unlink()
    write_png(flat / "imgs" / (Path(first.name).stem + ".png"), np.zeros((64, 96), np.uint8))
    with pytest.raises(DrivelabError, match="ambiguous"):
        evaluate(flat, small_comma10k, split="all", progress=False)
    (flat / "imgs" / (Path(first.name).stem + ".png")).unlink()
    # A value that is no class of the dataset: an error naming the file, not a corrupt score.
    bad = read_label(flat / (Path(first.name).stem + ".png")).copy()
    bad[0, 0] = 7
    write_png(flat / (Path(first.name).stem + ".png"), bad)
    with pytest.raises(DrivelabError, match="value 7") as e:
        evaluate(flat, small_comma10k, split="all", progress=False)
    assert Path(first.name).stem in str(e.value)


# --------------------------------------------------------------------------- BDD100K toolkit
def test_bdd100k_protocol_matches_the_official_toolkit(tmp_path: Path) -> None:
    seg = pytest.importorskip("bdd100k.eval.seg")
    data = synth_dataset("bdd100k", tmp_path / "bdd", n=6, size=(72, 128), seed=2, split="val")
    reader = open_dataset(data)
    preds = tmp_path / "preds"
    # Few classes predicted well, some classes predicted but absent from GT, void predictions.
    _write_predictions(reader, preds, lambda it: Path(it.name).stem + ".png", noise=0.3, seed=1, void=0.02)
    m = evaluate(preds, data, protocol="bdd100k", split="all", progress=False)
    gts = [str(it.label_path) for it in reader.items]
    res = seg.evaluate_segmentation(gts, [str(preds / (Path(it.name).stem + ".png")) for it in reader.items],
                                    nproc=1, with_logs=False)
    ref = res.summary()
    assert m["miou"] * 100 == pytest.approx(ref["mIoU"], abs=1e-9)
    assert m["mean_acc"] * 100 == pytest.approx(ref["mAcc"], abs=1e-9)
    assert m["pixel_acc"] * 100 == pytest.approx(ref["pAcc"], abs=1e-9)
    assert m["fiou"] * 100 == pytest.approx(ref["fIoU"], abs=1e-9)
    for name, v in res.IoU[0].items():
        assert m["iou"][name] * 100 == pytest.approx(v, abs=1e-9)
    for name, v in res.Acc[0].items():
        assert m["acc"][name] * 100 == pytest.approx(v, abs=1e-9)
    # ...and it is not drivelab's own convention on these arrays.
    own = evaluate(preds, data, split="all", progress=False)
    assert own["miou"] != pytest.approx(m["miou"], abs=1e-3)


# --------------------------------------------------------------------------- cityscapesscripts
def test_cityscapes_protocol_matches_cityscapesscripts(cityscapes_sample: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    # The referee still calls np.in1d, which numpy 2.4 removed; np.isin is its replacement.
    monkeypatch.setattr(np, "in1d", lambda a, b, invert=False: np.isin(a, b, invert=invert).ravel(),
                        raising=False)
    reader = open_dataset(cityscapes_sample)
    item = reader.items[0]
    gt_path = Path(str(item.label_path).replace("_labelTrainIds.png", "_labelIds.png"))
    gt = read_label(gt_path)
    rng = np.random.default_rng(0)
    pred = gt.copy()
    # Blocks of wrong classes, some predictions of ignored classes (parking 9, unlabeled 0).
    for _ in range(30):
        y, x = rng.integers(0, gt.shape[0] - 12), rng.integers(0, gt.shape[1] - 12)
        pred[y:y + 12, x:x + 12] = rng.choice([0, 7, 8, 9, 11, 21, 23, 24, 26, 33])
    folder = tmp_path / "preds" / "frankfurt"
    key = item.image_path.name.replace("_leftImg8bit.png", "")
    write_png(folder / f"{key}_pred.png", pred)  # matched by the <city>_<seq>_<frame> key

    m = evaluate(tmp_path / "preds", cityscapes_sample, protocol="cityscapes", split="all", progress=False)
    args = ev.args
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, True
    ref = ev.evaluateImgLists([str(folder / f"{key}_pred.png")], [str(gt_path)], args)
    assert m["miou"] == pytest.approx(ref["averageScoreClasses"], abs=1e-12)
    assert m["iiou"] == pytest.approx(ref["averageScoreInstClasses"], abs=1e-12)
    assert m["category_miou"] == pytest.approx(ref["averageScoreCategories"], abs=1e-12)
    assert m["category_iiou"] == pytest.approx(ref["averageScoreInstCategories"], abs=1e-12)
    assert len(m["iou"]) == 19
    for name, v in ref["classScores"].items():  # the referee lists ignored classes too, as NaN
        assert m["iou"].get(name, float("nan")) == pytest.approx(v, abs=1e-12, nan_ok=True)
    for name, v in ref["categoryScores"].items():
        assert m["category_iou"][name] == pytest.approx(v, abs=1e-12, nan_ok=True)
    assert 0.3 < m["miou"] < 0.95
    # drivelab's own class IoU is the Cityscapes one (void predictions are misses, ignored labels
    # never count); the protocol adds iIoU and the categories.
    own = evaluate(tmp_path / "preds", cityscapes_sample, split="all", pred_ids="label", progress=False)
    assert own["miou"] == pytest.approx(m["miou"], abs=1e-12) and "iiou" not in own

    # Train-id predictions (what drivelab's 19-class models write) go through the same referee.
    lut = np.asarray(reader.schema.label_lut, np.uint8)
    train_folder = tmp_path / "train_ids"
    write_png(train_folder / f"{key}_leftImg8bit.png", lut[pred])
    mt = evaluate(train_folder, cityscapes_sample, protocol="cityscapes", split="all", pred_ids="train",
                  progress=False)
    from drivelab.seg.protocols import train_to_label_ids

    back = train_to_label_ids(reader.schema.label_lut, 19)[lut[pred]]
    write_png(tmp_path / "back" / f"{key}.png", back)
    ref2 = ev.evaluateImgLists([str(tmp_path / "back" / f"{key}.png")], [str(gt_path)], args)
    assert mt["miou"] == pytest.approx(ref2["averageScoreClasses"], abs=1e-12)
    assert mt["iiou"] == pytest.approx(ref2["averageScoreInstClasses"], abs=1e-12)


# --------------------------------------------------------------------------- comma10k-baseline
def test_comma10k_baseline_protocol_reproduces_their_validation_loop(tmp_path: Path) -> None:
    """comma10k-baseline's validation, written out as their retriever and LitModel do it: mask read
    with cv2 as greyscale, one-hot over class values [41, 76, 90, 124, 161, 0] (0 = padding),
    albumentations Resize + PadIfNeeded (centred), argmax target, CrossEntropyLoss over all pixels
    per batch, mean of batch means. A drivelab model becomes their 6-output model by giving the
    padding class a logit of +100 on padding pixels (-100 elsewhere)."""
    import albumentations as A

    data = synth_dataset("comma10k", tmp_path / "c", n=20, size=(72, 120), seed=4)
    size = (50, 70)
    over = tiny_overrides(data, tmp_path / "runs", name="b", size=list(size), max_steps=4)
    run = train(load_config("synth", over), progress=False)
    batch = 6
    m = evaluate(run, data, protocol="comma10k-baseline", split="all", batch=batch, device="cpu",
                 progress=False)

    predictor = Predictor(run / "best.pt", device="cpu", precision="fp32")
    h, w = size
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    valid = A.Compose([A.Resize(height=h, width=w), A.PadIfNeeded(ph, pw, border_mode=cv2.BORDER_CONSTANT,
                                                                    fill=0, fill_mask=0)])
    class_values = [41, 76, 90, 124, 161, 0]
    ours_to_theirs = [0, 1, 3, 4, 2]  # road, lane, undrivable, movable, my car -> their channel order
    reader = open_dataset(data)
    losses = []
    for start in range(0, len(reader), batch):
        targets, logits6 = [], []
        for it in reader.items[start:start + batch]:
            mask = cv2.imread(str(it.label_path), 0)
            image = cv2.cvtColor(cv2.imread(str(it.image_path)), cv2.COLOR_BGR2RGB)
            t = valid(image=image, mask=mask)["mask"]
            onehot = np.stack([(t == v) for v in class_values], axis=-1)
            targets.append(torch.from_numpy(onehot.argmax(-1)))
            # Our model on its own input, its logits placed where their padding leaves the image.
            x = torch.from_numpy(np.pad(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
                                        ((0, ph - h), (0, pw - w), (0, 0))).transpose(2, 0, 1)).float() / 255
            with torch.no_grad():
                real = predictor.model(x[None])[0, :, :h, :w]
            top, left = (ph - h) // 2, (pw - w) // 2
            canvas = torch.full((6, ph, pw), -100.0)
            canvas[5] = 100.0
            canvas[:, top:top + h, left:left + w] = -100.0
            canvas[ours_to_theirs, top:top + h, left:left + w] = real
            logits6.append(canvas)
        losses.append(float(torch.nn.CrossEntropyLoss()(torch.stack(logits6), torch.stack(targets))))
    assert m["batches"] == len(losses) == 4  # 20 images in batches of 6: the last holds 2
    assert m["val_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    assert m["val_loss"] < m["ce_per_real_pixel"]  # padding counted as an easy class lowers it
    with pytest.raises(DrivelabError, match="needs a model|give a checkpoint"):
        evaluate(tmp_path, data, protocol="comma10k-baseline")
