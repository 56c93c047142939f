"""What lets the engine grow with the pool: memory-mapped features read in blocks, k-center greedy
with bounded memory, prune in linear time, a map page that grows by tens of bytes per point."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import drivelab.engine.table as table_mod
from drivelab.engine.project import prepare
from drivelab.engine.prune import EXACT_BLOCK, farthest_first
from drivelab.engine.select import kcenter_greedy
from drivelab.engine.table import finite_rows, load_table
from drivelab.io import write_table


def _pool(tmp_path: Path, n: int, dim: int = 16, seed: int = 0, name_len: int = 24) -> Path:
    rng = np.random.default_rng(seed)
    folder = tmp_path / f"pool{n}"
    names = [f"{i:0{name_len - 4}d}.png" for i in range(n)]
    df = pd.DataFrame(
        {
            "name": names,
            "split": np.where(np.arange(n) % 5 == 4, "val", "train"),
            "labelled": np.arange(n) % 10 == 0,
            "loss": rng.random(n),
            "entropy": rng.random(n),
            "margin": rng.random(n),
            "miou": rng.random(n),
        }
    )
    write_table(folder / "table.parquet", df)
    np.save(folder / "features.npy", rng.normal(size=(n, dim)).astype(np.float32))
    return folder


def test_features_are_memory_mapped_and_checked_in_blocks(tmp_path, monkeypatch):
    folder = _pool(tmp_path, 50)
    feats = np.load(folder / "features.npy")
    feats[[3, 20, 49]] = np.nan
    np.save(folder / "features.npy", feats)
    t = load_table(folder)
    assert isinstance(t.features, np.memmap) and not t.features.flags.writeable
    monkeypatch.setattr(table_mod, "BLOCK_ROWS", 7)  # 8 blocks, NaN rows in three of them
    assert np.array_equal(finite_rows(t.features), np.isfinite(feats).all(axis=1))
    assert np.flatnonzero(~t.finite_rows()).tolist() == [3, 20, 49]


def test_prepare_in_blocks_equals_one_pass(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    feats = (rng.normal(size=(300, 80)) * rng.uniform(0.1, 10, 80)).astype(np.float32)
    one = prepare(feats)
    rows = rng.permutation(300)[:200]
    subset = prepare(feats[rows])
    monkeypatch.setattr(table_mod, "BLOCK_ROWS", 64)
    assert np.allclose(prepare(feats), one, atol=1e-5)
    assert np.allclose(prepare(feats, rows=rows), subset, atol=1e-5)  # rows are gathered block by block
    with pytest.raises(Exception, match="NaN"):
        bad = feats.copy()
        bad[250, 3] = np.inf
        prepare(bad)


def _kcenter_reference(x, labelled, candidates, budget, weight=None):
    """Textbook k-center greedy with the full distance matrix (float64)."""
    d = np.linalg.norm(x[candidates][:, None].astype(np.float64) - x[None].astype(np.float64), axis=2)
    mind = d[:, labelled].min(axis=1) if len(labelled) else np.full(len(candidates), np.inf)
    w = np.ones(len(candidates)) if weight is None else weight
    picked = []
    for _ in range(budget):
        score = np.where(np.isin(np.arange(len(candidates)), picked), -np.inf, mind * w)
        j = int(np.argmax(score))
        picked.append(j)
        mind = np.minimum(mind, d[:, candidates[j]])
    return candidates[picked]


@pytest.mark.parametrize("weighted", [False, True])
def test_kcenter_greedy_is_exact(weighted):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(c, 1.0, (80, 10)) for c in (0, 6, 12)]).astype(np.float32)
    perm = rng.permutation(len(x))
    labelled, candidates = perm[:40], perm[40:]
    weight = rng.uniform(0.2, 1.0, len(candidates)) if weighted else None
    got = kcenter_greedy(x, labelled, candidates, 25, weight=weight)
    assert got.tolist() == _kcenter_reference(x, labelled, candidates, 25, weight).tolist()


def test_kcenter_memory_stays_bounded():
    # 20k candidates x 2k labelled: the earlier (candidates x 1024 x dims) float64 difference blocks
    # would ask for 8 GB; the chunked distances and one mat-vec per pick need a few MB.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(22000, 50)).astype(np.float32)
    tracemalloc.start()
    try:
        picks = kcenter_greedy(x, np.arange(2000), np.arange(2000, 22000), 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(set(picks.tolist())) == 40 and picks.min() >= 2000
    assert peak < 120 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_prune_farthest_first_in_blocks_drops_the_core():
    rng = np.random.default_rng(4)
    core = rng.normal(0, 0.3, (EXACT_BLOCK * 2, 8))  # a dense core
    ring = rng.normal(0, 1.0, (EXACT_BLOCK, 8))
    ring *= 3 / np.linalg.norm(ring, axis=1, keepdims=True)  # a sparse shell around it
    x = np.concatenate([core, ring]).astype(np.float32)
    centre = x.mean(axis=0)
    keep = farthest_first(x, centre, EXACT_BLOCK, seed=0)
    assert len(set(keep.tolist())) == EXACT_BLOCK
    assert (keep >= 2 * EXACT_BLOCK).mean() > 0.9  # the shell is kept, the core dropped
    assert keep.tolist() == farthest_first(x, centre, EXACT_BLOCK, seed=0).tolist()  # seeded
    small = x[: EXACT_BLOCK // 4]  # at most EXACT_BLOCK rows: plain exact farthest-first
    d = np.linalg.norm(small - centre, axis=1)
    assert farthest_first(small, centre, 1)[0] == int(np.argmax(d))


def test_map_page_grows_by_tens_of_bytes_per_point(tmp_path):
    from drivelab.engine.map import build_map

    sizes = {}
    for n in (200, 2200):
        paths = build_map(_pool(tmp_path, n), tmp_path / f"m{n}.html", projection="pca", k=3, thumbs=False,
                          progress=False)
        sizes[n] = paths["html"].stat().st_size
        rows = sorted(p.name for p in (paths["files"] / "rows").iterdir())
        assert len(rows) == -(-n // 1000) and len(list((paths["files"] / "cols").iterdir())) == 4
    per_point = (sizes[2200] - sizes[200]) / 2000
    # x, y, colour (float32), size, cluster, split, 4 quantised hover metrics and a 24-character name
    assert 40 < per_point < 90, per_point


def test_embed_consolidates_chunks_in_dataset_order(tmp_path):
    from drivelab.engine.embed import _consolidate

    out = tmp_path / "emb"
    chunks = [["c.png", "a.png"], ["b.png", "a.png", "old.png"]]  # a.png redone in the second chunk
    for i, names in enumerate(chunks):
        feats = np.array([[ord(n[0]), i] for n in names], np.float32)
        write_table(out / "chunks" / f"part-{i:05d}.parquet", pd.DataFrame({"name": names}))
        np.save(out / "chunks" / f"part-{i:05d}.npy", feats)
    _consolidate(out, ["a.png", "b.png", "c.png"])
    t = load_table(out)
    assert t.names == ["a.png", "b.png", "c.png", "old.png"]
    assert t.features.tolist() == [[97, 1], [98, 1], [99, 0], [111, 1]]  # the latest a.png wins


def test_hexbin_counts_every_point_once_in_regular_hexagons():
    from drivelab.engine.map import density_traces, hexbin

    rng = np.random.default_rng(6)
    x, y = rng.normal(0, 3, 5000), rng.normal(0, 1, 5000)
    hx, hy, counts, sx, sy = hexbin(x, y, gridsize=30)
    assert counts.sum() == 5000 and len(hx) == len(counts) and (counts > 0).all()
    assert abs(sy / sx - np.sqrt(3)) < 0.15 * np.sqrt(3)  # regular hexagons: rows sqrt(3) sx apart
    # every point lies within the circumradius (sx / sqrt(3)) of the nearest non-empty centre
    d = np.hypot((x[:, None] - hx[None]) / sx, (y[:, None] - hy[None]) / sy * np.sqrt(3))
    assert d.min(axis=1).max() <= 1 / np.sqrt(3) + 1e-6
    traces = density_traces(x, y, gridsize=30)
    assert 1 <= len(traces) <= 6 and all(t.type == "scattergl" and t.hoverinfo == "skip" for t in traces)
