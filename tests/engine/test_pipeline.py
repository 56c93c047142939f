"""embed -> map -> select -> prune -> audit end to end through the CLI on a tiny synthetic set."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

from drivelab.engine.cli import register
from drivelab.engine.table import load_table, read_name_list
from drivelab.errors import DrivelabError
from drivelab.io import read_rgb
from drivelab.label.store import ReviewStore
from tests.engine.conftest import make_set, night_flags

# The engine's verbs on their own app: the tests do not depend on the other pillars' CLIs.
app = typer.Typer()
register(app)
runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, (DrivelabError, SystemExit)):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    """A pool dataset: 16 images, the last 6 without masks; about a quarter at night."""
    return make_set(tmp_path_factory.mktemp("pool") / "comma10k", n=16, seed=5, night=0.25, unlabelled=6)


@pytest.fixture(scope="module")
def embedded(engine_run: Path, pool: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb") / "pool"
    r = invoke("embed", engine_run, pool, "--out", out, "--batch", 4, "--chunk", 4)
    assert r.exit_code == 0, r.output
    return out


def test_embed_table_contents(embedded: Path, pool: Path):
    t = load_table(embedded)
    assert len(t) == 16 and t.features.shape[0] == 16 and np.isfinite(t.features).all()
    assert t.meta["classes"][0] == "road" and t.meta["feature_dim"] == t.features.shape[1]
    df = t.df
    labelled = df["labelled"].to_numpy()
    assert labelled.sum() == 10
    assert df.loc[labelled, "loss"].gt(0).all() and df.loc[~labelled, "loss"].isna().all()
    assert df["entropy"].between(0, 1).all() and df["margin"].between(0, 1).all()
    shares = df.loc[labelled, [c for c in df.columns if c.startswith("share_")]].sum(axis=1)
    assert np.allclose(shares, 1.0)
    # night images (as the generator drew them) are darker than day images
    night = night_flags(pool, list(df["name"]))
    assert 0 < night.sum() < 16
    assert df["brightness"][night].max() < df["brightness"][~night].min()
    assert (embedded / df["pred_path"].iloc[0]).exists()


def test_embed_resumes_and_refuses_another_model(
    embedded: Path, engine_run: Path, pool: Path, tmp_path: Path
):
    out = tmp_path / "resume"
    shutil.copytree(embedded, out)
    chunks = sorted((out / "chunks").glob("part-*.parquet"))
    assert len(chunks) == 4  # 16 images in chunks of 4
    # Simulate a crash before the last chunk landed: only that chunk's images are redone.
    chunks[-1].unlink()
    before = {p.name: p.stat().st_mtime_ns for p in chunks[:-1]}
    r = invoke("embed", engine_run, pool, "--out", out, "--chunk", 4)
    assert r.exit_code == 0, r.output
    assert {p.name: p.stat().st_mtime_ns for p in chunks[:-1]} == before
    a, b = load_table(embedded), load_table(out)
    assert a.names == b.names and np.allclose(a.features, b.features, atol=1e-5)
    # A checkpoint of another class set is refused with a one-line reason.
    ckpt = torch.load(engine_run / "best.pt", weights_only=False)
    ckpt["schema"]["classes"] = ckpt["schema"]["classes"][:4]
    ckpt["model_spec"]["num_classes"] = 4
    ckpt["model"] = {k: (v[:4] if k.startswith("net.head") else v) for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "other.pt")
    r = invoke("embed", tmp_path / "other.pt", pool, "--out", tmp_path / "x")
    assert isinstance(r.exception, DrivelabError) and "class mismatch" in str(r.exception)
    # The same folder with another model: refused unless --overwrite.
    other_run = tmp_path / "copy.pt"
    shutil.copy(engine_run / "best.pt", other_run)
    r = invoke("embed", other_run, pool, "--out", out)
    assert isinstance(r.exception, DrivelabError) and "another model or dataset" in str(r.exception)


def test_map_writes_html_png_and_cluster_summary(embedded: Path, tmp_path: Path):
    r = invoke("map", embedded, "--out", tmp_path / "map.html", "--projection", "umap", "--k", 2)
    assert r.exit_code == 0, r.output
    html = (tmp_path / "map.html").read_text()
    assert "Plotly" in html and not re.search(r"<script[^>]+src=[\"']https?:", html)  # works offline
    assert read_rgb(tmp_path / "map.png").shape[2] == 3
    summary = pd.read_csv(tmp_path / "map_clusters.csv")
    assert summary["size"].sum() == 16 and {"mean_loss", "mean_iou_road"} <= set(summary.columns)
    pts = pd.read_parquet(tmp_path / "map_points.parquet")
    assert len(pts) == 16 and pts[["x", "y"]].notna().all().all()
    # thumbnails and click-through strips are sheets beside the page, never inlined in it
    files = tmp_path / "map_files"
    assert [p.name for p in (files / "thumbs").iterdir()] == ["00000.jpg"]  # 16 thumbnails, one sheet
    assert sorted(p.name for p in (files / "views").iterdir()) == ["00000.jpg", "00001.jpg"]  # 8 a sheet
    assert "data:image/jpeg" not in html and len(list((files / "rows").iterdir())) == 1
    sheet = read_rgb(files / "views" / "00001.jpg")
    assert sheet.shape[0] == 8 * 64 and sheet.shape[1] == 3 * 128  # 8 strips of image | label | prediction
    r = invoke("map", embedded, "--out", tmp_path / "bad.html", "--projection", "pca", "--color", "nonsense")
    assert isinstance(r.exception, DrivelabError) and "cannot colour by" in str(r.exception)


def test_map_with_nan_features_is_explicit(embedded: Path, tmp_path: Path):
    folder = tmp_path / "nan"
    shutil.copytree(embedded, folder)
    feats = np.load(folder / "features.npy")
    feats[[0, 5]] = np.nan
    np.save(folder / "features.npy", feats)
    r = invoke("map", folder, "--out", tmp_path / "nan.html", "--projection", "pca", "--no-thumbs")
    assert r.exit_code == 0, r.output
    assert "2 of 16 images have NaN/inf features" in (tmp_path / "nan.html").read_text()
    assert len(pd.read_parquet(tmp_path / "nan_points.parquet")) == 14
    # select with kcenter skips them; a budget bigger than what is left fails clearly
    r = invoke("select", folder, "--budget", 3, "--strategy", "kcenter", "--out", tmp_path / "s.txt")
    assert r.exit_code == 0, r.output
    chosen = read_name_list(tmp_path / "s.txt")
    names = load_table(folder).names
    assert names[5] not in chosen and len(chosen) == 3


@pytest.mark.parametrize(
    "strategy", ["random", "entropy", "margin", "kcenter", "combined", "clusters", "uncovered"]
)
def test_select_strategies_choose_unlabelled(embedded: Path, tmp_path: Path, strategy: str):
    out = tmp_path / "next.txt"
    r = invoke("select", embedded, "--budget", 4, "--strategy", strategy, "--out", out)
    assert r.exit_code == 0, r.output
    names = read_name_list(out)
    df = load_table(embedded).df.set_index("name")
    assert len(names) == 4 and len(set(names)) == 4
    assert not df.loc[names, "labelled"].any()
    if strategy == "entropy":
        pool = df[~df["labelled"]]["entropy"]
        assert set(names) == set(pool.sort_values(ascending=False).index[:4])


def test_select_bad_input_and_queue(embedded: Path, pool: Path, tmp_path: Path):
    r = invoke("select", embedded, "--budget", 7, "--out", tmp_path / "a.txt")
    assert isinstance(r.exception, DrivelabError) and "larger than the pool (6" in str(r.exception)
    everything = tmp_path / "all.txt"
    everything.write_text("\n".join(load_table(embedded).names))
    r = invoke("select", embedded, "--budget", 1, "--labelled", everything, "--out", tmp_path / "b.txt")
    assert isinstance(r.exception, DrivelabError) and "pool is empty" in str(r.exception)
    # queue into the label store, best first
    store_root = tmp_path / "store"
    r = invoke(
        "select",
        embedded,
        "--budget",
        3,
        "--strategy",
        "entropy",
        "--out",
        tmp_path / "q.txt",
        "--queue",
        "--dataset",
        store_root,
    )
    assert r.exit_code == 0, r.output
    names = read_name_list(tmp_path / "q.txt")
    recs = {rec["name"]: rec for rec in ReviewStore(store_root).list()}
    assert set(recs) == set(names) and all(recs[n]["status"] == "unlabelled" for n in names)
    assert recs[names[0]]["priority"] > recs[names[-1]]["priority"]


def test_prune_keeps_fraction_and_reports(embedded: Path, tmp_path: Path):
    r = invoke("prune", embedded, "--keep", 0.5, "--out", tmp_path / "p", "--k", 3, "--by", "entropy")
    assert r.exit_code == 0, r.output
    kept, dropped = (
        read_name_list(tmp_path / "p" / "kept.txt"),
        read_name_list(tmp_path / "p" / "dropped.txt"),
    )
    assert len(kept) + len(dropped) == 16 and not set(kept) & set(dropped)
    report = pd.read_csv(tmp_path / "p" / "prune_report.csv")
    assert report["size"].sum() == 16 and report.loc[report["protected"], "dropped"].sum() == 0
    assert len(kept) == 8  # the protected cluster fits in the budget, so the fraction is exact
    per = pd.read_csv(tmp_path / "p" / "prune_samples.csv")
    assert per["kept"].sum() == 8 and set(per.loc[per["kept"], "name"]) == set(kept)
    r = invoke("prune", embedded, "--keep", 0, "--out", tmp_path / "q")
    assert isinstance(r.exception, DrivelabError)


def test_audit_ranks_a_corrupted_mask_high_and_pushes_it(engine_run: Path, engine_data: Path, tmp_path: Path):
    from drivelab.io import read_label, write_png
    from drivelab.schema import comma10k

    data = tmp_path / "audited"
    shutil.copytree(engine_data, data)
    schema = comma10k()
    # The tiny model barely knows the scene, but it does know the top of the frame is sky and
    # buildings ("undrivable"): labelling that as "my car" (the hood) in one mask is a gross error.
    victim = sorted(p.name for p in (data / "masks").iterdir())[4]
    rgb = read_rgb(data / "masks" / victim)
    mask, _ = schema.encode_colors(rgb)
    changed = (mask == 2) & (np.arange(mask.shape[0])[:, None] < mask.shape[0] // 3)
    mask[changed] = 4
    write_png(data / "masks" / victim, schema.colorize(mask))
    r = invoke("audit", engine_run, data, "--out", tmp_path / "audit", "--push", 2, "--top", 3)
    assert r.exit_code == 0, r.output
    ranked = pd.read_csv(tmp_path / "audit" / "audit.csv")
    # a 40-step model's soft-min scores are close; the victim must still be among the top two and
    # the image the model agrees with least on average
    assert victim in set(ranked["name"].iloc[:2])
    assert ranked.loc[ranked["mean_confidence"].idxmin(), "name"] == victim
    assert ranked["score"].is_monotonic_increasing
    # its worst region is the wrong class pair: labelled "my car", seen as undrivable
    row = ranked.set_index("name").loc[victim]
    assert row["region_pair"] == "my car -> undrivable" and row["region_area"] > 50
    # cleanlab's score is a column, and --rank softmin ranks by it alone
    r = invoke("audit", engine_run, data, "--out", tmp_path / "audit_sm", "--rank", "softmin", "--top", 1)
    assert r.exit_code == 0, r.output
    by_softmin = pd.read_csv(tmp_path / "audit_sm" / "audit.csv")
    assert by_softmin["softmin"].is_monotonic_increasing
    assert set(by_softmin["name"]) == set(ranked["name"])
    r = invoke("audit", engine_run, data, "--out", tmp_path / "x", "--rank", "magic")
    assert isinstance(r.exception, DrivelabError) and "--rank" in str(r.exception)
    stem = Path(victim).stem
    assert (tmp_path / "audit" / "overlays" / f"{stem}.jpg").exists()
    suspects = read_label(tmp_path / "audit" / "suspects" / f"{stem}.png") == 255
    # the tiny model is unsure of much, but the flagged pixels concentrate on the wrong label
    assert suspects.shape == changed.shape and suspects[changed].mean() > 3 * suspects[~changed].mean()
    rec = ReviewStore(data).get(victim)
    assert rec["status"] == "needs_fix" and rec["region"]["box"][1] < mask.shape[0] // 3  # box at the top
    assert len(ReviewStore(data).list(status="needs_fix")) == 2


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_map_opens_in_headless_chromium_without_errors(embedded: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    r = invoke("map", embedded, "--out", tmp_path / "m.html", "--projection", "pca", "--k", 2, "--density")
    assert r.exit_code == 0, r.output
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tmp_path / "m.html").as_uri())
        # WebGL draws no DOM node per dot: find the first dot's pixel through plotly's axes
        page.wait_for_function(
            "(() => { const g = document.getElementById('map');"
            " return g && g._fullLayout && g.querySelector('canvas'); })()",
            timeout=30000,
        )
        n, x, y = page.evaluate(
            """(() => { const g = document.getElementById('map'), t = g._fullData[DATA.pointsTrace];
            const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis, r = g.getBoundingClientRect();
            return [t.x.length, r.left + xa._offset + xa.l2p(t.x[0]),
                    r.top + ya._offset + ya.l2p(t.y[0])]; })()"""
        )
        assert n == 16 and page.evaluate("document.getElementById('map')._fullData[0].type") == "scattergl"
        # hover a dot: the card shows its thumbnail (a cell of the sprite sheet) and its name
        page.mouse.move(x, y)
        page.wait_for_function("document.getElementById('hover').style.display === 'block'", timeout=5000)
        assert "thumbs/00000.jpg" in page.inner_html("#hover")
        name = page.inner_text("#hover b")
        # click it: the panel shows the overlay strip (the image loads) and the row's columns
        page.mouse.click(x, y)
        page.wait_for_function(
            "(() => { const i = document.getElementById('detail');"
            " return i && i.complete && i.naturalWidth > 0; })()",
            timeout=5000,
        )
        page.wait_for_function("document.querySelectorAll('#row tr').length > 5", timeout=5000)
        assert page.inner_text("#panel b") == name and "entropy" in page.inner_text("#row")
        # colour by another column: its values load from a side file, plotly restyles
        page.select_option("#colour", "entropy")
        page.wait_for_function(
            "document.getElementById('map')._fullData[DATA.pointsTrace]"
            ".marker.colorbar.title.text === 'entropy'",
            timeout=5000,
        )
        page.select_option("#colour", "cluster")
        page.wait_for_function(
            "document.getElementById('map')._fullData[DATA.pointsTrace].marker.showscale === false",
            timeout=5000,
        )
        browser.close()
    assert errors == []


def test_audit_tta_scores_an_image_and_its_mirror_alike(engine_run: Path, engine_data: Path, tmp_path: Path):
    """--tta (the default) averages the image's and its mirror's probabilities, so a mirrored image
    gets the mirrored probabilities; without it a model's left-right asymmetry shows."""
    from PIL import Image

    from drivelab.engine.audit import AuditWorker
    from drivelab.io import write_image
    from drivelab.seg.checkpoint import read_checkpoint

    data = tmp_path / "mirrored"
    shutil.copytree(engine_data, data)
    (data / "files_trainable").unlink(missing_ok=True)
    name = sorted(p.name for p in (data / "imgs").iterdir())[0]
    for folder in ("imgs", "masks"):
        mirror = Image.open(data / folder / name).transpose(Image.FLIP_LEFT_RIGHT)
        write_image(data / folder / f"zz_{name}", mirror)
    ckpt = read_checkpoint(engine_run)
    names = [name, f"zz_{name}"]
    (_, _, p, m), (_, _, q, n) = AuditWorker(ckpt, str(data), "cpu", 0.1, tta=True).probabilities(names)
    assert np.array_equal(m, n[:, ::-1])
    assert np.abs(p - q[..., ::-1]).max() < 1e-5
    (_, _, p0, _), (_, _, q0, _) = AuditWorker(ckpt, str(data), "cpu", 0.1, tta=False).probabilities(names)
    assert np.abs(p0 - q0[..., ::-1]).max() > 1e-3
    assert np.abs((p0 + q0[..., ::-1]) / 2 - p).max() < 1e-5  # the mean of the two passes


def test_semantic_features_pool_every_encoder_stage():
    # The embedding is every stage average-pooled, shallowest first: the shallow maps carry the
    # lighting a night scene differs by, which the deepest map (encode) averages away.
    from drivelab.engine.embed import SemanticEmbedder
    from drivelab.schema import comma10k
    from drivelab.seg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", 5, encoder="tu-mobilenetv3_small_050").eval()
    rng = np.random.default_rng(0)
    day = rng.integers(120, 255, (1, 64, 128, 3), dtype=np.uint8)
    images = np.concatenate([day, day // 4])  # the same scene, darker
    feats, rows, preds = SemanticEmbedder(model, comma10k())(images, [None, None])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        stages, deepest = model.stages(x), model.encode(x)
    widths = [s.shape[1] for s in stages]
    assert feats.shape == (2, sum(widths)) and len(rows) == 2 and preds.shape == (2, 64, 128)
    tol = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(feats[:, : widths[0]], stages[0].mean((2, 3)).numpy(), **tol)
    np.testing.assert_allclose(feats[:, -widths[-1] :], deepest.mean((2, 3)).numpy(), **tol)
    assert not np.allclose(feats[0, : widths[0]], feats[1, : widths[0]])
