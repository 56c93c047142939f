"""Instance models behind one builder: ``build_instance_model(**spec)`` dispatches on ``name``.

- ``protoseg`` (``protoseg.py``): a single-stage prototype-mask model on a timm backbone, built
  for small objects on the CPU; the ``totes-synth`` default.
- ``maskrcnn``: torchvision's Mask R-CNN (BSD-3): ResNet-50-FPN for the GPU, lighter backbones
  for the CPU.

Nothing is ever downloaded: backbones start random or from a local file (``weights=path``: a
torchvision Mask R-CNN state dict such as the COCO one saved by hand, an ImageNet backbone state
dict (torchvision or timm), or a drivelab checkpoint). Tensors whose shape differs (another class
count) keep their fresh initialisation.

Input contract (torchvision detection, both models): a list of float images (3, H, W) in [0, 1];
the model normalises and resizes inside (``min_size``/``max_size``), and maps boxes and masks
back to each input's own size. Train mode takes targets and returns a dict of losses.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drivelab.errors import DrivelabError

BACKBONES = ("resnet50", "resnet34", "resnet18", "mobilenet_v3_large", "mobilenet_v3_small")
MODELS = {"protoseg": "protoseg", "maskrcnn": "maskrcnn", "mask-rcnn": "maskrcnn", "mask_rcnn": "maskrcnn"}
DEFAULT_BACKBONE = {"protoseg": "mobilenetv4_conv_small", "maskrcnn": "mobilenet_v3_large"}


def build_instance_model(
    num_classes: int,
    name: str = "maskrcnn",
    weights: str | None = None,
    category_ids: list[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The instance model ``name`` (``protoseg`` or ``maskrcnn``) with ``num_classes`` outputs
    (background included); ``kwargs`` go to its builder. ``category_ids`` (the COCO category id of
    train ids 1..N) is kept on the model as ``model.category_ids`` so predictions can be written
    as COCO results without the dataset."""
    kind = MODELS.get(str(name))
    if kind is None:
        raise DrivelabError(f"unknown instance model {name!r}; choose one of protoseg, maskrcnn")
    if int(num_classes) < 2:
        raise DrivelabError(f"num_classes counts background and must be >= 2, got {num_classes}")
    local = _local_file(weights)
    if kind == "protoseg":
        model = build_protoseg(num_classes, **kwargs)
    else:
        model = build_maskrcnn(num_classes, pretrained=local is not None, **kwargs)
    if local:
        load_local_weights(model, local)
    model.category_ids = list(category_ids) if category_ids else list(range(1, int(num_classes)))
    return model


@torch.no_grad()
def predict_with_features(
    model: nn.Module, images: list[torch.Tensor]
) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """``model(images)`` (eval mode) and the (B, C) embedding of the images from one backbone
    pass: a forward hook keeps what the backbone returns while the model predicts. The embedding
    is the feature levels the model's heads read, average-pooled and concatenated (ProtoSeg: its
    backbone levels; Mask R-CNN: every FPN level)."""
    # ProtoSeg predicts with its BatchNorm-folded copy: hook the backbone that really runs
    backbone = model.inference_net().backbone if hasattr(model, "inference_net") else model.backbone
    kept: list[Any] = []
    handle = backbone.register_forward_hook(lambda _m, _i, out: kept.append(out))
    try:
        outputs = model(images)
    finally:
        handle.remove()
    if len(kept) != 1:
        raise RuntimeError(f"expected one backbone pass, saw {len(kept)}")
    levels = kept[0]
    maps = list(levels.values()) if isinstance(levels, dict) else [levels[lv] for lv in model.levels]
    return outputs, torch.cat([f.float().mean(dim=(2, 3)) for f in maps], dim=1)


def build_protoseg(
    num_classes: int, backbone: str = DEFAULT_BACKBONE["protoseg"], **kwargs: Any
) -> nn.Module:
    """``ProtoSeg`` (see ``protoseg.py`` for its arguments); bad keyword arguments are one-line errors."""
    from drivelab.seg.instance.protoseg import ProtoSeg

    try:
        return ProtoSeg(int(num_classes), backbone=backbone, **kwargs)
    except TypeError as e:
        raise DrivelabError(f"bad model_kwargs for protoseg: {e}") from None


