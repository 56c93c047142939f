"""ProtoSeg, the single-stage model: its contract, assignment, mask crops and that it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drivelab.data import open_dataset
from drivelab.errors import DrivelabError
from drivelab.seg.instance.assign import box_crop, mask_loss, task_aligned_assign
from drivelab.seg.instance.data import InstanceDataset, collate_detection, dihedral_flip
from drivelab.seg.instance.infer import model_scale, predict_images
from drivelab.seg.instance.model import build_instance_model, model_spec
from drivelab.seg.instance.protoseg import tight_boxes

TINY = {"channels": 16, "proto_channels": 8, "protos": 8}


def tiny(size=(64, 64), **kw):
    torch.manual_seed(0)
    return build_instance_model(**model_spec(3, None, size, name="protoseg", **{**TINY, **kw}))


def test_eval_contract_at_any_input_size():
    model = tiny(score_thresh=0.0, detections_per_img=7).eval()
    sizes = [(64, 64), (50, 90), (130, 70)]
    with torch.no_grad():
        out = model([torch.rand(3, h, w) for h, w in sizes])
    assert len(out) == 3
    for o, (h, w) in zip(out, sizes, strict=True):
        assert set(o) == {"boxes", "labels", "scores", "masks"}
        n = len(o["scores"])
        assert n == 7  # score_thresh 0: always the detection limit
        assert o["masks"].shape == (n, 1, h, w) and o["boxes"].shape == (n, 4)
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1
        assert (o["boxes"][:, 2:] >= o["boxes"][:, :2]).all()
        assert (o["boxes"][:, [0, 2]] <= w + 1e-4).all() and (o["boxes"][:, [1, 3]] <= h + 1e-4).all()
        assert set(o["labels"].tolist()) <= {1, 2}
        assert (o["scores"][:-1] >= o["scores"][1:]).all()  # sorted, high first
    # infer.py sizes large images down to the training scale before the model
    assert model_scale(model, 640, 320) == pytest.approx(0.1)  # long side 640 -> 64


def test_masks_are_zero_outside_their_box():
    model = tiny(score_thresh=0.0, detections_per_img=20).eval()
    with torch.no_grad():
        o = model([torch.rand(3, 64, 64)])[0]
    m = o["masks"][:, 0]
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    for mask, (x1, y1, x2, y2) in zip(m, o["boxes"], strict=True):
        outside = (xs < x1) | (xs > x2) | (ys < y1) | (ys > y2)
        assert mask[outside].max() == 0 if outside.any() else True


@pytest.mark.parametrize("margin", [0.0, 2.0])
def test_a_prediction_is_cropped_to_its_box_grown_by_paste_margin(margin):
    # Training's crop_margin pads the loss region; paste_margin alone decides the prediction's crop.
    model = tiny(paste_margin=margin, crop_margin=2.0).eval()
    torch.manual_seed(1)
    proto = torch.randn(model.protos, 32, 32).abs()  # positive: every uncropped pixel is > 0.5
    coef = torch.ones(1, model.protos)
    box = torch.tensor([[20.0, 16.0, 40.0, 30.0]])
    masks = model.paste_masks(coef, proto, box, (64, 64), (64, 64))[0]
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    inside = (xs >= 20 - margin) & (xs <= 40 + margin) & (ys >= 16 - margin) & (ys <= 30 + margin)
    assert (masks[~inside] == 0).all() and (masks[inside] > 0.5).all()


def test_train_mode_returns_finite_losses_that_reach_every_parameter(tote_sets):
    train, _ = tote_sets
    reader = open_dataset(train).subset(split="train")
    ds = InstanceDataset(reader, (96, 96))
    images, targets = collate_detection([ds[0], ds[1]])
    # a batch member without objects must not break the loss
    empty = {k: v[:0] for k, v in targets[1].items() if k != "image_id"}
    targets = [targets[0], {**empty, "image_id": targets[1]["image_id"]}]
    model = tiny((96, 96)).train()
    losses = model([im.float() / 255 for im in images], targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing  # DDP needs every parameter in the graph
    # no objects at all: zero box/mask losses, still a graph over every parameter
    model.zero_grad()
    losses = model([im.float() / 255 for im in images], [targets[1], targets[1]])
    assert losses["loss_box"].item() == 0 and losses["loss_mask"].item() == 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_task_aligned_assignment_on_hand_made_boxes():
    # anchors every 4 px on a 32x32 image: centres 2, 6, ..., 30
    g = (torch.arange(8) + 0.5) * 4
    ys, xs = torch.meshgrid(g, g, indexing="ij")
    anchors = torch.stack([xs, ys], -1).reshape(-1, 2)
    gt = torch.tensor([[0.0, 0.0, 12.0, 12.0], [16.0, 16.0, 32.0, 24.0], [29.5, 0.5, 31.5, 1.5]])
    labels = torch.tensor([0, 1, 0])
    # predicted boxes: exactly the first object's box at anchor (6, 6), else 2 px squares
    boxes = torch.cat([anchors - 1, anchors + 1], 1)
    a66 = int(((anchors - torch.tensor([6.0, 6.0])).abs().sum(1) == 0).nonzero()[0, 0])
    boxes[a66] = gt[0]
    scores = torch.full((64, 2), 0.5)
    a = task_aligned_assign(scores, boxes, anchors, gt, labels, topk=4)
    inside = [
        ((anchors[:, 0] > b[0]) & (anchors[:, 0] < b[2]) & (anchors[:, 1] > b[1]) & (anchors[:, 1] < b[3]))
        for b in gt
    ]
    # positives of an object lie inside its box, at most topk of them
    for k in (0, 1):
        pos = a.fg & (a.gt_index == k)
        assert 0 < int(pos.sum()) <= 4 and not (pos & ~inside[k]).any()
    # the exact box is a positive and its target is the object's best IoU (1.0)
    assert a.fg[a66] and a.gt_index[a66] == 0 and float(a.target[a66]) == pytest.approx(1.0)
    # the 2x1 px object holds no anchor centre: it gets its nearest anchor (30, 2)
    pos2 = (a.fg & (a.gt_index == 2)).nonzero()[:, 0]
    assert len(pos2) == 1 and anchors[pos2[0]].tolist() == [30.0, 2.0]
    assert (a.target[~a.fg] == 0).all() and (a.target[a.fg] > 0).all()
    # no objects: nothing assigned
    none = task_aligned_assign(scores, boxes, anchors, gt[:0], labels[:0])
    assert not none.fg.any() and (none.target == 0).all()


def test_box_crop_and_mask_loss():
    crop = box_crop(torch.tensor([[2.0, 4.0, 10.0, 8.0]]), 8, 8, 2.0, 0.0)[0]
    # pixel centres at 1, 3, 5, ...: x in [2, 10] -> columns 1..4, y in [4, 8] -> rows 2..3
    expected = torch.zeros(8, 8)
    expected[2:4, 1:5] = 1
    assert torch.equal(crop, expected)
    grown = box_crop(torch.tensor([[2.0, 4.0, 10.0, 8.0]]), 8, 8, 2.0, 2.0)[0]
    assert grown.sum() > crop.sum() and (grown >= crop).all()
    # a prototype equal to the target mask scores a lower loss than its negation
    target = torch.zeros(1, 8, 8)
    target[0, 2:4, 1:5] = 1
    proto = (target * 2 - 1) * 8
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    good = mask_loss(torch.ones(1, 1), proto, target, box, 2, 0.0)
    bad = mask_loss(-torch.ones(1, 1), proto, target, box, 2, 0.0)
    assert float(good) < 0.01 < float(bad)


def test_tight_boxes_follow_the_masks():
    masks = torch.zeros(2, 10, 12)
    masks[0, 2:5, 3:9] = 0.7
    masks[0, 6, 11] = 0.4  # below the threshold
    masks[1, 4, 4] = 0.49
    fallback = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    out = tight_boxes(masks, fallback)
    assert out[0].tolist() == [3.0, 2.0, 9.0, 5.0]  # x2/y2 exclusive, like boxes_from_masks
    assert out[1].tolist() == fallback[1].tolist()  # empty mask: the regressed box


def test_dihedral_flips_keep_masks_on_their_pixels(tote_sets):
    train, _ = tote_sets
    reader = open_dataset(train).subset(split="train")
    image, masks, _ = InstanceDataset(reader, (96, 96)).arrays(0)
    seen = set()
    for seed in range(16):
        im2, m2 = dihedral_flip(image, masks, np.random.default_rng(seed))
        assert im2.shape == image.shape and m2.shape == masks.shape
        for m, n in zip(masks, m2, strict=True):
            assert m.sum() == n.sum()
            np.testing.assert_array_equal(np.sort(image[m], 0), np.sort(im2[n], 0))
        seen.add(im2.tobytes())
    assert len(seen) == 4  # vertical flip x transpose
    # not square: no transpose, the shape stays
    im3, m3 = dihedral_flip(image[:, :64], masks[:, :, :64], np.random.default_rng(1))
    assert im3.shape == (96, 64, 3) and m3.shape == (len(masks), 96, 64)


def test_protoseg_loads_a_timm_classifier_state_dict(tmp_path):
    import timm

    donor = timm.create_model("mobilenetv4_conv_small", pretrained=False, num_classes=10)
    path = tmp_path / "backbone.pth"
    torch.save(donor.state_dict(), path)
    model = build_instance_model(
        **model_spec(2, "mobilenetv4_conv_small", (64, 64), name="protoseg", **TINY), weights=str(path)
    )
    own, theirs = model.state_dict(), donor.state_dict()
    assert torch.equal(own["backbone.conv_stem.weight"], theirs["conv_stem.weight"])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backbone": "no_such_net"}, "unknown ProtoSeg backbone"),
        ({"head_stride": 3}, "no stride-3 features"),
        ({"head_conv": "sparse"}, "head_conv"),
        ({"bogus": 1}, "bad model_kwargs for protoseg"),
        ({"name": "yolo"}, "unknown instance model"),
    ],
)
def test_bad_protoseg_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(DrivelabError, match=message):
        build_instance_model(**{**model_spec(2, None, (64, 64), name="protoseg"), **kwargs})


def test_protoseg_learns_to_segment_two_totes(tote_sets):
    """A few dozen steps on two totes: most objects of those totes are found with mask IoU > 0.5
    (an untrained model finds none)."""
    from pycocotools import mask as mask_utils

    from drivelab.seg.instance.infer import encode_masks

    torch.set_num_threads(1)
    train, _ = tote_sets
    reader = open_dataset(train).subset(split="train")
    ds = InstanceDataset(reader, (96, 96))
    batch = collate_detection([ds[0], ds[1]])
    images = [im.float() / 255 for im in batch[0]]
    model = tiny((96, 96), channels=32, proto_channels=16, protos=16)

    def recall() -> float:
        found = total = 0
        for i in (0, 1):
            img, gt, _ = ds.arrays(i)
            pred = predict_images(model, [img])[0].above(0.3)
            total += len(gt)
            if len(pred):
                iou = np.asarray(mask_utils.iou(encode_masks(pred.masks), encode_masks(gt), [0] * len(gt)))
                found += int((iou.reshape(len(pred), len(gt)).max(0) > 0.5).sum())
        return found / total

    assert recall() == 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(80):
        loss = sum(model(images, batch[1]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert recall() >= 0.6


def test_mask_candidates_keep_an_occluded_object_its_own_anchors():
    """A small object lying on a big one: its box is inside the big box, its pixels are not."""
    g = (torch.arange(8) + 0.5) * 4
    ys, xs = torch.meshgrid(g, g, indexing="ij")
    anchors = torch.stack([xs, ys], -1).reshape(-1, 2)
    masks = torch.zeros(2, 32, 32, dtype=torch.uint8)
    masks[0, :, :] = 1
    masks[0, 8:16, 8:16] = 0  # the visible part of the big object has a hole ...
    masks[1, 8:16, 8:16] = 1  # ... where the small one lies on top
    gt = torch.tensor([[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 16.0, 16.0]])
    labels = torch.tensor([0, 0])
    on_small = masks[1, anchors[:, 1].long(), anchors[:, 0].long()].bool()
    # the anchors on the small object predict the big box (the others 2 px squares): they are the
    # big object's best, and by IoU it wins every anchor the two boxes share
    boxes = torch.cat([anchors - 1, anchors + 1], 1)
    boxes[on_small] = gt[0]
    scores = torch.full((64, 1), 0.5)
    by_box = task_aligned_assign(scores, boxes, anchors, gt, labels, topk=10)
    by_mask = task_aligned_assign(scores, boxes, anchors, gt, labels, topk=10, gt_masks=masks)
    assert not (by_box.fg & (by_box.gt_index == 1)).any()  # the small object lost all its anchors
    small = by_mask.fg & (by_mask.gt_index == 1)
    assert small.any() and torch.equal(small, on_small & by_mask.fg)
    big = by_mask.fg & (by_mask.gt_index == 0)
    assert not (big & on_small).any()


def test_the_engine_embeds_a_protoseg_checkpoint(trained_run, tote_sets, tmp_path) -> None:
    """``drivelab embed`` on an instance checkpoint of the default model: pooled backbone features,
    one row per image with detection counts, the table the map and select read."""
    import pandas as pd

    from drivelab.engine.embed import embed
    from drivelab.engine.table import load_table

    train, _ = tote_sets
    table = embed(trained_run / "last.pt", train, tmp_path / "emb", batch=2, device="cpu", progress=False)
    t = load_table(table)
    df = pd.read_parquet(table)
    assert len(df) == 4 and t.features.shape[0] == 4 and t.features.shape[1] > 32
    assert np.isfinite(np.asarray(t.features)).all()
    assert (df["instances"] > 0).all() and (df["pred_instances"] >= 0).all()
    assert t.meta["task"] == "instance"


@pytest.mark.parametrize("name", ["protoseg", "maskrcnn"])
def test_predictions_and_embedding_from_one_backbone_pass(name):
    """The data engine's embedding comes from the pass that predicts: the same predictions as
    model(images), and the same pooled levels as running the backbone on its own."""
    from drivelab.seg.instance.model import predict_with_features

    torch.manual_seed(0)
    if name == "protoseg":
        model = tiny().eval()
    else:
        spec = model_spec(3, "mobilenet_v3_small", (64, 64), mask_channels=16, mask_layers=1, box_repr=64)
        model = build_instance_model(**spec).eval()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    calls = []
    backbone = model.inference_net().backbone if name == "protoseg" else model.backbone
    backbone.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out, feats = predict_with_features(model, images)
        assert len(calls) == 1
        want = model(images)
        if name == "protoseg":
            x, _ = model.input_batch(images)
            levels = backbone((x - model.mean) / model.std)
            maps = [levels[lv] for lv in model.levels]
        else:
            batch, _ = model.transform(images)
            maps = list(model.backbone(batch.tensors).values())
    alone = torch.cat([f.mean(dim=(2, 3)) for f in maps], 1)
    assert feats.shape == (2, alone.shape[1]) and torch.allclose(feats, alone)
    for a, b in zip(out, want, strict=True):
        assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["boxes"], b["boxes"])


def test_onnxruntime_backend_predicts_what_torch_predicts():
    """The network alone moves to onnxruntime: the same boxes, scores and masks for images of
    any size (all scaled into one 64 px graph), and new weights reach it (its sessions follow
    the folded copy)."""
    model = tiny(score_thresh=0.0, detections_per_img=20).eval()
    torch.manual_seed(3)
    images = [torch.rand(3, 64, 64), torch.rand(3, 50, 90), torch.rand(3, 130, 70)]
    with torch.no_grad():  # untrained scores all sit at the prior: spread them so no two tie
        model.cls_out.weight.mul_(50.0)

    def both() -> tuple[list[dict], list[dict]]:
        with torch.no_grad():
            model.backend = "torch"
            want = model(images)
            model.backend = "onnxruntime"
            got = model(images)
        return want, got

    def check(want: list[dict], got: list[dict]) -> None:
        for w, g in zip(want, got, strict=True):
            assert torch.equal(w["labels"], g["labels"])
            for k in ("boxes", "scores", "masks"):
                assert torch.allclose(w[k], g[k], atol=1e-4), k

    want, got = both()
    check(want, got)
    assert list(model.network().sessions) == [(64, 64)]
    before = want[0]["scores"]
    with torch.no_grad():  # new weights reach both backends
        model.cls_out.bias.add_(torch.linspace(-2, 2, model.nc))
        model.box_out.weight.mul_(3.0)
    want, got = both()
    check(want, got)
    assert not torch.allclose(before, want[0]["scores"])
    assert len(model.network().sessions) == 1
    # the sessions are a cache: the model still pickles (and deep-copies) after using them
    import pickle

    again = pickle.loads(pickle.dumps(model))
    assert "_inference" not in again.__dict__ and "_inference" in model.__dict__
    with torch.no_grad():
        assert torch.allclose(again(images)[0]["scores"], got[0]["scores"], atol=1e-4)


def test_unknown_or_unsupported_backends_are_one_line_errors():
    from drivelab.seg.instance.runtime import check_backend

    with pytest.raises(DrivelabError, match="unknown backend 'tensorrt'"):
        check_backend("tensorrt")
    maskrcnn = build_instance_model(**model_spec(3, None, (64, 64), name="maskrcnn"))
    with pytest.raises(DrivelabError, match="runs ProtoSeg instance models"):
        check_backend("onnxruntime", maskrcnn)
    model = tiny().eval()
    model.backend = "tvm"
    with pytest.raises(DrivelabError, match="unknown backend 'tvm'"):
        model([torch.rand(3, 64, 64)])
