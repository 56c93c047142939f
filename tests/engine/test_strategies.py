"""Selection, pruning, projection, audit scoring and table validation on synthetic arrays."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from drivelab.engine.project import cluster, project
from drivelab.engine.prune import allocate, prune
from drivelab.engine.select import select_indices
from drivelab.engine.table import check_names, load_table
from drivelab.errors import DrivelabError
from drivelab.io import write_table


def blobs(seed: int = 0, sizes: tuple[int, ...] = (60, 20), dim: int = 12, gap: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(i * gap, 1.0, (n, dim)) for i, n in enumerate(sizes)]).astype(
        np.float32
    )


# --------------------------------------------------------------------------- select
def test_uncertainty_strategies_rank_by_entropy_and_margin():
    rng = np.random.default_rng(1)
    entropy, margin = rng.random(50), rng.random(50)
    cand = np.arange(10, 50)
    picked = select_indices("entropy", 5, cand, entropy=entropy)
    assert set(picked) == set(cand[np.argsort(-entropy[cand])[:5]])
    picked = select_indices("margin", 5, cand, margin=margin)
    assert set(picked) == set(cand[np.argsort(margin[cand])[:5]])


def test_kcenter_covers_the_region_the_labelled_set_misses():
    x = blobs(sizes=(60, 20))
    labelled = np.arange(0, 30)  # all in blob 0
    cand = np.arange(30, 80)
    first = select_indices("kcenter", 1, cand, features=x, labelled=labelled)
    assert first[0] >= 60  # the uncovered blob
    picks = select_indices("kcenter", 6, cand, features=x, labelled=labelled)
    assert len(set(picks)) == 6 and set(picks) <= set(cand)

    def radius(chosen):  # farthest any pool image is from the labelled-or-chosen set
        centres = x[np.concatenate([labelled, chosen])]
        return np.linalg.norm(x[cand][:, None] - centres[None], axis=2).min(1).max()

    rand = [radius(select_indices("random", 6, cand, seed=s)) for s in range(5)]
    assert radius(picks) < min(rand)


def test_combined_prefers_uncertain_images_in_sparse_regions():
    x = blobs(sizes=(60, 20, 20), gap=8.0)
    labelled = np.arange(0, 30)
    cand = np.arange(30, 100)
    entropy = np.zeros(100)
    entropy[80:] = 1.0  # blob 2 is where the model is unsure
    entropy[60:80] = 0.1
    picks = select_indices("combined", 4, cand, features=x, labelled=labelled, entropy=entropy)
    assert picks[0] >= 80
    assert len(set(picks)) == 4


def test_clusters_gives_a_rare_well_separated_group_its_turn():
    # A common scene type (200 rows) with a few images the model doubts most, and a rare one (20
    # rows, far away in feature space) it doubts a little less: top-k entropy spends the whole
    # batch on the common type, the cluster round robin gives the rare group picks in its first pass.
    x = blobs(sizes=(200, 20), gap=10.0)
    rng = np.random.default_rng(2)
    entropy = np.concatenate([rng.uniform(0.3, 1.0, 200), rng.uniform(0.8, 0.9, 20)])
    labelled = np.arange(0, 10)
    cand = np.arange(10, 220)
    assert not (select_indices("entropy", 8, cand, entropy=entropy) >= 200).any()
    picks = select_indices("clusters", 8, cand, features=x, labelled=labelled, entropy=entropy, seed=0)
    assert len(set(picks)) == 8 and set(picks) <= set(cand)
    assert (picks >= 200).sum() >= 1
    assert int(cand[np.argmax(entropy[cand])]) in picks  # the most doubtful image's cluster has a turn
    # A budget above the cluster cap takes several turns per cluster: still distinct picks.
    from drivelab.engine.select import cluster_round_robin

    many = cluster_round_robin(x, cand, np.arange(220), 30, entropy[cand], max_k=3)
    assert len(set(many)) == 30 and set(many) <= set(cand)
    # Margin stands in when there is no entropy; neither is an error naming the strategy.
    margin = 1 - entropy
    by_margin = select_indices("clusters", 8, cand, features=x, labelled=labelled, margin=margin, seed=0)
    assert set(by_margin) == set(picks)
    with pytest.raises(DrivelabError, match="'clusters' needs an 'entropy' or 'margin'"):
        select_indices("clusters", 8, cand, features=x, labelled=labelled)


def test_uncovered_finds_a_tight_unlabelled_group_and_passes_over_outliers():
    # A broad common scene type with labels, a tight rare group no label reaches (night), and
    # scattered outliers farther away still: k-center goes to the outliers first, uncovered to
    # the tight group, and once that group has labels it is covered and the next picks move on.
    rng = np.random.default_rng(4)
    common = rng.normal(0.0, 3.0, (300, 12))
    rare = rng.normal(0.0, 0.3, (24, 12)) + 14.0
    outliers = rng.normal(0.0, 1.0, (6, 12)) * 30.0 + 40.0
    x = np.concatenate([common, rare, outliers]).astype(np.float32)
    labelled = np.arange(0, 20)
    cand = np.arange(20, len(x))
    picks = select_indices("uncovered", 8, cand, features=x, labelled=labelled)
    assert len(set(picks)) == 8 and ((picks >= 300) & (picks < 324)).all()
    assert select_indices("kcenter", 1, cand, features=x, labelled=labelled)[0] >= 324
    covered = np.concatenate([labelled, np.arange(300, 312)])
    rest = np.setdiff1d(cand, covered)
    after = select_indices("uncovered", 8, rest, features=x, labelled=covered)
    assert ((after >= 300) & (after < 324)).sum() <= 2
    # no label yet: the densest images first; a pool of one image is still a pick
    first = select_indices("uncovered", 5, cand, features=x)
    assert ((first >= 300) & (first < 324)).all()
    assert list(select_indices("uncovered", 1, np.array([3]), features=x)) == [3]


def test_random_is_seeded_and_bad_budgets_fail_clearly():
    cand = np.arange(20)
    a = select_indices("random", 5, cand, seed=3)
    assert list(a) == list(select_indices("random", 5, cand, seed=3)) and len(set(a)) == 5
    with pytest.raises(DrivelabError, match="larger than the pool"):
        select_indices("random", 21, cand)
    with pytest.raises(DrivelabError, match="pool is empty"):
        select_indices("entropy", 1, np.zeros(0, np.int64), entropy=np.zeros(0))
    with pytest.raises(DrivelabError, match="unknown strategy"):
        select_indices("coreset-magic", 1, cand)
    with pytest.raises(DrivelabError, match="budget must be"):
        select_indices("random", 0, cand)


# --------------------------------------------------------------------------- prune
def test_allocate_respects_total_sizes_and_minimum_one():
    q = allocate(np.array([5, 10, 1, 30]), np.array([1.0, 1.0, 1.0, 1.5]), 20)
    assert q.sum() == 20 and (q >= 1).all() and (q <= [5, 10, 1, 30]).all()
    assert allocate(np.array([2, 2]), np.ones(2), 10).tolist() == [2, 2]


def test_prune_never_drops_high_loss_clusters_and_drops_typical_samples():
    x = blobs(sizes=(80, 40, 20), gap=10.0)
    loss = np.r_[np.full(80, 0.1), np.full(40, 0.2), np.full(20, 2.0)]
    r = prune(x, loss, keep=0.5, k=3, protect=0.3)
    assert r.keep[120:].all()  # the high-loss blob is whole
    assert r.keep.sum() == 70
    for blob in (slice(0, 80), slice(80, 120)):
        members = np.flatnonzero(r.clusters == np.bincount(r.clusters[blob]).argmax())
        kept, dropped = members[r.keep[members]], members[~r.keep[members]]
        assert len(kept) >= 1 and len(dropped) >= 1
        # what is dropped is the core: nearer the centre than what is kept
        assert r.distance[dropped].mean() < r.distance[kept].mean()
    rep = r.report.set_index("cluster")
    assert rep["protected"].sum() == 1 and rep.loc[rep["protected"], "dropped"].sum() == 0


def test_prune_keeps_rows_without_features_and_validates_keep():
    x = blobs(sizes=(30, 30))
    x[3] = np.nan
    loss = np.r_[np.full(30, 0.1), np.full(30, 1.0)]
    r = prune(x, loss, keep=0.6, k=2, protect=0.5)
    assert r.keep[3] and r.clusters[3] == -2
    assert any("NaN" in n for n in r.notes)
    with pytest.raises(DrivelabError, match="fraction"):
        prune(x, loss, keep=1.5)
    with pytest.raises(DrivelabError, match="NaN/inf"):
        prune(np.full((4, 3), np.nan), np.ones(4), keep=0.5)


# --------------------------------------------------------------------------- projection / clustering
@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_separates_blobs(method):
    x = blobs(sizes=(20, 20))
    xy = project(x, method)
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    a, b = xy[:20].mean(0), xy[20:].mean(0)
    spread = max(xy[:20].std(0).max(), xy[20:].std(0).max())
    assert np.linalg.norm(a - b) > 2 * spread


def test_clustering_finds_blobs_and_rejects_bad_input():
    x = blobs(sizes=(30, 30))
    for method in ("kmeans", "hdbscan"):
        labels = cluster(x, method, k=2)
        assert len(set(labels[:30])) == 1 and len(set(labels[30:])) == 1 and labels[0] != labels[-1]
    with pytest.raises(DrivelabError, match="NaN"):
        project(np.full((5, 3), np.nan), "pca")
    with pytest.raises(DrivelabError, match="at least 3"):
        project(x[:2], "pca")
    with pytest.raises(DrivelabError, match="unknown projection"):
        project(x, "mds")


# --------------------------------------------------------------------------- table validation
def _table(tmp_path, n=5, dim=4, feats_rows=None, meta=None):
    df = pd.DataFrame({"name": [f"{i}.png" for i in range(n)], "loss": np.linspace(0, 1, n)})
    write_table(tmp_path / "table.parquet", df)
    np.save(tmp_path / "features.npy", np.ones((feats_rows or n, dim), np.float32))
    if meta:
        (tmp_path / "embed.json").write_text(json.dumps(meta))
    return tmp_path


def test_table_validation_messages(tmp_path):
    t = load_table(_table(tmp_path / "ok"))
    assert t.features.shape == (5, 4) and t.names[0] == "0.png"
    with pytest.raises(DrivelabError, match="not from the same embed run"):
        load_table(_table(tmp_path / "rows", feats_rows=7))
    with pytest.raises(DrivelabError, match="another model"):
        load_table(_table(tmp_path / "dim", meta={"feature_dim": 8}))
    with pytest.raises(DrivelabError, match="another dataset"):
        check_names(t, ["0.png", "1.png"], "the pool")
    with pytest.raises(DrivelabError, match="table not found"):
        load_table(tmp_path / "nothing")
    # features may also come as a column of vectors
    df = pd.DataFrame({"name": ["a", "b", "c"], "features": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]})
    write_table(tmp_path / "col.parquet", df)
    t = load_table(tmp_path / "col.parquet")
    assert t.features.shape == (3, 2) and "features" not in t.df.columns
    write_table(tmp_path / "dup.parquet", pd.DataFrame({"name": ["a", "a"], "features": [[1.0], [2.0]]}))
    with pytest.raises(DrivelabError, match="twice"):
        load_table(tmp_path / "dup.parquet")
