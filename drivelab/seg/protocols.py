"""Each field's way of turning predictions into a score, so a printed number can be compared with
the published ones. ``drivelab evaluate --protocol NAME``; every protocol starts from the same
range-checked counts (``drivelab.seg.metrics.confusion``).

``drivelab`` (default)
    IoU_c = TP / (TP + FP + FN) summed over the set; mIoU = mean over classes seen in labels or
    predictions; pixel_acc = TP / labelled pixels; mean_acc = mean recall over classes in the
    labels; ce = cross-entropy per real labelled pixel at the label's resolution.

``cityscapes`` (cityscapesscripts' evalPixelLevelSemanticLabeling)
    Counts over all 34 labelIds (train-id predictions are mapped to labelIds; void predictions
    become labelId 0). For the 19 evaluated classes: TP = C[c, c], FN = row sum - TP (so a
    prediction of any ignored class is a miss), FP = column sum over rows of *evaluated*
    classes only. mIoU = mean over classes with TP + FP + FN > 0. Category IoU does the same
    with the 7 categories. iIoU weights each ground-truth instance's TP/FN by
    avgClassSize[class] / instance size (instanceIds > 1000), FP as for IoU.

``bdd100k`` (the BDD100K toolkit's ``bdd100k.eval.seg.evaluate_segmentation``)
    A (K + 1)-column histogram whose last column is "ignored" (void predictions land there).
    IoU_c = TP / (row + column - TP), NaN -> 0; mIoU = mean over the classes *present in the
    ground truth* only; per-class accuracy = TP / column sum (precision), NaN -> 0, averaged over
    the same classes; pixel_acc = TP / labelled pixels; fIoU = sum_c IoU_c * row_c / labelled.
    The toolkit prints these x100; drivelab reports fractions.

``comma10k-baseline`` (comma10k-baseline's LitModel validation loss)
    Their model has 6 outputs: the 5 classes plus "padding". Validation images are resized to
    the training size and zero-padded to /32; the mask's padding is class 6, mask pixels matching
    no class become class 0 (their one-hot argmax); CrossEntropyLoss is the mean over *all*
    pixels of a batch, padding included, and val_loss is the mean of the batch means. A
    drivelab model has no padding logit, so padding pixels count with zero loss (their model
    learns that class perfectly) — the same denominator as theirs. ``ce_per_real_pixel`` is
    drivelab's number on the same pass, next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivelab.schema import CITYSCAPES_LABELS

PROTOCOLS = ("drivelab", "cityscapes", "bdd100k", "comma10k-baseline")


# --------------------------------------------------------------------------- BDD100K
def bdd100k_scores(conf: np.ndarray, names: list[str]) -> dict:
    """BDD100K toolkit metrics from a (K, K + 1) confusion matrix (last column: ignored/void)."""
    conf = np.asarray(conf, dtype=np.float64)
    k = conf.shape[0]
    tp = np.diag(conf[:, :k])
    row, col = conf.sum(1), conf[:, :k].sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.nan_to_num(tp / (row + col - tp), nan=0.0)
        acc = np.nan_to_num(tp / col, nan=0.0)
    present = row > 0
    total = row.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "mean_acc": float(acc[present].mean()) if present.any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "fiou": float((iou * row / total).sum()) if total else float("nan"),
        "iou": dict(zip(names, map(float, iou), strict=True)),
        "acc": dict(zip(names, map(float, acc), strict=True)),
        "classes_in_ground_truth": [n for n, p in zip(names, present, strict=True) if p],
    }


# --------------------------------------------------------------------------- Cityscapes
N_LABEL_IDS = 34  # labelIds 0..33 (license plate, -1, never appears in label images)
_EVAL = np.array([row[2] != 255 for row in CITYSCAPES_LABELS])  # "not ignoreInEval"
_NAME = [row[0] for row in CITYSCAPES_LABELS]
_CATEGORY = [row[3] for row in CITYSCAPES_LABELS]
_HAS_INSTANCES = [row[4] for row in CITYSCAPES_LABELS]
CATEGORIES = list(dict.fromkeys(_CATEGORY))
# Mean instance size per class over the training set, the benchmark's iIoU weights (a constant
# of the Cityscapes benchmark definition, published with its evaluation script).
AVG_CLASS_SIZE = {
    "bicycle": 4672.3249222261, "caravan": 36771.8241758242, "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518, "bus": 35732.1511111111, "train": 67583.7075812274,
    "car": 12794.0202738185, "person": 3462.4756337644, "truck": 27855.1264367816,
    "trailer": 16926.9763313609,
}
# Categories whose every label has instances get a category iIoU (human, vehicle).
_INSTANCE_CATEGORIES = {c: [i for i, cat in enumerate(_CATEGORY) if cat == c] for c in CATEGORIES
                        if all(_HAS_INSTANCES[i] for i, cat in enumerate(_CATEGORY) if cat == c)}


@dataclass
class CityscapesCounts:
    """Everything evalPixelLevelSemanticLabeling accumulates: the labelId confusion matrix and the
    (weighted) per-instance true positives / false negatives."""

    conf: np.ndarray = field(default_factory=lambda: np.zeros((N_LABEL_IDS, N_LABEL_IDS), np.int64))
    inst: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [tp, fn, tp_w, fn_w]

    def add(self, pred: np.ndarray, gt: np.ndarray, instance_ids: np.ndarray | None) -> None:
        """One image: labelId prediction and ground truth (same shape), optional instanceIds."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction is {pred.shape[1]}x{pred.shape[0]}, "
                             f"labels {gt.shape[1]}x{gt.shape[0]}")
        if gt.max(initial=0) >= N_LABEL_IDS or pred.max(initial=0) >= N_LABEL_IDS:
            bad = int(max(gt.max(), pred.max()))
            raise ValueError(f"value {bad} is not a Cityscapes labelId (0..{N_LABEL_IDS - 1})")
        idx = gt.astype(np.int64).ravel() * N_LABEL_IDS + pred.astype(np.int64).ravel()
        self.conf += np.bincount(idx, minlength=N_LABEL_IDS**2).reshape(N_LABEL_IDS, N_LABEL_IDS)
        if instance_ids is None:
            return
        in_cat = {c: np.isin(pred, ids) for c, ids in _INSTANCE_CATEGORIES.items()}
        for inst in np.unique(instance_ids[instance_ids > 1000]):
            label = int(inst) // 1000
            if label >= N_LABEL_IDS or not _EVAL[label]:
                continue
            mask = instance_ids == inst
            size = int(mask.sum())
            weight = AVG_CLASS_SIZE[_NAME[label]] / size
            tp = int((pred[mask] == label).sum())
            self._inst(_NAME[label], tp, size - tp, weight)
            cat = _CATEGORY[label]
            if cat in in_cat:
                ctp = int((mask & in_cat[cat]).sum())
                self._inst("category:" + cat, ctp, size - ctp, weight)

    def merge(self, other: CityscapesCounts) -> None:
        """Add another image's (or set's) counts."""
        self.conf += other.conf
        for key, acc in other.inst.items():
            self.inst.setdefault(key, np.zeros(4))
            self.inst[key] = self.inst[key] + acc

    def _inst(self, key: str, tp: int, fn: int, weight: float) -> None:
        acc = self.inst.setdefault(key, np.zeros(4))
        acc += (tp, fn, tp * weight, fn * weight)


