"""What to prune: drop the most typical samples of clusters the model already handles.

For a target ``keep`` fraction:

1. cluster the features (k-means by default; HDBSCAN noise points are outliers and always kept);
2. rank clusters by mean loss (entropy when the table has no loss); the top ``protect`` share of
   clusters is *never* pruned: the model still fails there;
3. share the remaining budget over the other clusters in proportion to size x a loss weight, at
   least one sample per cluster, so every sub-group keeps representatives;
4. inside a cluster, pick its quota with k-center greedy seeded by the cluster centre: the first
   pick is the sample farthest from the centre, each next one the sample farthest from the centre
   and from everything already kept. The dense core near the centre (the most typical, most
   redundant samples) is what gets dropped, while distinct sub-groups inside the cluster each
   keep members.

Rows without finite features cannot be placed and are kept (and counted in the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from drivelab.errors import DrivelabError


@dataclass
class PruneResult:
    keep: np.ndarray  # (N,) bool
    clusters: np.ndarray  # (N,) int; -1 HDBSCAN noise, -2 no finite features
    distance: np.ndarray  # (N,) distance to the cluster centre (NaN where undefined)
    report: pd.DataFrame  # one row per cluster
    notes: list[str]


def allocate(sizes: np.ndarray, weights: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas summing to ``min(total, sizes.sum())``, proportional to sizes x weights,
    at least 1 per group when ``total`` allows it, never above a group's size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(min(total, sizes.sum()))
    quota = np.zeros(len(sizes), dtype=np.int64)
    if total <= 0 or len(sizes) == 0:
        return quota
    if total >= len(sizes):
        quota[:] = np.minimum(1, sizes)
    left = total - quota.sum()
    while left > 0:
        room = sizes - quota
        share = np.where(room > 0, sizes * np.asarray(weights, dtype=np.float64), 0.0)
        if share.sum() <= 0:
            break
        want = share / share.sum() * left
        add = np.minimum(np.floor(want).astype(np.int64), room)
        if add.sum() == 0:  # hand out the remainder by the largest fractional part
            order = np.argsort(-(want - np.floor(want)), kind="stable")
            for j in order:
                if left == 0:
                    break
                if room[j] > 0:
                    quota[j] += 1
                    left -= 1
            continue
        quota += add
        left -= int(add.sum())
    return quota


EXACT_BLOCK = 2048  # clusters up to this size get exact farthest-first; bigger ones go in blocks


def farthest_first(x: np.ndarray, centre: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` row indices of ``x``: k-center greedy with ``centre`` as the first, virtual, centre.

    Exact farthest-first costs O(rows x picks), which is quadratic in the cluster size when a
    fixed fraction is kept. A cluster of more than ``EXACT_BLOCK`` rows is therefore split at
    random (seeded) into blocks of at most that size, each block keeps its share of ``n`` (in
    proportion to its size) by exact farthest-first from the same centre: every block is a
    random sample of the cluster, so each still drops its core, and the cost is linear in the
    cluster size. Clusters up to ``EXACT_BLOCK`` rows get exactly the unblocked result."""
    n = min(n, len(x))
    if len(x) <= EXACT_BLOCK:
        return _farthest_first_exact(x, centre, n)
    rng = np.random.default_rng(seed)
    blocks = np.array_split(rng.permutation(len(x)), -(-len(x) // EXACT_BLOCK))
    quota = allocate(np.array([len(b) for b in blocks]), np.ones(len(blocks)), n)
    picks = [b[_farthest_first_exact(x[b], centre, int(q))] for b, q in zip(blocks, quota, strict=True)]
    return np.concatenate(picks) if picks else np.zeros(0, np.int64)


def _farthest_first_exact(x: np.ndarray, centre: np.ndarray, n: int) -> np.ndarray:
    mind = np.linalg.norm(x - centre, axis=1)
    picked = np.empty(min(n, len(x)), dtype=np.int64)
    for t in range(len(picked)):
        j = int(np.argmax(mind))
        picked[t] = j
        np.minimum(mind, np.linalg.norm(x - x[j], axis=1), out=mind)
        # every earlier pick already sits at -1 (min with a distance keeps it there)
        mind[j] = -1.0
    return picked


def prune(
    features: np.ndarray,
    loss: np.ndarray,
    keep: float,
    *,
    clusters: np.ndarray | None = None,
    method: str = "kmeans",
    k: int | None = None,
    protect: float = 0.25,
    seed: int = 0,
) -> PruneResult:
    """Choose which rows to keep (see the module docstring)."""
    from drivelab.engine.project import cluster_prepared, prepare

    n = len(features)
    if not 0.0 < keep <= 1.0:
        raise DrivelabError(f"--keep must be a fraction in (0, 1], got {keep}")
    if not 0.0 <= protect <= 1.0:
        raise DrivelabError(f"--protect must be a fraction in [0, 1], got {protect}")
    if n == 0:
        raise DrivelabError("nothing to prune: the table is empty")
    loss = np.asarray(loss, dtype=np.float64)
    from drivelab.engine.table import finite_rows

    finite = finite_rows(features)
    notes: list[str] = []
    if (~finite).any():
        notes.append(f"{int((~finite).sum())} rows have NaN/inf features; they cannot be placed and are kept")
    if finite.sum() == 0:
        raise DrivelabError("every row has NaN/inf features: nothing can be clustered")
    if not np.isfinite(loss[finite]).any():
        raise DrivelabError(
            "no finite loss (or entropy) values: prune needs to know where the model does well"
        )
    loss = np.where(np.isfinite(loss), loss, np.nanmean(loss[finite]))
    idx = np.flatnonzero(finite)
    x = prepare(features, seed=seed, rows=None if finite.all() else idx)
    labels = np.full(n, -2, dtype=np.int64)
    labels[idx] = cluster_prepared(x, method, k=k, seed=seed) if clusters is None else clusters[idx]
    keep_mask = ~finite | (labels == -1)
    dist = np.full(n, np.nan)
    pos = np.full(n, -1, dtype=np.int64)  # row -> its row in x
    pos[idx] = np.arange(len(idx))
    # Rows of each cluster in one sort (not one pass over N per cluster: HDBSCAN finds hundreds).
    order = np.argsort(labels, kind="stable")
    uniq, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    members = {int(c): order[a : a + m] for c, a, m in zip(uniq, starts, counts, strict=True) if c >= 0}
    ids = sorted(members)
    centres = {}
    for c in ids:
        cx = x[pos[members[c]]]
        centres[c] = cx.mean(axis=0)
        dist[members[c]] = np.linalg.norm(cx - centres[c], axis=1)
    mean_loss = np.array([loss[members[c]].mean() for c in ids])
    sizes = np.array([len(members[c]) for c in ids])
    n_protect = math.ceil(protect * len(ids)) if protect > 0 else 0
    protected = np.zeros(len(ids), dtype=bool)
    protected[np.argsort(-mean_loss, kind="stable")[:n_protect]] = True
    for c, p in zip(ids, protected, strict=True):
        if p:
            keep_mask[members[c]] = True
    target = int(round(keep * n))
    left = target - int(keep_mask.sum())
    if left < 0:
        notes.append(
            f"high-loss clusters, outliers and rows without features alone hold {int(keep_mask.sum())} "
            f"samples, more than --keep {keep} ({target}); none of them is dropped, so "
            f"{keep_mask.mean():.1%} is kept"
        )
        left = 0
    free = ~protected
    # Higher-loss clusters keep more: weight 0.5 .. 1.5 by loss rank among the prunable clusters.
    from drivelab.engine.select import rank01

    weights = 0.5 + rank01(mean_loss[free]) if free.any() else np.zeros(0)
    quota = np.zeros(len(ids), dtype=np.int64)
    quota[free] = allocate(sizes[free], weights, left)
    for c, q, p in zip(ids, quota, protected, strict=True):
        if p or q == 0:
            continue
        rows = members[c]
        keep_mask[rows[farthest_first(x[pos[rows]], centres[c], int(q), seed=seed)]] = True
    report = []
    for c, p, ml in zip(ids, protected, mean_loss, strict=True):
        rows = members[c]
        kept, dropped = rows[keep_mask[rows]], rows[~keep_mask[rows]]
        report.append(
            {
                "cluster": int(c),
                "size": len(rows),
                "mean_loss": float(ml),
                "protected": bool(p),
                "kept": len(kept),
                "dropped": len(dropped),
                "mean_dist_kept": float(dist[kept].mean()) if len(kept) else float("nan"),
                "mean_dist_dropped": float(dist[dropped].mean()) if len(dropped) else float("nan"),
            }
        )
    for c, what in ((-1, "outliers (HDBSCAN noise)"), (-2, "no finite features")):
        rows = labels == c
        if rows.any():
            report.append(
                {
                    "cluster": int(c),
                    "size": int(rows.sum()),
                    "mean_loss": float(loss[rows].mean()),
                    "protected": True,
                    "kept": int(rows.sum()),
                    "dropped": 0,
                    "mean_dist_kept": float("nan"),
                    "mean_dist_dropped": float("nan"),
                    "note": what,
                }
            )
    return PruneResult(keep_mask, labels, dist, pd.DataFrame(report), notes)
