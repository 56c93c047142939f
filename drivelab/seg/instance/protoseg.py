"""ProtoSeg: a single-stage instance segmenter for small objects, fast on a CPU.

A timm backbone (random init or a local file; never downloaded), a top-down feature pyramid that
ends at ``head_stride`` (4: a 128 px tote gives a 32x32 grid, so an 8 px object still owns anchor
points), one anchor-free head on that level (class scores, box distances, mask coefficients) and
``protos`` prototype masks at ``proto_stride`` (2) from the pyramid plus the backbone's
full-detail stride-2 features. An instance mask is its coefficients times the prototypes,
cropped to its box (YOLACT); training targets come from task-aligned assignment (``assign.py``).

Everything here is permissive: torch, torchvision ops (NMS, box IoU, CIoU loss) and timm.

Contract (the torchvision detection one, shared with Mask R-CNN in ``model.py``): train mode
``model(images, targets)`` -> dict of losses; eval mode ``model(images)`` -> per image
``{"boxes" (N, 4) xyxy input pixels, "labels" (N,) 1.., "scores" (N,), "masks" (N, 1, H, W)
probabilities at input size}``. Images are (3, H, W) float in [0, 1] of any size: each is
resized so its short side is ``min_size`` (long side at most ``max_size``), the training scale.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivelab.errors import DrivelabError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ALIGN = 32  # inputs are padded to multiples of the backbone's deepest stride


def conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


def conv_dw(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: a ninth of a full 3x3's multiply-adds at 64 channels."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(),
    )


class ProtoSeg(nn.Module):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "mobilenetv4_conv_small",
        min_size: int = 128,
        max_size: int = 128,
        channels: int = 64,
        proto_channels: int = 32,
        protos: int = 32,
        head_stride: int = 4,
        proto_stride: int = 2,
        topk: int = 10,
        crop_margin: float = 2.0,
        paste_margin: float = 0.0,
        head_conv: str = "dw",
        assign_inside: str = "box",
        mask_boxes: bool = True,
        loss_weights: dict | None = None,
        detections_per_img: int = 100,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        pre_nms_top_n: int = 300,
    ) -> None:
        import timm

        super().__init__()
        if int(num_classes) < 2:
            raise DrivelabError(f"num_classes counts background and must be >= 2, got {num_classes}")
        try:
            self.backbone = timm.create_model(backbone, pretrained=False, features_only=True)
        except Exception as e:  # timm raises RuntimeError/KeyError for unknown names
            raise DrivelabError(f"unknown ProtoSeg backbone {backbone!r} ({type(e).__name__}: {e})") from None
        info = self.backbone.feature_info
        reductions, chans = info.reduction(), info.channels()
        self.levels = [i for i, r in enumerate(reductions) if r >= head_stride]
        if not self.levels or reductions[self.levels[0]] != head_stride:
            raise DrivelabError(f"backbone {backbone!r} has no stride-{head_stride} features ({reductions})")
        self.detail = next((i for i, r in enumerate(reductions) if r == proto_stride), None)
        self.num_classes = int(num_classes)
        self.nc = self.num_classes - 1  # scores per class, background excluded
        self.head_stride, self.proto_stride = int(head_stride), int(proto_stride)
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.protos, self.topk, self.crop_margin = int(protos), int(topk), float(crop_margin)
        # Training pads the mask loss's crop so the mask learns the background just past the
        # box; a prediction is cropped to the box itself. On the totes-synth training set the
        # padded crop (2 px) let masks bleed onto small neighbours: 18 predictions swallowed
        # two objects against 13 at 0 px, and mask AP was 0.611 against 0.622.
        self.paste_margin = float(paste_margin)
        self.loss_weights = {"cls": 1.0, "box": 2.0, "mask": 2.0, **(loss_weights or {})}
        self.detections_per_img, self.score_thresh = int(detections_per_img), float(score_thresh)
        self.nms_thresh, self.pre_nms_top_n = float(nms_thresh), int(pre_nms_top_n)
        self.mask_boxes = bool(mask_boxes)
        # what runs the network in predict (``runtime.BACKENDS``); a setting, not part of the weights
        self.backend = "torch"
        c = int(channels)
        if head_conv not in ("dw", "full"):
            raise DrivelabError(f"head_conv must be 'dw' or 'full', got {head_conv!r}")
        conv3 = conv_dw if head_conv == "dw" else conv_bn
        if assign_inside not in ("box", "mask"):
            raise DrivelabError(f"assign_inside must be 'box' or 'mask', got {assign_inside!r}")
        self.assign_inside = assign_inside
        self.lateral = nn.ModuleList(conv_bn(chans[i], c, 1) for i in self.levels)
        self.smooth = nn.ModuleList(conv3(c, c) for _ in self.levels[:-1])
        self.stem = conv3(c, c)
        self.cls_tower = conv3(c, c)
        self.reg_tower = conv3(c, c)
        self.cls_out = nn.Conv2d(c, self.nc, 1)
        self.box_out = nn.Conv2d(c, 4, 1)
        self.coef_out = nn.Conv2d(c, self.protos, 1)
        pc = int(proto_channels)
        self.proto_in = conv_bn(c, pc)
        self.proto_detail = conv_bn(chans[self.detail], pc, 1) if self.detail is not None else None
        self.proto_out = nn.Sequential(conv3(pc, pc), nn.Conv2d(pc, self.protos, 1))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        # A rare-positive prior (RetinaNet) keeps the first steps' loss from being all background.
        nn.init.constant_(self.cls_out.bias, -math.log(99.0))
        nn.init.zeros_(self.box_out.weight)
        nn.init.constant_(self.box_out.bias, 1.0)

    # ------------------------------------------------------------------ network
    def raw(self, x: Tensor) -> dict[str, Tensor]:
        """Normalised padded batch (B, 3, H, W) -> head maps at ``head_stride`` and prototypes."""
        feats = self.backbone((x - self.mean) / self.std)
        p = self.lateral[-1](feats[self.levels[-1]])
        for j in range(len(self.levels) - 2, -1, -1):
            f = self.lateral[j](feats[self.levels[j]])
            p = self.smooth[j](f + F.interpolate(p, size=f.shape[-2:], mode="nearest"))
        h = self.stem(p)
        r = self.reg_tower(h)
        proto = self.proto_in(p)
        if self.head_stride != self.proto_stride:
            size = (x.shape[-2] // self.proto_stride, x.shape[-1] // self.proto_stride)
            proto = F.interpolate(proto, size=size, mode="bilinear", align_corners=False)
        if self.proto_detail is not None:
            proto = proto + self.proto_detail(feats[self.detail])
        return {
            "cls": self.cls_out(self.cls_tower(h)),
            "box": self.box_out(r),
            "coef": self.coef_out(r),
            "proto": self.proto_out(proto),
        }

    def anchors(self, h: int, w: int, device: torch.device) -> Tensor:
        """(h*w, 2) xy centres of the head's grid cells in input pixels (kept per grid size: at
        batch 1 building them costs a twentieth of an onnxruntime prediction)."""
        cache = self.__dict__.setdefault("_anchors", {})
        key = (h, w, self.head_stride, str(device))
        if key not in cache:
            if len(cache) >= 16:
                cache.clear()
            s = self.head_stride
            ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                    indexing="ij")
            cache[key] = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s
        return cache[key]

    def decode_boxes(self, box: Tensor, anchors: Tensor) -> Tensor:
        """(B, 4, h, w) raw distances -> (B, h*w, 4) xyxy boxes in input pixels."""
        d = F.softplus(box.flatten(2).transpose(1, 2)) * self.head_stride
        return torch.cat([anchors - d[..., :2], anchors + d[..., 2:]], -1)

    # ------------------------------------------------------------------ forward
    def forward(self, images: list[Tensor], targets: list[dict] | None = None) -> Any:
        if self.training:
            if targets is None:
                raise DrivelabError("ProtoSeg in train mode needs targets")
            return self.losses(images, targets)
        return self.predict(images)

    def losses(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        from torchvision.ops import complete_box_iou_loss

        from drivelab.seg.instance.assign import mask_loss, task_aligned_assign

        x = pad_batch(images)
        out = self.raw(x)
        b, _, hh, ww = out["cls"].shape
        anchors = self.anchors(hh, ww, x.device)
        logits = out["cls"].flatten(2).transpose(1, 2)  # (B, A, C)
        boxes = self.decode_boxes(out["box"], anchors)  # (B, A, 4)
        coef = out["coef"].flatten(2).transpose(1, 2)  # (B, A, K)
        proto = out["proto"]
        hp, wp = proto.shape[-2:]
        # unbind, not proto[i]: indexing would give the backward pass one zero-filled full-batch
        # gradient per image.
        protos, coefs = proto.unbind(0), coef.unbind(0)
        cls_target = torch.zeros_like(logits)
        pos, pos_boxes, pos_weight, mask_terms = [], [], [], []
        for i, t in enumerate(targets):
            gt_boxes = t["boxes"].to(boxes.dtype)
            labels = t["labels"].long() - 1
            a = task_aligned_assign(
                logits[i].detach().sigmoid(), boxes[i].detach(), anchors, gt_boxes, labels, self.topk,
                gt_masks=t["masks"] if self.assign_inside == "mask" else None,
            )
            if not a.fg.any():
                continue
            fg = a.fg.nonzero()[:, 0]
            g = a.gt_index[fg]
            cls_target[i, fg, labels[g]] = a.target[fg]
            pos.append(fg + i * len(anchors))
            pos_boxes.append(gt_boxes[g])
            pos_weight.append(a.target[fg])
            masks = t["masks"].to(proto.dtype)
            pad = (0, x.shape[-1] - masks.shape[-1], 0, x.shape[-2] - masks.shape[-2])
            small = F.adaptive_avg_pool2d(F.pad(masks, pad)[None], (hp, wp))[0]  # area-averaged targets
            mask_terms.append(
                mask_loss(coefs[i][fg], protos[i], small[g], gt_boxes[g], self.proto_stride, self.crop_margin)
            )
        norm = cls_target.sum().clamp(min=1.0)
        loss_cls = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / norm
        if pos:
            idx = torch.cat(pos)
            iou_loss = complete_box_iou_loss(
                boxes.reshape(-1, 4)[idx], torch.cat(pos_boxes), reduction="none"
            )
            loss_box = (iou_loss * torch.cat(pos_weight)).sum() / norm
            loss_mask = sum(mask_terms) / len(idx)
        else:  # no objects in the batch: zero losses that keep every output in the graph
            loss_box = boxes.sum() * 0.0 + coef.sum() * 0.0
            loss_mask = proto.sum() * 0.0
        lw = self.loss_weights
        return {
            "loss_cls": lw["cls"] * loss_cls,
            "loss_box": lw["box"] * loss_box,
            "loss_mask": lw["mask"] * loss_mask,
        }

    def scale_for(self, height: int, width: int) -> float:
        """The factor an (height, width) image is resized by before the network (training scale)."""
        return min(self.min_size / min(height, width), self.max_size / max(height, width))

    def inference_net(self) -> ProtoSeg:
        """A copy of this model with every BatchNorm folded into its convolution, rebuilt whenever
        the weights or statistics changed (validation during training sees the current ones).

        At batch 1 on a CPU the network's cost is mostly per-operation overhead, and folding
        removes about a third of the operations. The copy is checked against this model on a
        random input; if a backbone's layout defeats the folding, this model itself is used."""
        # Walking the module tree for the tensors costs more than the network at batch 1: keep the
        # list. In-place updates (optimizer steps, load_state_dict) bump versions; .to() moves data.
        tensors = self.__dict__.get("_tensors")
        if tensors is None:
            tensors = self.__dict__["_tensors"] = [*self.parameters(), *self.buffers()]
        key = tuple((t._version, t.data_ptr()) for t in tensors)
        cached = self.__dict__.get("_inference")
        if cached is not None and cached[0] == key and cached[1] is not None:
            return cached[1]
        import copy

        self.__dict__.pop("_ort", None)  # sessions of the old weights (when the copy was self)
        net = copy.deepcopy(self)  # without the caches (__getstate__)
        net.eval()
        fold_batchnorm(net)
        probe = torch.rand(1, 3, ALIGN * 2, ALIGN * 2, generator=torch.Generator().manual_seed(0))
        probe = probe.to(next(self.parameters()).device)
        with torch.no_grad():
            want, got = self.raw(probe), net.raw(probe)
        ok = all(torch.allclose(got[k], want[k], rtol=1e-3, atol=1e-3 * (1 + float(want[k].abs().max())))
                 for k in want)
        # __dict__, not an attribute: a Module attribute would become a submodule (and weights)
        self.__dict__["_inference"] = (key, net if ok else self)
        return self.__dict__["_inference"][1]

    def __getstate__(self) -> dict:
        # pickling and deepcopy leave the caches behind: the folded copy, its onnxruntime
        # sessions (which cannot be pickled), the tensor list and the anchors
        state = self.__dict__.copy()
        for key in ("_inference", "_ort", "_tensors", "_anchors"):
            state.pop(key, None)
        return state

    def network(self) -> Any:
        """What ``predict`` runs ``raw`` on: the folded copy (``inference_net``), or with
        ``backend`` "onnxruntime" that copy exported to onnxruntime (``runtime.OrtNetwork``,
        rebuilt along with the copy)."""
        net = self.inference_net()
        if self.backend == "torch":
            return net
        from drivelab.seg.instance.runtime import OrtNetwork, check_backend

        check_backend(self.backend)
        cached = net.__dict__.get("_ort")
        if cached is None:
            device = next(net.parameters()).device
            cached = net.__dict__["_ort"] = OrtNetwork(net, device.type)
        return cached

    def input_batch(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int, int, int]]]:
        """Images (3, H, W) in [0, 1] at the training scale, padded into one batch, and each one's
        (H, W, scaled H, scaled W)."""
        scaled, sizes = [], []
        for im in images:
            h, w = im.shape[-2:]
            s = self.scale_for(h, w)
            hs, ws = max(1, round(h * s)), max(1, round(w * s))
            if (hs, ws) != (h, w):
                im = F.interpolate(im[None], size=(hs, ws), mode="bilinear", align_corners=False,
                                   antialias=s < 1)[0]
            scaled.append(im)
            sizes.append((h, w, hs, ws))
        return pad_batch(scaled), sizes

    @torch.no_grad()
    def predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        from torchvision.ops import batched_nms, clip_boxes_to_image

        x, sizes = self.input_batch(images)
        out = self.network().raw(x)
        _, _, hh, ww = out["cls"].shape
        anchors = self.anchors(hh, ww, x.device)
        scores_all = out["cls"].flatten(2).transpose(1, 2).sigmoid()
        boxes_all = self.decode_boxes(out["box"], anchors)
        coef_all = out["coef"].flatten(2).transpose(1, 2)
        results = []
        for i, (h, w, hs, ws) in enumerate(sizes):
            flat = scores_all[i].flatten()
            keep = (flat > self.score_thresh).nonzero()[:, 0]
            if len(keep) > self.pre_nms_top_n:
                keep = keep[flat[keep].topk(self.pre_nms_top_n).indices]
            anchor, label = keep // self.nc, keep % self.nc
            scores, boxes = flat[keep], boxes_all[i, anchor]
            boxes = clip_boxes_to_image(boxes, (hs, ws))
            kept = batched_nms(boxes, scores, label, self.nms_thresh)[: self.detections_per_img]
            anchor, label, scores, boxes = anchor[kept], label[kept], scores[kept], boxes[kept]
            masks = self.paste_masks(coef_all[i, anchor], out["proto"][i], boxes, (hs, ws), (h, w))
            sx, sy = w / ws, h / hs
            boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
            if self.mask_boxes:
                boxes = tight_boxes(masks, boxes)
            results.append(
                {
                    "boxes": boxes,
                    "labels": label + 1,
                    "scores": scores,
                    "masks": masks[:, None],
                }
            )
        return results

    def paste_masks(
        self, coef: Tensor, proto: Tensor, boxes: Tensor, scaled: tuple[int, int], size: tuple[int, int]
    ) -> Tensor:
        """(N, K) coefficients -> (N, H, W) probabilities at the input size, zero outside each box
        (grown by ``paste_margin`` input pixels at the working scale).

        Bilinear upsampling is linear, so with more masks than prototypes the K prototypes are
        upsampled once and combined at full size (one matrix product instead of upsampling N
        masks; N is 100 at COCO AP settings); with fewer, the N masks are upsampled."""
        k, hp, wp = proto.shape
        h, w = size
        if len(coef) == 0:
            return proto.new_zeros((0, h, w))
        if len(coef) < k:  # fewer masks than prototypes: combine first, upsample the masks
            up = (coef @ proto.reshape(k, -1)).reshape(1, -1, hp, wp)
        else:
            up = proto[None]
        up = F.interpolate(up, scale_factor=self.proto_stride, mode="bilinear", align_corners=False)
        up = up[..., : scaled[0], : scaled[1]]
        if tuple(scaled) != (h, w):
            up = F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)
        if len(coef) < k:
            masks = up[0].sigmoid_()
        else:
            masks = (coef @ up.reshape(k, -1)).reshape(-1, h, w).sigmoid_()
        sx, sy = w / scaled[1], h / scaled[0]
        b = boxes * boxes.new_tensor([sx, sy, sx, sy])
        mx, my = self.paste_margin * sx, self.paste_margin * sy
        xs = torch.arange(w, device=b.device, dtype=b.dtype) + 0.5
        ys = torch.arange(h, device=b.device, dtype=b.dtype) + 0.5
        in_x = (xs[None] >= b[:, 0:1] - mx) & (xs[None] <= b[:, 2:3] + mx)
        in_y = (ys[None] >= b[:, 1:2] - my) & (ys[None] <= b[:, 3:4] + my)
        # two broadcast products: no (N, H, W) crop mask is built
        return masks.mul_(in_y[:, :, None].to(masks.dtype)).mul_(in_x[:, None, :].to(masks.dtype))


