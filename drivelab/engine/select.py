"""What to label next: uncertainty, diversity, their combination, and random as the baseline.

    random     uniform sample of the pool (the baseline every other strategy must beat)
    entropy    highest mean per-pixel prediction entropy
    margin     smallest mean margin between the two most probable classes
    kcenter    k-center greedy (Sener & Savarese 2018) in feature space: each pick is the pool
               image farthest from everything labelled or already picked, so the picks cover
               the regions of the latent space the labelled set does not
    combined   k-center greedy weighted by uncertainty: each pick maximises
               distance-to-labelled x uncertainty, i.e. high-loss regions that are still sparse.
               Uncertainty is the entropy rank, averaged with the loss predicted from the
               nearest labelled neighbours when the table has losses of labelled images
    clusters   cluster-balanced uncertainty in the spirit of Cluster-Margin (Citovsky et al. 2021):
               k-means on the pool's features, the 10 x budget most uncertain candidates kept,
               then a round robin over their clusters, fewest candidates first, each turn the most
               uncertain member. A condition that forms its own cluster (night, rain, a tunnel)
               gets a turn per round like the common scenes do, while top-k uncertainty spends a
               whole batch on the scene type the model happens to doubt most
    uncovered  dense regions no labelled image reaches, in the spirit of TypiClust and ProbCover
               (Hacohen et al. 2022, Yehuda et al. 2022): each candidate's distance to the nearest
               labelled image over the mean distance to its 5 nearest pool neighbours, highest
               first. A rare condition the model is confidently wrong about (night scenes after
               a day-heavy seed set) is invisible to uncertainty, but it forms a tight cluster far
               from every label; an outlier is far from the labels too, but also from everything
               else, so its ratio stays low. Needs no uncertainty column

``select_indices`` returns row indices in pick order (the first is the most wanted).
"""

from __future__ import annotations

import numpy as np

from drivelab.errors import DrivelabError

STRATEGIES = ("random", "entropy", "margin", "kcenter", "combined", "clusters", "uncovered")


def rank01(v: np.ndarray) -> np.ndarray:
    """Values -> ranks in (0, 1] (ties share a rank; NaN ranks lowest)."""
    v = np.asarray(v, dtype=np.float64)
    filled = np.where(np.isfinite(v), v, -np.inf)
    order = np.argsort(np.argsort(filled, kind="stable"), kind="stable")
    return (order + 1) / max(1, len(v))


