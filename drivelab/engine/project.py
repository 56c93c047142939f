"""Feature space utilities: 2-D projection (UMAP, t-SNE, PCA) and clustering (k-means, HDBSCAN).

Features are first standardised per dimension and reduced to at most 50 PCA components: pooled
CNN features have a few huge-variance channels that would otherwise decide every distance, and
50 dimensions keep k-means, HDBSCAN and k-center greedy fast on big pools.
"""

from __future__ import annotations

import math

import numpy as np

from drivelab.errors import DrivelabError

PROJECTIONS = ("umap", "tsne", "pca")
CLUSTERINGS = ("kmeans", "hdbscan")


def prepare(
    features: np.ndarray, dims: int = 50, seed: int = 0, rows: np.ndarray | None = None,
    standardise: bool = True,
) -> np.ndarray:
    """(N, D) features (or their ``rows``, in that order) -> (N, <=dims) standardised PCA
    coordinates (float32). The rows must be finite. ``standardise=False`` only centres them, so
    distances keep the features' own scale (what a density estimate needs: standardising lifts
    near-constant, noisy dimensions to the weight of the informative ones).

    ``features`` may be a memory-mapped matrix: it is read in row blocks into one float64 working
    copy (4 GB at 1M x 512), standardised in place, and PCA (scikit-learn; on tall matrices its
    ``covariance_eigh`` solver, which makes no further N x D copy) reduces it."""
    from sklearn.decomposition import PCA

    from drivelab.engine.table import iter_blocks

    shape = tuple(getattr(features, "shape", ()))
    if rows is not None and len(shape) == 2:
        shape = (len(rows), shape[1])
    if len(shape) != 2 or shape[0] == 0:
        raise DrivelabError(f"need a non-empty (N, D) feature matrix, got shape {shape}")
    n, d = shape
    x = np.empty((n, d), dtype=np.float64)
    for a, b in iter_blocks(n):
        x[a:b] = features[a:b] if rows is None else features[rows[a:b]]
        if not np.isfinite(x[a:b]).all():
            raise DrivelabError("features contain NaN or inf (drop those rows first)")
    mean = x.mean(axis=0)
    var = np.zeros(d)
    for a, b in iter_blocks(n):
        var += ((x[a:b] - mean) ** 2).sum(axis=0)
    std = np.sqrt(var / n)
    x -= mean
    if standardise:
        x /= np.where(std > 1e-12, std, 1.0)
    k = min(dims, d, n)
    if k < d and n > 1:
        x = PCA(n_components=k, random_state=seed, copy=False).fit_transform(x)
    return x.astype(np.float32)


def project(features: np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) map coordinates with UMAP, t-SNE or PCA."""
    if method not in PROJECTIONS:
        raise DrivelabError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    return project_prepared(prepare(features, seed=seed), method, seed)


def project_prepared(x: np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """``project`` on coordinates ``prepare`` already made (the map clusters the same matrix)."""
    if method not in PROJECTIONS:
        raise DrivelabError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    n = len(x)
    if n < 3:
        raise DrivelabError(f"a map needs at least 3 samples with finite features, got {n}")
    if method == "pca" or x.shape[1] < 2:
        from sklearn.decomposition import PCA

        out = PCA(n_components=min(2, x.shape[1]), random_state=seed).fit_transform(x)
        if out.shape[1] == 1:
            out = np.concatenate([out, np.zeros_like(out)], axis=1)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        # Barnes-Hut pays off only on big sets; on small ones its OpenMP start-up dominates.
        method_ = "exact" if n <= 2000 else "barnes_hut"
        out = TSNE(
            n_components=2, perplexity=perplexity, init="pca", method=method_, random_state=seed
        ).fit_transform(x)
    else:
        import warnings

        import umap

        with warnings.catch_warnings():
            # umap warns that a fixed random_state disables parallelism: that is the point here.
            warnings.simplefilter("ignore", UserWarning)
            reducer = umap.UMAP(
                n_components=2,
                n_neighbors=max(2, min(15, n - 1)),
                min_dist=0.1,
                random_state=seed,
                init="spectral" if n > 10 else "random",
            )
            out = reducer.fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def default_k(n: int) -> int:
    """A cluster count that grows slowly with the pool: sqrt(N / 2), between 2 and 20."""
    return int(min(20, max(2, round(math.sqrt(n / 2)))))


def check_clustering(method: str) -> None:
    if method not in CLUSTERINGS:
        raise DrivelabError(f"unknown clustering {method!r}; choose one of {', '.join(CLUSTERINGS)}")


def cluster(
    features: np.ndarray,
    method: str = "kmeans",
    k: int | None = None,
    min_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """(N, D) features -> (N,) int cluster ids (HDBSCAN marks noise as -1)."""
    check_clustering(method)
    return cluster_prepared(prepare(features, seed=seed), method, k=k, min_size=min_size, seed=seed)


def cluster_prepared(
    x: np.ndarray,
    method: str = "kmeans",
    k: int | None = None,
    min_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``cluster`` on coordinates ``prepare`` already made (prune and the map reuse them)."""
    check_clustering(method)
    n = len(x)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        k = default_k(n) if k is None else int(k)
        if k < 1:
            raise DrivelabError(f"the cluster count must be >= 1, got {k}")
        k = min(k, n)
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x).astype(np.int64)
    from sklearn.cluster import HDBSCAN

    if n < 2:
        return np.zeros(n, dtype=np.int64)
    min_size = int(min_size or max(3, min(50, n // 20)))
    labels = HDBSCAN(min_cluster_size=max(2, min(min_size, n)), copy=True).fit_predict(x)
    return labels.astype(np.int64)


def centre_distances(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Distance of every row to the mean of its cluster (noise rows, label -1, get NaN)."""
    d = np.full(len(x), np.nan, dtype=np.float64)
    for c in np.unique(labels):
        if c < 0:
            continue
        idx = np.flatnonzero(labels == c)
        centre = x[idx].mean(axis=0)
        d[idx] = np.linalg.norm(x[idx] - centre, axis=1)
    return d
