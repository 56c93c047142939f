"""Audit scores: cleanlab's softmin (the package itself, same ranking as drivelab's earlier copy),
regions of confident disagreement per class pair, and the pair-relative region score."""

from __future__ import annotations

import numpy as np
import pytest

from drivelab.engine.audit_scores import (
    ClassThresholds,
    combined_score,
    disagreement_regions,
    pair_mass,
    region_scores,
    self_confidence,
    softmin_score,
    suspect_box,
    suspect_pixels,
    typical_pair_mass,
)


def _softmin_before(conf: np.ndarray, temperature: float = 0.1) -> float:
    """drivelab's own soft minimum before it used cleanlab (kept here as the reference)."""
    p = conf[np.isfinite(conf)].ravel()
    if p.size == 0:
        return 1.0
    z = (1.0 - p) / temperature
    w = np.exp(z - z.max())
    return float((p * w).sum() / w.sum())


def _probs_for(mask: np.ndarray, k: int, sure: float = 0.9) -> np.ndarray:
    p = np.full((k, *mask.shape), (1 - sure) / (k - 1), np.float32)
    for c in range(k):
        p[c][mask == c] = sure
    return p


@pytest.fixture(scope="module")
def scored_scenes():
    """30 synthetic comma10k masks, a model-like softmax around the truth, some labels corrupted
    and some pixels ignored: what the audit sees."""
    from drivelab.data.synth import comma10k_train_ids, render_scene

    rng = np.random.default_rng(0)
    masks, probs, labels = [], [], []
    for i in range(30):
        truth = comma10k_train_ids(render_scene(np.random.default_rng([9, i]), (32, 64)))
        logits = rng.normal(0, 1.0, (5, 32, 64)) + 4.0 * (np.arange(5)[:, None, None] == truth[None])
        p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
        label = truth.copy()
        if i % 3 == 0:  # a wrong block
            y, x = rng.integers(0, 20), rng.integers(0, 44)
            label[y : y + 10, x : x + 16] = rng.integers(0, 5)
        if i % 4 == 0:
            label[0, :] = 255
        masks.append(truth)
        probs.append(p.astype(np.float32))
        labels.append(label)
    return np.stack(masks), np.stack(probs), np.stack(labels)


def test_softmin_is_cleanlabs_score_and_the_ranking_is_unchanged(scored_scenes):
    from cleanlab.segmentation.rank import get_label_quality_scores

    _, probs, labels = scored_scenes
    ours = np.array([softmin_score(p, m) for p, m in zip(probs, labels, strict=True)])
    before = np.array([_softmin_before(self_confidence(p, m)) for p, m in zip(probs, labels, strict=True)])
    assert np.allclose(ours, before, rtol=0, atol=1e-12)
    assert np.argsort(ours, kind="stable").tolist() == np.argsort(before, kind="stable").tolist()
    # without ignored pixels it is cleanlab's own batch call
    clean = [i for i in range(len(labels)) if (labels[i] != 255).all()]
    cl, _ = get_label_quality_scores(labels[clean].astype(np.int64), probs[clean], verbose=False)
    assert np.allclose(ours[clean], cl, rtol=0, atol=1e-12)
    assert softmin_score(probs[0], np.full((32, 64), 255, np.uint8)) == 1.0  # nothing valid to score
    assert ours[[i for i in range(30) if i % 3 == 0]].mean() < ours[[i for i in range(30) if i % 3]].mean()


def test_a_swapped_region_scores_low_and_is_boxed():
    truth = np.zeros((32, 64), np.uint8)
    truth[10:20, 30:50] = 1
    truth[25:, :] = 2
    probs = _probs_for(truth, 3)
    wrong = truth.copy()
    wrong[10:20, 30:50] = 2  # a region's class swapped
    wrong[0, 0] = 255  # ignored pixels do not count
    assert softmin_score(probs, truth) > 0.85 and softmin_score(probs, wrong) < 0.2
    t = ClassThresholds(3)
    t.update(self_confidence(probs, wrong), wrong)
    sus = suspect_pixels(probs, wrong, t.values)
    assert sus[10:20, 30:50].all() and sus.sum() == 200
    assert suspect_box(sus) == [30, 10, 50, 20]
    assert suspect_box(np.zeros((4, 4), bool)) is None
    (region,) = disagreement_regions(probs, wrong, t.values)
    assert (region.label, region.pred, region.area, region.box) == (2, 1, 200, [30, 10, 50, 20])
    assert region.confidence == pytest.approx(0.9)
    assert region.mass == pytest.approx(-200 * np.log(0.05), rel=1e-5)


def test_regions_are_split_by_class_pair():
    truth = np.zeros((20, 40), np.uint8)
    truth[:, 20:] = 1
    probs = _probs_for(truth, 4, sure=0.97)
    label = truth.copy()
    label[5:10, 15:20] = 3  # touches the next block but says another class pair
    label[5:10, 20:26] = 2
    thresholds = np.full(4, 0.5)
    regions = disagreement_regions(probs, label, thresholds)
    got = sorted((g.label, g.pred, g.area, tuple(g.box)) for g in regions)
    assert got == [(2, 1, 30, (20, 5, 26, 10)), (3, 0, 25, (15, 5, 20, 10))]
    assert [g.mass for g in regions] == sorted((g.mass for g in regions), reverse=True)
    m = pair_mass(regions, 4)
    assert m[2, 1] == pytest.approx(regions[0].mass) and m[3, 0] == pytest.approx(regions[1].mass)
    assert m.sum() == pytest.approx(sum(g.mass for g in regions))


def test_region_score_discounts_what_the_model_always_confuses():
    # Every image: the model takes a 120-pixel truck (label 3) for background (2), a systematic
    # model error. Image 7 also has a 40-pixel road patch labelled undrivable: smaller, but out of
    # the ordinary for its pair, so it is the most suspect image.
    n, k = 12, 4
    rng = np.random.default_rng(5)
    masses = np.zeros((n, k, k))
    masses[:, 3, 2] = rng.uniform(900, 1100, n)
    masses[:, 0, 2] = rng.uniform(0, 15, n)
    masses[7, 0, 2] = 300
    typical = typical_pair_mass(masses)
    z, pairs = region_scores(masses, typical)
    assert int(np.argmax(z)) == 7 and pairs[7].tolist() == [0, 2]
    assert int(np.argmax(masses.reshape(n, -1).max(1))) != 7  # raw mass would pick a truck
    # a pair seen in fewer than 5 images is judged against the median of all pairs
    masses[2, 1, 3] = 50
    assert typical_pair_mass(masses)[1, 3] == pytest.approx(np.median(masses[masses > 0]))
    softmin = rng.uniform(0.5, 1.0, n)
    score = combined_score(softmin, z)
    assert int(np.argmin(score)) == 7 and score.min() >= 0 and score.max() <= 1
    softmin[3] = 0.01  # cleanlab's score alone can lift an image into the top too
    assert np.argsort(combined_score(softmin, z))[:2].tolist() in ([7, 3], [3, 7])
