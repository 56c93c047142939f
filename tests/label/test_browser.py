"""The label app in a real browser: headless Chromium paints, fills, draws a polygon, saves; the PNG
on disk must hold exactly the pixels the Python twin of the paint tools predicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivelab.data import open_dataset
from drivelab.io import read_rgb
from drivelab.label import raster
from drivelab.label.app import create_app
from drivelab.schema import comma10k
from tests.label.browser import needs_chromium, serve, wait_until

pytestmark = needs_chromium


@pytest.fixture
def served(comma_set):
    with serve(create_app(comma_set, user="tester")) as url:
        yield comma_set, url


def test_paint_fill_polygon_save_pixel_exact(served, page):
    root, url = served
    reader = open_dataset(root)
    item = reader.items[0]
    mask = reader.load_mask(item)
    h, w = mask.shape

    page.goto(url)
    page.wait_for_selector(".card")
    # Colours and overlay opacity come from the server's schema (one source of truth).
    from drivelab.label.state import OVERLAY_ALPHA

    assert page.evaluate("window.labelApp.S.opacity") == OVERLAY_ALPHA
    palette = page.evaluate("Array.from(window.labelApp.S.palette.slice(0, 4 * 5))")
    assert [palette[4 * i:4 * i + 3] for i in range(5)] == [list(c.color) for c in comma10k().classes]
    page.click(".card >> nth=0")
    wait_until(page, "window.labelApp.E.mask !== null && window.labelApp.E.w > 0")

    def at(x, y):  # client position of the centre of image pixel (x, y)
        p = page.evaluate(f"window.labelApp.imageToClient({x} + 0.5, {y} + 0.5)")
        return p["x"], p["y"]

    # 1. a brush stroke, class 2 ("lane markings" is key 2 -> id 1), size 5
    page.keyboard.press("d")
    page.keyboard.press("2")
    page.evaluate("window.labelApp.setSize(5)")
    page.mouse.move(*at(4, 6))
    page.mouse.down()
    page.mouse.move(*at(w - 10, 6), steps=12)
    page.mouse.up()
    raster.stroke(mask, [(4, 6), (w - 10, 6)], 5, 1)

    # 2. a stroke that is undone, so it must not reach the file
    page.mouse.move(*at(3, h - 3))
    page.mouse.down()
    page.mouse.move(*at(20, h - 3), steps=4)
    page.mouse.up()
    page.keyboard.press("Control+z")

    # 3. flood fill the bottom-left corner's region with a class it does not have yet
    fill_id = 4 if mask[h - 2, 1] != 4 else 2  # "my car" (key 5) or "undrivable" (key 3)
    page.keyboard.press("f")
    page.keyboard.press(str(fill_id + 1))
    page.mouse.click(*at(1, h - 2))
    before = mask.copy()
    raster.flood_fill(mask, 1, h - 2, fill_id)
    assert (mask != before).sum() > 0

    # 4. a polygon with "movable" (key 4 -> id 3): three clicks, one vertex dragged, enter
    page.keyboard.press("g")
    page.keyboard.press("4")
    for x, y in ((10, 15), (30, 15), (20, 30)):
        page.mouse.click(*at(x, y))
    page.mouse.move(*at(30, 15))
    page.mouse.down()
    page.mouse.move(*at(40, 20), steps=5)
    page.mouse.up()
    page.keyboard.press("Enter")
    raster.polygon(mask, [(10.5, 15.5), (40.5, 20.5), (20.5, 30.5)], 3)

    page.keyboard.press("Control+s")
    wait_until(page, "window.labelApp.E.version === 1 && !window.labelApp.E.dirty")

    saved, bad = comma10k().encode_colors(read_rgb(item.label_path))
    assert not bad.any(), "a saved pixel is not exactly a palette colour"
    diff = np.argwhere(saved != mask)
    assert len(diff) == 0, f"{len(diff)} pixels differ, first (y, x) {diff[:5].tolist()}"

    # `drivelab validate` finds nothing wrong with the saved mask (the set's one unlabelled image is
    # reported as missing its mask, which is the backlog the fixture made, not this file's doing)
    from drivelab.data.validate import validate_dataset

    report = validate_dataset(root, progress=False)
    about_saved = [str(p) for p in report.problems if Path(p.path).name == item.image_path.name]
    assert report.checked > 0 and not about_saved, about_saved