def build_maskrcnn(
    num_classes: int,
    backbone: str = "mobilenet_v3_large",
    min_size: int = 512,
    max_size: int = 683,
    pretrained: bool = False,
    trainable_layers: int | None = None,
    anchor_sizes: list[int] | None = None,
    detections_per_img: int = 100,
    score_thresh: float = 0.05,
    mask_channels: int = 256,
    mask_layers: int = 4,
    box_repr: int = 1024,
    returned_layers: list[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision ``MaskRCNN`` with ``num_classes`` outputs (background included).

    ``mask_channels``/``mask_layers`` (torchvision: 256 x 4 convs) and ``box_repr`` (1024) size
    the heads; on a CPU the mask head dominates the step time, so the CPU presets shrink it.
    ``anchor_sizes``: five sizes (default: torchvision's 32..512 px scaled by ``min_size / 800``);
    ResNet FPN levels take one each, MobileNet levels all five. ``returned_layers``: MobileNet
    stages the FPN taps (default [2, 3, 5]: strides 8, 16, 32). Extra ``kwargs`` go to ``MaskRCNN``
    (e.g. ``rpn_post_nms_top_n_train``, ``box_batch_size_per_image``). ``pretrained``: local
    weights follow (``build_instance_model`` loads them), so BatchNorm is frozen (torchvision's
    convention for fine-tuning).
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
    from torchvision.ops import misc

    if backbone not in BACKBONES:
        raise DrivelabError(f"unknown Mask R-CNN backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    # Pretrained weights keep frozen BatchNorm statistics (torchvision's convention); from scratch,
    # BatchNorm has to learn its statistics.
    norm = misc.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    if backbone.startswith("resnet"):
        layers = 5 if trainable_layers is None else int(trainable_layers)
        body = resnet_fpn_backbone(
            backbone_name=backbone, weights=None, norm_layer=norm, trainable_layers=layers
        )
        sizes = tuple(anchor_sizes or _scaled_sizes(min_size))
        if len(sizes) != 5:
            raise DrivelabError(
                f"anchor_sizes needs 5 sizes for a ResNet FPN (one per level), got {list(sizes)}"
            )
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 5)
    else:
        layers = 6 if trainable_layers is None else int(trainable_layers)
        # torchvision's default taps two stride-32 stages; totes hold small touching objects, so tap
        # strides 8, 16 and 32 (+ the FPN's pooled level) unless told otherwise.
        returned = list(returned_layers) if returned_layers else [2, 3, 5]
        body = mobilenet_backbone(
            backbone_name=backbone,
            weights=None,
            fpn=True,
            norm_layer=norm,
            trainable_layers=layers,
            returned_layers=returned,
        )
        levels = len(returned) + 1
        # Every level gets every size (torchvision's MobileNet layout), scaled to the input size.
        sizes = tuple(anchor_sizes or _scaled_sizes(min_size))
        anchors = AnchorGenerator((sizes,) * levels, ((0.5, 1.0, 2.0),) * levels)
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    c = body.out_channels
    heads = {
        "box_head": TwoMLPHead(c * 7 * 7, int(box_repr)),
        "box_predictor": FastRCNNPredictor(int(box_repr), int(num_classes)),
        "mask_head": MaskRCNNHeads(c, [int(mask_channels)] * int(mask_layers), 1),
        "mask_predictor": MaskRCNNPredictor(int(mask_channels), int(mask_channels), int(num_classes)),
    }
    try:
        model = MaskRCNN(
            body,
            num_classes=None,
            **heads,
            min_size=int(min_size),
            max_size=int(max_size),
            rpn_anchor_generator=anchors,
            box_detections_per_img=int(detections_per_img),
            box_score_thresh=float(score_thresh),
            **kwargs,
        )
    except TypeError as e:
        raise DrivelabError(f"bad model_kwargs for Mask R-CNN: {e}") from None
    return model


def _scaled_sizes(min_size: int) -> tuple[int, ...]:
    # torchvision's 32..512 suits 800 px inputs; tote objects are a fixed share of the image, so
    # scale the anchors with the input (never below 800 px's sizes / 4, i.e. 8..128).
    f = max(min_size / 800.0, 0.25)
    return tuple(int(round(s * f)) for s in (32, 64, 128, 256, 512))


def model_spec(
    num_classes: int, backbone: str | None, size: tuple[int, int], name: str = "maskrcnn", **kwargs: Any
) -> dict:
    """The ``model_spec`` stored in checkpoints: ``build_instance_model(**spec)`` rebuilds the model.

    The model's internal resize keeps an (H, W) training image at its size: short side ->
    ``min_size``, long side <= ``max_size``. ``backbone`` None: the model's default."""
    kind = MODELS.get(str(name))
    if kind is None:
        raise DrivelabError(f"unknown instance model {name!r}; choose one of protoseg, maskrcnn")
    h, w = int(size[0]), int(size[1])
    spec = {
        "name": kind,
        "num_classes": int(num_classes),
        "backbone": backbone or DEFAULT_BACKBONE[kind],
        "min_size": min(h, w),
        "max_size": max(h, w),
    }
    spec.update(kwargs)
    return spec


def _local_file(weights: str | None) -> Path | None:
    if not weights or weights in ("random", "none"):
        return None
    p = Path(weights)
    if not p.exists():
        raise DrivelabError("weights file not found (instance models never download weights)", p)
    return p


def load_local_weights(model: nn.Module, path: Path) -> int:
    """Load a whole-model, backbone-only or drivelab-checkpoint state dict; returns tensors loaded.

    Tensors whose shape differs (e.g. a COCO head with 91 classes) are skipped, so a COCO
    Mask R-CNN fine-tunes onto tote classes."""
    from drivelab.seg.checkpoint import read_state_dict

    state, _ = read_state_dict(path)
    own = model.state_dict()
    best: dict = {}
    # Whole model; ImageNet ResNet (body only); ImageNet MobileNet (``features.N`` inside body);
    # a timm classifier under ProtoSeg's features-only ``backbone``.
    for mapper in (
        lambda k: k,
        partial(str.__add__, "backbone."),
        partial(str.__add__, "backbone.body."),
        lambda k: "backbone.body." + k.removeprefix("features."),
    ):
        mapped = {mapper(k): v for k, v in state.items()}
        hits = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
        if len(hits) > len(best):
            best = hits
    if not best:
        raise DrivelabError("weights do not match this model (no parameter names/shapes in common)", path)
    model.load_state_dict(best, strict=False)
    return len(best)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
