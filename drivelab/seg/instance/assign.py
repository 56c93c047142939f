"""Training targets and losses of the single-stage instance model (``protoseg.py``).

Assignment is task-aligned (TOOD, Feng et al. 2021): for every ground-truth object the anchor
points whose centre lies inside its box are ranked by ``score ** alpha * IoU ** beta`` (the
predicted class score for the object's class and the IoU of the predicted box with the object's
box) and the ``topk`` best become its positives. An anchor claimed by several objects goes to
the one its box overlaps most. The classification target of a positive is its alignment
normalised per object so that the best positive of an object gets that object's best IoU: the
score a positive learns says how good its box is, which is what COCO AP ranks by.

Losses: binary cross-entropy on those soft targets (summed, divided by the sum of targets),
complete-IoU on the boxes of positives weighted by their target, and for masks a per-pixel
binary cross-entropy of the positive's prototype combination against its object's mask inside
the object's box (plus ``crop_margin`` pixels), averaged per positive (YOLACT, Bolya et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Assignment:
    fg: Tensor  # (A,) bool: positive anchors
    gt_index: Tensor  # (A,) long: object of each anchor (meaningful where fg)
    target: Tensor  # (A,) float: soft classification target of the assigned class (0 where not fg)


@torch.no_grad()
def task_aligned_assign(
    scores: Tensor,
    boxes: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    gt_masks: Tensor | None = None,
) -> Assignment:
    """Assign anchors of one image. scores (A, C) probabilities, boxes (A, 4) predicted xyxy,
    anchors (A, 2) xy centres, gt_boxes (M, 4) xyxy, gt_labels (M,) class indices 0..C-1.

    ``gt_masks`` (M, H, W): candidates are the anchors whose centre lies on the object's mask
    instead of in its box. Visible-part masks do not overlap, so an occluded object whose box
    lies inside a bigger object's box keeps anchors of its own (with boxes, the bigger object
    takes them, and the small one ends up swallowed by its neighbour's prediction)."""
    from torchvision.ops import box_iou

    a, m = len(anchors), len(gt_boxes)
    if m == 0:
        zeros = torch.zeros(a, device=anchors.device)
        return Assignment(zeros.bool(), zeros.long(), zeros)
    x, y = anchors[:, 0][None], anchors[:, 1][None]
    if gt_masks is not None:
        h, w = gt_masks.shape[-2:]
        px = anchors[:, 0].long().clamp_(0, w - 1)
        py = anchors[:, 1].long().clamp_(0, h - 1)
        inside = gt_masks[:, py, px].bool()  # (M, A)
    else:
        inside = (
            (x > gt_boxes[:, 0:1]) & (x < gt_boxes[:, 2:3]) & (y > gt_boxes[:, 1:2]) & (y < gt_boxes[:, 3:4])
        )  # (M, A)
    # An object thinner than the anchor spacing may hold no anchor centre: give it its nearest one.
    empty = ~inside.any(1)
    if empty.any():
        centre = (gt_boxes[empty, :2] + gt_boxes[empty, 2:]) / 2
        nearest = torch.cdist(centre, anchors).argmin(1)
        inside[empty.nonzero()[:, 0], nearest] = True
    iou = box_iou(gt_boxes, boxes).clamp_(min=0)  # (M, A)
    score = scores[:, gt_labels].T  # (M, A)
    align = score.pow(alpha) * iou.pow(beta) * inside
    k = min(int(topk), a)
    # Ties at zero alignment (fresh weights) fall back to the anchors inside the box.
    rank = align + inside * 1e-9
    idx = rank.topk(k, dim=1).indices
    pos = torch.zeros_like(inside)
    pos.scatter_(1, idx, True)
    pos &= inside
    # An anchor claimed by several objects goes to the one its predicted box overlaps most.
    multi = pos.sum(0) > 1
    if multi.any():
        best = (iou * pos).argmax(0)
        onehot = F.one_hot(best, m).T.bool()
        pos = torch.where(multi[None], onehot & pos, pos)
    fg = pos.any(0)
    gt_index = pos.float().argmax(0)
    align = align * pos
    best_align = align.amax(1, keepdim=True)
    best_iou = (iou * pos).amax(1, keepdim=True)
    target = (align * best_iou / (best_align + 1e-9)).amax(0)
    return Assignment(fg, gt_index, target * fg)


def mask_loss(
    coef: Tensor, proto: Tensor, gt_masks: Tensor, gt_boxes: Tensor, stride: int, margin: float
) -> Tensor:
    """Summed per-positive mean BCE inside each positive's object box (+ ``margin`` px).

    coef (P, K) coefficients, proto (K, Hp, Wp), gt_masks (P, Hp, Wp) soft targets at proto
    resolution, gt_boxes (P, 4) xyxy in input pixels; ``stride`` is the input pixels per proto
    pixel."""
    k, hp, wp = proto.shape
    logits = (coef @ proto.reshape(k, -1)).reshape(-1, hp, wp)
    bce = F.binary_cross_entropy_with_logits(logits, gt_masks, reduction="none")
    crop = box_crop(gt_boxes, hp, wp, stride, margin)
    return ((bce * crop).sum((1, 2)) / crop.sum((1, 2)).clamp(min=1.0)).sum()


def box_crop(boxes: Tensor, h: int, w: int, stride: float, margin: float) -> Tensor:
    """(N, h, w) float masks: 1 where a pixel centre (in input pixels) lies inside its box
    grown by ``margin`` pixels."""
    xs = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    ys = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    b = boxes[:, :, None]
    in_x = (xs[None] >= b[:, 0] - margin) & (xs[None] <= b[:, 2] + margin)  # (N, w)
    in_y = (ys[None] >= b[:, 1] - margin) & (ys[None] <= b[:, 3] + margin)  # (N, h)
    return (in_y[:, :, None] & in_x[:, None, :]).to(boxes.dtype)
