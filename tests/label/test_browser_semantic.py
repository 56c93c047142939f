"""Semantic labelling in headless Chromium: a locked class survives a stroke across it, pending
polygons applied together, "paint only over unlabelled", the refused save pointing at the unlabelled
pixels, a superpixel and a wand fill; the saved PNG equals the Python twin of the tools (raster.py
with the same protect rules) pixel for pixel. On a 19-class Cityscapes set: two-key shortcuts, the
class search and a legend that scrolls."""

from __future__ import annotations

import numpy as np

from drivelab.data import open_dataset
from drivelab.data.synth import synth_dataset
from drivelab.io import read_rgb
from drivelab.label import raster
from drivelab.label.app import create_app
from drivelab.schema import comma10k
from tests.label.browser import needs_chromium, serve, wait_until

pytestmark = needs_chromium


def test_protect_pending_polygons_and_fills_saved_pixel_exact(comma_set, page):
    reader = open_dataset(comma_set)
    item = reader.items[0]
    mask = reader.load_mask(item)
    h, w = mask.shape
    road = 0
    assert (mask == road).sum() > 20
    with serve(create_app(comma_set, user="tester")) as url:
        page.goto(url)
        page.wait_for_selector(".card")
        page.click(".card >> nth=0")
        wait_until(page, "window.labelApp.E.mask !== null && window.labelApp.E.w > 0")

        def at(x, y):
            p = page.evaluate(f"window.labelApp.imageToClient({x} + 0.5, {y} + 0.5)")
            return p["x"], p["y"]

        def stroke(points, steps=10):
            page.mouse.move(*at(*points[0]))
            page.mouse.down()
            for p in points[1:]:
                page.mouse.move(*at(*p), steps=steps)
            page.mouse.up()

        # lock road in the legend, then a stroke of "undrivable" (key 3) across the whole width
        page.click(f'#legend li[data-cls="{road}"] input.lock')
        assert page.evaluate("[...window.labelApp.S.locked]") == [road]
        row = int(np.argmax((mask == road).sum(1)))
        page.keyboard.press("d")
        page.keyboard.press("3")
        page.evaluate("window.labelApp.setSize(3)")
        stroke([(1, row), (w - 2, row)])
        locked = raster.guard_table("protect", {road})
        raster.stroke(mask, [(1, row), (w - 2, row)], 3, 2, guard=locked)

        # two polygons, each closed on its first vertex (pending, filled preview), applied by enter
        page.keyboard.press("g")
        page.keyboard.press("4")
        a = [(3, 3), (25, 4), (14, 20)]
        for p in a:
            page.mouse.click(*at(*p))
        page.mouse.click(*at(*a[0]))
        page.keyboard.press("5")
        b = [(30, 20), (60, 22), (50, 44), (28, 40)]
        for p in b:
            page.mouse.click(*at(*p))
        page.mouse.click(*at(*b[0]))
        assert page.evaluate("window.labelApp.E.pending.length") == 2
        assert page.evaluate("!!window.labelApp.E.extra.preview")  # the filled preview is drawn
        page.keyboard.press("Enter")
        centred = lambda pts: [(x + 0.5, y + 0.5) for x, y in pts]  # noqa: E731
        raster.polygon(mask, centred(a), 3, guard=locked)
        raster.polygon(mask, centred(b), 4, guard=locked)

        # the eraser leaves unlabelled pixels (never the locked road): a save is refused and shows them
        erase_row = min(h - 4, row + 6)
        page.keyboard.press("e")
        page.evaluate("window.labelApp.setSize(5)")
        stroke([(2, erase_row), (w - 3, erase_row)])
        raster.stroke(mask, [(2, erase_row), (w - 3, erase_row)], 5, 255, guard=locked)
        page.keyboard.press("Control+s")
        wait_until(page, "!document.querySelector('#banner').hidden")
        assert "unlabelled" in page.text_content("#banner")
        page.keyboard.press("u")
        flash = page.evaluate("window.labelApp.E.flash")
        ys, xs = np.nonzero(mask == 255)
        assert flash["y0"] == ys.min() and flash["x0"] <= xs.min() + 1
        assert flash["x1"] >= xs[ys == ys.min()].max()
        # "paint only over unlabelled" (shift L): a wider brush of "lane markings" fills just the gap
        page.keyboard.press("Escape")
        page.keyboard.press("L")
        assert page.evaluate("window.labelApp.S.protect") == "unlabelled"
        page.keyboard.press("d")
        page.keyboard.press("2")
        page.evaluate("window.labelApp.setSize(9)")
        stroke([(2, erase_row), (w - 3, erase_row)])
        only_unlabelled = raster.guard_table("unlabelled")
        raster.stroke(mask, [(2, erase_row), (w - 3, erase_row)], 9, 1, guard=only_unlabelled)
        assert not (mask == 255).any()

        # a superpixel (the server's SLIC labels) filled with "my car", everything allowed again
        page.keyboard.press("L")
        page.click(f'#legend li[data-cls="{road}"] input.lock')
        page.keyboard.press("5")
        page.keyboard.press("s")
        wait_until(page, "window.labelApp.A.sp && window.labelApp.A.sp.name === window.labelApp.E.name")
        sp = page.evaluate("(() => ({labels: Array.from(window.labelApp.A.sp.labels)}))()")
        labels = np.array(sp["labels"]).reshape(h, w)
        sx, sy = w - 6, 4
        page.mouse.click(*at(sx, sy))
        mask[labels == labels[sy, sx]] = 4
        wait_until(page, f"window.labelApp.E.mask[{sy * w + sx}] === 4")

        page.keyboard.press("Control+s")
        wait_until(page, "window.labelApp.E.version === 1 && !window.labelApp.E.dirty")
    saved, bad = comma10k().encode_colors(read_rgb(item.label_path))
    assert not bad.any()
    diff = np.argwhere(saved != mask)
    assert len(diff) == 0, f"{len(diff)} pixels differ, first (y, x) {diff[:5].tolist()}"


def test_many_classes_two_keys_search_and_a_scrolling_legend(tmp_path, page):
    root = synth_dataset("cityscapes", tmp_path / "cs", n=2, size=(64, 128), seed=1)
    with serve(create_app(root, user="tester")) as url:
        page.goto(url)
        page.wait_for_selector(".card")
        page.click(".card >> nth=0")
        wait_until(page, "window.labelApp.E.mask !== null")
        names = page.evaluate("window.labelApp.S.classes.map((c) => c.name)")
        assert len(names) == 19
        page.keyboard.press("1")
        page.keyboard.press("5")  # within 0.7 s: key 15 = class 14
        assert page.evaluate("window.labelApp.E.cls") == 14
        page.keyboard.press("3")
        page.wait_for_timeout(800)
        page.keyboard.press("7")  # too late for "37": class 7's key alone
        assert page.evaluate("window.labelApp.E.cls") == 6
        page.keyboard.press("/")
        page.keyboard.type("sky")
        page.keyboard.press("Enter")
        assert page.evaluate("window.labelApp.E.cls") == names.index("sky")
        legend = page.evaluate("(() => { const l = document.querySelector('#legend'); "
                               "return [l.scrollHeight, l.clientHeight]; })()")
        assert legend[0] > legend[1], legend  # 20 rows do not fit: the legend scrolls
        current = page.evaluate("document.querySelector('#legend li.current').dataset.cls")
        assert current == str(names.index("sky"))
