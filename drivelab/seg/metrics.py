"""Confusion-matrix metrics for semantic segmentation, with an ignore index.

Conventions (those of the Cityscapes and mmseg evaluators): per-class IoU = TP / (TP + FP + FN)
over the whole set, NaN for a class that appears in neither labels nor predictions (left out of
the mean); pixel accuracy = TP / labelled pixels; mean class accuracy = mean recall over
classes present in the labels. Cross-entropy is the mean over labelled (real, non-ignore,
non-padding) pixels: the number comma10k results are quoted in.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.schema import IGNORE


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE
              ) -> torch.Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ignored pixels skipped."""
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = target[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(conf: np.ndarray | torch.Tensor, names: list[str] | None = None) -> dict[str, float]:
    """Metrics of a confusion matrix: miou, pixel_acc, mean_acc, iou_<name>..., acc_<name>..."""
    conf = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    k = conf.shape[0]
    names = names or [str(i) for i in range(k)]
    tp = np.diag(conf)
    gt, pr = conf.sum(1), conf.sum(0)
    union = gt + pr - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    total = conf.sum()
    out = {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "mean_acc": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
    }
    out.update({f"iou_{n}": float(v) for n, v in zip(names, iou, strict=True)})
    out.update({f"acc_{n}": float(v) for n, v in zip(names, recall, strict=True)})
    return out


class SegMeter:
    """Accumulates a confusion matrix and the cross-entropy sum over labelled pixels."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE,
                 device: str | torch.device = "cpu") -> None:
        self.k, self.ignore = num_classes, ignore_index
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.ce_sum = 0.0
        self.pixels = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """Add a batch (logits (B, K, H, W), target (B, H, W)); returns (confusion, CE sum, pixels)
        of this batch, for per-image tables."""
        target = target.long()
        conf = confusion(logits.argmax(1), target, self.k, self.ignore)
        ce = F.cross_entropy(logits.float(), target, ignore_index=self.ignore, reduction="sum")
        n = int((target != self.ignore).sum())
        self.conf += conf.to(self.conf.device)
        self.ce_sum += float(ce)
        self.pixels += n
        return conf, float(ce), n

    def compute(self, names: list[str] | None = None) -> dict[str, float]:
        out = scores(self.conf, names)
        out["loss"] = self.ce_sum / self.pixels if self.pixels else float("nan")
        return out

    def all_reduce(self) -> None:
        """Sum the counts over DDP ranks."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([self.ce_sum, float(self.pixels)], dtype=torch.float64, device=self.conf.device)
            dist.all_reduce(self.conf)
            dist.all_reduce(t)
            self.ce_sum, self.pixels = float(t[0]), int(t[1])
