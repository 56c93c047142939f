"""Confusion-matrix metrics for semantic segmentation, with an ignore index and a void column.

The confusion matrix is (K, K + 1): rows are ground-truth classes, columns predicted classes,
and the last column counts labelled pixels predicted as *void* (255, "no class"). As in
cityscapesscripts, a void prediction is wrong for every labelled pixel: it adds to that class's
false negatives and to no class's false positives. A prediction >= K that is not 255 is
refused (``PredictionRangeError``): it means the prediction speaks another class set, and
counting it anywhere would silently corrupt the scores.

drivelab's convention (``scores``; other fields' conventions live in ``drivelab.seg.protocols``):
per-class IoU = TP / (TP + FP + FN) over the whole set, NaN for a class that appears in neither
labels nor predictions (left out of the mean); pixel accuracy = TP / labelled pixels; mean
class accuracy = mean recall over classes present in the labels; cross-entropy = mean over
labelled (real, non-ignore, non-padding) pixels at the labels' own resolution ("CE per real
pixel"). comma10k-baseline's published 0.044-0.046 is a different number: see
``drivelab.seg.protocols``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drivelab.schema import IGNORE


class PredictionRangeError(ValueError):
    """A prediction holds a value that is neither a class id (< K) nor void (255)."""

    def __init__(self, value: int, num_classes: int) -> None:
        super().__init__(f"prediction holds value {value}, but the model/labels have {num_classes} "
                         f"classes (0..{num_classes - 1}; 255 = void)")
        self.value = value


def confusion(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int,
              ignore_index: int = IGNORE) -> torch.Tensor:
    """(K, K + 1) int64 counts, rows = ground truth, columns = prediction, last column = void.

    Ignored label pixels are skipped. Raises ``PredictionRangeError`` for a prediction value
    >= K other than 255, and ``ValueError`` for a label value >= K other than the ignore index."""
    target = torch.as_tensor(target).reshape(-1).long()
    pred = torch.as_tensor(pred).reshape(-1).long().to(target.device)
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    k = num_classes
    if target.numel():
        bad_t = (target < 0) | (target >= k)
        if bool(bad_t.any()):
            raise ValueError(f"label holds value {int(target[bad_t][0])}, outside 0..{k - 1} and not "
                             f"the ignore index {ignore_index}")
        void = pred == IGNORE
        bad_p = ((pred < 0) | (pred >= k)) & ~void
        if bool(bad_p.any()):
            raise PredictionRangeError(int(pred[bad_p][0]), k)
        pred = torch.where(void, torch.full_like(pred, k), pred)
    idx = target * (k + 1) + pred
    return torch.bincount(idx, minlength=k * (k + 1)).reshape(k, k + 1)


def _square(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, K[+1]) -> (the K x K class part, void counts per class)."""
    k = conf.shape[0]
    if conf.shape[1] == k + 1:
        return conf[:, :k], conf[:, k]
    return conf, np.zeros(k, conf.dtype)


def scores(conf: np.ndarray | torch.Tensor, names: list[str] | None = None) -> dict[str, float]:
    """drivelab's metrics of a confusion matrix: miou, pixel_acc, mean_acc, iou_<name>..., acc_<name>..."""
    conf = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    square, void = _square(conf)
    k = square.shape[0]
    names = names or [str(i) for i in range(k)]
    tp = np.diag(square)
    gt, pr = square.sum(1) + void, square.sum(0)
    union = gt + pr - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    total = gt.sum()
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
        self.conf = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64, device=device)
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
        self.add(conf, float(ce), n)
        return conf, float(ce), n

    def add(self, conf: torch.Tensor, ce_sum: float = 0.0, pixels: int = 0) -> None:
        """Add a confusion matrix computed elsewhere (and its CE sum / pixel count, if any)."""
        self.conf += conf.to(self.conf.device)
        self.ce_sum += float(ce_sum)
        self.pixels += int(pixels)

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
