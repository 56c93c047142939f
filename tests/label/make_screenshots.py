"""Regenerate docs/images/label-*.png: the label app on small synthetic sets, in headless Chromium.
Run: ``python tests/label/make_screenshots.py`` (needs Debian's chromium).

    label-browse.png       the grid (comma10k), statuses, model loss
    label-paint.png        painting: a stroke and a polygon being drawn
    label-protect.png      pending polygons with their filled preview, a locked class, superpixel edges
    label-instances.png    a synthetic tote (COCO): objects list, a polygon object's vertices, the
                           model's merge/split findings
    label-grabcut.png      GrabCut's proposal for a box, with include/exclude strokes
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drivelab.data import open_dataset  # noqa: E402
from drivelab.data.synth import synth_dataset  # noqa: E402
from drivelab.label.app import create_app  # noqa: E402
from drivelab.label.store import ReviewStore  # noqa: E402
from tests.label.browser import CHROMIUM, CHROMIUM_ARGS, serve, wait_until  # noqa: E402

H, W = 240, 320


def build(root: Path, n: int = 8) -> Path:
    """A synthetic comma10k set; one image (the 6th) without a mask, as in a labelling backlog."""
    synth_dataset("comma10k", root, n=n, size=(H, W), seed=7)
    (root / "files_trainable").unlink()  # it would hide the image whose mask is removed
    sorted((root / "masks").iterdir())[5].unlink()
    return root


def totes(root: Path) -> tuple[Path, Path]:
    """A synthetic tote set and an over/under report for it (a model that merged two objects and split
    one), written by the real `drivelab overunder` code."""
    from pycocotools import mask as mask_utils

    from drivelab.seg.instance.report import overunder_report

    synth_dataset("coco", root, n=4, size=(360, 480), seed=5, split="train", objects=(6, 9))
    reader = open_dataset(root)
    item = reader.items[0]
    inst = reader.load_instances(item)
    enc = lambda m: {"size": list(m.shape), "counts": mask_utils.encode(  # noqa: E731
        np.asfortranarray(m.astype(np.uint8)))["counts"].decode()}
    order = np.argsort([-m.sum() for m in inst.masks])
    a, b, c = (inst.masks[k] for k in order[:3])
    xs = np.nonzero(c)[1]
    half = np.zeros_like(c)
    half[:, : int(np.median(xs))] = True
    iid = item.meta["image_id"]

    def res(m, s):
        ys, xs = np.nonzero(m)
        box = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
        return {"image_id": iid, "category_id": 1, "score": s, "segmentation": enc(m), "bbox": box}

    run = root.parent / "eval"
    run.mkdir(exist_ok=True)
    results = [res(a | b, 0.91), res(c & half, 0.8), res(c & ~half, 0.77)]
    (run / "results.json").write_text(json.dumps(results))
    overunder_report(run / "results.json", root, run, split="train", worst=0)
    return root, run


def main(out: Path = REPO / "docs" / "images") -> None:
    import pandas as pd
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp())
    root = build(tmp / "comma10k")
    names = sorted(p.name for p in (root / "imgs").iterdir())
    store = ReviewStore(root)
    store.set_status(names[1], "needs_fix", user="engine", comment="loss 1.92: curb labelled as road",
                     priority=1.92, region=[180, 120, 300, 200])
    store.set_status(names[2], "in_progress", user="ann")
    store.set_status(names[3], "reviewed", user="yassine")
    table = tmp / "per_image.parquet"
    losses = np.random.default_rng(0).uniform(0.05, 1.5, len(names))
    pd.DataFrame({"name": names, "loss": losses}).to_parquet(table)
    tote_root, findings = totes(tmp / "totes")

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        with serve(create_app(root, table=table, user="ann")) as url:
            page = browser.new_page(viewport={"width": 1360, "height": 800})
            page.goto(url)
            page.wait_for_selector(".card img.mask[src]")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "label-browse.png"))

            page.click(f'.card:has(span[title="{names[1]}"])')
            wait_until(page, "window.labelApp.E.mask !== null")

            def at(x, y):
                q = page.evaluate(f"window.labelApp.imageToClient({x} + 0.5, {y} + 0.5)")
                return q["x"], q["y"]

            page.keyboard.press("2")
            page.evaluate("window.labelApp.setSize(4)")
            page.mouse.move(*at(60, 150))
            page.mouse.down()
            page.mouse.move(*at(110, 135), steps=10)
            page.mouse.up()
            page.keyboard.press("g")
            page.keyboard.press("4")
            for x, y in ((200, 150), (250, 140), (285, 170), (240, 190)):
                page.mouse.click(*at(x, y))
            page.mouse.move(*at(230, 175))
            page.wait_for_timeout(300)
            page.screenshot(path=str(out / "label-paint.png"))

            # protect: road locked, two pending polygons previewed over it, superpixel edges
            page.keyboard.press("Escape")
            page.click('#legend li[data-cls="0"] input.lock')
            page.keyboard.press("4")  # "movable" over road (locked: kept) and undrivable
            for x, y in ((20, 200), (150, 120), (170, 230), (15, 235), (20, 200)):
                page.mouse.click(*at(x, y))
            page.keyboard.press("3")  # "undrivable" over the hood
            for x, y in ((190, 215), (300, 205), (310, 236), (185, 236), (190, 215)):
                page.mouse.click(*at(x, y))
            page.keyboard.press("s")
            wait_until(page, "window.labelApp.A.sp && window.labelApp.A.sp.name === window.labelApp.E.name")
            page.mouse.move(*at(100, 60))
            page.wait_for_timeout(300)
            page.screenshot(path=str(out / "label-protect.png"))
            page.close()

        with serve(create_app(tote_root, user="ann", findings=[findings])) as url:
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(url)
            page.wait_for_selector(".card")
            page.click(".card >> nth=0")
            wait_until(page, "window.labelApp.I.objects.length > 0")
            poly = page.evaluate("window.labelApp.I.objects.findIndex((o) => o.kind === 'polygon')")
            page.keyboard.press("i")
            page.evaluate(f"window.labelApp.objects.select({poly})")
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / "label-instances.png"))

            # GrabCut: box the largest object, then an exclude stroke on its edge
            page.keyboard.press("Escape")
            big = page.evaluate("""(() => {
                const o = window.labelApp.I.objects, a = (r) => r.shape.w * r.shape.h;
                let b = 0;
                o.forEach((r, i) => { if (a(r) > a(o[b])) b = i; });
                const s = o[b].shape;
                return [s.x0, s.y0, s.x0 + s.w, s.y0 + s.h];
            })()""")

            def at2(x, y):
                q = page.evaluate(f"window.labelApp.imageToClient({x} + 0.5, {y} + 0.5)")
                return q["x"], q["y"]

            page.keyboard.press("q")
            page.mouse.move(*at2(big[0] - 6, big[1] - 6))
            page.mouse.down()
            page.mouse.move(*at2(big[2] + 6, big[3] + 6), steps=8)
            page.mouse.up()
            wait_until(page, "window.labelApp.A.prop?.region && !window.labelApp.A.busy")
            page.evaluate("window.labelApp.setSize(6)")
            page.keyboard.down("Shift")
            page.mouse.move(*at2(big[0] + 2, big[1] + 4))
            page.mouse.down()
            page.mouse.move(*at2(big[0] + 30, big[1] + 4), steps=6)
            page.mouse.up()
            page.keyboard.up("Shift")
            wait_until(page, "window.labelApp.A.prop.marks && !window.labelApp.A.busy")
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / "label-grabcut.png"))
            page.close()
        browser.close()
    print(f"wrote {out}/label-{{browse,paint,protect,instances,grabcut}}.png")


if __name__ == "__main__":
    main()
