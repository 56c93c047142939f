"""Instance labelling and the assisted tools in headless Chromium, on a synthetic tote set: GrabCut a
box and accept it, draw a polygon object (a vertex dragged), split an object with a cut line, merge
two, save; the json then decodes with pycocotools to exactly the pixels the page showed, the polygon
object is stored as that polygon, and `drivelab validate` passes. The page's port of pycocotools'
polygon rasteriser is checked against pycocotools itself on random polygons."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from drivelab.data import open_dataset
from drivelab.data.synth import synth_dataset
from drivelab.data.validate import validate_dataset
from drivelab.label.app import create_app
from tests.label.browser import needs_chromium, serve, wait_until

pytestmark = needs_chromium
TH, TW = 120, 160

# JS run in the page: a visible pixel of object i near its centre (the page's own owner map).
VISIBLE_PIXEL = """(i) => {
  const I = window.labelApp.I, E = window.labelApp.E, s = I.objects[i].shape;
  const cx = s.x0 + s.w / 2, cy = s.y0 + s.h / 2;
  let best = null, bd = Infinity;
  for (let y = s.y0; y < s.y0 + s.h; y++) for (let x = s.x0; x < s.x0 + s.w; x++) {
    if (I.owner[y * E.w + x] !== i) continue;
    let inner = true;  // prefer pixels whose 4 neighbours are the object too
    for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      if (I.owner[(y + dy) * E.w + x + dx] !== i) inner = false;
    }
    const d = (x - cx) ** 2 + (y - cy) ** 2 + (inner ? 0 : 1e6);
    if (d < bd) { bd = d; best = [x, y]; }
  }
  return best;
}"""
RUNS = "(i) => window.labelApp.objects.visibleRuns(i)"
SHAPE = """(i) => { const s = window.labelApp.I.objects[i].shape;
  return {x0: s.x0, y0: s.y0, w: s.w, h: s.h, data: Array.from(s.data)}; }"""


def _mask(runs, h=TH, w=TW) -> np.ndarray:
    return np.repeat((np.arange(len(runs)) % 2).astype(bool), runs).reshape(w, h).T


def _shape(d) -> np.ndarray:
    out = np.zeros((TH, TW), bool)
    block = np.array(d["data"], bool).reshape(d["h"], d["w"])
    out[d["y0"]:d["y0"] + d["h"], d["x0"]:d["x0"] + d["w"]] = block
    return out


@pytest.fixture
def totes(tmp_path):
    return synth_dataset("coco", tmp_path / "totes", n=2, size=(TH, TW), seed=11, split="train",
                         objects=(3, 5), twin_rate=0.0)


def test_polygon_split_merge_grabcut_saved_pixel_exact(totes, page):
    reader = open_dataset(totes)
    item = reader.items[0]
    inst = reader.load_instances(item)
    # the object GrabCut will redo: the largest one with nothing else in its box
    iso = None
    for k, m in enumerate(inst.masks):
        ys, xs = np.nonzero(m)
        box = [max(0, xs.min() - 3), max(0, ys.min() - 3), min(TW - 1, xs.max() + 3),
               min(TH - 1, ys.max() + 3)]
        others = np.delete(inst.masks, k, 0).any(0)[box[1]:box[3] + 1, box[0]:box[2] + 1].sum()
        if others == 0 and (iso is None or m.sum() > inst.masks[iso[0]].sum()):
            iso = (k, box)
    assert iso is not None
    with serve(create_app(totes, user="ann")) as url:
        page.goto(url)
        page.wait_for_selector(".card")
        page.click(f'.card:has(span[title="{item.name}"])')
        wait_until(page, "window.labelApp.I.objects.length > 0")
        assert page.evaluate("window.labelApp.S.info.mode") == "instances"

        # pycocotools' polygon rasteriser, ported to the page: same pixels on random polygons
        rng = np.random.default_rng(5)
        polys = [[float(v) for v in np.round(rng.uniform(-4, 70, 2 * int(rng.integers(3, 9))), 2)]
                 for _ in range(150)]
        got = page.evaluate("(ps) => ps.map((p) => window.labelApp.cocoPolygonRuns(p, 50, 60))", polys)
        for p, runs in zip(polys, got, strict=True):
            want = mask_utils.decode(mask_utils.frPyObjects([p], 50, 60)[0]).astype(bool)
            np.testing.assert_array_equal(_mask(runs, 50, 60), want, err_msg=str(p))

        def at(x, y):
            q = page.evaluate(f"window.labelApp.imageToClient({x} + 0.5, {y} + 0.5)")
            return q["x"], q["y"]

        n0 = page.evaluate("window.labelApp.I.objects.length")
        # 1. GrabCut: delete the isolated object, box it, accept GrabCut's proposal as a new object
        k, box = iso
        page.keyboard.press("i")
        page.mouse.click(*at(*page.evaluate(VISIBLE_PIXEL, k)))
        assert page.evaluate("window.labelApp.I.sel") == k
        page.keyboard.press("Delete")
        page.keyboard.press("q")
        page.mouse.move(*at(box[0], box[1]))
        page.mouse.down()
        page.mouse.move(*at(box[2], box[3]), steps=6)
        page.mouse.up()
        wait_until(page, "window.labelApp.A.prop && window.labelApp.A.prop.region && !window.labelApp.A.busy")
        prop = page.evaluate("(() => { const p = window.labelApp.A.prop; "
                             "return {box: p.box, region: Array.from(p.region)}; })()")
        page.keyboard.press("Enter")
        wait_until(page, f"window.labelApp.I.objects.length === {n0}")
        b = prop["box"]
        shown = np.zeros((TH, TW), bool)
        shown[b["y0"]:b["y1"] + 1, b["x0"]:b["x1"] + 1] = np.array(prop["region"], bool).reshape(
            b["y1"] - b["y0"] + 1, b["x1"] - b["x0"] + 1)
        gc_index = n0 - 1
        np.testing.assert_array_equal(_mask(page.evaluate(RUNS, gc_index)), shown)  # accepted = shown
        truth = inst.masks[k]
        assert (shown & truth).sum() / (shown | truth).sum() > 0.7

        # 2. a polygon object: four clicks, one vertex dragged, enter
        page.keyboard.press("Escape")  # nothing selected: the polygon is a new object
        page.keyboard.press("g")
        for x, y in ((8, 8), (40, 10), (36, 38), (10, 34)):
            page.mouse.click(*at(x, y))
        page.mouse.move(*at(36, 38))
        page.mouse.down()
        page.mouse.move(*at(44, 44), steps=4)
        page.mouse.up()
        page.keyboard.press("Enter")
        wait_until(page, f"window.labelApp.I.objects.length === {n0 + 1}")
        poly = page.evaluate("window.labelApp.I.objects.at(-1)")
        assert poly["kind"] == "polygon" and poly["rings"] == [[8.5, 8.5, 40.5, 10.5, 44.5, 44.5, 10.5, 34.5]]
        # ... and a second polygon object with a hole (shift enter: a hole in the selected object)
        page.keyboard.press("Escape")
        for x, y in ((100, 70), (150, 72), (148, 112), (102, 110)):
            page.mouse.click(*at(x, y))
        page.keyboard.press("Enter")
        for x, y in ((115, 85), (135, 85), (125, 100)):
            page.mouse.click(*at(x, y))
        page.keyboard.press("Shift+Enter")
        holed = page.evaluate("window.labelApp.I.objects.at(-1)")
        assert len(holed["holes"]) == 1 and page.evaluate("window.labelApp.I.objects.length") == n0 + 2
        hole_shape = _shape(page.evaluate(SHAPE, n0 + 1))
        assert hole_shape[72:108, 102:146].any() and not hole_shape[92, 125]  # the hole is not the object's

        # 3. split the largest remaining original object with a horizontal cut through its middle
        sizes = [page.evaluate(RUNS, i) for i in range(page.evaluate("window.labelApp.I.objects.length"))]
        areas = [int(_mask(r).sum()) for r in sizes]
        big = int(np.argmax(areas[:gc_index]))
        before = _shape(page.evaluate(SHAPE, big))
        ys, xs = np.nonzero(before)
        row = int(np.median(ys))
        page.keyboard.press("i")
        page.mouse.click(*at(*page.evaluate(VISIBLE_PIXEL, big)))
        page.keyboard.press("c")
        page.mouse.click(*at(max(0, xs.min() - 2), row))
        page.mouse.click(*at(min(TW - 1, xs.max() + 2), row))
        page.keyboard.press("Enter")
        wait_until(page, f"window.labelApp.I.objects.length === {n0 + 3}")
        top, bottom = _shape(page.evaluate(SHAPE, big)), _shape(page.evaluate(SHAPE, big + 1))
        assert not (top & bottom).any() and np.array_equal(top | bottom, before)
        assert top.any() and bottom.any()

        # 4. merge: the two halves back into one object
        page.keyboard.press("i")
        page.mouse.click(*at(*page.evaluate(VISIBLE_PIXEL, big)))
        page.keyboard.press("j")
        page.mouse.click(*at(*page.evaluate(VISIBLE_PIXEL, big + 1)))
        wait_until(page, f"window.labelApp.I.objects.length === {n0 + 2}")
        np.testing.assert_array_equal(_shape(page.evaluate(SHAPE, big)), before)

        # 5. save; what the page shows is what pycocotools decodes from the file
        page.keyboard.press("Control+s")
        wait_until(page, "window.labelApp.E.version === 1 && !window.labelApp.E.dirty")
        n = page.evaluate("window.labelApp.I.objects.length")
        shown_runs = [page.evaluate(RUNS, i) for i in range(n)]
        ids = page.evaluate("window.labelApp.I.objects.map((o) => o.id)")

    data = json.loads((totes / "annotations" / "train.json").read_text())
    anns = [a for a in data["annotations"] if a["image_id"] == item.meta["image_id"]]
    assert [a["id"] for a in anns] == ids and len(anns) == n
    for a, runs in zip(anns, shown_runs, strict=True):
        seg = a["segmentation"]
        rle = (mask_utils.merge(mask_utils.frPyObjects(seg, TH, TW)) if isinstance(seg, list)
               else {"size": seg["size"], "counts": seg["counts"].encode()} if isinstance(seg["counts"], str)
               else mask_utils.frPyObjects(seg, TH, TW))
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), _mask(runs),
                                      err_msg=f"annotation {a['id']}")
    assert anns[-2]["segmentation"] == [[8.5, 8.5, 40.5, 10.5, 44.5, 44.5, 10.5, 34.5]]  # the polygon
    assert isinstance(anns[-1]["segmentation"], dict)  # with a hole: no COCO polygon holds it, an RLE
    assert isinstance(anns[gc_index]["segmentation"], dict)  # GrabCut's pixels: an RLE
    report = validate_dataset(totes, progress=False)
    assert report.ok, [str(p) for p in report.problems]


def test_object_edits_survive_a_closed_tab(totes, page):
    """Unsaved object edits are drafted (IndexedDB); a new tab offers the draft, restores it, saves it."""
    item = open_dataset(totes).items[1]
    with serve(create_app(totes, user="ann")) as url:
        page.goto(url)
        page.wait_for_selector(".card")
        page.click(f'.card:has(span[title="{item.name}"])')
        wait_until(page, "window.labelApp.I.objects.length > 0")
        n = page.evaluate("window.labelApp.I.objects.length")
        kept = page.evaluate("window.labelApp.I.objects.slice(1).map((o) => o.id)")
        page.evaluate("window.labelApp.objects.select(0)")
        page.keyboard.press("Delete")
        page.wait_for_timeout(1200)  # the draft is written 0.7 s after the last edit
        again = page.context.new_page()
        again.on("pageerror", lambda e: page.errors.append(str(e)))
        page.close()
        again.goto(url)
        again.wait_for_selector(".card")
        again.click(f'.card:has(span[title="{item.name}"])')
        wait_until(again, "!document.querySelector('#banner').hidden")
        assert "Unsaved local draft" in again.text_content("#banner")
        assert again.evaluate("window.labelApp.I.objects.length") == n
        again.click("#banner button >> nth=0")  # restore
        assert again.evaluate("window.labelApp.I.objects.length") == n - 1
        again.keyboard.press("Control+s")
        wait_until(again, "window.labelApp.E.version === 1 && !window.labelApp.E.dirty")
    anns = [a for a in json.loads((totes / "annotations" / "train.json").read_text())["annotations"]
            if a["image_id"] == item.meta["image_id"]]
    assert [a["id"] for a in anns] == kept
