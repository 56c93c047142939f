"""How the data engine's cost grows with the pool: map, select (every strategy) and prune on
synthetic embed tables of 10k, 100k and 1M rows.

    python benchmarks/engine_scale.py                       # 10k and 100k, the 100k page in Chromium
    python benchmarks/engine_scale.py --sizes 1000000 --no-thumbs-above 200000
    python benchmarks/engine_scale.py --sizes 10000 --verbs select --json scale.json

A table is what ``drivelab embed`` writes: table.parquet (the same columns: names, paths, split,
labelled 10%, loss/IoU NaN where unlabelled, entropy, margin, class shares), features.npy (512-d
float32, a mixture of 20 Gaussian clusters, written block by block) and embed.json. Its images,
labels and predictions cycle through a small real set (64 ``drivelab.data.synth`` comma10k scenes at
256x512 and their masks), so the map draws a real thumbnail and overlay for every row.

Every verb runs as its own ``drivelab`` process (``python -m drivelab.cli``); the table prints wall
time, peak resident memory of that process (``os.wait4``'s ru_maxrss, memory-mapped pages it
touched included) and, for map, the page's size and bytes per point. Budgets: ``select --budget``
1% of the rows, 10% labelled; ``prune --keep 0.5``. Per-item time at the two smallest sizes shows
whether a verb is linear. The 100k page (or the largest one) is opened in headless Chromium
(Playwright, --headless --no-sandbox): seconds until the WebGL plot is drawn, console errors, and
whether hover and click-through work.

Bars (issue 18): every run of 1M rows within 24 GB; the 100k page under 30 MB and open in under
10 s with no console errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = ("random", "entropy", "margin", "kcenter", "combined")
CLASSES = ["road", "lane markings", "undrivable", "movable", "my car"]


# --------------------------------------------------------------------------- tables
def image_set(work: Path, n: int = 64) -> tuple[Path, list[Path], list[Path], list[np.ndarray]]:
    from drivelab.data import open_dataset
    from drivelab.data.synth import synth_dataset

    root = work / "images"
    if not (root / "synth.json").exists():
        synth_dataset("comma10k", root, n=n, size=(256, 512), seed=11)
    reader = open_dataset(root, format="comma10k")
    masks = [reader.load_mask(it) for it in reader.items]
    return root, [it.image_path for it in reader.items], [it.label_path for it in reader.items], masks


def make_table(folder: Path, n: int, dim: int, images: tuple, seed: int = 0) -> Path:
    """An embed folder of ``n`` rows (see the module docstring); features written in blocks."""
    import pandas as pd

    from drivelab.engine.table import iter_blocks
    from drivelab.io import write_json, write_png, write_table
    from drivelab.schema import comma10k

    if (folder / "embed.json").exists():
        return folder
    root, image_paths, label_paths, masks = images
    schema = comma10k()
    for j, m in enumerate(masks):  # "predictions": the masks, as palette PNGs like embed writes
        write_png(folder / "preds" / f"{j:05d}.png", m, palette=schema.palette_256())
    rng = np.random.default_rng(seed)
    j = np.arange(n) % len(image_paths)
    labelled = rng.random(n) < 0.1
    miou = np.clip(rng.normal(0.75, 0.1, n), 0, 1)
    df = pd.DataFrame(
        {
            "name": [f"{i:07d}_{image_paths[k].name}" for i, k in enumerate(j)],
            "split": np.where(np.arange(n) % 10 == 9, "val", "train"),
            "image_path": [str(image_paths[k]) for k in j],
            "label_path": [str(label_paths[k]) if lab else None for k, lab in zip(j, labelled, strict=True)],
            "labelled": labelled,
            "height": 256,
            "width": 512,
            "brightness": rng.uniform(0.1, 0.7, n),
            "loss": np.where(labelled, rng.gamma(2.0, 0.15, n), np.nan),
            "pixel_acc": np.where(labelled, np.clip(miou + 0.15, 0, 1), np.nan),
            "miou": np.where(labelled, miou, np.nan),
            "entropy": rng.beta(2, 6, n),
            "margin": rng.beta(6, 2, n),
            **{f"iou_{c}": np.where(labelled, rng.uniform(0.3, 1.0, n), np.nan) for c in CLASSES},
            **{
                f"share_{c}": np.where(labelled, rng.dirichlet(np.ones(5), n)[:, i], np.nan)
                for i, c in enumerate(CLASSES)
            },
            **{f"pred_share_{c}": rng.dirichlet(np.ones(5), n)[:, i] for i, c in enumerate(CLASSES)},
            "pred_path": [f"preds/{k:05d}.png" for k in j],
        }
    )
    centres = rng.normal(0, 1, (20, dim)).astype(np.float32) * 3
    scales = rng.uniform(0.5, 2.0, 20).astype(np.float32)
    feats = np.lib.format.open_memmap(
        folder / "features.npy.partial", mode="w+", dtype=np.float32, shape=(n, dim)
    )
    for a, b in iter_blocks(n):
        c = rng.integers(0, 20, b - a)
        feats[a:b] = centres[c] + rng.normal(0, 1, (b - a, dim)).astype(np.float32) * scales[c, None]
    feats.flush()
    del feats
    os.replace(folder / "features.npy.partial", folder / "features.npy")
    write_table(folder / "table.parquet", df)
    write_json(
        folder / "embed.json",
        {
            "dataset": str(root),
            "format": "comma10k",
            "dataset_options": {},
            "task": "semantic",
            "classes": CLASSES,
            "schema": schema.to_dict(),
            "feature_dim": dim,
            "features": "features.npy",
            "rows": n,
        },
    )
    return folder


# --------------------------------------------------------------------------- runs
def run(args: list[str], timeout: float, log: Path) -> dict:
    """One ``drivelab`` process: wall seconds, peak RSS (GB) of that very process, exit status."""
    cmd = [sys.executable, "-m", "drivelab.cli", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        # os.wait4 reaps this child and returns its own rusage (ru_maxrss in kB on Linux)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    result = {"seconds": time.perf_counter() - t0, "peak_gb": usage.ru_maxrss / 2**20, "ok": code == 0}
    if code:
        lines = log.read_text().strip().splitlines()
        result["error"] = "timeout" if time.perf_counter() - t0 > timeout else (lines or ["?"])[-1]
    return result


def bench_size(n: int, work: Path, args: argparse.Namespace, images: tuple) -> list[dict]:
    t0 = time.perf_counter()
    folder = make_table(work / f"table-{n}", n, args.dim, images)
    print(f"\n{n} rows: table ready in {time.perf_counter() - t0:.0f}s ({folder})", flush=True)
    rows = []
    verbs = set(args.verbs.split(","))
    if "map" in verbs:
        page = work / f"map-{n}" / "map.html"
        extra = ["--no-thumbs"] if n > args.no_thumbs_above else []
        r = run(
            ["map", folder, "--out", page, "--projection", "pca", "--workers", args.workers, *extra],
            args.timeout,
            work / f"map-{n}.log",
        )
        r.update(verb="map" + (" --no-thumbs" if extra else ""), n=n)
        if r["ok"]:
            r["page_mb"] = page.stat().st_size / 1e6
            side = sum(p.stat().st_size for p in page.with_name("map_files").rglob("*") if p.is_file())
            r["side_mb"] = side / 1e6
            r["page"] = str(page)
        rows.append(r)
        report_row(r)
    budget = max(1, n // 100)
    for strategy in STRATEGIES if "select" in verbs else ():
        r = run(
            ["select", folder, "--budget", budget, "--strategy", strategy, "--out", work / f"sel-{n}.txt"],
            args.timeout,
            work / f"select-{strategy}-{n}.log",
        )
        r.update(verb=f"select {strategy}", n=n)
        rows.append(r)
        report_row(r)
    if "prune" in verbs:
        r = run(
            ["prune", folder, "--keep", 0.5, "--out", work / f"prune-{n}", "--by", "entropy"],
            args.timeout,
            work / f"prune-{n}.log",
        )
        r.update(verb="prune --keep 0.5", n=n)
        rows.append(r)
        report_row(r)
    return rows


def report_row(r: dict) -> None:
    extra = f"  page {r['page_mb']:.1f} MB + side files {r['side_mb']:.0f} MB" if "page_mb" in r else ""
    status = "" if r["ok"] else f"  FAILED: {r.get('error')}"
    print(f"  {r['verb']:22s} {r['seconds']:8.1f} s  peak {r['peak_gb']:5.2f} GB{extra}{status}", flush=True)


def browser_check(page: Path) -> dict:
    """Open a map page in headless Chromium: seconds to a drawn plot, errors, hover and click."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    errors: list[str] = []
    out: dict = {"page": str(page)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        tab.goto(page.as_uri(), timeout=120000)
        tab.wait_for_function(
            "(() => { const g = document.getElementById('map');"
            " return g && g._fullLayout && g.querySelector('canvas'); })()",
            timeout=120000,
        )
        out["open_seconds"] = time.perf_counter() - t0
        x, y = tab.evaluate(
            """(() => { const g = document.getElementById('map'), t = g._fullData[DATA.pointsTrace];
            const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis, r = g.getBoundingClientRect();
            return [r.left + xa._offset + xa.l2p(t.x[0]), r.top + ya._offset + ya.l2p(t.y[0])]; })()"""
        )
        t1 = time.perf_counter()
        tab.mouse.move(x, y)
        try:
            tab.wait_for_function("document.getElementById('hover').style.display === 'block'", timeout=20000)
            out["hover_seconds"] = time.perf_counter() - t1
            tab.mouse.click(x, y)
            tab.wait_for_function("document.querySelectorAll('#row tr').length > 5", timeout=20000)
            out["click_ok"] = True
        except Exception as e:  # report, do not hide
            out["click_ok"] = False
            errors.append(f"hover/click: {type(e).__name__}")
        browser.close()
    out["console_errors"] = errors
    return out


def summary(rows: list[dict], browser: dict | None) -> None:
    sizes = sorted({r["n"] for r in rows})
    print("\nverb                      " + "".join(f"{n:>22,d}" for n in sizes) + "   per item (us)")
    for verb in dict.fromkeys(r["verb"].split(" --no-thumbs")[0] for r in rows):
        cells, per = [], []
        for n in sizes:
            r = next((r for r in rows if r["n"] == n and r["verb"].startswith(verb)), None)
            if r is None:
                cells.append(f"{'-':>22s}")
                continue
            nt = "*" if "no-thumbs" in r["verb"] else " "
            cells.append(f"{r['seconds']:9.1f}s {r['peak_gb']:5.2f}GB{nt}" if r["ok"] else f"{'failed':>22s}")
            if r["ok"]:
                per.append(f"{r['seconds'] / n * 1e6:.0f}")
        print(f"{verb:24s}  " + "".join(cells) + "   " + " / ".join(per))
    for r in rows:
        if "page_mb" in r:
            print(
                f"map page at {r['n']:,d} rows: {r['page_mb']:.1f} MB "
                f"({r['page_mb'] * 1e6 / r['n']:.0f} bytes per point incl. plotly.js), "
                f"side files {r['side_mb']:.0f} MB"
            )
    if any("no-thumbs" in r["verb"] for r in rows):
        print("* map ran with --no-thumbs at that size")
    big = [r for r in rows if r["n"] >= 1_000_000 and r["ok"]]
    if big:
        worst = max(r["peak_gb"] for r in big)
        print(f"bar 1M rows within 24 GB: peak {worst:.1f} GB -> {'met' if worst < 24 else 'MISSED'}")
    page = next((r for r in rows if r["n"] == 100_000 and "page_mb" in r), None)
    if page:
        met = "met" if page["page_mb"] < 30 else "MISSED"
        print(f"bar 100k page under 30 MB: {page['page_mb']:.1f} MB -> {met}")
    if browser:
        ok = browser["open_seconds"] < 10 and not browser["console_errors"]
        print(
            f"Chromium: {browser['page']} drawn in {browser['open_seconds']:.1f} s, hover "
            f"{browser.get('hover_seconds', float('nan')):.1f} s, click-through "
            f"{'works' if browser.get('click_ok') else 'FAILED'}, console errors: {browser['console_errors']}"
            f" -> bar (< 10 s, no errors) {'met' if ok else 'MISSED'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma list of row counts")
    ap.add_argument("--dim", type=int, default=512, help="feature dimension")
    ap.add_argument("--verbs", default="map,select,prune", help="comma list of map, select, prune")
    ap.add_argument("--workers", type=int, default=2, help="map --workers")
    ap.add_argument(
        "--no-thumbs-above",
        type=int,
        default=200_000,
        help="map --no-thumbs for tables bigger than this (1M thumbnails take hours)",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per verb before it is killed")
    ap.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="open the 100k (or largest) page in headless Chromium",
    )
    ap.add_argument("--work", type=Path, default=None, help="work folder (kept; default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="drivelab-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    images = image_set(work)
    rows: list[dict] = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += bench_size(n, work, args, images)
    pages = [r for r in rows if "page" in r]
    browser = None
    if args.browser and pages:
        target = next((r for r in pages if r["n"] == 100_000), pages[-1])
        browser = browser_check(Path(target["page"]))
    summary(rows, browser)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "browser": browser}, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