def fold_batchnorm(module: nn.Module) -> int:
    """Fold, in place, each BatchNorm registered right after a Conv2d of the same width into that
    convolution (torch's ``fuse_conv_bn_eval``); the BatchNorm is replaced by what it applied
    after normalising (timm's BatchNormAct2d: dropout and activation). Eval mode only; returns
    the number folded. Registration order stands in for data flow, so callers verify the result."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(module.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[a], parent._modules[b]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, _BatchNorm)):
                continue
            if not bn.track_running_stats or conv.out_channels != bn.num_features:
                continue
            parent._modules[a] = fuse_conv_bn_eval(conv, bn)
            rest = [getattr(bn, n) for n in ("drop", "act") if isinstance(getattr(bn, n, None), nn.Module)]
            parent._modules[b] = nn.Sequential(*rest) if rest else nn.Identity()
            folded += 1
    return folded


def tight_boxes(masks: Tensor, fallback: Tensor, thresh: float = 0.5) -> Tensor:
    """(N, H, W) probabilities -> (N, 4) xyxy boxes enclosing each mask ``>= thresh`` (x2/y2
    exclusive, like the training targets); an empty mask keeps its ``fallback`` box.

    Vectorised over the row and column maxima (torchvision's ``masks_to_boxes`` loops per mask)."""
    if len(masks) == 0:
        return fallback
    cols = masks.amax(1) >= thresh  # (N, W)
    rows = masks.amax(2) >= thresh  # (N, H)
    w, h = cols.shape[1], rows.shape[1]
    x1 = cols.int().argmax(1)
    x2 = w - cols.flip(1).int().argmax(1)
    y1 = rows.int().argmax(1)
    y2 = h - rows.flip(1).int().argmax(1)
    tight = torch.stack([x1, y1, x2, y2], 1).to(fallback.dtype)
    return torch.where(cols.any(1)[:, None], tight, fallback)


def pad_batch(images: list[Tensor]) -> Tensor:
    """Images (3, H, W) -> one (B, 3, H', W') batch padded bottom/right to multiples of 32."""
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    hp, wp = math.ceil(h / ALIGN) * ALIGN, math.ceil(w / ALIGN) * ALIGN
    out = images[0].new_zeros((len(images), 3, hp, wp))
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out
