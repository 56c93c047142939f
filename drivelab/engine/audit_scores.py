"""Label-error scores for segmentation: what ``drivelab audit`` ranks by (pure numpy/scipy).

Per pixel (confident learning, Northcutt et al. 2021):

    self-confidence   p[label]: the probability the model gives the labelled class
    suspect pixel     p[label] < t[label] and the predicted class c has p[c] >= t[c], where t[k] is
                      the mean self-confidence of pixels labelled k over the dataset (confident
                      learning's per-class thresholds)

Per image, two scores, both lower = more suspect:

    softmin           cleanlab's segmentation label-quality score (``cleanlab.segmentation.rank``,
                      the package itself): the soft minimum of the self-confidences (T = 0.1). It
                      sees thin errors spread along many boundaries (a snapped anti-aliased edge)
                      but a whole wrong region weighs as much as a few confused boundary pixels.
    regions           connected components of suspect pixels, one class pair (label says a, model
                      says b) at a time: area, mean confidence of b, and *mass* = sum of -log p[a],
                      how strongly the model contradicts the label there. A model has pairs it
                      confuses all the time (a truck it takes for a building); a label error is a
                      pair that is out of the ordinary *for that pair*. So an image's region score
                      is the largest, over pairs, of its pair mass divided by the typical (median)
                      pair mass over the images where that pair occurs at all.

The ranking adds the two ranks (softmin ascending, region score descending): an image comes first
when both say so, and either one alone lifts it. ``combined_score`` maps that to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivelab.schema import IGNORE


def self_confidence(probs: np.ndarray, label: np.ndarray, ignore_index: int = IGNORE) -> np.ndarray:
    """(K, H, W) probabilities + (H, W) label -> (H, W) p[label], NaN on ignored pixels."""
    k = probs.shape[0]
    valid = (label != ignore_index) & (label < k)
    safe = np.where(valid, label, 0).astype(np.int64)
    conf = np.take_along_axis(probs, safe[None], axis=0)[0].astype(np.float64)
    return np.where(valid, conf, np.nan)


def softmin_score(
    probs: np.ndarray, label: np.ndarray, temperature: float = 0.1, ignore_index: int = IGNORE
) -> float:
    """cleanlab's segmentation label-quality score of one image (``cleanlab.segmentation.rank``,
    method ``softmin``): the soft minimum ``sum_i p_i softmax((1 - p)/T)_i`` of the pixel
    self-confidences ``p_i = probs[label_i, i]``. 1.0 for an image with no valid pixel.

    cleanlab has no ignore index, so only the valid pixels go in, as one (1, 1, n) row: the soft
    minimum does not depend on where the pixels are, so this is exactly cleanlab's score of the
    image without its ignored pixels."""
    from cleanlab.segmentation.rank import get_label_quality_scores

    k = probs.shape[0]
    valid = (label != ignore_index) & (label < k)
    if not valid.any():
        return 1.0
    labels = label[valid].astype(np.int64)[None, None]
    pred_probs = probs[:, valid].astype(np.float64)[None, :, None]
    scores, _ = get_label_quality_scores(
        labels, pred_probs, method="softmin", temperature=temperature, verbose=False
    )
    return float(scores[0])


class ClassThresholds:
    """Running per-class mean self-confidence (confident learning's t_k)."""

    def __init__(self, num_classes: int) -> None:
        self.sum = np.zeros(num_classes)
        self.count = np.zeros(num_classes)

    def update(self, conf: np.ndarray, label: np.ndarray) -> None:
        valid = np.isfinite(conf)
        k = len(self.sum)
        self.sum += np.bincount(label[valid].astype(np.int64), weights=conf[valid], minlength=k)[:k]
        self.count += np.bincount(label[valid].astype(np.int64), minlength=k)[:k]

    @property
    def values(self) -> np.ndarray:
        # A class never labelled gets threshold 0.5: any confident prediction of it counts.
        return np.where(self.count > 0, self.sum / np.maximum(self.count, 1), 0.5)


def suspect_pixels(
    probs: np.ndarray, label: np.ndarray, thresholds: np.ndarray, ignore_index: int = IGNORE
) -> np.ndarray:
    """(H, W) bool: pixels whose label the model confidently contradicts."""
    conf = self_confidence(probs, label, ignore_index)
    pred = probs.argmax(0)
    p_pred = probs.max(0)
    valid = np.isfinite(conf)
    lab = np.where(valid, label, 0).astype(np.int64)
    return valid & (pred != lab) & (conf < thresholds[lab]) & (p_pred >= thresholds[pred])


def suspect_box(mask: np.ndarray, min_pixels: int = 4) -> list[int] | None:
    """[x0, y0, x1, y1] (inclusive-exclusive) of the largest connected suspect region, or None."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] < min_pixels:
        return None
    ys, xs = np.nonzero(labels == best)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@dataclass
class Region:
    """One connected region where the model confidently contradicts the label."""

    label: int  # the class the label says
    pred: int  # the class the model says
    area: int  # pixels
    confidence: float  # mean probability of ``pred`` over the region
    mass: float  # sum of -log p[label]: how strongly the model contradicts the label
    box: list[int]  # [x0, y0, x1, y1], inclusive-exclusive, at the probabilities' resolution


def disagreement_regions(
    probs: np.ndarray, label: np.ndarray, thresholds: np.ndarray, ignore_index: int = IGNORE
) -> list[Region]:
    """(K, H, W) probabilities + (H, W) label -> the regions of suspect pixels, split by class pair
    (8-connected components of equal (label, prediction) pairs), largest mass first."""
    from scipy import ndimage
    from skimage.measure import label as components

    k = probs.shape[0]
    sus = suspect_pixels(probs, label, thresholds, ignore_index)
    if not sus.any():
        return []
    pred = probs.argmax(0)
    conf = self_confidence(probs, label, ignore_index)
    # one labelling pass: pixels of the same (label, prediction) pair that touch form a region
    pair = np.where(sus, label.astype(np.int64) * k + pred + 1, 0)
    regions, n = components(pair, background=0, connectivity=2, return_num=True)
    flat = regions.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    mass = np.bincount(
        flat, weights=-np.log(np.clip(np.nan_to_num(conf, nan=1.0), 1e-6, 1.0)).ravel(), minlength=n + 1
    )[1:]
    p_pred = np.bincount(flat, weights=probs.max(0).ravel().astype(np.float64), minlength=n + 1)[1:]
    ids = np.bincount(flat, weights=pair.ravel().astype(np.float64), minlength=n + 1)[1:] / area
    out = []
    for r, sl in enumerate(ndimage.find_objects(regions)):
        a, b = divmod(int(round(ids[r])) - 1, k)
        box = [int(sl[1].start), int(sl[0].start), int(sl[1].stop), int(sl[0].stop)]
        out.append(Region(a, b, int(area[r]), float(p_pred[r] / area[r]), float(mass[r]), box))
    return sorted(out, key=lambda g: -g.mass)


def pair_mass(regions: list[Region], num_classes: int) -> np.ndarray:
    """(K, K) total region mass per (label, prediction) pair of one image."""
    out = np.zeros((num_classes, num_classes))
    for g in regions:
        out[g.label, g.pred] += g.mass
    return out


def typical_pair_mass(masses: np.ndarray, min_images: int = 5) -> np.ndarray:
    """(N, K, K) per-image pair masses -> (K, K) the median over the images where the pair occurs;
    a pair seen in fewer than ``min_images`` images gets the median of all pairs' masses (too few
    to say what is typical for it, so nothing is discounted or inflated)."""
    k = masses.shape[1]
    flat = masses.reshape(len(masses), -1)
    seen = flat > 0
    pooled = float(np.median(flat[seen])) if seen.any() else 1.0
    typical = np.full(k * k, pooled)
    for q in range(k * k):
        if seen[:, q].sum() >= min_images:
            typical[q] = np.median(flat[seen[:, q], q])
    return typical.reshape(k, k)


def region_scores(masses: np.ndarray, typical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the largest pair mass / typical mass (higher = more suspect, 0 = no region) and
    the (label, prediction) pair it comes from, (N, 2)."""
    z = (masses / typical[None]).reshape(len(masses), -1)
    worst = z.argmax(axis=1)
    k = masses.shape[1]
    return z.max(axis=1) if len(z) else np.zeros(0), np.stack(np.divmod(worst, k), axis=1)


def combined_score(softmin: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Rank sum of softmin (ascending) and region score (descending), scaled to [0, 1]; lower = more
    suspect. Ties in the rank sum keep the softmin order."""
    n = len(softmin)
    if n == 0:
        return np.zeros(0)
    r1 = np.argsort(np.argsort(softmin, kind="stable"), kind="stable")
    r2 = np.argsort(np.argsort(-np.asarray(region), kind="stable"), kind="stable")
    return (r1 + r2) / max(1, 2 * (n - 1))
