"""Regenerate docs/images/label-*.png: the label app on a small synthetic comma10k set, in headless
Chromium. Run: ``python tests/label/make_screenshots.py`` (needs Debian's chromium)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drivelab.label.app import create_app  # noqa: E402
from drivelab.label.cli import free_port  # noqa: E402
from drivelab.label.store import ReviewStore  # noqa: E402
from drivelab.schema import comma10k  # noqa: E402

H, W = 240, 320


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A road scene drawn from its own mask: sky/verge (undrivable), road, lanes, cars, hood."""
    mask = np.full((H, W), 2, np.uint8)
    horizon = int(rng.integers(95, 115))
    vx = W // 2 + int(rng.integers(-30, 30))
    yy, xx = np.mgrid[0:H, 0:W]
    t = np.clip((yy - horizon) / (H - horizon), 0, 1)
    road = (yy > horizon) & (np.abs(xx - vx) < 4 + t * W * 0.75)
    mask[road] = 0
    for off in (-0.33, 0.33):
        lane = road & (np.abs(xx - (vx + off * t * W * 0.9)) < 0.5 + t * 3) & ((yy // 12) % 2 == 0)
        mask[lane] = 1
    for _ in range(int(rng.integers(1, 4))):
        cy = int(rng.integers(horizon + 10, horizon + 60))
        s = (cy - horizon) / (H - horizon)
        cw, ch = int(20 + 90 * s), int(14 + 60 * s)
        cx = int(vx + rng.uniform(-0.5, 0.5) * s * W)
        mask[max(0, cy - ch):cy, max(0, cx - cw // 2):cx + cw // 2] = 3
    hood = ((xx - W / 2) / (W * 0.7)) ** 2 + ((yy - H * 1.08) / (H * 0.2)) ** 2 < 1
    mask[hood] = 4

    colors = np.array([[92, 92, 98], [235, 235, 225], [110, 140, 90], [170, 40, 40], [30, 32, 38]], float)
    img = colors[mask]
    sky = (yy < horizon) & (mask == 2)
    img[sky] = np.stack([120 + 0.5 * yy[sky], 160 + 0.4 * yy[sky], 225 + 0 * yy[sky]], -1)
    img += rng.normal(0, 9, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(pil), mask


def build(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(7)
    schema = comma10k()
    (root / "imgs").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = scene(rng)
        name = f"{i:04d}_a1b2c3d4e5f6a7b8_2018-09-{10 + i:02d}--10-00-00_{i}_{300 + 37 * i}{i}.png"
        Image.fromarray(img).save(root / "imgs" / name)
        if i != 5:
            Image.fromarray(schema.colorize(mask)).save(root / "masks" / name)
    return root


def main(out: Path = REPO / "docs" / "images") -> None:
    import pandas as pd
    import uvicorn
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

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(root, table=table, user="ann"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1360, "height": 800})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector(".card img.mask")
        page.wait_for_timeout(800)
        page.screenshot(path=str(out / "label-browse.png"))

        page.click(f'.card:has(span[title="{names[1]}"])')
        page.wait_for_function("window.labelApp.E.mask !== null")

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
    server.should_exit = True
    print(f"wrote {out}/label-browse.png, label-paint.png")


if __name__ == "__main__":
    main()
