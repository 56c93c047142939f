"""The instance Dataset's targets and the model builder (local weights, no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drivelab.data import open_dataset
from drivelab.errors import DrivelabError
from drivelab.seg.instance.data import InstanceDataset, boxes_from_masks, collate_detection
from drivelab.seg.instance.model import build_instance_model, model_spec


def test_targets_are_torchvision_detection_format(tote_sets):
    train, _ = tote_sets
    reader = open_dataset(train).subset(split="train")
    ds = InstanceDataset(reader, (64, 80), augment={"hflip": 1.0, "scale": [0.9, 1.1]})
    image, t = ds[(0, 123)]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 80)
    n = len(t["labels"])
    assert n > 0 and t["masks"].shape == (n, 64, 80) and t["boxes"].shape == (n, 4)
    assert set(t["labels"].tolist()) <= set(range(1, reader.schema.num_classes))
    # Boxes are recomputed from the augmented masks, so every box encloses its mask exactly.
    np.testing.assert_array_equal(t["boxes"].numpy(), boxes_from_masks(t["masks"].numpy().astype(bool)))
    assert (t["boxes"][:, 2:] > t["boxes"][:, :2]).all()
    # The same (index, seed) gives the same sample; a flip of p=1 mirrors the plain sample.
    again, t2 = ds[(0, 123)]
    assert torch.equal(image, again) and torch.equal(t["masks"], t2["masks"])
    plain_img, plain = InstanceDataset(reader, (64, 80))[0]
    assert plain["masks"].sum() > 0
    images, targets = collate_detection([ds[(0, 1)], ds[(1, 2)]])
    assert len(images) == 2 and len(targets) == 2


def test_model_loads_local_weights_without_downloads(tmp_path):
    spec = model_spec(3, "mobilenet_v3_small", (64, 64), mask_channels=16, mask_layers=1, box_repr=64)
    donor = build_instance_model(**{**spec, "num_classes": 5})  # another class count: heads differ
    path = tmp_path / "w.pth"
    torch.save(donor.state_dict(), path)
    model = build_instance_model(**spec, weights=str(path))
    key = "backbone.fpn.layer_blocks.0.0.weight"
    assert torch.equal(model.state_dict()[key], donor.state_dict()[key])
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backbone": "vgg"}, "unknown Mask R-CNN backbone"),
        ({"weights": "/no/such.pth"}, "not found"),
        ({"num_classes": 1}, "background"),
    ],
)
def test_bad_model_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(DrivelabError, match=message):
        build_instance_model(**{**model_spec(2, "mobilenet_v3_small", (64, 64)), **kwargs})