def _ratio(tp: float, fp: float, fn: float) -> float:
    denom = tp + fp + fn
    return float(tp) / denom if denom > 0 else float("nan")


def _mean(values: dict[str, float]) -> float:
    vals = [v for v in values.values() if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def cityscapes_scores(counts: CityscapesCounts) -> dict:
    """Class and category IoU and iIoU, and their averages, as cityscapesscripts computes them."""
    c = counts.conf.astype(np.float64)
    evaluated = np.flatnonzero(_EVAL)
    iou, iiou = {}, {}
    for label in evaluated:
        name = _NAME[label]
        tp = c[label, label]
        fn = c[label].sum() - tp
        fp = c[[i for i in evaluated if i != label], label].sum()
        iou[name] = _ratio(tp, fp, fn)
        if _HAS_INSTANCES[label]:
            s = counts.inst.get(name, np.zeros(4))
            iiou[name] = _ratio(s[2], fp, s[3])
        else:
            iiou[name] = float("nan")
    cat_iou, cat_iiou = {}, {}
    for cat in CATEGORIES:
        ids = [i for i in evaluated if _CATEGORY[i] == cat]
        if not ids:
            cat_iou[cat] = cat_iiou[cat] = float("nan")
            continue
        tp = c[np.ix_(ids, ids)].sum()
        fn = c[ids].sum() - tp
        others = [i for i in evaluated if _CATEGORY[i] != cat]
        if cat in _INSTANCE_CATEGORIES:
            fp_inst = c[np.ix_(others, _INSTANCE_CATEGORIES[cat])].sum()
            s = counts.inst.get("category:" + cat, np.zeros(4))
            cat_iiou[cat] = _ratio(s[2], fp_inst, s[3])
        else:
            cat_iiou[cat] = float("nan")
        cat_iou[cat] = _ratio(tp, c[np.ix_(others, ids)].sum(), fn)
    return {"miou": _mean(iou), "iiou": _mean(iiou), "category_miou": _mean(cat_iou),
            "category_iiou": _mean(cat_iiou), "iou": iou, "iiou_per_class": iiou,
            "category_iou": cat_iou, "category_iiou_per_category": cat_iiou}


def train_to_label_ids(schema_lut: tuple[int, ...] | list[int] | None, num_classes: int) -> np.ndarray:
    """A 256-entry LUT from a Cityscapes schema's train ids to labelIds (void/255 -> 0, unlabeled).

    ``schema_lut`` maps labelId -> train id (``ClassSchema.label_lut``); each train id goes back to
    the first labelId that maps to it (polegroup folded into pole goes back to pole)."""
    if schema_lut is None:
        raise ValueError("not a Cityscapes schema (no labelId table)")
    out = np.zeros(256, np.uint8)
    found = np.zeros(256, bool)
    for label_id in range(N_LABEL_IDS):
        t = int(schema_lut[label_id])
        if t < num_classes and not found[t]:
            out[t], found[t] = label_id, True
    missing = [t for t in range(num_classes) if not found[t]]
    if missing:
        raise ValueError(f"train id {missing[0]} maps to no Cityscapes labelId")
    return out


# --------------------------------------------------------------------------- comma10k-baseline
@dataclass
class BaselineCE:
    """comma10k-baseline's validation loss: the mean over batches of each batch's mean CE over all
    pixels at training resolution, padding included (zero loss for a drivelab model)."""

    batch_means: list[float] = field(default_factory=list)
    real_ce_sum: float = 0.0
    real_pixels: int = 0

    def add_batch(self, ce_sum: float, real_pixels: int, all_pixels: int) -> None:
        self.batch_means.append(ce_sum / all_pixels if all_pixels else float("nan"))
        self.real_ce_sum += ce_sum
        self.real_pixels += real_pixels

    def result(self) -> dict:
        real = self.real_ce_sum / self.real_pixels if self.real_pixels else float("nan")
        return {"val_loss": float(np.mean(self.batch_means)) if self.batch_means else float("nan"),
                "ce_per_real_pixel": real, "batches": len(self.batch_means)}
