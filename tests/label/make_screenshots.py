"""Regenerate docs/images/label-*.png: the label app on a small synthetic comma10k set, in headless
Chromium. Run: ``python tests/label/make_screenshots.py`` (needs Debian's chromium)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

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

    out.mkdir(parents=True, exist_ok=True)
    with serve(create_app(root, table=table, user="ann")) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
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
        browser.close()
    print(f"wrote {out}/label-browse.png, label-paint.png")


if __name__ == "__main__":
    main()