def doubtful_first(key: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``key`` from the highest down, non-finite values last; ties are broken at
    random so equal scores do not favour the table order."""
    key = np.where(np.isfinite(key), key, -np.inf)
    return np.lexsort((rng.random(len(key)), -key))


def doubt_of(
    candidates: np.ndarray, entropy: np.ndarray | None, margin: np.ndarray | None
) -> np.ndarray | None:
    """How unsure the model is about each candidate: its entropy when the table has entropies for
    the pool, else its negated margin; None when neither column has a value."""
    if entropy is not None and np.isfinite(entropy[candidates]).any():
        return entropy[candidates]
    if margin is not None and np.isfinite(margin[candidates]).any():
        return -margin[candidates]
    return None


def kcenter_greedy(
    x: np.ndarray,
    labelled: np.ndarray,
    candidates: np.ndarray,
    budget: int,
    weight: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Greedy k-center: pick ``budget`` rows of ``candidates`` (indices into ``x``), each time the
    one maximising (distance to the nearest labelled-or-picked row) x ``weight``.

    With nothing labelled the first pick is the candidate nearest the mean (a typical sample)
    for the unweighted version and the most uncertain one for the weighted version.

    Memory stays bounded for any pool: the candidates' coordinates are one float32 copy
    (N x 50: 200 MB at 1M), the distances to the labelled rows come from scikit-learn's chunked
    ``pairwise_distances_argmin_min`` and every pick costs one matrix-vector product
    (|x - c|^2 = |x|^2 + |c|^2 - 2 x.c) and a few (N,) vectors. Time is O(N x (labelled + budget)):
    exact k-center greedy has to look at every candidate for every pick."""
    from sklearn.metrics import pairwise_distances_argmin_min

    cx = np.ascontiguousarray(x[candidates], dtype=np.float32)
    w = np.ones(len(candidates)) if weight is None else np.asarray(weight, dtype=np.float64)
    mind = np.full(len(candidates), np.inf)
    if len(labelled):
        _, mind = pairwise_distances_argmin_min(cx, np.asarray(x[labelled], dtype=np.float32))
        mind = mind.astype(np.float64)
    sq = np.einsum("ij,ij->i", cx, cx, dtype=np.float64)
    picked = np.empty(budget, dtype=np.int64)
    taken = np.zeros(len(candidates), dtype=bool)
    for t in range(budget):
        if t == 0 and not len(labelled):
            if weight is None:
                centre = cx.mean(axis=0, dtype=np.float64)
                j = int(np.argmin(sq - 2 * (cx @ centre.astype(np.float32)).astype(np.float64)))
            else:
                j = int(np.argmax(w))
        else:
            score = np.where(taken, -np.inf, mind * w)
            j = int(np.argmax(score))
        picked[t] = j
        taken[j] = True
        d2 = sq + sq[j] - 2 * (cx @ cx[j]).astype(np.float64)
        np.minimum(mind, np.sqrt(np.maximum(d2, 0.0)), out=mind)
        mind[j] = 0.0
    return candidates[picked]


def cluster_round_robin(
    x: np.ndarray,
    candidates: np.ndarray,
    rows: np.ndarray,
    budget: int,
    doubt: np.ndarray,
    seed: int = 0,
    shortlist: int = 10,
    fit_rows: int = 20000,
    max_k: int = 256,
) -> np.ndarray:
    """Pick ``budget`` of ``candidates`` (indices into ``x``): k-means (k = budget, 2..``max_k``) on
    ``rows`` (the pool: candidates and labelled), the ``shortlist`` x budget candidates with the
    highest ``doubt`` (per candidate), then clusters in order of how few shortlisted members they
    have, one pick per cluster per turn, each the cluster's most doubtful member left.

    k-means is fitted on at most ``fit_rows`` rows sampled from the pool (seeded) and assigns the
    shortlist only, so a 1M-row pool costs one small fit and one (shortlist, k) distance matrix;
    a budget above ``max_k`` takes several turns per cluster instead of more clusters."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    order = doubtful_first(doubt, rng)[: min(len(candidates), shortlist * budget)]
    fit = rows if len(rows) <= fit_rows else rng.choice(rows, fit_rows, replace=False)
    k = int(min(len(fit), max_k, max(2, budget)))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x[fit])
    cluster = km.predict(x[candidates[order]])
    groups = [order[cluster == c].tolist() for c in range(k)]  # each most doubtful first
    groups = sorted((g for g in groups if g), key=len)
    picked: list[int] = []
    while len(picked) < budget:
        for g in groups:
            if g and len(picked) < budget:
                picked.append(g.pop(0))
    return candidates[np.array(picked, dtype=np.int64)]


def uncovered_first(
    x: np.ndarray,
    labelled: np.ndarray,
    candidates: np.ndarray,
    rows: np.ndarray,
    budget: int,
    seed: int = 0,
    k: int = 5,
    reference_rows: int = 20000,
) -> np.ndarray:
    """The ``budget`` candidates with the highest distance-to-labelled / local neighbour distance
    (``x`` rows; the neighbours are the ``k`` nearest of ``rows``, the pool, or of at most
    ``reference_rows`` of it sampled with ``seed``, so a 1M-image pool costs one kNN query per
    candidate against 20k rows). No labelled image yet: the densest candidates first."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    ref = rows if len(rows) <= reference_rows else rng.choice(rows, reference_rows, replace=False)
    if len(ref) < 2:  # one image in the whole pool: no neighbourhood to compare with
        radius = np.ones(len(candidates))
    else:
        kk = int(min(len(ref) - 1, k))
        dist, _ = NearestNeighbors(n_neighbors=kk + 1).fit(x[ref]).kneighbors(x[candidates])
        # a candidate that is in the reference sample finds itself at distance 0 first: drop the
        # nearest column for all of them (for the others it is one neighbour less, the same for all)
        radius = dist[:, 1:].mean(1) + 1e-12
    if len(labelled):
        gap = NearestNeighbors(n_neighbors=1).fit(x[labelled]).kneighbors(x[candidates])[0][:, 0]
    else:
        gap = np.ones(len(candidates))
    return candidates[doubtful_first(gap / radius, rng)[:budget]]


def knn_predict(
    x: np.ndarray, src: np.ndarray, values: np.ndarray, dst: np.ndarray, k: int = 5
) -> np.ndarray:
    """Distance-weighted mean of ``values`` over the k nearest ``src`` rows, for each ``dst`` row."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(k, len(src)))
    nn = NearestNeighbors(n_neighbors=k).fit(x[src])
    dist, idx = nn.kneighbors(x[dst])
    w = 1.0 / (dist + 1e-6)
    return (values[idx] * w).sum(1) / w.sum(1)


def select_indices(
    strategy: str,
    budget: int,
    candidates: np.ndarray,
    *,
    features: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
    margin: np.ndarray | None = None,
    loss: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Pick ``budget`` of the ``candidates`` (row indices). ``features`` (N, D) must be finite on the
    candidate and labelled rows; ``entropy``/``margin``/``loss`` are (N,) per-row values."""
    if strategy not in STRATEGIES:
        raise DrivelabError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    candidates = np.asarray(candidates, dtype=np.int64)
    labelled = np.zeros(0, np.int64) if labelled is None else np.asarray(labelled, dtype=np.int64)
    if budget < 1:
        raise DrivelabError(f"the budget must be >= 1, got {budget}")
    if len(candidates) == 0:
        raise DrivelabError("the pool is empty: there is no unlabelled image to choose from")
    if budget > len(candidates):
        raise DrivelabError(
            f"the budget ({budget}) is larger than the pool ({len(candidates)} unlabelled images)"
        )
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return rng.permutation(candidates)[:budget]
    if strategy in ("entropy", "margin"):
        values = entropy if strategy == "entropy" else margin
        if values is None or not np.isfinite(values[candidates]).any():
            raise DrivelabError(f"strategy {strategy!r} needs a '{strategy}' column with values for the pool")
        key = values[candidates] if strategy == "entropy" else -values[candidates]
        return candidates[doubtful_first(key, rng)[:budget]]
    if features is None:
        raise DrivelabError(f"strategy {strategy!r} needs features")
    from drivelab.engine.project import prepare

    rows = np.concatenate([candidates, labelled])
    # a density ratio needs the features' own metric; the others see standardised PCA
    px = prepare(features, seed=seed, rows=rows, standardise=strategy != "uncovered")
    x = np.zeros((len(features), px.shape[1]), np.float32)
    x[rows] = px
    del px
    if strategy == "kcenter":
        return kcenter_greedy(x, labelled, candidates, budget, seed=seed)
    if strategy == "uncovered":
        return uncovered_first(x, labelled, candidates, rows, budget, seed=seed)
    if strategy == "clusters":
        doubt = doubt_of(candidates, entropy, margin)
        if doubt is None:
            raise DrivelabError("strategy 'clusters' needs an 'entropy' or 'margin' column")
        return cluster_round_robin(x, candidates, rows, budget, doubt, seed=seed)
    weight = uncertainty_weight(x, candidates, labelled, entropy, margin, loss)
    return kcenter_greedy(x, labelled, candidates, budget, weight=weight, seed=seed)


def uncertainty_weight(
    x: np.ndarray,
    candidates: np.ndarray,
    labelled: np.ndarray,
    entropy: np.ndarray | None,
    margin: np.ndarray | None,
    loss: np.ndarray | None,
) -> np.ndarray:
    """Per-candidate weight in (0, 1]: how uncertain / how likely to be high-loss it is."""
    parts = []
    doubt = doubt_of(candidates, entropy, margin)
    if doubt is not None:
        parts.append(rank01(doubt))
    if loss is not None and len(labelled):
        known = labelled[np.isfinite(loss[labelled])]
        if len(known):
            parts.append(rank01(knn_predict(x, known, loss[known], candidates)))
    if not parts:
        raise DrivelabError(
            "strategy 'combined' needs an 'entropy' or 'margin' column (or losses of labelled images)"
        )
    return np.mean(parts, axis=0)
